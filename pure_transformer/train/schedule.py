"""Learning-rate schedule as a function of tokens seen.

Counting in tokens rather than steps keeps the schedule unchanged when the
batch size, accumulation or world size changes: warmup is "the first 100M
tokens", not "the first N steps".
"""

from __future__ import annotations

import math

import torch


def lr_at(tokens_seen: int, *, peak_lr: float, min_lr: float, warmup_tokens: int, total_tokens: int) -> float:
    """Linear warmup from 0 to ``peak_lr`` over ``warmup_tokens``, then cosine decay
    to ``min_lr`` at ``total_tokens``, and ``min_lr`` after that."""
    if warmup_tokens > 0 and tokens_seen < warmup_tokens:
        return peak_lr * tokens_seen / warmup_tokens
    if tokens_seen >= total_tokens:
        return min_lr
    progress = (tokens_seen - warmup_tokens) / max(1, total_tokens - warmup_tokens)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, peak_lr: float) -> None:
    """Scale every parameter group by ``lr / peak_lr``, so groups with their own
    peak rate (``group["peak_lr"]``, e.g. the embedding) follow the same shape."""
    scale = lr / peak_lr if peak_lr else 0.0
    for group in optimizer.param_groups:
        group["lr"] = group.get("peak_lr", peak_lr) * scale
