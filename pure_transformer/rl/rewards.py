"""Rewards for GRPO on multiple-choice questions.

A reward function is any callable ``(mcq, completion) -> float`` (:data:`RewardFn`);
``completion`` is the text the policy generated after the prompt's ``"Answer: "``.
The trainer takes a :data:`RewardFn`, so plugging in a new reward means passing a
new callable: there is no registry and no string dispatch.

The default reward (:func:`make_reward` with a default :class:`RewardConfig`) is
plain correctness, 1.0 or 0.0. :func:`format_reward` is an optional shaping term,
off unless ``format_weight`` is set.

:func:`prepare_question` shuffles options against letter priors, and
:func:`letter_distribution` reports which letters the policy picks, to spot a
position bias (e.g. always "A") that correctness alone would hide.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pure_transformer.mcq import LETTERS, MCQ, extract_answer, shuffle_options

RewardFn = Callable[[MCQ, str], float]
"""(question, completion text) -> scalar reward."""

# "C", "C.", "C. Aspirin", "C\n...": a capital letter first, then ".", whitespace or the end.
_FORMAT = re.compile(r"\s*(?P<letter>[A-D])(?:\.|(?=\s)|$)")

NO_ANSWER = "None"
"""The :func:`letter_distribution` key for completions with no extractable letter."""


def correctness_reward(mcq: MCQ, completion: str) -> float:
    """1.0 when :func:`extract_answer` finds the gold letter in ``completion``, else 0.0."""
    return 1.0 if extract_answer(completion) == mcq.answer else 0.0


def format_reward(mcq: MCQ, completion: str) -> float:
    """1.0 when the completion *starts* with one answer letter in the expected form.

    The expected form is the letter alone or followed by ``"."`` or whitespace
    ("C", "C.", "C. Warfarin"), and :func:`extract_answer` must read that same
    letter (so "A patient ...", "A or B" and "(C)" score 0.0). Whether the letter
    is right does not matter; that is :func:`correctness_reward`'s job. ``mcq`` is
    unused and kept for the :data:`RewardFn` signature.
    """
    del mcq
    match = _FORMAT.match(completion)
    if match is None:
        return 0.0
    return 1.0 if extract_answer(completion) == match.group("letter") else 0.0


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the default reward: ``correctness + format_weight * format``."""

    format_weight: float = 0.0


def make_reward(cfg: RewardConfig | None = None) -> RewardFn:
    """The default reward for ``cfg``: correctness plus ``format_weight`` times format.

    With ``format_weight == 0`` (the default) this is :func:`correctness_reward`
    itself, and the format term is never computed.
    """
    cfg = cfg if cfg is not None else RewardConfig()
    weight = float(cfg.format_weight)
    if weight == 0.0:
        return correctness_reward

    def reward(mcq: MCQ, completion: str) -> float:
        return correctness_reward(mcq, completion) + weight * format_reward(mcq, completion)

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


def letter_distribution(completions: Sequence[str]) -> dict[str, float]:
    """Fraction of ``completions`` answering A, B, C, D, or none (key ``"None"``).

    The fractions sum to 1 for a non-empty input; all are 0.0 for an empty one.
    A distribution far from the gold-letter distribution points to position bias.
    """
    counts = dict.fromkeys((*LETTERS, NO_ANSWER), 0)
    for completion in completions:
        letter = extract_answer(completion)
        counts[letter if letter is not None else NO_ANSWER] += 1
    total = len(completions)
    return {key: (n / total if total else 0.0) for key, n in counts.items()}
