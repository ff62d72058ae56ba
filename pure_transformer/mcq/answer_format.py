"""How a multiple-choice question is asked and answered: one definition per formulation.

Every place that turns an :class:`~pure_transformer.mcq.record.MCQ` into text or reads
an answer back goes through :class:`AnswerFormat`, so the pretraining text, the
prompt, the RL reward and the generate-mode scorer can never disagree:

``letter`` (the design's multiple-choice formulation)::

    Question: {question}\\n\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n\\nAnswer: C. {C's text}

with as many option lines as the question has (2-10, A-J), and, for a question
with a ``context`` (PubMedQA's abstract), ``Context: {context}\\n\\n`` first.

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
  "**C**", "Answer: C", "The answer is C"), and the letter must be one of the
  question's. A capital letter followed by ``-``, a digit or a word is an
  article or a name, never an answer ("A 49-year-old", "C-reactive protein",
  "D-dimer"). Nothing later in the text can override the leading answer, and a
  second letter on the line ("A or B", "A B", "A, or B", "A (or B)") is no answer.
- ``text`` / ``explain``: only the final ``Answer:`` line counts (``text``
  completions begin on that line). The line must *be* one option: after
  :func:`normalize` it equals that option's normalised text, optionally after
  the option's own letter ("C. Warfarin"). Anything else on the line ("not
  tremor", "tremor (not resting tremor)", "it is probably warfarin") is no
  answer; so is a bare letter. :func:`answer_cause` says why a line failed.
- :func:`normalize` keeps numbers whole, with their sign, comparator, decimals,
  range and percent ("-5", "0.5", "<5%", "2-5"), so "0.5 mg" never reads as
  "5 mg". Questions whose options normalise to nothing or to each other cannot
  be answered by text; :func:`require_answerable` refuses them in one error line.
"""

from __future__ import annotations

import re
from enum import Enum

from ..errors import DataError
from .prompts import format_prompt_parts
from .record import LETTERS, MCQ

STOP_STRINGS: tuple[str, ...] = ("\n\nQuestion:", "\n\nContext:")
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
        return "".join(self.prompt_parts(mcq))

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
        return self.read(mcq, completion)[0]

    def read(self, mcq: MCQ, completion: str) -> tuple[str | None, str | None]:
        """(the answered letter, None) or (None, why not: one of :data:`NO_ANSWER_CAUSES`)."""
        completion = cut_at_stop(completion)
        if self is AnswerFormat.LETTER:
            letter = extract_letter(completion, mcq.letters)
            return (letter, None) if letter else (None, "no answer letter")
        line = completion.split("\n", 1)[0] if self is AnswerFormat.TEXT else final_answer_line(completion)
        if line is None:
            return None, "no answer line"
        letter = named_option(mcq, line)
        return (letter, None) if letter else (None, answer_cause(mcq, line))

    def prompt_parts(self, mcq: MCQ) -> tuple[str, str, str]:
        """:meth:`prompt` as (head, body, tail), joined without separators
        (:func:`~pure_transformer.mcq.prompts.format_prompt_parts`: only ``body`` is ever cut)."""
        return format_prompt_parts(mcq, "Explanation:" if self is AnswerFormat.EXPLAIN else "Answer:")

    def stop_strings(self) -> tuple[str, ...]:
        """Where generation ends: a new question always; the letter and text answers
        also end with their line (an explanation spans several)."""
        return STOP_STRINGS if self is AnswerFormat.EXPLAIN else ("\n", *STOP_STRINGS)

    def max_new_tokens(self) -> int:
        """A generation budget that fits the answer (an explanation is 1-3 sentences)."""
        return 96 if self is AnswerFormat.EXPLAIN else 24


def has_explanation(mcq: MCQ) -> bool:
    return bool(mcq.explanation and mcq.explanation.strip())


def cut_at_stop(completion: str) -> str:
    """``completion`` up to the first stop string (the engine stops there too)."""
    for stop in STOP_STRINGS:
        completion = completion.split(stop, 1)[0]
    return completion


# ----------------------------------------------------------------- letter
# An optional cue at the very start, opening brackets, the letter, closing brackets and punctuation.
_LEADING_LETTER = re.compile(
    r"\s*(?:[*]*(?i:(?:the\s+)?(?:correct\s+)?answer(?:\s+is)?\s*:?\s*))?"
    r"[(\[*]*(?P<letter>[A-Ja-j])(?P<close>[)\]*]*)(?P<punct>[.:,]?)"
)
# A second letter on the answer's line: after a conjunction or separator ("A or B", "A, B", "A/B",
# "A (or B)", "A. or B"), or standing alone ("A B", "A B."), it makes the answer ambiguous.
_CONJOINED = re.compile(
    r"[ \t]*(?:(?:[,/&;]|\(|\band\b|\bor\b)[ \t]*)+[(\[*]*[A-Ja-j](?![A-Za-z0-9-])"
    r"|[ \t]+[(\[*]*[A-J](?:[)\]*]*[.:,]?[ \t]*(?:$|\n)|[.):][ \t])"
)


