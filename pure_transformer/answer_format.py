"""How a multiple-choice question is asked and answered: one definition per formulation.

Every place that turns an :class:`~pure_transformer.mcq.MCQ` into text or reads
an answer back goes through :class:`AnswerFormat`, so the pretraining text, the
prompt, the RL reward and the generate-mode scorer can never disagree:

``letter`` (the design's multiple-choice formulation)::

    Question: {question}\\n\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n\\nAnswer: C. {C's text}

``text`` (cloze: the answer names the option's text)::

    ...\\n\\nAnswer: {gold option text}

``explain`` (a worked explanation first, then the option's text)::

    ...\\n\\nExplanation: {explanation}\\nAnswer: {gold option text}

A record without an explanation (GBaker's MedQA has none; MedMCQA has ``exp``)
is rendered in the ``text`` form by ``explain``: its pretraining text then
teaches the answer line alone (:func:`has_explanation` counts them).

Reading answers back (:meth:`AnswerFormat.parse`) is strict, because an RL
policy finds every loophole in a lenient parser:

- ``letter``: the completion must *start* with the answer ("C", "C.", "(C)",
  "**C**", "Answer: C", "The answer is C"). A capital letter followed by ``-``,
  a digit or a word is an article or a name, never an answer ("A 49-year-old",
  "C-reactive protein", "D-dimer"). Nothing later in the text can override the
  leading answer, and two letters together ("A or B") are no answer.
- ``text`` / ``explain``: only the final ``Answer:`` line counts (``text``
  completions begin on that line). It must name exactly one option, by a
  whole-word match of normalised text; a letter on that line is not read, and a
  missing line, an unknown answer or several options give no answer.
"""

from __future__ import annotations

import re
from enum import Enum

from .mcq import LETTERS, MCQ

STOP_STRINGS: tuple[str, ...] = ("\n\nQuestion:",)
"""Where every generated answer ends: a model that runs on into a new question is cut there."""


class AnswerFormat(str, Enum):
    LETTER = "letter"
    TEXT = "text"
    EXPLAIN = "explain"

    @classmethod
    def of_checkpoint(cls, meta: dict) -> AnswerFormat:
        """The format a checkpoint was trained in: RL checkpoints record it at the top
        level, pretraining ones in their config; checkpoints older than formats are ``letter``."""
        return cls(meta.get("answer_format") or meta.get("config", {}).get("answer_format") or "letter")

    # ------------------------------------------------------------ rendering
    def prompt(self, mcq: MCQ) -> str:
        """The text a model continues. ``letter`` and ``text`` end in ``"Answer:"``,
        ``explain`` in ``"Explanation:"``; the space before the answer belongs to
        the answer, as BPE fuses it with the next word."""
        cue = "Explanation:" if self is AnswerFormat.EXPLAIN else "Answer:"
        return f"{question_block(mcq)}\n\n{cue}"

    def target(self, mcq: MCQ) -> str:
        """The gold continuation of :meth:`prompt` (what pretraining text shows)."""
        if self is AnswerFormat.LETTER:
            text = f" {mcq.answer}. {mcq.answer_text}"
            return text + (f"\nExplanation: {mcq.explanation}" if mcq.explanation else "")
        if self is AnswerFormat.EXPLAIN:
            return f" {mcq.explanation}\nAnswer: {mcq.answer_text}"
        return f" {mcq.answer_text}"

    def pretrain_text(self, mcq: MCQ) -> str:
        """One MCQ as a training document: the prompt and its gold continuation.
        ``explain`` without an explanation falls back to the ``text`` form."""
        fmt = AnswerFormat.TEXT if self is AnswerFormat.EXPLAIN and not has_explanation(mcq) else self
        return fmt.prompt(mcq) + fmt.target(mcq)

    # -------------------------------------------------------------- reading
    def parse(self, mcq: MCQ, completion: str) -> str | None:
        """The letter of the option that ``completion`` answers, or None (see the module doc)."""
        completion = cut_at_stop(completion)
        if self is AnswerFormat.LETTER:
            return extract_letter(completion)
        line = completion.split("\n", 1)[0] if self is AnswerFormat.TEXT else final_answer_line(completion)
        return None if line is None else named_option(mcq, line)

    def stop_strings(self) -> tuple[str, ...]:
        """Where generation ends: a new question always; the letter and text answers
        also end with their line (an explanation spans several)."""
        return STOP_STRINGS if self is AnswerFormat.EXPLAIN else ("\n", *STOP_STRINGS)

    def max_new_tokens(self) -> int:
        """A generation budget that fits the answer (an explanation is 1-3 sentences)."""
        return 96 if self is AnswerFormat.EXPLAIN else 24


