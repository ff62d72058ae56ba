"""One normalised multiple-choice question and the helpers around it.

Every MCQ source the project reads (MedQA on the hub, its bigbio variant,
MedMCQA, the bundled synthetic set) is turned into a single :class:`MCQ`
record by :func:`normalize_mcq`, so prompt formatting, answer extraction and
scoring never need to know where a question came from.

The prompt format is fixed by the design::

    Question: {question}

    A. {option A}
    B. {option B}
    C. {option C}
    D. {option D}

    Answer: 

and the model is expected to continue with the answer letter.
"""

from __future__ import annotations

import random
import re
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
# Formatting
# --------------------------------------------------------------------------


def format_prompt(mcq: MCQ) -> str:
    """The evaluation prompt; it ends with ``"Answer: "`` so the next token is the letter."""
    lines = "\n".join(f"{letter}. {mcq.options[letter]}" for letter in LETTERS)
    return f"Question: {mcq.question}\n\n{lines}\n\nAnswer: "


def format_pretrain_text(mcq: MCQ) -> str:
    """A worked example for training text: the prompt, the gold option and the explanation."""
    text = f"{format_prompt(mcq)}{mcq.answer}. {mcq.answer_text}"
    if mcq.explanation:
        text += f"\nExplanation: {mcq.explanation}"
    return text


# --------------------------------------------------------------------------
# Answer extraction
# --------------------------------------------------------------------------

# Rule 1: an explicit cue and then a letter. "answer" outranks "option"/"choice",
# so "Option A is tempting, but the answer is C" gives C.
def _cue(words: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?i:\b(?:{words})\b(?:\s+(?:is|would\s+be|should\s+be))?)"
        r"\s*[:=\-]?\s*(?i:(?:probably|likely|clearly)\s+)?"
        r"[(\[*\"']*(?P<letter>[A-Da-d])(?![A-Za-z0-9])"
    )


_CUES = (_cue("answer"), _cue("option|choice"))
# Rule 2: the completion starts with the letter ("C", "C.", "(B)", "**D**").
_LEADING = re.compile(r"[(\[*\s]*(?P<letter>[A-D])(?=$|[\s.):\],*\-])")
_LEADING_LOWER = re.compile(r"(?:\((?P<a>[a-d])\)|(?P<b>[a-d])\)|(?P<c>[a-d])\.?\s*$)")
# Rule 3: a verdict in free text ("it's D", "I'd go with B", "D is correct").
_VERDICT = re.compile(
    r"(?i:\b(?:is|it's|it\s+is|be|choose|pick|select|go\s+with)\s+)[(\[*]*(?P<a>[A-D])(?![A-Za-z0-9])"
    r"|\b(?P<b>[A-D])\)?\s+(?i:is\s+(?:the\s+)?(?:correct|right|best|answer))"
)
# "A and B", "B or C": naming two letters together is not a single answer.
_CONJOINED = re.compile(r"\s*(?:,|/|\band\b|\bor\b)\s*[(\[*]*[A-Da-d](?![A-Za-z0-9])")
# "A patient ...": a capital A followed by a lowercase word is the article.
_ARTICLE = re.compile(r"A\s+[a-z]")


def _conjoined(text: str, end: int) -> bool:
    return _CONJOINED.match(text, end) is not None


def _lowercase_ok(text: str, end: int) -> bool:
    """After a cue, accept a lowercase letter only if no word follows it ("answer: b",
    not "the answer is a beta blocker")."""
    rest = text[end:]
    return re.match(r"\s*(?:$|[.):\],*\n])", rest) is not None


def extract_answer(text: str) -> str | None:
    """Return the answer letter (A-D) in a model completion, or None.

    ``text`` is what the model generated after ``"Answer: "``. Rules, in order;
    the first one that matches decides:

    1. **Explicit cue.** ``answer`` (or, failing that, ``option``/``choice``),
       optionally followed by ``is``, ``:`` or ``-``, and then a letter: "The
       answer is B", "Answer: (C)", "Correct option: d". The *first* cue wins, so
       "Answer: C\\nExplanation: A is wrong" gives C.
    2. **Leading letter.** The completion (after whitespace, ``(``, ``[`` or
       ``*``) starts with a capital letter standing alone: "C", " C.", "C) foo",
       "(B)", "**D**", "A. Aspirin".
    3. **Verdict in prose.** "I think it's D because ...", "I'd go with B",
       "C is correct".

    Case policy: capital letters are accepted everywhere, except a capital "A"
    directly followed by a lowercase word ("A patient ..."), which is the article.
    A lowercase letter is accepted only when it cannot be an English word: right
    after a cue with no word following ("Answer: b"), in brackets ("(b)", "b)"),
    or as the whole completion ("b", "b."). So "a patient ..." gives None.

    Anything naming two letters together ("Both A and B", "A or C"), letters
    outside A-D ("E"), glued letters ("AB") and answers with no letter ("None of
    the above", "") give None.
    """
    text = text.strip()
    if not text:
        return None

    for cue in _CUES:
        for match in cue.finditer(text):
            letter = match.group("letter")
            if letter.islower() and not _lowercase_ok(text, match.end()):
                continue
            return None if _conjoined(text, match.end()) else letter.upper()

    leading = _LEADING.match(text)
    if leading and not _ARTICLE.match(text, leading.start("letter")):
        return None if _conjoined(text, leading.end()) else leading.group("letter")
    lower = _LEADING_LOWER.match(text)
    if lower:
        return (lower.group("a") or lower.group("b") or lower.group("c")).upper()

    verdicts = {m.group("a") or m.group("b") for m in _VERDICT.finditer(text)}
    if len(verdicts) == 1:
        return verdicts.pop()
    return None


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
