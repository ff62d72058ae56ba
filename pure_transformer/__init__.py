"""pure_transformer: a small decoder-only Transformer trained from scratch and
specialised with GRPO for USMLE-style medical multiple-choice questions.

The main entry points are importable from the package itself (the README's
"From Python" section runs them end to end): ``train_tokenizer``, ``pretrain``,
``grpo``, ``evaluate``, ``load_model``, ``Engine``/``SamplingParams``, ``export`` and
``import_checkpoint`` (an open Llama-3.x/Qwen2.5/Qwen3 transformers folder as a checkpoint),
with their configs and presets.

Names resolve on first use, so ``import pure_transformer`` stays cheap (the
command line's ``--help`` never loads torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "AnswerFormat": ("mcq.answer_format", "AnswerFormat"),
    "MCQ": ("mcq.record", "MCQ"),
    "ModelConfig": ("model.config", "ModelConfig"),
    "Transformer": ("model.transformer", "Transformer"),
    "build_model": ("model.transformer", "build_model"),
    "Tokenizer": ("tokenizer.bpe", "Tokenizer"),
    "train_tokenizer": ("tokenizer.bpe", "train_tokenizer"),
    "bundled_texts": ("bundled.synthetic", "training_texts"),
    "load_model": ("checkpoint.store", "load_model"),
    "Engine": ("inference.engine", "Engine"),
    "SamplingParams": ("inference.engine", "SamplingParams"),
    "PretrainConfig": ("config.pretrain", "PretrainConfig"),
    "pretrain_preset": ("config.pretrain", "pretrain_preset"),
    "pretrain": ("train.pretrain", "pretrain"),
    "GRPOConfig": ("config.rl", "GRPOConfig"),
    "grpo_preset": ("config.rl", "grpo_preset"),
    "grpo": ("rl.train", "grpo_train"),
    "load_mcqs": ("data.registry", "load_mcqs"),
    "evaluate": ("eval.run", "evaluate"),
    "export": ("checkpoint.export", "export_hf"),
    "import_checkpoint": ("checkpoint.open_weights", "import_checkpoint"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pure_transformer' has no attribute '{name}'")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
