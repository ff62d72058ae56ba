"""KV caches for incremental decoding with :class:`pure_transformer.model.transformer.Transformer`.

- :class:`KVCache`: attention runs over the filled slots alone, so every decode
  step has a new shape. Cheapest in eager mode; the GRPO scorer keeps it in the
  autograd graph.
- :class:`StaticKVCache`: attention spans the whole preallocated buffer under a
  mask and the write position is a device tensor, so a decode step has one shape
  and can be compiled once and replayed as a CUDA graph.

- :class:`KVPool`: a preallocated row per running sequence, each holding its own
  tokens from slot 0 (the serving scheduler's continuous batching: a sequence joins
  and leaves without copying any other), read through :class:`PoolBatch`.

The first two left-pad rows of different prompt lengths: ``pad[b]`` leading slots of row
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


@dataclass
class KVPool:
    """Preallocated KV slots, one row per running sequence, for continuous batching.

    Row ``r`` holds its own tokens in slots ``[0, held[r])``, whatever the other rows hold:
    no left padding and no alignment, so a sequence joins by writing its prefill into a free
    row and leaves by being marked free, and neither copies any other row. Attention reads
    each row's own length under a mask (:class:`PoolBatch`). A freed row keeps its slots
    (and :attr:`ids` says which tokens they hold) until it is reused, so a later prompt with
    the same prefix can start from them.
    """

    k: list[torch.Tensor]  # per layer (R, Hkv, S, D)
    v: list[torch.Tensor]
    held: list[int]  # (R,) slots each row holds, on the host: read every step, never a device sync
    ids: list[list[int]]  # (R,) the tokens whose keys and values those slots hold

    @classmethod
    def empty(cls, cfg: ModelConfig, rows: int, slots: int, device: torch.device | str,
              dtype: torch.dtype) -> "KVPool":
        shape = (rows, cfg.kv_heads, slots, cfg.head_dim)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
                   [0] * rows, [[] for _ in range(rows)])

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    @property
    def rows(self) -> int:
        return self.k[0].shape[0]

    @torch.no_grad()
    def grown(self, slots: int) -> "KVPool":
        """This pool with ``slots`` slots per row (the held ones copied): rare, when a longer row joins."""
        if slots <= self.capacity:
            return self
        out = KVPool.empty_like(self, slots)
        for mine, theirs in ((out.k, self.k), (out.v, self.v)):
            for d, s in zip(mine, theirs):
                d[:, :, :s.shape[2]] = s
        return out

    @classmethod
    def empty_like(cls, pool: "KVPool", slots: int) -> "KVPool":
        r, h, _, d = pool.k[0].shape
        k = [torch.zeros(r, h, slots, d, device=t.device, dtype=t.dtype) for t in pool.k]
        v = [torch.zeros(r, h, slots, d, device=t.device, dtype=t.dtype) for t in pool.v]
        return cls(k, v, list(pool.held), [list(i) for i in pool.ids])

    @torch.no_grad()
    def copy_prefix_(self, src: int, dst: int, length: int) -> None:
        """Row ``dst`` starts with the first ``length`` slots of row ``src`` (a prefix they share)."""
        if src != dst:
            for t in (*self.k, *self.v):
                t[dst, :, :length] = t[src, :, :length]
        self.held[dst] = length
        self.ids[dst] = self.ids[src][:length]

    def batch(self, rows: slice | list[int], grow: list[int], T: int) -> "PoolBatch":
        """The cache a forward of T tokens per row runs with over ``rows`` (a slice: a view of the
        pool, no copy; a list: gathered, for a prefill). Row i's first ``grow[i]`` tokens are real:
        they are what :meth:`PoolBatch.advance` adds to its length (0 for a free row decoding
        padding, whose writes land past what it holds)."""
        index = list(range(self.rows))[rows] if isinstance(rows, slice) else rows
        held = [self.held[r] for r in index]
        if max(held) + T > self.capacity:
            raise ValueError(f"a row would need {max(held) + T} slots; the pool has {self.capacity}")
        return PoolBatch(self, rows, index, held, grow)


class PoolBatch:
    """Rows of a :class:`KVPool` as the cache a :class:`Transformer` forward runs with: row i's
    T new tokens take positions and slots ``held[i] .. held[i] + T - 1`` and attend over its
    own slots alone, so rows of any lengths share one step."""

    def __init__(self, pool: KVPool, rows: slice | list[int], index: list[int], held: list[int], grow: list[int]):
        self.pool, self.rows, self.index, self.grow = pool, rows, index, grow
        device = pool.k[0].device
        self.held = torch.tensor(held, device=device)  # (B,)
        self.span = max(held)  # keys read: slots [0, span + T)
        self._positions: dict[int, torch.Tensor] = {}  # T -> (B, T), computed once for every layer
        self._where = torch.arange(len(index), device=device)[:, None] if isinstance(rows, slice) else \
            torch.tensor(index, device=device)[:, None]  # (B, 1) rows of the view (slice) or of the pool

    @property
    def capacity(self) -> int:
        return self.pool.capacity

    def check(self, T: int) -> None:
        """Nothing: :meth:`KVPool.batch` checked the room."""

    def positions(self, T: int) -> torch.Tensor:
        """(B, T) RoPE positions (and slots): each row counts from its own first token."""
        if T not in self._positions:
            self._positions[T] = self.held[:, None] + torch.arange(T, device=self.held.device)[None]
        return self._positions[T]

    def attention_mask(self, T: int) -> torch.Tensor:
        """(B, 1, T, span + T) bool: a query sees its row's slots up to its own."""
        keys = torch.arange(self.span + T, device=self.held.device)
        return (keys[None, None] <= self.positions(T)[:, :, None])[:, None]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, Hkv, T, D) new keys/values at each row's next slots; returns (B, Hkv, span + T, D)."""
        end = self.span + k.shape[2]
        slots = self.positions(k.shape[2])  # (B, T)
        out = []
        for pool, new in ((self.pool.k[layer], k), (self.pool.v[layer], v)):
            view = pool[self.rows] if isinstance(self.rows, slice) else pool
            view[self._where, :, slots] = new.transpose(1, 2)  # indexed (B, T, Hkv, D)
            out.append(view[:, :, :end] if isinstance(self.rows, slice) else pool[:, :, :end][self.index])
        return out[0], out[1]

    def advance(self, T: int) -> None:
        for r, g in zip(self.index, self.grow):
            self.pool.held[r] += g
