"""From questions to a training batch: sample groups, score them, and lay the
sequences out as tensors for the policy, reference and old-policy log-probs.

Layout of a :class:`RolloutBatch` (N sequences, L = longest prompt + completion):
``input_ids`` (N, L) is right-padded; every other per-token tensor is (N, L-1)
and aligned with the *targets* ``input_ids[:, 1:]``, so position t holds
what the model predicts after reading tokens 0..t.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from ..data.mcq import MCQ
from ..engine import Engine, Sample, SamplingParams
from ..evaluation import encode_prompt
from .grpo import group_advantages, masked_logprobs, zero_variance_groups
from .rewards import RewardFn, correctness_reward, prepare_question, score


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # (N, L) prompt + completion, right-padded
    completion_mask: torch.Tensor  # (N, L-1) 1.0 where the target is a completion token
    old_logp: torch.Tensor  # (N, L-1) log pi_old of the targets (0 outside completions)
    keep_ids: torch.Tensor | None  # (N, L-1, K) sampler's kept ids, -1 padded; None = full vocabulary
    rewards: torch.Tensor  # (N,)
    correct: torch.Tensor  # (N,) 1.0 when the extracted letter was right
    advantages: torch.Tensor  # (N,)
    zero_variance: torch.Tensor  # (num_groups,) bool
    completions: list[str]
    generated_tokens: int

    @property
    def num_completion_tokens(self) -> float:
        return float(self.completion_mask.sum())

    def rows(self, start: int, end: int) -> dict[str, torch.Tensor | None]:
        """One micro-batch, trimmed to its own longest sequence."""
        width = int((self.input_ids[start:end] != -1).sum(dim=1).max()) if end > start else 0
        keep = self.keep_ids[start:end, :width - 1] if self.keep_ids is not None else None
        return {"input_ids": self.input_ids[start:end, :width].clamp(min=0),
                "mask": self.completion_mask[start:end, :width - 1], "old_logp": self.old_logp[start:end, :width - 1],
                "keep_ids": keep, "advantages": self.advantages[start:end]}


def sample_groups(engine: Engine, questions: Sequence[MCQ], params: SamplingParams, group_size: int,
                  shuffle_rng: random.Random | None = None) -> tuple[list[MCQ], list[list[int]], list[list[Sample]]]:
    """``group_size`` completions per question. With ``shuffle_rng`` each question's
    options are permuted once, so the whole group sees the same letter order."""
    shown = [prepare_question(q, shuffle_rng) for q in questions]
    prompts = [encode_prompt(engine.tok, q) for q in shown]
    return shown, prompts, engine.generate(prompts, params, group_size)


def build_batch(questions: Sequence[MCQ], prompts: Sequence[list[int]], groups: Sequence[list[Sample]],
                reward_fn: RewardFn, *, scale_adv_by_std: bool = False) -> RolloutBatch:
    """Score every sample, compute group-relative advantages and build the tensors."""
    group_size = len(groups[0])
    flat = [(q, p, s) for q, p, g in zip(questions, prompts, groups) for s in g]
    texts = [s.text for _, _, s in flat]
    rewards = score(reward_fn, [q for q, _, _ in flat], texts)
    correct = score(correctness_reward, [q for q, _, _ in flat], texts)
    length = max(len(p) + len(s.tokens) for _, p, s in flat)
    n = len(flat)
    ids = torch.full((n, length), -1, dtype=torch.long)  # -1 marks padding until rows() clamps it
    mask = torch.zeros(n, length - 1)
    old = torch.zeros(n, length - 1)
    truncated = any(s.keep_ids is not None for _, _, s in flat)
    width = max((s.keep_ids.shape[1] for _, _, s in flat if s.keep_ids is not None), default=0)
    keep = torch.full((n, length - 1, width), -1, dtype=torch.long) if truncated else None
    for i, (_, p, s) in enumerate(flat):
        seq = p + s.tokens
        ids[i, :len(seq)] = torch.tensor(seq)
        span = slice(len(p) - 1, len(seq) - 1)  # target positions of the completion tokens
        mask[i, span] = 1.0
        old[i, span] = s.logprobs
        if keep is not None and s.keep_ids is not None:
            keep[i, span, :s.keep_ids.shape[1]] = s.keep_ids
    return RolloutBatch(ids, mask, old, keep, rewards, correct,
                        group_advantages(rewards, group_size, scale_by_std=scale_adv_by_std),
                        zero_variance_groups(rewards, group_size), texts, sum(len(s.tokens) for _, _, s in flat))


def sequence_logprobs(model: torch.nn.Module, rows: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs of the targets, logits) for one micro-batch, under the sampler's
    temperature and kept sets."""
    ids = rows["input_ids"]
    _, logits = model(ids[:, :-1])  # (b, L-1, V)
    return masked_logprobs(logits, ids[:, 1:], temperature=temperature, keep_ids=rows["keep_ids"]), logits


@torch.no_grad()
def masked_entropy(logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> float:
    """Sum over completion tokens of the entropy of softmax(logits / T) (full vocabulary)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return float((-(logp.exp() * logp).sum(-1) * mask).sum())
