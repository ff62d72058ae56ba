"""The answer formats: exact rendering, strict parsing, and parsers under attack.

A reward is an attack surface, so besides the happy path these tests feed the
parsers the strings an RL policy found (or would find) and measure constant
policies on the bundled questions: none may beat chance by much.
"""

from __future__ import annotations

import pytest

from pure_transformer.bundled.synthetic import bundled_corpus
from pure_transformer.mcq.answer_format import AnswerFormat, extract_letter, final_answer_line, named_option
from pure_transformer.mcq.record import MCQ

LETTERS = ("A", "B", "C", "D")  # these tests ask four-option questions

OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}
HEADER = ("Question: Which drug inhibits vitamin K epoxide reductase?\n\n"
          "A. Aspirin\nB. Heparin\nC. Warfarin\nD. Alteplase\n\n")


def _mcq(explanation: str | None = None, options: dict[str, str] | None = None) -> MCQ:
    return MCQ("Which drug inhibits vitamin K epoxide reductase?", dict(options or OPTIONS), "C",
               explanation=explanation)


# ------------------------------------------------------------------ rendering
@pytest.mark.fast
def test_prompts_and_pretraining_text_exact() -> None:
    plain, explained = _mcq(), _mcq("Warfarin blocks VKORC1.")
    assert AnswerFormat.LETTER.prompt(plain) == HEADER + "Answer:"
    assert AnswerFormat.TEXT.prompt(plain) == HEADER + "Answer:"
    assert AnswerFormat.EXPLAIN.prompt(plain) == HEADER + "Explanation:"
    assert AnswerFormat.LETTER.pretrain_text(plain) == HEADER + "Answer: C. Warfarin"
    assert AnswerFormat.LETTER.pretrain_text(explained) == HEADER + "Answer: C. Warfarin\nExplanation: Warfarin blocks VKORC1."
    assert AnswerFormat.TEXT.pretrain_text(explained) == HEADER + "Answer: Warfarin"
    assert AnswerFormat.EXPLAIN.pretrain_text(explained) == (
        HEADER + "Explanation: Warfarin blocks VKORC1.\nAnswer: Warfarin")


@pytest.mark.fast
def test_explain_without_explanation_is_the_text_form() -> None:
    # GBaker's MedQA has no explanations: such records teach the answer line alone.
    assert AnswerFormat.EXPLAIN.pretrain_text(_mcq()) == AnswerFormat.TEXT.pretrain_text(_mcq())
    assert AnswerFormat.EXPLAIN.pretrain_text(_mcq("  ")) == AnswerFormat.TEXT.pretrain_text(_mcq())


@pytest.mark.fast
@pytest.mark.parametrize("fmt", list(AnswerFormat))
def test_every_gold_target_parses_to_its_letter(fmt: AnswerFormat) -> None:
    for mcq in bundled_corpus().mcq["test"][:100]:
        assert fmt.parse(mcq, fmt.target(mcq)) == mcq.answer


# -------------------------------------------------------------- letter parser
@pytest.mark.parametrize("completion, expected", [
    ("C", "C"), (" C.", "C"), ("C. Warfarin", "C"), ("C) foo", "C"), ("(B)", "B"), ("**D**", "D"),
    ("\n\n  B\n", "B"), ("B, since the rash is photosensitive", "B"), ("The answer is B", "B"),
    ("the answer is (c)", "C"), ("Answer: b", "B"), ("**Answer: D**", "D"), ("(b)", "B"), ("c)", "C"),
    ("b", "B"), ("d.", "D"), ("A\nExplanation: ...", "A"),
    # a leading answer has priority over anything later
    ("Answer: C\nExplanation: A is wrong", "C"),
    ("B. Aspirin. Explanation: option A is wrong", "B"),
    ("B\n\nQuestion: another vignette\n\nAnswer: C", "B"),
    # not a letter answer: articles, names, lab tests, numbers, prose verdicts
    ("A 49-year-old man presents with chest pain", None), ("A 2 diabetes", None),
    ("C-reactive protein", None), ("D-dimer elevation", None), ("A patient with these findings", None),
    ("a patient with these findings", None), ("the answer is a beta blocker", None), ("C.5 mg", None),
    ("I think it's D because of the rash.", None), ("Option A looks tempting, but the answer is C.", None),
    ("C is correct.", None), ("D because the vignette describes X", None),
    ("AB", None), ("A or B", None), ("A, B", None), ("A/B", None), ("Both A and B", None),
    ("E", None), ("The answer is E", None), ("", None), ("   \n", None), ("None of the above", None),
    ("Vitamin D deficiency", None), ("Bartonella henselae", None),
])
@pytest.mark.fast
def test_extract_letter(completion: str, expected: str | None) -> None:
    assert extract_letter(completion, LETTERS) == expected
    assert AnswerFormat.LETTER.parse(_mcq(), completion) == expected


