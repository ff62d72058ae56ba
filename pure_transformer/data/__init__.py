"""Data pipeline: sources -> mixture -> packing -> loader, and the contamination guard."""

DEFAULT_DATA_SHARDS = 16
"""Logical shards of the training stream (see ``loader``): 16 lets up to 16 readers (e.g. 8 ranks x 2
workers, or 4 x 4) share it evenly, while a single reader's 16 small pipelines stay cheap. Kept here, free
of imports, so the training config can name it without loading torch."""
