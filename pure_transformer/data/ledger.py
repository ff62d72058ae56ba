"""The contamination ledger: a fingerprint of every question a checkpoint was trained on.

A file name can lie (``medqa.jsonl`` may hold the test split); the questions cannot.
Every checkpoint carries ``ledger.json``: one fingerprint per MCQ in its training
sources, grouped in entries, one per phase and source:

- pretraining writes the train split of each MCQ source in its mixture (what the
  guard admits: every question the stream can yield, not only those reached so far);
- GRPO copies its initial checkpoint's entries and adds its own training questions,
  so a checkpoint's ledger holds its parents' too;
- resume reads the ledger back from the checkpoint, and ``export`` copies it.

``evaluate`` fingerprints every scored question and scores only those the ledger
does not hold (unless ``--include-contaminated``).

The fingerprint survives re-casing, re-punctuation and re-lettering: blake2b (8
bytes) of the question's lower-cased words, then each option's lower-cased words,
the options sorted, so their letters and order do not count. A question asked with
other options (MMLU's "Which of the following is true?") is another question.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..mcq.record import MCQ
from .contamination import normalize_question

LEDGER_FILE = "ledger.json"
FORMAT = "pure_transformer.ledger/1"
IMPORTED = "import"
"""The phase of an imported open model's entry: it holds no fingerprints, and says that the model's own
pretraining data is unknown to the ledger."""
NORMALIZATION = ("blake2b-64 of the question's lower-cased words, then each option's lower-cased words, "
                 "options sorted (letters and order ignored)")


def fingerprint(mcq: MCQ) -> str:
    """16 hex digits naming ``mcq`` whatever its casing, punctuation and option letters."""
    options = sorted(normalize_question(text) for text in mcq.options.values())
    text = "\x1e".join([normalize_question(mcq.question), *options])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"ledger").hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    """The questions one phase trained on from one source."""

    phase: str  # "pretrain" | "rl" | "import" (an open model's own pretraining: no fingerprints, unknown)
    source: str
    fingerprints: tuple[str, ...]  # sorted, distinct

    @classmethod
    def of(cls, phase: str, source: str, questions: Iterable[MCQ]) -> "LedgerEntry":
        return cls(phase, source, tuple(sorted({fingerprint(q) for q in questions})))


@dataclass(frozen=True)
class Ledger:
    """Every training question of a checkpoint and of the checkpoints it started from."""

    entries: tuple[LedgerEntry, ...] = ()
    _all: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_all", frozenset(f for e in self.entries for f in e.fingerprints))

    def __len__(self) -> int:
        """Distinct fingerprints over all entries."""
        return len(self._all)

    def __contains__(self, mcq: MCQ) -> bool:
        return fingerprint(mcq) in self._all

    def extended(self, entries: Iterable[LedgerEntry]) -> "Ledger":
        """This ledger with ``entries`` added after its own."""
        return Ledger((*self.entries, *entries))

    @property
    def unseen(self) -> list[str]:
        """The imported models this checkpoint descends from: what they read before is not in the ledger."""
        return [e.source for e in self.entries if e.phase == IMPORTED]

    def summary(self) -> str:
        """``"1,184 questions (pretrain bundled-mcq 1,184; rl bundled-mcq 1,064)"``."""
        parts = "; ".join(f"{e.phase} {e.source} {len(e.fingerprints):,}" for e in self.entries)
        return f"{len(self):,} questions" + (f" ({parts})" if parts else "")

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "normalization": NORMALIZATION, "questions": len(self),
                           "entries": [{"phase": e.phase, "source": e.source, "count": len(e.fingerprints),
                                        "fingerprints": list(e.fingerprints)} for e in self.entries]}, indent=0)

    @classmethod
    def from_json(cls, text: str, where: str) -> "Ledger":
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            return cls(tuple(LedgerEntry(str(e["phase"]), str(e["source"]), tuple(map(str, e["fingerprints"])))
                             for e in data["entries"]))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise DataError(f"{where} is not a readable ledger: {err}") from None


def sources_ledger(phase: str, sources: Iterable[str]) -> Ledger:
    """A ledger of the train split of each MCQ source among ``sources`` (text sources hold no questions)."""
    from .registry import SourceKind, load_mcqs, source_kind

    return Ledger(tuple(LedgerEntry.of(phase, name, load_mcqs(name, "train"))
                        for name in sources if source_kind(name) is SourceKind.MCQ))


def read_ledger(ckpt: str | Path) -> Ledger | None:
    """The ledger saved in checkpoint folder ``ckpt``, or None for one made before ledgers."""
    path = Path(ckpt) / LEDGER_FILE
    if not path.is_file():
        return None
    return Ledger.from_json(path.read_text(), str(path))


def split_contaminated(questions: list[MCQ], ledger: Ledger | None) -> tuple[list[MCQ], list[MCQ]]:
    """(clean, contaminated) in their original order; with no ledger, every question is clean."""
    if ledger is None:
        return list(questions), []
    flags = [q in ledger for q in questions]
    return ([q for q, bad in zip(questions, flags) if not bad], [q for q, bad in zip(questions, flags) if bad])
