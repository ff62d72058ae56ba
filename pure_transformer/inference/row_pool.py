"""The serving scheduler's running batch as rows of a :class:`~pure_transformer.model.kv_cache.KVPool`:
joining never copies the rows already running, leaving frees a row at once, and prompts that
share a prefix share its prefill.

- **Join** (:meth:`RowPool.join`): each prompt gets a free row and only the part of it no row
  already holds is prefilled. The longest prefix held by any row (running, or freed and not yet
  reused: its slots are intact) is copied into the new row (a copy of those slots, no compute), or
  the freed row holding it is taken over as it is. Prompts joining together share their prefixes
  too: those whose prefix another joining prompt holds are prefilled in a second pass, after it.
  A prompt's ``n`` samples are ``n`` rows that copy its prefilled slots.
- **Decode** (:meth:`RowPool.decode`): one forward over rows ``[0, hi)`` (a view of the pool, no
  gather), ``hi`` past the last busy row; a free row below it decodes padding that lands past what
  it holds. New rows take the lowest free rows, so the batch stays dense.
- **Leave** (:meth:`RowPool.free`): the row is free for the next join.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..model.kv_cache import KVPool, PoolBatch
from ..model.transformer import Transformer

PREFIX_MIN = 4
"""Shorter shared prefixes (the start token, a common first word) are not worth a copy."""

SLOT_STEP = 64
"""The pool's slots per row grow to the longest row admitted, in steps of this many."""


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    if a[:n] == b[:n]:
        return n
    lo, hi = 1, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]: bisect, list slices compare in C
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


class RowPool:
    """Rows of the running batch (see the module docstring). ``logits[r]`` are row r's next-token
    logits after a join or a decode step."""

    def __init__(self, model: Transformer, rows: int, pad_id: int, dtype: torch.dtype):
        self.model, self.rows, self.pad_id, self.dtype = model, rows, pad_id, dtype
        self.kv: KVPool | None = None
        self.busy = [False] * rows
        self.logits: torch.Tensor | None = None  # (rows, V)
        self.reused_tokens = 0
        """Prompt tokens whose prefill a held prefix saved (cumulative)."""

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def hi(self) -> int:
        """One past the last busy row: decode steps run over rows ``[0, hi)``."""
        return max((r + 1 for r, b in enumerate(self.busy) if b), default=0)

    def free(self, row: int) -> None:
        self.busy[row] = False

    def reset(self) -> None:
        """Forget every row (after a failed step the slots may be half written)."""
        self.kv, self.logits, self.busy = None, None, [False] * self.rows

    def _room(self, slots: int) -> KVPool:
        """The pool, with at least ``slots`` slots per row."""
        slots = -(-slots // SLOT_STEP) * SLOT_STEP
        if self.kv is None:
            self.kv = KVPool.empty(self.model.cfg, self.rows, slots, self.device, self.dtype)
        elif slots > self.kv.capacity:
            self.kv = self.kv.grown(slots)
        return self.kv

    def _claim(self) -> int:
        row = self.busy.index(False)  # the lowest free row: keeps [0, hi) dense
        self.busy[row] = True
        return row

    @torch.no_grad()
    def join(self, prompts: list[list[int]], counts: list[int], room: int) -> list[list[int]]:
        """Give prompt i ``counts[i]`` rows holding it, its next-token logits in ``logits[row]``;
        ``room`` is the slots the longest of them will reach. Returns each prompt's rows."""
        kv = self._room(room + 1)  # +1: a free row's padding write lands past what it holds
        if self.logits is None:
            self.logits = torch.zeros(self.rows, self.model.cfg.vocab_size, device=self.device)
        first: list[int] = []  # each prompt's row that is prefilled
        passes: tuple[list[int], list[int]] = ([], [])  # prompts prefilled in the first and the second pass
        later: dict[int, tuple[int, int]] = {}  # second-pass prompt -> (first-pass prompt, shared length)
        for i, prompt in enumerate(prompts):
            cap = len(prompt) - 1  # at least one token is computed: it gives the logits
            src, held = max(((r, common_prefix(kv.ids[r], prompt)) for r in range(self.rows)),
                            key=lambda t: t[1], default=(0, 0))
            held = min(held, cap)
            ahead, shared = max(((j, common_prefix(prompts[j], prompt)) for j in passes[0]),
                                key=lambda t: t[1], default=(-1, 0))
            shared = min(shared, cap)
            if shared > max(held, PREFIX_MIN - 1):
                row = self._claim()
                kv.held[row], kv.ids[row] = 0, []  # filled in the second pass
                later[i] = (ahead, shared)
                passes[1].append(i)
            else:
                if held >= PREFIX_MIN and not self.busy[src]:
                    row, self.busy[src] = src, True  # take over the freed row that holds the prefix
                else:
                    row = self._claim()
                kv.copy_prefix_(src, row, held if held >= PREFIX_MIN else 0)
                passes[0].append(i)
            first.append(row)
        self._prefill([(first[i], prompts[i]) for i in passes[0]])
        for i in passes[1]:
            j, shared = later[i]
            kv.copy_prefix_(first[j], first[i], shared)
        self._prefill([(first[i], prompts[i]) for i in passes[1]])
        out = []
        for i, prompt in enumerate(prompts):
            rows = [first[i]] + [self._claim() for _ in range(counts[i] - 1)]
            for r in rows[1:]:  # the n samples of a prompt share its prefill
                kv.copy_prefix_(first[i], r, len(prompt))
                self.logits[r] = self.logits[first[i]]
            out.append(rows)
        return out

    def _prefill(self, todo: list[tuple[int, list[int]]]) -> None:
        """Compute each (row, prompt)'s tokens past what its row holds, in one right-padded forward
        (or one per row, where the padding would run past the pool's slots)."""
        if not todo:
            return
        kv = self.kv
        assert kv is not None
        rest = [p[kv.held[r]:] for r, p in todo]
        T = max(map(len, rest))
        # Padding takes positions too: they must stay within the slots and the RoPE table.
        if max(kv.held[r] for r, _ in todo) + T > min(kv.capacity, self.model.cfg.max_seq_len) and len(todo) > 1:
            for one in todo:
                self._prefill([one])
            return
        self.reused_tokens += sum(kv.held[r] for r, _ in todo)
        ids = torch.full((len(todo), T), self.pad_id, dtype=torch.long)  # (B, T), right-padded
        last = torch.zeros(len(todo), T, dtype=torch.bool)  # (B, T): each row's last real token
        for b, tokens in enumerate(rest):
            ids[b, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            last[b, len(tokens) - 1] = True
        rows = [r for r, _ in todo]
        batch = kv.batch(rows, [len(t) for t in rest], T)
        _, logits = self.model(ids.to(self.device), cache=batch, keep=last.to(self.device))  # (B, V)
        self.logits[rows] = logits.to(self.logits.dtype)  # type: ignore[index]
        for r, p in todo:
            kv.ids[r] = list(p)

    def decode(self, tokens: dict[int, int], step: Callable) -> None:
        """One decode step: busy row r takes ``tokens[r]``; ``step(model, ids, cache)`` -> (hi, V)
        logits (the scheduler's ``decode_step``)."""
        kv = self.kv
        assert kv is not None and self.logits is not None
        hi = self.hi
        ids = [tokens.get(r, self.pad_id) for r in range(hi)]
        batch: PoolBatch = kv.batch(slice(0, hi), [int(r in tokens) for r in range(hi)], 1)
        self.logits[:hi] = step(self.model, torch.tensor(ids, device=self.device), batch)
        for r, t in tokens.items():
            kv.ids[r].append(t)
