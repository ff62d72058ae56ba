"""Training and validation batches: the mixture, packed, sharded and resumable.

Each reader of the training stream (one per DataLoader worker per rank; a
rank with ``num_workers=0`` is one reader) is a *shard*: shard
``rank * W + worker`` of ``world_size * W`` where ``W = max(1, num_workers)``.
Every source is split the same way (see ``sources.Shard``), so no document is
read twice or skipped. Each shard runs its own :class:`ShardPipeline`
(sources -> shuffle windows -> mixture -> packer) and builds whole batches, so
the DataLoader runs with ``batch_size=None``.

Exact resume. A worker attaches its pipeline state, as of the batch it just
built, to that batch. :class:`TrainLoader` (main process) records the state of
each batch when the training loop *consumes* it, so batches prefetched but not
consumed are simply produced again after a restart. torch serves
IterableDataset workers strictly round-robin, so the loader also records which
shard comes next; on resume it rotates the shard assignment so that worker 0
serves that shard. ``state_dict()`` is JSON-serialisable; a rank's state only
resumes that rank with the same ``num_workers`` and ``world_size``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..answer_format import AnswerFormat
from ..errors import DataError
from .mixing import MixtureConfig, build_mixture, warn_on_repeats
from .packing import ENCODE_BATCH, Block, Encoder, Packer
from .registry import open_source
from .sources import RetryPolicy, Shard

Batch = dict[str, Any]
STATE_VERSION = 1


class ShardPipeline:
    """One shard of the training stream, from documents to batches."""

    def __init__(
        self, config: MixtureConfig, encoder: Encoder, seq_len: int, shard: Shard, retry: RetryPolicy = RetryPolicy()
    ) -> None:
        self.config = config
        self.mixture = build_mixture(config, encoder, shard, retry)
        self.packer = Packer(seq_len, encoder.eot_id, num_sources=len(config.sources))
        self._docs: Iterator[tuple[int, np.ndarray]] | None = None

    def next_block(self) -> Block | None:
        """The next packed block, or ``None`` once a stopping strategy ends the stream."""
        if self._docs is None:
            self._docs = iter(self.mixture)
        while (block := self.packer.pop()) is None:
            item = next(self._docs, None)
            if item is None:
                return None  # fewer than seq_len + 1 tokens are left; they cannot fill a row
            source, tokens = item
            self.packer.add(tokens, source)
        return block

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches of ``batch_size`` rows; a finite stream's last batch may be shorter."""
        while True:
            blocks = []
            while len(blocks) < batch_size and (block := self.next_block()) is not None:
                blocks.append(block)
            if not blocks:
                return
            yield collate(blocks, self.config.names)
            if len(blocks) < batch_size:
                return

    def state_dict(self) -> dict[str, Any]:
        return {"mixture": self.mixture.state_dict(), "packer": self.packer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mixture.load_state_dict(state["mixture"])
        self.packer.load_state_dict(state["packer"])
        self._docs = None


def collate(blocks: Sequence[Block], names: Sequence[str]) -> Batch:
    """Stack blocks into ``input_ids``/``labels``/``position_ids`` (B, T) and per-source counts."""
    tokens = torch.from_numpy(np.stack([b.tokens for b in blocks]))  # (B, T + 1)
    positions = torch.from_numpy(np.stack([b.position_ids for b in blocks]))  # (B, T + 1)
    counts = np.sum([b.source_tokens for b in blocks], axis=0)  # (num_sources,)
    return {
        "input_ids": tokens[:, :-1].contiguous(),
        "labels": tokens[:, 1:].contiguous(),
        "position_ids": positions[:, :-1].contiguous(),
        "source_tokens": {name: int(n) for name, n in zip(names, counts)},
    }


@dataclass(frozen=True)
class _StreamSpec:
    config: MixtureConfig
    encoder: Encoder
    seq_len: int
    batch_size: int
    rank: int
    world_size: int
    local_shards: int
    retry: RetryPolicy


class _PackedStream(IterableDataset):
    """Runs in each DataLoader worker (or in-process): that worker's shard, resumed."""

    def __init__(self, spec: _StreamSpec, states: list[dict[str, Any] | None], rotation: int) -> None:
        self.spec = spec
        self.states = states
        self.rotation = rotation

    def __iter__(self) -> Iterator[Batch]:
        spec = self.spec
        info = get_worker_info()
        local = ((info.id if info is not None else 0) + self.rotation) % spec.local_shards
        shard = Shard(spec.rank * spec.local_shards + local, spec.world_size * spec.local_shards)
        pipeline = ShardPipeline(spec.config, spec.encoder, spec.seq_len, shard, spec.retry)
        if self.states[local] is not None:
            pipeline.load_state_dict(self.states[local])
        for batch in pipeline.batches(spec.batch_size):
            batch["_shard"] = local
            batch["_state"] = pipeline.state_dict()
            yield batch


@dataclass(frozen=True)
class SourceStats:
    """What one source contributed to the batches consumed so far."""

    name: str
    target_share: float
    tokens: int
    share: float
    docs: int  # documents drawn by the mixture (includes those still in the packer)
    epoch: int  # highest pass index any shard has reached (0 = first pass)


class TrainLoader:
    """Iterable of training batches with exact ``state_dict`` / ``load_state_dict``.

    Each ``iter()`` starts a fresh DataLoader from the position of the last
    consumed batch, so breaking out of a loop and iterating again continues.
    """

    def __init__(self, spec: _StreamSpec, num_workers: int, pin_memory: bool = False, prefetch_factor: int = 2) -> None:
        self.spec = spec
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self._states: list[dict[str, Any] | None] = [None] * spec.local_shards
        self._next_shard = 0
        self._tokens = {name: 0 for name in spec.config.names}
        self._batches = 0

    @property
    def source_names(self) -> list[str]:
        return self.spec.config.names

    def __iter__(self) -> Iterator[Batch]:
        dataset = _PackedStream(self.spec, list(self._states), self._next_shard)
        loader = DataLoader(
            dataset,
            batch_size=None,  # workers build whole batches
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
            persistent_workers=False,  # workers must restart from the consumed state
        )
        for batch in loader:
            local = batch.pop("_shard")
            self._states[local] = batch.pop("_state")
            self._next_shard = (local + 1) % self.spec.local_shards
            self._batches += 1
            for name, n in batch["source_tokens"].items():
                self._tokens[name] += n
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "world_size": self.spec.world_size,
            "rank": self.spec.rank,
            "local_shards": self.spec.local_shards,
            "next_shard": self._next_shard,
            "shards": list(self._states),
            "source_tokens": dict(self._tokens),
            "batches": self._batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (state.get("world_size"), state.get("local_shards"))
        here = (self.spec.world_size, self.spec.local_shards)
        if state.get("version") != STATE_VERSION or saved != here:
            raise DataError(
                f"data state was saved with world_size x readers = {saved[0]} x {saved[1]}, "
                f"this run has {here[0]} x {here[1]}; resume with the same ranks and num_workers"
            )
        if list(state["source_tokens"]) != self.source_names:
            raise DataError(f"data state is for sources {list(state['source_tokens'])}, not {self.source_names}")
        self._states = list(state["shards"])
        self._next_shard = state["next_shard"]
        self._tokens = dict(state["source_tokens"])
        self._batches = state["batches"]

    def stats(self) -> list[SourceStats]:
        """Per-source tokens and shares of the consumed batches, against the targets."""
        total = sum(self._tokens.values()) or 1
        mixtures = [s["mixture"] for s in self._states if s is not None]
        out = []
        for i, (name, target) in enumerate(zip(self.source_names, self.spec.config.probabilities)):
            out.append(
                SourceStats(
                    name=name,
                    target_share=target,
                    tokens=self._tokens[name],
                    share=self._tokens[name] / total,
                    docs=sum(m["docs"][i] for m in mixtures),
                    epoch=max((m["epochs"][i] for m in mixtures), default=0),
                )
            )
        return out


def build_train_loader(
    config: MixtureConfig,
    encoder: Encoder,
    *,
    seq_len: int = 2048,
    batch_size: int = 8,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    token_budget: int | None = None,
    retry: RetryPolicy = RetryPolicy(),
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> TrainLoader:
    """The training stream for one rank; warns when ``token_budget`` would repeat a source > 4x."""
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside 0..{world_size - 1}")
    if batch_size < 1 or seq_len < 1 or num_workers < 0:
        raise DataError(
            f"need batch_size >= 1, seq_len >= 1, num_workers >= 0; got {batch_size}, {seq_len}, {num_workers}"
        )
    if token_budget is not None:
        warn_on_repeats(config, token_budget)
    spec = _StreamSpec(config, encoder, seq_len, batch_size, rank, world_size, max(1, num_workers), retry)
    return TrainLoader(spec, num_workers, pin_memory, prefetch_factor)


def build_validation_batches(
    names: Sequence[str],
    encoder: Encoder,
    *,
    seq_len: int = 2048,
    batch_size: int = 8,
    tokens_per_source: int = 1_000_000,
    rank: int = 0,
    world_size: int = 1,
    answer_format: AnswerFormat = AnswerFormat.LETTER,
) -> dict[str, list[Batch]]:
    """Fixed held-out batches per source: the same rows on every call.

    Each source's validation split is read from its start, unshuffled, and packed
    until ``tokens_per_source`` (rounded down to whole rows, and to a multiple of
    ``world_size`` so every rank runs the same number of steps) or the end of the
    split. Rank ``r`` gets rows ``r, r + world_size, ...``.
    """
    out: dict[str, list[Batch]] = {}
    for name in names:
        blocks = _validation_blocks(name, encoder, seq_len, max(1, tokens_per_source // (seq_len + 1)), answer_format)
        usable = len(blocks) - len(blocks) % world_size
        if usable == 0:
            raise DataError(
                f"validation split of '{name}' is too small for {world_size} row(s) of {seq_len + 1} tokens"
            )
        mine = blocks[rank:usable:world_size]
        out[name] = [collate(mine[i : i + batch_size], [name]) for i in range(0, len(mine), batch_size)]
    return out


def _validation_blocks(name: str, encoder: Encoder, seq_len: int, max_blocks: int,
                       answer_format: AnswerFormat) -> list[Block]:
    packer = Packer(seq_len, encoder.eot_id)
    blocks: list[Block] = []
    texts: list[str] = []
    docs = iter(open_source(name, "validation", answer_format=answer_format))

    def flush() -> None:
        for ids in encoder.encode_batch(texts):
            packer.add(ids)
            while len(blocks) < max_blocks and (block := packer.pop()) is not None:
                blocks.append(block)
        texts.clear()

    for doc in docs:
        if doc.epoch > 0 or len(blocks) >= max_blocks:
            break  # one pass only: a validation set never repeats
        texts.append(doc.text)
        if len(texts) == ENCODE_BATCH:
            flush()
    flush()
    return blocks


def document_spans(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """``[start, end)`` of each document piece in one row, from its ``position_ids`` (T,)."""
    starts = torch.nonzero(position_ids == 0).flatten().tolist()
    ends = starts[1:] + [len(position_ids)]
    return list(zip(starts, ends))
