"""One sampling call per decode step for a batch whose rows each have their own temperature,
top-k, top-p and noise stream (the serving scheduler's batch).

Each row draws exactly what :func:`~pure_transformer.inference.engine.sample_next` draws for
it alone: greedy rows take the argmax; untruncated rows race their tempered probabilities
against their own Exp(1) noise over the whole vocabulary; truncated rows race over their
sorted candidates. The truncated rows share one ``topk`` of the widest candidate set among
them, and each row masks the columns past its own width, so the same noise column meets the
same candidate as in ``sample_next`` (its first k of a sorted top-W are the sorted top-k).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .engine import SamplingParams, candidate_width, sample_next


def noise_width(params: Sequence[SamplingParams], vocab_size: int) -> int:
    """The noise columns :func:`sample_rows` reads: the widest candidate set of a sampled row (1 if none)."""
    return max((candidate_width(p, vocab_size) for p in params if p.temperature > 0), default=1)


def sample_rows(logits: torch.Tensor, params: Sequence[SamplingParams], noise: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of (L, V) ``logits``, row i under ``params[i]``.

    ``noise`` (L, W) holds row i's Exp(1) draws in its first ``candidate_width(params[i])``
    columns (W from :func:`noise_width`; greedy rows' noise is never read). Returns (tokens
    (L,), log-probs (L,)): a sampled token's log-probability under its row's truncated,
    tempered distribution, a greedy token's under the raw logits (as ``sample_next``)."""
    first = params[0]
    if all(p is first for p in params) or all(p.temperature == 0 for p in params):
        # One request's rows, or greedy rows alone: sample_next itself (greedy reads no other setting).
        w = candidate_width(first, logits.shape[-1])
        tokens, logps, _ = sample_next(logits, first, noise[:, :w] if first.temperature > 0 else None)
        return tokens, logps
    logits = logits.float()
    L, V = logits.shape
    device = logits.device
    tokens = torch.empty(L, dtype=torch.long, device=device)
    logps = torch.empty(L, device=device)
    greedy, full, cut = [], [], []  # decided on the host: no device sync
    for i, p in enumerate(params):
        (greedy if p.temperature == 0 else full if p.top_k is None and p.top_p >= 1.0 else cut).append(i)
    if greedy:
        rows = torch.tensor(greedy, device=device)
        raw = logits[rows]  # (G, V)
        pick = raw.argmax(dim=-1, keepdim=True)  # on the raw logits, as sample_next: ties break alike
        lp = F.log_softmax(raw, dim=-1)
        tokens[rows], logps[rows] = pick[:, 0], lp.gather(1, pick)[:, 0]
    if full:
        rows = torch.tensor(full, device=device)
        temp = torch.tensor([params[i].temperature for i in full], device=device)
        lp = F.log_softmax(logits[rows] / temp[:, None], dim=-1)  # (F, V)
        pick = (lp.exp() / noise[rows, :V]).argmax(dim=-1, keepdim=True)
        tokens[rows], logps[rows] = pick[:, 0], lp.gather(1, pick)[:, 0]
    if cut:
        rows = torch.tensor(cut, device=device)
        widths = [candidate_width(params[i], V) for i in cut]
        temp = torch.tensor([params[i].temperature for i in cut], device=device)
        top_p = torch.tensor([params[i].top_p for i in cut], device=device)
        z, ids = (logits[rows] / temp[:, None]).topk(max(widths), dim=-1)  # (C, W), descending
        past = torch.arange(z.shape[1], device=device)[None] >= torch.tensor(widths, device=device)[:, None]
        z = z.masked_fill(past, float("-inf"))
        probs = F.softmax(z, dim=-1)
        # Drop a candidate once the mass before it reaches top_p (the first always stays); top_p = 1 drops none.
        drop = (probs.cumsum(dim=-1) - probs >= top_p[:, None]) & (top_p < 1.0)[:, None]
        lp = F.log_softmax(z.masked_fill(drop, float("-inf")), dim=-1)  # (C, W)
        pick = (lp.exp() / noise[rows, :z.shape[1]]).argmax(dim=-1, keepdim=True)  # a dropped candidate has p = 0
        tokens[rows], logps[rows] = ids.gather(1, pick)[:, 0], lp.gather(1, pick)[:, 0]
    return tokens, logps