# --------------------------------------------------------- text/explain parser
TREMOR = {"A": "Tremor", "B": "Resting tremor", "C": "Aspirin", "D": "Warfarin"}


@pytest.mark.parametrize("line, expected", [
    ("Resting tremor", "B"), ("tremor", "A"), ("  Warfarin.", "D"), ("WARFARIN", "D"),
    ("It is warfarin", None), ("Warfarin, probably", None),  # the line must be the option, nothing more
    ("Aspirin or warfarin", None), ("Resting tremor and aspirin", None),  # several options
    ("C", None), ("C. Aspirin", "C"),  # a bare letter is never read, the option text is
    ("Warfarinization", None), ("nothing", None), ("", None),
])
@pytest.mark.fast
def test_named_option(line: str, expected: str | None) -> None:
    assert named_option(MCQ("q?", TREMOR, "B"), line) == expected


@pytest.mark.fast
def test_only_the_final_answer_line_counts() -> None:
    mcq = MCQ("q?", TREMOR, "D")
    explain = AnswerFormat.EXPLAIN
    assert explain.parse(mcq, " Aspirin is not it; the drug is warfarin.\nAnswer: Warfarin") == "D"
    # the explanation is not scored: naming the gold text there earns nothing
    assert explain.parse(mcq, " The first-line drug is warfarin.") is None
    assert explain.parse(mcq, " The first-line drug is warfarin.\nAnswer: Aspirin") == "C"
    assert explain.parse(mcq, " x\nAnswer: D") is None  # no letter fallback
    assert explain.parse(mcq, " x\nAnswer: Aspirin\nAnswer: Warfarin") == "D"  # the final line wins
    # a run-on into a new question is cut at the stop string, so its answer line is not read
    assert explain.parse(mcq, " x\n\nQuestion: next?\n\nExplanation: y\nAnswer: Warfarin") is None
    assert final_answer_line("no line here") is None
    # text completions start on the answer line; later lines are ignored
    assert AnswerFormat.TEXT.parse(mcq, " Warfarin\nAnswer: Aspirin") == "D"
    assert AnswerFormat.TEXT.parse(mcq, " D") is None


# ------------------------------------------------------------ constant policies
def _constant_policies(mcq: MCQ, fmt: AnswerFormat) -> dict[str, str]:
    shortest = min(LETTERS, key=lambda k: (len(mcq.options[k]), k))
    longest = max(LETTERS, key=lambda k: (len(mcq.options[k]), k))
    first_option = mcq.options["A"]
    if fmt is AnswerFormat.LETTER:
        return {"always A": " A", "shortest": f" {shortest}. {mcq.options[shortest]}",
                "longest": f" {longest}", "article": " A 49-year-old man", "all four": " A, B, C or D",
                "run-on": " B\n\nQuestion: x\n\nAnswer: " + mcq.answer}
    prefix = " The vignette fits.\nAnswer:" if fmt is AnswerFormat.EXPLAIN else ""
    return {"always A": f"{prefix} A", "option A": f"{prefix} {first_option}",
            "shortest": f"{prefix} {mcq.options[shortest]}", "longest": f"{prefix} {mcq.options[longest]}",
            "all four": f"{prefix} " + ", ".join(mcq.options.values()), "article": f"{prefix} A 49-year-old man",
            "explanation names every option": " " + " ".join(mcq.options.values()) + "\nAnswer: none"}


@pytest.mark.fast
@pytest.mark.parametrize("fmt", list(AnswerFormat))
def test_constant_policies_earn_chance_or_less(fmt: AnswerFormat) -> None:
    questions = bundled_corpus().mcq["test"]
    names = _constant_policies(questions[0], fmt)
    for name in names:
        rewards = [fmt.parse(q, _constant_policies(q, fmt)[name]) == q.answer for q in questions]
        assert sum(rewards) / len(rewards) <= 0.35, (fmt, name)
