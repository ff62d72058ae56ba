"""KV caches for incremental decoding with :class:`pure_transformer.model.transformer.Transformer`.

- :class:`KVCache`: attention runs over the filled slots alone, so every decode
  step has a new shape. Cheapest in eager mode; the GRPO scorer keeps it in the
  autograd graph.
- :class:`StaticKVCache`: attention spans the whole preallocated buffer under a
  mask and the write position is a device tensor, so a decode step has one shape
  and can be compiled once and replayed as a CUDA graph.

- :func:`right_aligned`: merges rows of several caches into one (the serving
  scheduler's continuous batching: rows prefilled apart join one batch).

Both left-pad rows of different prompt lengths: ``pad[b]`` leading slots of row
``b`` hold padding that no query attends to, and RoPE positions count from the
first real token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig


def _decode_mask(queries: torch.Tensor, slots: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, S) bool: query slot ``queries[t]`` may attend key slot ``slots[s]`` when it is
    not later and not padding. A padding query may see itself, so its softmax is never over
    an empty set (no NaN)."""
    q, s = queries[:, None], slots[None, :]  # (T, 1), (1, S)
    allowed = (s <= q)[None] & (s[None] >= pad[:, None, None])  # (B, T, S)
    return (allowed | (s == q)[None])[:, None]


