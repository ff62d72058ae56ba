"""pure_transformer: a small decoder-only Transformer trained from scratch and
specialised with GRPO for USMLE-style medical multiple-choice questions."""

__version__ = "0.1.0"
