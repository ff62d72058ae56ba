"""Every prompt a question is asked with, in one place.

Two families:

- **the project's formats** (:class:`~pure_transformer.mcq.answer_format.AnswerFormat`): blank lines
  between the question, its options and the cue, which is what pretraining text shows and what the
  generate-mode scorer, the RL reward and ``/v1/mcq``'s explanation ask;
- **lm-evaluation-harness's tasks** (:mod:`pure_transformer.eval.conventions` names which task uses
  which): single newlines, ``medqa_4options``, ``medmcqa``, ``pubmedqa``, MMLU and the cloze form.
  ``tests/test_lm_eval_tasks.py`` checks these against lm-eval's own task files.
"""

from __future__ import annotations

from .record import MCQ


def option_lines(mcq: MCQ) -> str:
    """``A. ...\\nB. ...``: one line per option, as many as the question has, no newline after the last."""
    return "\n".join(f"{letter}. {text}" for letter, text in mcq.options.items())


# ------------------------------------------------------------ the project's formats
def format_prompt_parts(mcq: MCQ, cue: str) -> tuple[str, str, str]:
    """(head, body, tail) of a project prompt ending in ``cue`` (``"Answer:"`` or ``"Explanation:"``).
    A prompt too long for the context is cut from the start of ``body`` (the context, then the
    question stem); the head, the options and the cue in ``tail`` are never cut."""
    head, body = ("Context: ", f"{mcq.context}\n\nQuestion: {mcq.question}") if mcq.context else \
        ("Question: ", mcq.question)
    return head, body, f"\n\n{option_lines(mcq)}\n\n{cue}"


# ------------------------------------------------------------- lm-eval's tasks
def harness_prompt(mcq: MCQ) -> str:
    """lm-evaluation-harness ``medqa_4options`` prompt (single newlines, no trailing space),
    with as many option lines as the question has and its context, if any, first."""
    context = f"Context: {mcq.context}\n" if mcq.context else ""
    return f"{context}Question: {mcq.question}\n{option_lines(mcq)}\nAnswer:"


def medmcqa_prompt(mcq: MCQ) -> str:
    """lm-eval ``medmcqa``: a ``Choices:`` line between the question and its options."""
    return f"Question: {mcq.question}\nChoices:\n{option_lines(mcq)}\nAnswer:"


def pubmedqa_prompt(mcq: MCQ) -> str:
    """lm-eval ``pubmedqa``: the abstract (its sections one per line), then the question; no options listed."""
    return f"Abstract: {mcq.context or ''}\nQuestion: {mcq.question}\nAnswer:"


def mmlu_prompt(mcq: MCQ) -> str:
    """lm-eval's MMLU ``doc_to_text`` (the subject's description comes from the task's convention)."""
    return f"{mcq.question.strip()}\n{option_lines(mcq)}\nAnswer:"


def cloze_prompt(mcq: MCQ) -> str:
    """The cloze formulation: the question without its options (lm-eval's ``*_cloze`` tasks)."""
    context = f"Context: {mcq.context}\n" if mcq.context else ""
    return f"{context}Question: {mcq.question}\nAnswer:"