@dataclass
class KVCache:
    """Keys and values of past tokens, for incremental decoding.

    Every row writes its next token into the same slot, so rows of different
    prompt lengths are left-padded: ``pad[b]`` leading slots of row ``b`` hold
    padding that no query attends to, and RoPE positions count from the first
    real token. ``length`` slots are filled, and attention runs over those alone,
    so each decode step has a new shape (see :class:`StaticKVCache` for the
    fixed-shape variant).
    """

    k: list[torch.Tensor]  # per layer (B, Hkv, capacity, D)
    v: list[torch.Tensor]
    pad: torch.Tensor  # (B,) long
    length: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int, device: torch.device | str,
              dtype: torch.dtype, pad: torch.Tensor | None = None) -> "KVCache":
        if max_len > cfg.max_seq_len:
            raise ValueError(f"cache of {max_len} tokens exceeds max_seq_len {cfg.max_seq_len}")
        shape = (batch, cfg.kv_heads, max_len, cfg.head_dim)
        pad = torch.zeros(batch, dtype=torch.long, device=device) if pad is None else pad.to(device)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)], pad)

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def check(self, T: int) -> None:
        if self.length + T > self.capacity:
            raise ValueError(f"sequence length {self.length + T} exceeds the cache's {self.capacity} slots")

    def positions(self, T: int) -> torch.Tensor:
        """(B, T) RoPE positions of the next T tokens (pad slots clamp to 0)."""
        slots = torch.arange(self.length, self.length + T, device=self.pad.device)
        return (slots[None, :] - self.pad[:, None]).clamp(min=0)

    def attention_mask(self, T: int) -> torch.Tensor:
        """(B, 1, T, length + T) bool over the filled slots and the T new ones."""
        q = torch.arange(self.length, self.length + T, device=self.pad.device)
        return _decode_mask(q, torch.arange(self.length + T, device=self.pad.device), self.pad)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, Hkv, T, D) new keys/values after the filled slots; returns the
        keys and values to attend over, (B, Hkv, length + T, D)."""
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, T: int) -> None:
        self.length += T

    def select(self, rows: torch.Tensor) -> "KVCache":
        """Keep only ``rows`` (a (R,) index): finished sequences stop costing compute."""
        return KVCache([k[rows] for k in self.k], [v[rows] for v in self.v], self.pad[rows], self.length)


@dataclass
class StaticKVCache:
    """A :class:`KVCache` whose decode step has one shape from first token to last.

    The next slot is a (1,) device tensor, not a Python int, writes go through
    ``index_copy_`` and attention always spans all ``capacity`` slots under a mask,
    so a decode step's graph never changes: ``torch.compile(fullgraph=True)``
    traces it once per batch size and CUDA graphs can replay it. The price is
    attention over unfilled (masked) slots.

    The buffers are meant to be allocated once and reused: :meth:`load_` copies a
    prefilled :class:`KVCache` in, :meth:`compact_` moves the rows still decoding to
    the front, and :meth:`rows` is the view of the first n rows a step runs on. Every
    view of a given size has the same addresses, call after call, which is what a
    replayed CUDA graph needs.
    """

    k: list[torch.Tensor]  # per layer (B, Hkv, capacity, D)
    v: list[torch.Tensor]
    pad: torch.Tensor  # (B,) long
    slot: torch.Tensor  # (1,) long: the next slot to write

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int, device: torch.device | str,
              dtype: torch.dtype, pad: torch.Tensor | None = None) -> "StaticKVCache":
        dyn = KVCache.empty(cfg, batch, max_len, device, dtype, pad)
        return cls(dyn.k, dyn.v, dyn.pad, torch.zeros(1, dtype=torch.long, device=device))

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def check(self, T: int) -> None:
        """Nothing: reading the slot would sync with the device; the caller sizes the cache."""

    def _new_slots(self, T: int) -> torch.Tensor:
        return self.slot + torch.arange(T, device=self.slot.device)  # (T,)

    def positions(self, T: int) -> torch.Tensor:
        return (self._new_slots(T)[None, :] - self.pad[:, None]).clamp(min=0)

    def attention_mask(self, T: int) -> torch.Tensor:
        """(B, 1, T, capacity) bool: unfilled slots are later than every query, so masked."""
        return _decode_mask(self._new_slots(T), torch.arange(self.capacity, device=self.pad.device), self.pad)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slots = self._new_slots(k.shape[2])
        self.k[layer].index_copy_(2, slots, k)
        self.v[layer].index_copy_(2, slots, v)
        return self.k[layer], self.v[layer]

    def advance(self, T: int) -> None:
        self.slot += T  # in place: a compiled step keeps pointing at the same tensor

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]

    def rows(self, n: int) -> "StaticKVCache":
        """A view of the first ``n`` rows (same storage, same slot tensor)."""
        return StaticKVCache([k[:n] for k in self.k], [v[:n] for v in self.v], self.pad[:n], self.slot)

    @torch.no_grad()
    def load_(self, cache: KVCache, rows: torch.Tensor) -> "StaticKVCache":
        """Copy rows ``rows`` of a prefilled ``cache`` into the first ``len(rows)`` rows;
        returns their view, positioned after the prefill. Slots past it keep stale
        values, which the mask never lets a query see."""
        n, filled = len(rows), cache.length
        for mine, theirs in ((self.k, cache.k), (self.v, cache.v)):
            for dst, src in zip(mine, theirs):
                dst[:n, :, :filled].copy_(src[rows, :, :filled])
        self.pad[:n].copy_(cache.pad[rows])
        self.slot.fill_(filled)
        return self.rows(n)

    @torch.no_grad()
    def compact_(self, keep: torch.Tensor) -> "StaticKVCache":
        """Move rows ``keep`` to the front, in place; returns the view of them."""
        for t in (*self.k, *self.v, self.pad):
            t[:len(keep)] = t[keep]  # the gather is a new tensor, so overlapping rows are safe
        return self.rows(len(keep))


@torch.no_grad()
def right_aligned(parts: list[tuple[KVCache, torch.Tensor]], extra: int) -> KVCache:
    """A fresh cache of ``rows`` from each ``(cache, rows)`` part, every row's last filled
    slot at the same place, and ``extra`` free slots after it: how rows prefilled apart
    (or decoded for different lengths) join one batch that writes one slot per step.

    The common left padding is trimmed, so the filled slots are as many as the longest
    row's own tokens. The capacity may pass ``max_seq_len``: a row's RoPE position is its
    slot minus its padding, which stays below its own prompt + max_tokens, so only the
    slot count, never a position, grows with the rows around it."""
    own = [c.length - c.pad[rows] for c, rows in parts]  # (R_i,) tokens each row holds
    length = max(int(o.max()) for o in own)
    first = parts[0][0]
    total = sum(len(rows) for _, rows in parts)
    shape = (total, first.k[0].shape[1], length + extra, first.k[0].shape[3])
    k = [torch.zeros(shape, device=t.device, dtype=t.dtype) for t in first.k]
    v = [torch.zeros(shape, device=t.device, dtype=t.dtype) for t in first.v]
    pads, at = [], 0
    for (cache, rows), o in zip(parts, own):
        shift = length - cache.length  # every slot of this part moves by as much; < 0 trims padding
        src, dst = max(0, -shift), max(0, shift)
        for mine, theirs in ((k, cache.k), (v, cache.v)):
            for d, s in zip(mine, theirs):
                d[at:at + len(rows), :, dst:length] = s[rows, :, src:cache.length]
        pads.append(length - o)
        at += len(rows)
    return KVCache(k, v, torch.cat(pads), length)
