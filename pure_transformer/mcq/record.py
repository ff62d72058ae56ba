"""One normalised multiple-choice question and the helpers around it.

Every MCQ source the project reads (MedQA 4- and 5-option, MedMCQA, PubMedQA,
MMLU, Medbullets, the bundled synthetic set) is turned into a single
:class:`MCQ` record by :func:`~pure_transformer.mcq.schemas.normalize_mcq`, so
prompt formatting, answer extraction and scoring never need to know where a
question came from.

A question has 2 to 10 options lettered from A in order (A-J); each record
carries its own count, so a file may mix 4- and 5-option rows, and chance is
``1 / len(mcq.options)`` per question. An optional ``context`` (PubMedQA's
abstract) is shown before the question.

How a record is asked and answered (letter, cloze text, or explanation first)
lives in :mod:`pure_transformer.mcq.answer_format`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from ..errors import DataError

LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJ")
"""Every option letter a question may use, in order; a k-option question uses the first k."""

MIN_OPTIONS, MAX_OPTIONS = 2, len(LETTERS)


def letter_span(count: int) -> str:
    """``"A-D"`` for 4 options: how messages name a question's letters."""
    return f"A-{LETTERS[count - 1]}"


@dataclass(frozen=True)
class MCQ:
    """A question with 2-10 options lettered A.. in order, and one gold letter."""

    question: str
    options: dict[str, str]  # the keys are the first k letters of LETTERS, in that order
    answer: str  # the gold letter
    explanation: str | None = None
    subject: str | None = None
    context: str | None = None  # shown before the question (PubMedQA's abstract)
    tags: dict[str, str] = field(default_factory=dict, compare=False)
    """The record's other short fields as text (``meta_info``, ``subject_name`` ...), by name: what
    ``evaluate --by FIELD`` groups by. Not part of the question."""

    def __post_init__(self) -> None:
        if not isinstance(self.options, dict):
            raise DataError(f"MCQ options must be a dict, got {type(self.options).__name__}")
        keys = tuple(self.options)
        count = len(keys)
        if not MIN_OPTIONS <= count <= MAX_OPTIONS or set(keys) != set(LETTERS[:count]):
            raise DataError(
                f"MCQ has {count} option(s) ({', '.join(map(str, keys))}); "
                f"{MIN_OPTIONS} to {MAX_OPTIONS} lettered from A in order (A-B ... A-J) are required"
            )
        if not isinstance(self.question, str) or not self.question.strip():
            raise DataError("MCQ question is empty")
        for letter in LETTERS[:count]:
            text = self.options[letter]
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"MCQ option {letter} is empty")
        if self.answer not in LETTERS[:count]:
            raise DataError(f"MCQ answer {self.answer!r} is not one of {', '.join(LETTERS[:count])}")
        if self.context is not None and (not isinstance(self.context, str) or not self.context.strip()):
            raise DataError("MCQ context, when given, must be non-empty text")
        # Keep A.. order whatever order the caller used, so formatting is stable.
        if keys != LETTERS[:count]:
            object.__setattr__(self, "options", {k: self.options[k] for k in LETTERS[:count]})

    @property
    def letters(self) -> tuple[str, ...]:
        """This question's option letters, e.g. ("A", "B", "C") for PubMedQA."""
        return tuple(self.options)

    @property
    def answer_text(self) -> str:
        """The text of the gold option."""
        return self.options[self.answer]

    @property
    def chance(self) -> float:
        """The accuracy of a uniform random guess."""
        return 1.0 / len(self.options)


# --------------------------------------------------------------------------
# Option shuffling
# --------------------------------------------------------------------------


def _relettered(mcq: MCQ, order: list[str]) -> MCQ:
    """``mcq`` with option ``order[i]`` moved to letter i; the answer moves with its text."""
    options = {new: mcq.options[old] for new, old in zip(mcq.letters, order)}
    return replace(mcq, options=options, answer=mcq.letters[order.index(mcq.answer)])


def shuffle_options(mcq: MCQ, rng: random.Random) -> MCQ:
    """Permute the options with ``rng`` and move the answer letter with its text.

    Used to check that a model reads the options rather than leaning on a
    letter prior.
    """
    order = list(mcq.letters)
    rng.shuffle(order)
    return _relettered(mcq, order)


def rotate_options(mcq: MCQ, shift: int) -> MCQ:
    """The options re-lettered cyclically: option A moves to letter ``shift`` (mod k), and
    the answer letter moves with its text. A gain that survives every rotation is not a
    letter prior."""
    k = len(mcq.options)
    letters = mcq.letters
    return _relettered(mcq, [letters[(i - shift) % k] for i in range(k)])
