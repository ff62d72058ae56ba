"""Shared fixtures: the bundled offline corpus on disk and a tiny trained tokenizer.

Both are session-scoped because they cost a second or two to build and every
data test needs them. ``write_jsonl`` is a helper fixture for tests that need
their own small files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def bundled():
    """The in-memory bundled corpus (seed 0), as the bundled-* sources see it."""
    from pure_transformer.bundled.synthetic import bundled_corpus

    return bundled_corpus(seed=0)


@pytest.fixture(scope="session")
def bundled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled corpus written as files: general.jsonl, medical.jsonl, medqa_{train,validation,test}.jsonl."""
    from pure_transformer.bundled.synthetic import write_bundled

    out = tmp_path_factory.mktemp("bundled")
    write_bundled(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory, bundled):
    """A 512-token byte-level BPE trained on the bundled text (fast to train, real merges)."""
    from pure_transformer.answer_format import AnswerFormat
    from pure_transformer.tokenizer import train_tokenizer

    texts = bundled.general + bundled.medical + [AnswerFormat.LETTER.pretrain_text(m) for m in bundled.mcq["train"]]
    return train_tokenizer(texts, 512, tmp_path_factory.mktemp("tok"), show_progress=False)


@pytest.fixture
def write_jsonl() -> Callable[[Path, Iterable[dict[str, Any]]], Path]:
    """Write records as JSON lines to a path (parents created); returns the path."""

    def write(path: Path, records: Iterable[dict[str, Any]]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        return path

    return write
