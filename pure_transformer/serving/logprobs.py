"""Token log-probabilities in the OpenAI legacy completions shape (``logprobs`` + ``echo``).

This is what lm-evaluation-harness's ``local-completions`` model asks for: it sends
token ids with ``echo: true, logprobs: 1, max_tokens: 1`` and sums
``token_logprobs[ctxlen:-1]``. Every prompt is scored after end-of-text, as every
training document starts (and as ``evaluate`` scores), unless its ids already start
with it; that hidden token is never echoed, so the echoed list lines up with the
ids the client sent.
"""

from __future__ import annotations

from typing import Any

import torch

from ..tokenizer.bpe import Tokenizer


@torch.no_grad()
def sequence_logprobs(model: torch.nn.Module, ids: list[int], start_ids: list[int], top: int
                      ) -> tuple[list[float | None], list[list[tuple[int, float]]]]:
    """Per token of ``ids``: its log-probability under the model (None for a leading
    start id, our end-of-text, which nothing precedes, and for the first token of a
    tokenizer without one) and the ``top`` likeliest tokens there."""
    context = model.cfg.max_seq_len
    hidden = [] if ids[:len(start_ids)] == start_ids else list(start_ids)
    full = hidden + ids
    if len(full) - 1 > context:
        raise ValueError(f"prompt and completion of {len(ids)} tokens exceed the model context of {context}")
    device = next(model.parameters()).device
    _, logits = model(torch.tensor([full[:-1]], device=device))
    logp = torch.log_softmax(logits[0].float(), dim=-1)  # (len(full) - 1, V): row t predicts full[t + 1]
    targets = torch.tensor(full[1:], device=device)
    picked = logp.gather(1, targets[:, None]).squeeze(1).tolist()
    best_v, best_i = logp.topk(max(top, 1), dim=-1)
    tops = [list(zip(i, v)) for i, v in zip(best_i.tolist(), best_v.tolist())]
    if not hidden:  # the leading end-of-text is given, not predicted
        return [None, *picked], [[], *tops]
    return picked, tops


def legacy_logprobs(tok: Tokenizer, ids: list[int], values: list[float | None], tops: list[list[tuple[int, float]]],
                    top: int, start: int = 0) -> dict[str, Any]:
    """The ``logprobs`` object of one choice: ``tokens``, ``token_logprobs``, ``top_logprobs``
    (a dict of token string -> log-probability per position) and ``text_offset``, counted from
    ``start`` (a stream's chunk continues its choice's offsets: the end of its previous chunk's tokens)."""
    pieces = [tok.decode([i]) for i in ids]
    offsets, at = [], start
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    top_dicts: list[dict[str, float] | None] = [
        None if v is None else {tok.decode([i]): p for i, p in t[:top]} for v, t in zip(values, tops)]
    return {"tokens": pieces, "token_logprobs": values, "top_logprobs": top_dicts, "text_offset": offsets}
