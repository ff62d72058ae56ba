"""Rewards for GRPO on multiple-choice questions.

A reward function is any callable ``(mcq, completion) -> float`` (:data:`RewardFn`);
``completion`` is the text the policy generated after the prompt of the run's
:class:`~pure_transformer.mcq.answer_format.AnswerFormat`. The trainer takes a
:data:`RewardFn`, so plugging in a new reward means passing a new callable:
there is no registry and no string dispatch.

The default reward (:func:`make_reward`) is plain correctness, 1.0 or 0.0, as
read by the format's strict parser: the leading letter, or the option named on
the final ``Answer:`` line (never an option named in the explanation, never a
letter in prose). :func:`format_reward` is an optional shaping term, off unless
``format_weight`` is set.

:func:`prepare_question` shuffles options against letter priors, and
:func:`letter_distribution` reports which letters the policy picks, to spot a
position bias (e.g. always "A") that correctness alone would hide.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..mcq.answer_format import AnswerFormat
from ..mcq.record import LETTERS, MCQ, shuffle_options

RewardFn = Callable[[MCQ, str], float]
"""(question, completion text) -> scalar reward."""

NO_ANSWER = "None"
"""The :func:`letter_distribution` key for completions that answer no option."""


def correctness_reward(mcq: MCQ, completion: str, answer_format: AnswerFormat = AnswerFormat.LETTER) -> float:
    """1.0 when ``completion`` answers the gold option under ``answer_format``'s parser, else 0.0."""
    return 1.0 if answer_format.parse(mcq, completion) == mcq.answer else 0.0


def format_reward(mcq: MCQ, completion: str, answer_format: AnswerFormat = AnswerFormat.LETTER) -> float:
    """1.0 when the completion gives exactly one answer in the expected form, right or wrong.

    ``letter``: it starts with one answer letter ("C", "C.", "C. Warfarin").
    ``text``/``explain``: its (final) answer line names exactly one option.
    Whether that answer is right is :func:`correctness_reward`'s job.
    """
    return 1.0 if answer_format.parse(mcq, completion) is not None else 0.0


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the default reward: ``correctness + format_weight * format``."""

    format_weight: float = 0.0
    answer_format: AnswerFormat = AnswerFormat.LETTER


def make_reward(cfg: RewardConfig | None = None) -> RewardFn:
    """The default reward for ``cfg``: correctness plus ``format_weight`` times format.

    With ``format_weight == 0`` (the default) the format term is never computed.
    """
    cfg = cfg if cfg is not None else RewardConfig()
    weight, fmt = float(cfg.format_weight), cfg.answer_format

    def reward(mcq: MCQ, completion: str) -> float:
        value = correctness_reward(mcq, completion, fmt)
        return value + weight * format_reward(mcq, completion, fmt) if weight else value

    return reward


def score(reward_fn: RewardFn, questions: Sequence[MCQ], completions: Sequence[str]) -> torch.Tensor:
    """Rewards of ``completions[i]`` against ``questions[i]`` as a float32 tensor of shape (N,).

    For a GRPO group, repeat the prompt's question once per sample.
    """
    if len(questions) != len(completions):
        raise ValueError(
            f"score got {len(questions)} questions but {len(completions)} completions"
        )
    values = [float(reward_fn(q, c)) for q, c in zip(questions, completions)]
    return torch.tensor(values, dtype=torch.float32)


def prepare_question(mcq: MCQ, rng: random.Random | None) -> MCQ:
    """The question as the policy will see it: options shuffled with ``rng``, or unchanged.

    Shuffling counters letter priors (a policy that learns "the answer is
    usually C" rather than reading the options). Call this once per *prompt*,
    not once per sample: the G samples of a GRPO group must all see the same
    letter order, because group-relative advantages compare each sample with
    its siblings, and that comparison is only meaningful if they answered the
    same question. Shuffling per sample would let each of the (e.g.) 16
    samples see a different order, so "B" would mean a different option in
    different samples. Score the group against the returned MCQ, whose
    ``answer`` letter moved with the gold text. ``rng=None`` disables shuffling.
    """
    return mcq if rng is None else shuffle_options(mcq, rng)


def letter_distribution(questions: Sequence[MCQ], completions: Sequence[str],
                        answer_format: AnswerFormat = AnswerFormat.LETTER) -> dict[str, float]:
    """Fraction of ``completions[i]`` (answers to ``questions[i]``) choosing each letter,
    or none (key ``"None"``), under ``answer_format``'s parser.

    The fractions sum to 1 for a non-empty input; all are 0.0 for an empty one.
    A distribution far from the gold-letter distribution points to position bias.
    """
    return answer_histogram([answer_format.parse(q, c) for q, c in zip(questions, completions)])


def answer_histogram(answers: Sequence[str | None]) -> dict[str, float]:
    """Fraction of parsed ``answers`` that are each letter (A-D, and up to the highest letter
    answered), or None (key ``"None"``)."""
    highest = max((LETTERS.index(a) for a in answers if a is not None), default=0)
    counts = dict.fromkeys((*LETTERS[:max(4, highest + 1)], NO_ANSWER), 0)
    for letter in answers:
        counts[letter if letter is not None else NO_ANSWER] += 1
    total = len(answers)
    return {key: (n / total if total else 0.0) for key, n in counts.items()}