def extract_letter(completion: str, letters: tuple[str, ...] = LETTERS) -> str | None:
    """The answer letter a completion *starts* with, if it is one of ``letters``; else None.

    Accepted: "C", " C.", "C. Aspirin", "(B)", "b)", "**D**", "Answer: C",
    "The answer is (B)". Refused: "A 49-year-old man", "A 2 diabetes",
    "C-reactive protein", "D-dimer", "A patient", "AB", "A or B", "A B",
    "A (or B)", "the answer is a beta blocker", a letter the question does not
    have, and any letter that is not at the start ("I think it's D").
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
    after_letter = completion[match.end("letter") + len(match.group("close")):]
    if _CONJOINED.match(after_letter) or _CONJOINED.match(rest):
        return None
    return letter.upper() if letter.upper() in letters else None


# ------------------------------------------------------------ text/explain
_ANSWER_LINE = re.compile(r"^[ \t]*Answer:[ \t]*(?P<rest>.*)$", re.MULTILINE)

# A number kept whole: an optional sign or comparator (not after a letter or digit, so "covid-19" is
# "covid 19"), digits with decimals or thousands, an optional range end, an optional percent.
_NUMBER = r"(?:(?<![^\W_])[-+−±<>≤≥~][ \t]?)?\d+(?:[.,]\d+)*(?:[ \t]?[-–][ \t]?\d+(?:[.,]\d+)*)?%?"
# A word: letters of any script ("α-blocker" is not "β-blocker") and digits, at least one letter, and an
# ion's charge ("Ca++" is not "Ca").
_WORD = r"[^\W_]*[^\W\d_][^\W_]*\+*"
_TOKEN = re.compile(rf"{_NUMBER}|{_WORD}|[<>≤≥]")


def normalize(text: str) -> str:
    """Lower case, one space between tokens: the form in which option names are matched.

    Tokens are words and whole numbers (see ``_NUMBER``): "0.5 mg" is "0.5 mg",
    never "0 5 mg"; "-5 mg", "<5%", ">5%" and "2-5 mg" stay apart from "5 mg".
    Words keep every script's letters and a trailing charge: "α-1 antitrypsin",
    "β-blocker" and "Ca++" stay apart from "1 antitrypsin", "blocker" and "Ca".
    """
    return " ".join(re.sub(r"[ \t]", "", t).replace("−", "-") for t in _TOKEN.findall(text.lower()))


def final_answer_line(completion: str) -> str | None:
    """What follows ``Answer:`` on the completion's last answer line, or None."""
    lines = list(_ANSWER_LINE.finditer(completion))
    return lines[-1].group("rest") if lines else None


# The option's own letter before its text, as the letter format writes it: "C. ", "(C) ", "C) ".
_LETTER_LABEL = re.compile(r"\s*[*]*[(\[]?(?P<letter>[A-J])(?:[)\]]|[.:])[ \t]+")


def named_option(mcq: MCQ, line: str) -> str | None:
    """The option that ``line`` *is*: its normalised text equals the option's, optionally after
    that option's letter ("C. Warfarin"). Anything more, less or different is None."""
    label = _LETTER_LABEL.match(line)
    if label is not None:
        letter = label.group("letter")
        body = normalize(line[label.end():])
        if letter in mcq.options and body == normalize(mcq.options[letter]):
            return letter
    said = normalize(line)
    named = [k for k, text in mcq.options.items() if said and said == normalize(text)]
    return named[0] if len(named) == 1 else None


NO_ANSWER_CAUSES: tuple[str, ...] = ("no answer letter", "no answer line", "names no option", "names several")
"""Why a completion answers nothing: the letter format found no leading letter; the text formats found
no ``Answer:`` line, a line that is not one option, or a line that mentions several options."""


def answer_cause(mcq: MCQ, line: str) -> str:
    """Why ``line`` (an answer line that :func:`named_option` refused) names no option."""
    said = f" {normalize(line)} "
    mentioned = [k for k, text in mcq.options.items() if normalize(text) and f" {normalize(text)} " in said]
    return "names several" if len(mentioned) > 1 else "names no option"


def check_answerable(mcq: MCQ) -> str | None:
    """Why the text formats cannot read an answer to ``mcq`` (an option that normalises to
    nothing, or two options that normalise alike), or None when every option can be named."""
    keys = {k: normalize(text) for k, text in mcq.options.items()}
    empty = [k for k, v in keys.items() if not v]
    if empty:
        return f"option {empty[0]} ({mcq.options[empty[0]]!r}) has no words or numbers to name it by"
    seen: dict[str, str] = {}
    for k, v in keys.items():
        if v in seen:
            return f"options {seen[v]} and {k} read the same ({mcq.options[seen[v]]!r}, {mcq.options[k]!r})"
        seen[v] = k
    return None


def require_answerable(questions: list[MCQ], fmt: AnswerFormat, where: str) -> None:
    """Refuse, in one :class:`DataError`, questions the text formats can never score as
    correct (:func:`check_answerable`): a reward that cannot pay teaches nothing, and an
    accuracy that cannot count them is wrong. The letter format reads letters, so it takes any."""
    if fmt is AnswerFormat.LETTER:
        return
    bad = [(i, why) for i, q in enumerate(questions) if (why := check_answerable(q)) is not None]
    if bad:
        i, why = bad[0]
        raise DataError(f"{len(bad)} of the {len(questions)} {where} questions cannot be answered in the "
                        f"{fmt.value} format (question {i}, {questions[i].question[:40]!r}: {why}); fix or drop "
                        "them, or use the letter format")
