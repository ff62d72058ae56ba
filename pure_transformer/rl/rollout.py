"""From questions to a training batch: sample groups, score them, and compute the
log-probabilities of the sampled completions with one prompt pass per group.

Layout of a :class:`RolloutBatch` (N = groups x G sequences, C = longest
completion): every per-token tensor is (N, C) and aligned on the completion,
so column t is completion token t of each row (right-padded, masked).

Shared-prefix scoring. The G samples of a group share their prompt, and for
multiple-choice answers the prompt is most of the sequence. So
:func:`completion_logprobs` runs each distinct prompt once, with a KV cache
that stays in the autograd graph, repeats the cache rows for the group's
samples, and runs only the completion tokens on top. The gradient still flows
into the prompt's activations, through the repeated cache; tests check both
the log-probs and the gradients against full forward passes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from ..eval.scoring import encode_prompt
from ..inference.engine import Engine, Sample, SamplingParams, prefill, sampler_precision
from ..mcq.answer_format import AnswerFormat
from ..mcq.record import MCQ
from .grpo import group_advantages, masked_logprobs, zero_variance_groups
from .rewards import RewardFn, prepare_question, score


@dataclass
class RolloutBatch:
    prompts: list[list[int]]  # one per group
    group_size: int
    completions: torch.Tensor  # (N, C) sampled token ids, right-padded with 0
    mask: torch.Tensor  # (N, C) 1.0 on real completion tokens
    old_logp: torch.Tensor  # (N, C) log pi_old of each token (0 on padding)
    keep_ids: torch.Tensor | None  # (N, C, K) int32 sampler's kept ids, -1 padded; None = full vocabulary
    rewards: torch.Tensor  # (N,)
    correct: torch.Tensor  # (N,) 1.0 when the parsed answer was right
    advantages: torch.Tensor  # (N,)
    zero_variance: torch.Tensor  # (groups,) bool
    texts: list[str]
    answers: list[str | None]  # (N,) the letter each completion answers under the run's format

    @property
    def size(self) -> int:
        return self.completions.shape[0]

    @property
    def num_completion_tokens(self) -> float:
        return float(self.mask.sum())


def sample_groups(engine: Engine, questions: Sequence[MCQ], params: SamplingParams, group_size: int,
                  seeds: Sequence[int] | None = None, shuffle_options: bool = False,
                  answer_format: AnswerFormat = AnswerFormat.LETTER
                  ) -> tuple[list[MCQ], list[list[int]], list[list[Sample]]]:
    """``group_size`` completions per question, asked in ``answer_format``.

    ``seeds[i]`` fixes question i's samples and, with ``shuffle_options``, the one
    permutation of its options that its whole group sees; nothing else does, so
    a question draws alike in any batch (or on any rank)."""
    if shuffle_options and seeds is None:
        raise ValueError("shuffle_options needs one seed per question")
    shown = [prepare_question(q, random.Random(seed) if shuffle_options else None)
             for q, seed in zip(questions, seeds or [0] * len(questions))]
    prompts = [encode_prompt(engine.tok, q, answer_format) for q in shown]
    return shown, prompts, engine.generate(prompts, params, group_size, seeds=seeds)


def build_batch(questions: Sequence[MCQ], prompts: Sequence[list[int]], groups: Sequence[list[Sample]],
                reward_fn: RewardFn, *, scale_adv_by_std: bool = False,
                answer_format: AnswerFormat = AnswerFormat.LETTER) -> RolloutBatch:
    """Score every sample, compute group-relative advantages and lay out the tensors."""
    group_size = len(groups[0])
    samples = [s for g in groups for s in g]
    shown = [q for q in questions for _ in range(group_size)]
    texts = [s.text for s in samples]
    rewards = score(reward_fn, shown, texts)
    n, width = len(samples), max(len(s.tokens) for s in samples)
    completions = torch.zeros(n, width, dtype=torch.long)
    mask, old = torch.zeros(n, width), torch.zeros(n, width)
    k = max((s.keep_ids.shape[1] for s in samples if s.keep_ids is not None), default=0)
    keep = torch.full((n, width, k), -1, dtype=torch.int32) if k else None
    for i, s in enumerate(samples):
        length = len(s.tokens)
        completions[i, :length] = torch.tensor(s.tokens)
        mask[i, :length] = 1.0
        old[i, :length] = s.logprobs
        if keep is not None and s.keep_ids is not None:
            keep[i, :length, :s.keep_ids.shape[1]] = s.keep_ids
    answers = [answer_format.parse(q, t) for q, t in zip(shown, texts)]
    correct = torch.tensor([float(a == q.answer) for a, q in zip(answers, shown)])
    return RolloutBatch(list(prompts), group_size, completions, mask, old, keep, rewards, correct,
                        group_advantages(rewards, group_size, scale_by_std=scale_adv_by_std),
                        zero_variance_groups(rewards, group_size), texts, answers)


def completion_logprobs(model: torch.nn.Module, batch: RolloutBatch, start: int, end: int, temperature: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs (R, C), logits (N, V)) of rows ``start:end``'s completion tokens
    under the sampler's temperature and kept sets, with one prompt pass per group.

    Only the first W columns are run, W being the longest completion among these
    rows: completions vary in length (an explanation may stop after 20 tokens or
    run to the budget), and padding columns would cost as much as real ones. The head
    runs on the N real completion tokens alone, so the (N, V) logits skip the padding
    too. Log-probs are zero beyond each completion, like every padded position."""
    device = next(model.parameters()).device
    first, last = start // batch.group_size, (end - 1) // batch.group_size
    prompts = batch.prompts[first:last + 1]
    full_width = batch.completions.shape[1]
    width = max(1, int(batch.mask[start:end].sum(1).max()))
    tokens = batch.completions[start:end, :width].to(device)  # (R, W)
    real = batch.mask[start:end, :width].to(device).bool()  # (R, W)
    capacity = max(map(len, prompts)) + tokens.shape[1]
    dtype, autocast = sampler_precision(model)  # the numerics pi_old was sampled with
    with autocast:
        # first_logits (P, 1, V) predicts completion token 0
        cache, first_logits = prefill(model, prompts, capacity, dtype)
        rows = torch.arange(start, end, device=device) // batch.group_size - first  # (R,) row -> its prompt
        cache = cache.select(rows)  # differentiable: gradients reach the prompt through the copies
        parts = [first_logits[rows[real[:, 0]], 0]]  # (R0, V)
        if tokens.shape[1] > 1:  # the rest predict tokens 1..W-1, at real positions only
            parts.append(model(tokens[:, :-1], cache=cache, keep=real[:, 1:])[1])  # (N - R0, V)
    keep = batch.keep_ids[start:end, :width].to(device) if batch.keep_ids is not None else None
    first_col = torch.zeros_like(real)
    first_col[:, 0] = True
    logp = torch.zeros(tokens.shape, dtype=torch.promote_types(parts[0].dtype, torch.float32), device=device)
    for where, logits in zip((real & first_col, real & ~first_col), parts):  # each in its logits' row order
        got = masked_logprobs(logits, tokens[where], temperature=temperature,
                              keep_ids=keep[where] if keep is not None else None)
        logp = logp.masked_scatter(where, got)  # (R, W)
    return torch.nn.functional.pad(logp, (0, full_width - width)), torch.cat(parts)


@torch.no_grad()
def entropy_sum(logits: torch.Tensor, temperature: float) -> float:
    """Sum over the rows of ``logits`` (N, V) of the entropy of softmax(logits / T) (full vocabulary)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return float(-(logp.exp() * logp).sum())
