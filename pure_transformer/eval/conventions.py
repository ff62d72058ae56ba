"""Per-task prompt conventions for letter log-likelihood scoring, as lm-evaluation-harness defines the tasks.

A published number is only comparable with ours if both score the same context
string with the same continuations. Each task of the medical suite therefore has
a :class:`Convention` that rebuilds the context of lm-eval's own YAML (zero-shot:
the task's description, then its ``doc_to_text``) and names its choices
(``doc_to_choice``), each scored after lm-eval's default delimiter, one space:

==========================  ====================  ==========================================
task                        lm-eval task          context; choices
==========================  ====================  ==========================================
medqa                       ``medqa_4options``    ``Question: q\\nA. ..\\nD. ..\\nAnswer:``; A-D
medmcqa                     ``medmcqa``           ``Question: q\\nChoices:\\nA. ..\\nAnswer:``; A-D
pubmedqa                    ``pubmedqa``          ``Abstract: ..\\nQuestion: q\\nAnswer:``; yes/no/maybe
mmlu-<subject>              ``mmlu_<subject>``    "The following are multiple choice questions
                                                  (with answers) about <subject>.\\n\\n" + q and
                                                  A-D lines + ``Answer:``; A-D
anything else               (none)                ``harness_prompt``; its letters
==========================  ====================  ==========================================

The prompts themselves live in :mod:`pure_transformer.mcq.prompts`; the generic
:func:`~pure_transformer.mcq.prompts.harness_prompt` is ``medqa_4options``'s prompt with as many
option lines as a question has (medqa5, Medbullets and local files of no known
task), and a ``Context:`` line when the question has one. The strings are facts
about lm-eval's task files; ``tests/test_lm_eval_tasks.py`` runs those files
themselves against these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..mcq.prompts import harness_prompt, medmcqa_prompt, mmlu_prompt, pubmedqa_prompt
from ..mcq.record import MCQ

DELIMITER = " "
"""lm-eval's default ``target_delimiter``: what joins the context and each choice."""


def letters(mcq: MCQ) -> tuple[str, ...]:
    """Choices named by their letters (" A", " B" .. are scored)."""
    return mcq.letters


def option_texts(mcq: MCQ) -> tuple[str, ...]:
    """Choices named by their option texts (PubMedQA's " yes", " no", " maybe")."""
    return tuple(mcq.options.values())


@dataclass(frozen=True)
class Convention:
    """How one task asks a question (``description`` + ``body``) and which strings it scores after it."""

    lm_eval_task: str | None
    """The lm-eval task whose YAML this reproduces; None for the generic prompt."""
    body: Callable[[MCQ], str]
    choices: Callable[[MCQ], tuple[str, ...]] = letters
    """One string per option, in option order, so per-choice scores stay aligned with the letters."""
    description: str = ""
    """lm-eval's ``description``, put before the body in a zero-shot context."""
    needs_context: bool = False
    """The prompt asks the question's passage (PubMedQA's abstract): a question without one is refused."""

    def prompt(self, mcq: MCQ) -> str:
        """The context string, ending at the cue ("Answer:")."""
        return self.description + self.body(mcq)

    def pairs(self, mcq: MCQ) -> list[tuple[str, str]]:
        """(context, continuation) per option, as lm-eval requests them."""
        context = self.prompt(mcq)
        return [(context, f"{DELIMITER}{choice}") for choice in self.choices(mcq)]


GENERIC = Convention(None, harness_prompt)
"""Every task lm-eval does not define: medqa_4options's prompt for any option count."""


def mmlu(task: str) -> Convention:
    """``mmlu-college-medicine`` -> lm-eval's ``mmlu_college_medicine``, whose description names the subject
    in words. The subject comes from the task name, as in lm-eval (one description per task): an MMLU CSV
    file does not say which subject it holds."""
    subject = task.removeprefix("mmlu-")
    return Convention(f"mmlu_{subject.replace('-', '_')}", mmlu_prompt,
                      description=f"The following are multiple choice questions (with answers) about "
                                  f"{subject.replace('-', ' ')}.\n\n")


CONVENTIONS: dict[str, Convention] = {
    "medqa": Convention("medqa_4options", harness_prompt),
    "medmcqa": Convention("medmcqa", medmcqa_prompt),
    "pubmedqa": Convention("pubmedqa", pubmedqa_prompt, option_texts, needs_context=True),
    **{task: mmlu(task) for task in ("mmlu-anatomy", "mmlu-clinical-knowledge", "mmlu-college-biology",
                                     "mmlu-college-medicine", "mmlu-medical-genetics", "mmlu-professional-medicine")},
}
"""Task name -> its lm-eval convention; the suite's nine tasks."""


def convention_for(task: str) -> Convention:
    """The convention ``evaluate --task`` scores ``task`` with (with or without ``--data-path``)."""
    return CONVENTIONS.get(task, GENERIC)
