"""Keeping evaluation questions out of training data, and measuring overlap.

Two tools:

* :class:`ContaminationGuard` is a set of hashed, normalised evaluation
  questions. The MCQ sources in :mod:`pure_transformer.data.sources` consult
  it for every training record and drop exact matches (counting them), so a
  question that appears in a MedQA/MedMCQA test or validation split never
  reaches the model during pretraining. Normalisation (case, whitespace,
  punctuation) catches copies that differ only in formatting.
* :func:`ngram_overlap` measures the looser kind of contamination: how many
  evaluation items share at least one word n-gram (13 by default, as in the
  GPT-3 paper) with the first documents of a training stream.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"\w+")


def normalize_question(text: str) -> str:
    """Lower-case words joined by single spaces: formatting-insensitive question text."""
    return " ".join(_WORD.findall(text.lower()))


def question_key(text: str) -> str:
    """A short stable hash of the normalised question (blake2b, not Python's salted hash)."""
    return hashlib.blake2b(normalize_question(text).encode("utf-8"), digest_size=12).hexdigest()


def eval_questions(records: Iterable[Any]) -> Iterator[str]:
    """The question text of each MCQ record (any schema ``normalize_mcq`` knows)."""
    from ..mcq.schemas import normalize_mcq

    for i, record in enumerate(records):
        yield normalize_mcq(record, where=f"eval record {i}").question  # 0-based, as evaluate counts


class ContaminationGuard:
    """Rejects training questions that also appear in an evaluation split.

    ``dropped`` counts rejections since construction (sources copy it into their
    state so the count survives a resume).
    """

    def __init__(self, eval_questions: Iterable[str] = ()) -> None:
        self._blocked: set[str] = {question_key(q) for q in eval_questions}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._blocked)

    def fresh_copy(self) -> ContaminationGuard:
        """The same blocked questions with no drops counted yet."""
        copy = ContaminationGuard()
        copy._blocked = set(self._blocked)
        return copy

    def add(self, questions: Iterable[str]) -> None:
        """Block more evaluation questions."""
        self._blocked.update(question_key(q) for q in questions)

    def admits(self, question: str) -> bool:
        """True when ``question`` is not an evaluation question; counts the drops."""
        if question_key(question) in self._blocked:
            self.dropped += 1
            return False
        return True


@dataclass(frozen=True)
class OverlapReport:
    """Result of :func:`ngram_overlap`."""

    n: int
    train_docs: int
    eval_items: int
    contaminated_items: int  # eval items sharing at least one n-gram with training
    eval_ngrams: int  # distinct n-grams over all eval items
    shared_ngrams: int  # of those, how many occur in the training docs

    @property
    def item_fraction(self) -> float:
        return self.contaminated_items / self.eval_items if self.eval_items else 0.0

    @property
    def ngram_fraction(self) -> float:
        return self.shared_ngrams / self.eval_ngrams if self.eval_ngrams else 0.0

    def summary(self) -> str:
        return (
            f"{self.n}-gram overlap over {self.train_docs} training docs: "
            f"{self.contaminated_items}/{self.eval_items} eval items ({self.item_fraction:.1%}) "
            f"share an n-gram; {self.shared_ngrams}/{self.eval_ngrams} eval n-grams "
            f"({self.ngram_fraction:.1%}) seen in training"
        )


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(
    train_texts: Iterable[str], eval_texts: Sequence[str], n: int = 13
) -> OverlapReport:
    """Word n-gram overlap between training documents and evaluation items.

    Memory is proportional to the evaluation set only: its n-grams are indexed
    first and the training documents are streamed past them, so ``train_texts``
    can be the first K documents of a long stream. Items shorter than ``n``
    words have no n-grams and count as clean.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    owners: dict[tuple[str, ...], list[int]] = {}
    for item, text in enumerate(eval_texts):
        for gram in _ngrams(text, n):
            owners.setdefault(gram, []).append(item)

    seen: set[tuple[str, ...]] = set()
    train_docs = 0
    for text in train_texts:
        train_docs += 1
        words = _WORD.findall(text.lower())
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in owners:
                seen.add(gram)

    contaminated = {item for gram in seen for item in owners[gram]}
    return OverlapReport(
        n=n,
        train_docs=train_docs,
        eval_items=len(eval_texts),
        contaminated_items=len(contaminated),
        eval_ngrams=len(owners),
        shared_ngrams=len(seen),
    )