def has_explanation(mcq: MCQ) -> bool:
    return bool(mcq.explanation and mcq.explanation.strip())


def question_block(mcq: MCQ) -> str:
    """``Question: ...`` and the four lettered options, shared by every format."""
    lines = "\n".join(f"{letter}. {mcq.options[letter]}" for letter in LETTERS)
    return f"Question: {mcq.question}\n\n{lines}"


def cut_at_stop(completion: str) -> str:
    """``completion`` up to the first stop string (the engine stops there too)."""
    for stop in STOP_STRINGS:
        completion = completion.split(stop, 1)[0]
    return completion


# ----------------------------------------------------------------- letter
# An optional cue at the very start, opening brackets, the letter, closing brackets and punctuation.
_LEADING_LETTER = re.compile(
    r"\s*(?:[*]*(?i:(?:the\s+)?(?:correct\s+)?answer(?:\s+is)?\s*:?\s*))?"
    r"[(\[*]*(?P<letter>[A-Da-d])(?P<close>[)\]*]*)(?P<punct>[.:,]?)"
)
_CONJOINED = re.compile(r"\s*(?:,|/|&|\band\b|\bor\b)\s*[(\[*]*[A-Da-d](?![A-Za-z0-9-])")


def extract_letter(completion: str) -> str | None:
    """The answer letter a completion *starts* with, or None.

    Accepted: "C", " C.", "C. Aspirin", "(B)", "b)", "**D**", "Answer: C",
    "The answer is (B)". Refused: "A 49-year-old man", "A 2 diabetes",
    "C-reactive protein", "D-dimer", "A patient", "AB", "A or B", "the answer
    is a beta blocker", and any letter that is not at the start ("I think it's D").
    """
    match = _LEADING_LETTER.match(completion)
    if match is None:
        return None
    letter, marked = match.group("letter"), bool(match.group("close") or match.group("punct"))
    rest = completion[match.end():]
    if marked:
        # "C." / "(B)" / "C:" must be followed by a space or the end, not "C.5" or "(B)x".
        ok = not rest or rest[0].isspace()
    else:
        # A bare letter ends its line or is followed by a capitalised option text: never by
        # "-", a digit or a lower-case word ("D-dimer", "A 49-year-old", "A patient").
        line = rest.split("\n", 1)[0]
        ok = not line.strip() or re.match(r"[ \t]+[A-Z(]", line) is not None
    if not ok or (letter.islower() and not (match.group("close") or not rest.strip())):
        return None  # a lower-case letter counts only as "b)" or alone: "a" is usually the article
    if _CONJOINED.match(completion[match.end("letter") + len(match.group("close")):]):
        return None
    return letter.upper()


# ------------------------------------------------------------ text/explain
_ANSWER_LINE = re.compile(r"^[ \t]*Answer:[ \t]*(?P<rest>.*)$", re.MULTILINE)


def final_answer_line(completion: str) -> str | None:
    """What follows ``Answer:`` on the completion's last answer line, or None."""
    lines = list(_ANSWER_LINE.finditer(completion))
    return lines[-1].group("rest") if lines else None


def normalize(text: str) -> str:
    """Lower case, words only, single spaces: the form in which option names are matched."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def named_option(mcq: MCQ, line: str) -> str | None:
    """The one option whose normalised text appears in ``line`` as whole words.

    An option named only inside a longer named option ("tremor" within "resting
    tremor") does not count separately. No option, or two, gives None.
    """
    said = f" {normalize(line)} "
    named = [k for k in LETTERS if f" {normalize(mcq.options[k])} " in said and normalize(mcq.options[k])]
    named = [k for k in named
             if not any(o != k and f" {normalize(mcq.options[k])} " in f" {normalize(mcq.options[o])} "
                        for o in named)]
    return named[0] if len(named) == 1 else None
