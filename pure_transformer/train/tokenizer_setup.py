"""Which tokenizer a run uses, trained on the run's own data when none is given.

A run's tokenizer lives in ``DIR/tokenizer/`` (and a copy of ``tokenizer.json``
goes into every checkpoint), so a resumed or evaluated run always encodes text
exactly as it was trained.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterator

import torch.distributed as dist

from ..data.registry import open_source
from ..data.sources import first_pass
from ..tokenizer.bpe import Tokenizer, train_tokenizer


def sample_texts(sources: dict[str, float], max_docs: int) -> Iterator[str]:
    """Up to ``max_docs`` training documents, split across sources by weight; a
    source is read at most once through (small sources give all they have)."""
    total = sum(sources.values())
    for name, weight in sources.items():
        docs = open_source(name, "train")
        quota = max(1, int(max_docs * weight / total))
        yield from (d.text for d in islice(first_pass(docs), quota))


def prepare_tokenizer(name_or_path: str | None, run_dir: Path, vocab_size: int, sources: dict[str, float],
                      is_main: bool = True, max_docs: int = 100_000) -> Tokenizer:
    """Load ``name_or_path``; else reuse ``run_dir/tokenizer``; else train a
    byte-level BPE of ``vocab_size`` on a sample of ``sources`` (rank 0 trains,
    the other ranks wait and load it)."""
    if name_or_path is not None:
        return Tokenizer.load(name_or_path)
    out = run_dir / "tokenizer"
    if is_main and not (out / "tokenizer.json").exists():
        print(f"training a {vocab_size}-token byte-level BPE on the training sources into {out}")
        train_tokenizer(sample_texts(sources, max_docs), vocab_size, out)
    if dist.is_initialized():
        dist.barrier()
    return Tokenizer.load(out)
