"""``pure-transformer bench logp-gap``: how far the GRPO trainer's log-probs are from the
sampler's when the sampler runs in bf16.

GRPO's ratio pi_theta / pi_old and its off-policy sequence mask (DeepSeek-V3.2: a
negative-advantage sequence whose mean log(pi_old / pi_theta) exceeds delta = 0.5 is
dropped) assume both log-probs come from the same policy. On a GPU the sampler runs in
bf16; a trainer that rescored in fp32 would see a gap that is numerics, not learning.
This samples one GRPO batch with a bf16 sampler, rescores it with unchanged weights in
fp32 and in bf16 (what the trainer does, :func:`pure_transformer.inference.engine.sampler_precision`),
and reports the gap each way: mean and max |delta log p| per token, the ratio's spread, and the
share of sequences whose drift would exceed delta. ``--set precision=...`` is not needed:
both are measured in one run, on the CPU or a GPU.
"""

from __future__ import annotations

import argparse

import torch

from ..bundled.synthetic import bundled_corpus
from ..inference.engine import Engine, SamplingParams
from ..mcq.answer_format import AnswerFormat
from ..rl.rewards import RewardConfig, make_reward
from ..rl.rollout import build_batch, completion_logprobs, sample_groups
from .common import add_device_args, device_of, environment, markdown, per_device, require_positive_flags
from .rl_step import load_policy

DELTA = 0.5
"""The off-policy mask's delta in the GRPO presets."""


@torch.no_grad()
def measure_logp_gap(model: torch.nn.Module, tok, fmt: AnswerFormat, *, prompts: int = 8, samples: int = 8,
                     max_new_tokens: int = 32, seed: int = 0) -> dict[str, dict[str, float]]:
    """{scorer: figures} for a bf16 sampler against an fp32 and a bf16 scorer of the same weights."""
    model.eval()
    model.bf16 = True  # type: ignore[assignment]
    questions = bundled_corpus().mcq["train"][:prompts]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, stop_strings=fmt.stop_strings(),
                            seed=seed)
    shown, ids, groups = sample_groups(Engine(model, tok), questions, params, samples, answer_format=fmt)
    batch = build_batch(shown, ids, groups, make_reward(RewardConfig(answer_format=fmt)), answer_format=fmt)
    on = batch.mask.bool()
    out = {}
    for scorer, bf16 in (("fp32 scorer", False), ("bf16 scorer (the trainer's)", True)):
        model.bf16 = bf16  # type: ignore[assignment]
        new = torch.cat([completion_logprobs(model, batch, s, min(s + samples, batch.size), 1.0)[0]
                         for s in range(0, batch.size, samples)]).float()  # (N, C)
        gap = (batch.old_logp - new)[on]
        drift = ((batch.old_logp - new) * batch.mask).sum(1) / batch.mask.sum(1).clamp(min=1)  # (N,) per sequence
        ratio = torch.exp(new - batch.old_logp)[on]
        out[scorer] = {"tokens": float(on.sum()), "mean_abs_gap": float(gap.abs().mean()),
                       "max_abs_gap": float(gap.abs().max()), "ratio_std": float(ratio.std()),
                       "max_seq_drift": float(drift.max()), "share_over_delta": float((drift > DELTA).float().mean())}
    model.bf16 = True  # type: ignore[assignment]
    return out


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="a pretraining or RL checkpoint (default: a random model)")
    p.add_argument("--model", default=None, help="preset of the random model (default medium-large on CUDA, tiny "
                                                 "on CPU)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=8, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    add_device_args(p)


def run(args: argparse.Namespace) -> None:
    require_positive_flags(prompts=args.prompts, samples=args.samples, max_new_tokens=args.max_new_tokens)
    device = device_of(args)
    for line in environment(device):
        print(line)
    model, tok, fmt = load_policy(args.checkpoint, per_device(args.model, device, "medium-large", "tiny"), device)
    figures = measure_logp_gap(model, tok, fmt, prompts=args.prompts, samples=args.samples,
                               max_new_tokens=args.max_new_tokens)
    print(f"bf16 sampler, {args.prompts} prompts x {args.samples} samples, up to {args.max_new_tokens} tokens, "
          f"{fmt.value} format; the off-policy mask drops a negative-advantage sequence past drift {DELTA}")
    print(markdown(["scorer", "tokens", "mean |gap|", "max |gap|", "ratio std", "max sequence drift",
                    f"share over {DELTA}"],
                   [[name, f"{f['tokens']:.0f}", f"{f['mean_abs_gap']:.2e}", f"{f['max_abs_gap']:.2e}",
                     f"{f['ratio_std']:.2e}", f"{f['max_seq_drift']:.2e}", f"{f['share_over_delta']:.3f}"]
                    for name, f in figures.items()]))
