"""One normalised multiple-choice question and the helpers around it.

Every MCQ source the project reads (MedQA on the hub, its bigbio variant,
MedMCQA, the bundled synthetic set) is turned into a single :class:`MCQ`
record by :func:`normalize_mcq`, so prompt formatting, answer extraction and
scoring never need to know where a question came from.

How a record is asked and answered (letter, cloze text, or explanation first)
lives in :mod:`pure_transformer.answer_format`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping

from pure_transformer.errors import DataError

LETTERS: tuple[str, ...] = ("A", "B", "C", "D")


@dataclass(frozen=True)
class MCQ:
    """A four-option question with one gold letter."""

    question: str
    options: dict[str, str]  # exactly the keys A, B, C, D, in that order
    answer: str  # the gold letter
    explanation: str | None = None
    subject: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.options, dict):
            raise DataError(f"MCQ options must be a dict, got {type(self.options).__name__}")
        keys = tuple(self.options)
        if len(keys) != len(LETTERS) or set(keys) != set(LETTERS):
            raise DataError(
                f"MCQ has {len(keys)} options ({', '.join(map(str, keys))}); "
                "exactly 4 (A-D) are required"
            )
        if not isinstance(self.question, str) or not self.question.strip():
            raise DataError("MCQ question is empty")
        for letter in LETTERS:
            text = self.options[letter]
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"MCQ option {letter} is empty")
        if self.answer not in LETTERS:
            raise DataError(f"MCQ answer {self.answer!r} is not one of A, B, C, D")
        # Keep A-D order whatever order the caller used, so formatting is stable.
        if keys != LETTERS:
            object.__setattr__(self, "options", {k: self.options[k] for k in LETTERS})

    @property
    def answer_text(self) -> str:
        """The text of the gold option."""
        return self.options[self.answer]


# --------------------------------------------------------------------------
# Normalisation of the supported schemas
# --------------------------------------------------------------------------


def _location(where: str) -> str:
    return f" ({where})" if where else ""


def _require(record: Mapping[str, Any], fields: tuple[str, ...], schema: str, where: str) -> None:
    missing = [f for f in fields if record.get(f) is None]
    if missing:
        raise DataError(
            f"{schema} record is missing field(s) {', '.join(missing)}{_location(where)}"
        )


def _options_dict(raw: Any, where: str) -> dict[str, str]:
    """Options as a dict (MedQA, normalised form) or as [{key, value}, ...] (bigbio)."""
    if isinstance(raw, Mapping):
        options = {str(k).strip(): v for k, v in raw.items()}
    elif isinstance(raw, list) and all(isinstance(o, Mapping) and "key" in o for o in raw):
        options = {str(o["key"]).strip(): o.get("value") for o in raw}
    else:
        raise DataError(
            f"MCQ options must be a dict or a list of {{key, value}} dicts{_location(where)}"
        )
    if len(options) != len(LETTERS) or set(options) != set(LETTERS):
        raise DataError(
            f"MCQ has {len(options)} options ({', '.join(options)}); "
            f"exactly 4 (A-D) are required{_location(where)}"
        )
    return {k: _clean(options[k]) for k in LETTERS}


def _clean(value: Any) -> str:
    return value.strip() if isinstance(value, str) else value


def _build(where: str, **fields: Any) -> MCQ:
    """Construct an MCQ, adding `where` to any validation error."""
    try:
        return MCQ(**fields)
    except DataError as err:
        raise DataError(f"{err}{_location(where)}") from None


def _from_medqa(record: Mapping[str, Any], where: str) -> MCQ:
    _require(record, ("question", "options", "answer_idx"), "MedQA", where)
    options = _options_dict(record["options"], where)
    letter = str(record["answer_idx"]).strip().upper()
    meta = record.get("meta_info")
    return _build(
        where,
        question=_clean(record["question"]),
        options=options,
        answer=letter,
        subject=meta if isinstance(meta, str) and meta else None,
    )


def _from_medmcqa(record: Mapping[str, Any], where: str) -> MCQ:
    _require(record, ("question", "opa", "opb", "opc", "opd"), "MedMCQA", where)
    cop = record.get("cop")
    if cop is None or cop == -1:
        raise DataError(
            f"MedMCQA record has no answer (cop={cop}); its test labels are hidden, "
            f"use the validation split{_location(where)}"
        )
    if not isinstance(cop, int) or not 0 <= cop <= 3:
        raise DataError(f"MedMCQA cop must be an integer 0-3, got {cop!r}{_location(where)}")
    options = {letter: _clean(record[key]) for letter, key in zip(LETTERS, ("opa", "opb", "opc", "opd"))}
    return _build(
        where,
        question=_clean(record["question"]),
        options=options,
        answer=LETTERS[cop],
        explanation=record.get("exp") or None,
        subject=record.get("subject_name") or None,
    )


def _from_normalised(record: Mapping[str, Any], where: str) -> MCQ:
    _require(record, ("question", "options", "answer"), "MCQ", where)
    options = _options_dict(record["options"], where)
    return _build(
        where,
        question=_clean(record["question"]),
        options=options,
        answer=str(record["answer"]).strip().upper(),
        explanation=record.get("explanation") or None,
        subject=record.get("subject") or None,
    )


def normalize_mcq(record: Mapping[str, Any], *, where: str = "") -> MCQ:
    """Turn a raw record from any supported source into an :class:`MCQ`.

    The schema is detected from the keys: ``opa`` means MedMCQA, ``answer_idx``
    means MedQA (hub or bigbio option lists), otherwise the record must be in
    the normalised form written by :func:`mcq_to_record`. ``where`` (e.g.
    ``"train.jsonl line 7"``) is appended to error messages.
    """
    if not isinstance(record, Mapping):
        raise DataError(f"MCQ record must be a dict, got {type(record).__name__}{_location(where)}")
    if "opa" in record or "cop" in record:
        return _from_medmcqa(record, where)
    if "answer_idx" in record:
        return _from_medqa(record, where)
    return _from_normalised(record, where)


def mcq_to_record(mcq: MCQ) -> dict[str, Any]:
    """The normalised JSON-ready form; ``normalize_mcq`` reads it back unchanged."""
    record: dict[str, Any] = {
        "question": mcq.question,
        "options": dict(mcq.options),
        "answer": mcq.answer,
    }
    if mcq.explanation is not None:
        record["explanation"] = mcq.explanation
    if mcq.subject is not None:
        record["subject"] = mcq.subject
    return record


# --------------------------------------------------------------------------
# Option shuffling
# --------------------------------------------------------------------------


def shuffle_options(mcq: MCQ, rng: random.Random) -> MCQ:
    """Permute the options with ``rng`` and move the answer letter with its text.

    Used to check that a model reads the options rather than leaning on a
    letter prior.
    """
    order = list(LETTERS)
    rng.shuffle(order)
    options = {new: mcq.options[old] for new, old in zip(LETTERS, order)}
    answer = LETTERS[order.index(mcq.answer)]
    return MCQ(
        question=mcq.question,
        options=options,
        answer=answer,
        explanation=mcq.explanation,
        subject=mcq.subject,
    )


def rotate_options(mcq: MCQ, shift: int) -> MCQ:
    """The options re-lettered cyclically: option A moves to letter ``shift`` (mod 4), and
    the answer letter moves with its text. A gain that survives every rotation is not a
    letter prior."""
    shift %= len(LETTERS)
    options = {LETTERS[(i + shift) % len(LETTERS)]: mcq.options[k] for i, k in enumerate(LETTERS)}
    answer = LETTERS[(LETTERS.index(mcq.answer) + shift) % len(LETTERS)]
    return MCQ(question=mcq.question, options=options, answer=answer, explanation=mcq.explanation,
               subject=mcq.subject)
