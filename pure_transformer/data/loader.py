"""Training and validation batches: the mixture, packed, sharded and resumable.

Logical shards. The training stream is a function of a fixed number ``L`` of
*logical shards* (``PretrainConfig.data_shards``), never of how many ranks and
DataLoader workers read it (MosaicML Streaming's "canonical nodes"). Logical
shard ``s`` reads documents ``s`` mod ``L`` of every source (``sources.Shard``)
through its own :class:`ShardPipeline` (sources -> shuffle windows -> mixture ->
packer). Row ``k`` of the canonical stream is row ``k // L`` of shard ``k % L``.

Readers. Each DataLoader worker of each rank (a rank with ``num_workers=0`` is
one reader) is reader ``worker * world_size + rank`` of ``R = world_size * W``
(``W = max(1, num_workers)``) and owns shards ``reader, reader + R, ...``
(:class:`ShardLayout`); ``R`` must divide ``L``. A reader serves its shards
round-robin: always the one with the fewest rows consumed, ties to the lowest
index, and hands over single rows, which the main process groups into batches
(so the DataLoader runs with ``batch_size=None``). With that ownership rank ``p``
consumes canonical rows ``p, p + world_size, ...`` in order, so one optimizer
step covers the same rows whatever the world size, ``num_workers`` or
micro-batch (given the same global batch): two ranks train on exactly what one
rank with twice the accumulation does.

Exact resume. A worker attaches the state of the shard it just read from to
each row. :class:`TrainLoader` (main process) records it when the training
loop *consumes* the batch holding the row, so rows prefetched but not consumed
are simply produced again after a restart. The state is kept per logical shard (rows
consumed, tokens per source, pipeline state); a rank's ``state_dict()`` is
authoritative for the shards it owns, and :func:`merge_states` joins the ranks'
states into one that does not depend on the layout that wrote it: it resumes
on any world size and ``num_workers`` whose reader count divides ``L``. torch
serves IterableDataset workers strictly round-robin, so on (re)start the loader
rotates the readers so that worker 0 is the one whose next shard has the fewest
rows consumed: that is the next one in line whenever every rank stopped after
the same number of rows (a checkpoint is always taken between optimizer steps).

Memory. ``shuffle_buffer`` counts documents per source over *all* logical
shards: each shard's window holds ``ceil(shuffle_buffer / L)`` documents.
Since a shard reads every ``L``-th document, one such window still spans about
``shuffle_buffer`` consecutive documents of the source, and a reader holding
``L / R`` shards holds ``shuffle_buffer / R`` documents per source: the job as a
whole holds one buffer, not one per reader.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..config.pretrain import DEFAULT_DATA_SHARDS
from ..errors import DataError
from ..mcq.answer_format import AnswerFormat
from .mixing import MixtureConfig, build_mixture, warn_on_repeats
from .packing import ENCODE_BATCH, Block, Encoder, Packer
from .registry import open_source, source_kind
from .sources import RetryPolicy, Shard, SourceKind

Batch = dict[str, Any]
STATE_VERSION = 2  # 1: per-rank shards (rank * W + worker), not resumable now


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A data worker ignores SIGTERM and SIGINT. torchrun's agent (and a terminal's Ctrl-C)
    signal the trainer's whole process group; the trainer finishes its step and saves, and
    a worker that died on the signal would crash that step instead. The trainer shuts its
    workers down itself, and torch's workers exit when their parent does."""
    del worker_id
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _as_is(item: dict[str, Any]) -> dict[str, Any]:
    """The DataLoader's per-item hook, doing nothing: its default walks every list in the item, and the
    pipeline state holds the packer's queued tokens as lists (thousands of ints with whole MCQs),
    which cost 30 ms a batch to walk. Blocks stay numpy arrays until :func:`collate`."""
    return item


class ShardPipeline:
    """One logical shard of the training stream, from documents to packed rows."""

    def __init__(
        self, config: MixtureConfig, encoder: Encoder, seq_len: int, shard: Shard, retry: RetryPolicy = RetryPolicy()
    ) -> None:
        self.config = config
        self.mixture = build_mixture(config, encoder, shard, retry)
        whole = frozenset(i for i, source in enumerate(config.sources)
                          if config.whole_mcqs and source_kind(source.name) is SourceKind.MCQ)
        self.packer = Packer(seq_len, encoder.separator_id, num_sources=len(config.sources), whole=whole)
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
class ShardLayout:
    """Which logical shards each reader (rank x DataLoader worker) owns."""

    num_shards: int
    world_size: int = 1
    workers: int = 1  # readers per rank: max(1, num_workers)

    def __post_init__(self) -> None:
        readers = self.world_size * self.workers
        if self.world_size < 1 or self.workers < 1 or self.num_shards < 1 or self.num_shards % readers:
            raise DataError(
                f"{self.num_shards} logical data shards cannot be split over world_size x readers = "
                f"{self.world_size} x {self.workers} = {readers}; the data shards must be a multiple of that"
            )

    def reader_shards(self, rank: int, worker: int) -> list[int]:
        """The shards reader ``(rank, worker)`` serves, in index order."""
        return list(range(worker * self.world_size + rank, self.num_shards, self.world_size * self.workers))

    def rank_shards(self, rank: int) -> list[int]:
        """The shards a rank's readers own together: ``rank`` mod ``world_size``."""
        return list(range(rank, self.num_shards, self.world_size))


def next_shard(shards: Sequence[int], rows: Sequence[int]) -> int:
    """The shard a reader serves next: fewest rows consumed, ties to the lowest index.

    Round-robin from equal counts, and a function of the counts alone, so a
    resumed reader (on any layout) picks up where the saved counts say."""
    return min(shards, key=lambda s: (rows[s], s))


@dataclass(frozen=True)
class _StreamSpec:
    config: MixtureConfig
    encoder: Encoder
    seq_len: int
    batch_size: int
    rank: int
    layout: ShardLayout
    retry: RetryPolicy

    def shard_config(self) -> MixtureConfig:
        """The mixture one logical shard runs: its share of the shuffle buffer (module docstring)."""
        size = self.config.shuffle_buffer
        return replace(self.config, shuffle_buffer=None if size is None else -(-size // self.layout.num_shards))


class _PackedStream(IterableDataset):
    """Runs in each DataLoader worker (or in-process): one reader's shards, resumed, row by row.

    Items are single rows (``{"block", "_shard", "_state"}``), not batches: the
    main process groups them, so the stream of rows does not depend on the
    micro-batch size either. A state-only item marks the end of a finite shard,
    so the documents read while looking for one more row stay on the books.
    """

    def __init__(self, spec: _StreamSpec, pipelines: list[dict[str, Any] | None], rows: list[int],
                 rotation: int) -> None:
        self.spec = spec
        self.pipelines = pipelines
        self.rows = rows
        self.rotation = rotation

    def __iter__(self) -> Iterator[dict[str, Any]]:
        spec, layout = self.spec, self.spec.layout
        info = get_worker_info()
        worker = ((info.id if info is not None else 0) + self.rotation) % layout.workers
        config, rows = spec.shard_config(), list(self.rows)
        pipelines: dict[int, ShardPipeline] = {}
        active = layout.reader_shards(spec.rank, worker)
        while active:
            s = next_shard(active, rows)
            if s not in pipelines:  # built on first use: a shard costs nothing before it is read
                pipelines[s] = ShardPipeline(config, spec.encoder, spec.seq_len, Shard(s, layout.num_shards),
                                             spec.retry)
                if self.pipelines[s] is not None:
                    pipelines[s].load_state_dict(self.pipelines[s])
            block = pipelines[s].next_block()
            if block is None:  # a finite stream (stopping strategy) ended in this shard
                active.remove(s)
            else:
                rows[s] += 1
            yield {"block": block, "_shard": s, "_state": pipelines[s].state_dict()}


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
    Counts and statistics cover this rank's shards.
    """

    def __init__(self, spec: _StreamSpec, num_workers: int, pin_memory: bool = False, prefetch_factor: int = 2) -> None:
        self.spec = spec
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        n = spec.layout.num_shards
        self._owned = spec.layout.rank_shards(spec.rank)
        self._pipelines: list[dict[str, Any] | None] = [None] * n
        self._rows = [0] * n
        self._tokens = [[0] * len(spec.config.names) for _ in range(n)]  # per shard, per source

    @property
    def source_names(self) -> list[str]:
        return self.spec.config.names

    def _rotation(self) -> int:
        """The reader to serve first: the one whose next shard has the fewest rows consumed."""
        layout = self.spec.layout
        firsts = [next_shard(layout.reader_shards(self.spec.rank, w), self._rows) for w in range(layout.workers)]
        return min(range(layout.workers), key=lambda w: (self._rows[firsts[w]], firsts[w]))

    def __iter__(self) -> Iterator[Batch]:
        dataset = _PackedStream(self.spec, list(self._pipelines), list(self._rows), self._rotation())
        loader = DataLoader(
            dataset,
            batch_size=None,  # items are rows, grouped here
            num_workers=self.num_workers,
            # Items are rows: keep about prefetch_factor batches in flight per worker.
            prefetch_factor=self.prefetch_factor * self.spec.batch_size if self.num_workers > 0 else None,
            persistent_workers=False,  # workers must restart from the consumed state
            worker_init_fn=_leave_stop_signals_to_the_trainer if self.num_workers > 0 else None,
            collate_fn=_as_is,
        )
        blocks: list[Block] = []
        for item in loader:
            # Recorded as soon as the row is taken: the generator only runs inside next(), which
            # returns the batch holding this row, so a recorded row is always a consumed one.
            s = item["_shard"]
            self._pipelines[s] = item["_state"]
            if (block := item["block"]) is None:  # the end of a finite shard: nothing to train on
                continue
            self._rows[s] += 1
            self._tokens[s] = [a + int(b) for a, b in zip(self._tokens[s], block.source_tokens)]
            blocks.append(block)
            if len(blocks) == self.spec.batch_size:
                yield self._collate(blocks)
                blocks = []
        if blocks:  # a finite stream's last batch may be shorter
            yield self._collate(blocks)

    def _collate(self, blocks: list[Block]) -> Batch:
        batch = collate(blocks, self.source_names)
        if self.pin_memory:  # rows are grouped here, after the DataLoader, so pin here too
            for key in ("input_ids", "labels", "position_ids"):
                batch[key] = batch[key].pin_memory()
        return batch

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable; authoritative for this rank's shards (``owned``), see :func:`merge_states`."""
        return {
            "version": STATE_VERSION,
            "num_shards": self.spec.layout.num_shards,
            "sources": list(self.source_names),
            "owned": list(self._owned),
            "shards": [
                {"rows": self._rows[s], "source_tokens": list(self._tokens[s]), "pipeline": self._pipelines[s]}
                for s in range(self.spec.layout.num_shards)
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a state of any layout that covers this rank's shards (usually merged)."""
        _check_state(state, self.spec.layout.num_shards, self.source_names)
        missing = sorted(set(self._owned) - set(state["owned"]))
        if missing:
            raise DataError(f"data state does not cover logical shard(s) {missing}; merge every rank's state first")
        for s, shard in enumerate(state["shards"]):
            self._rows[s], self._tokens[s], self._pipelines[s] = shard["rows"], list(shard["source_tokens"]), \
                shard["pipeline"]

    def stats(self) -> list[SourceStats]:
        """Per-source tokens and shares of this rank's consumed batches, against the targets."""
        tokens = [sum(self._tokens[s][i] for s in self._owned) for i in range(len(self.source_names))]
        total = sum(tokens) or 1
        mixtures = [p["mixture"] for s in self._owned if (p := self._pipelines[s]) is not None]
        out = []
        for i, (name, target) in enumerate(zip(self.source_names, self.spec.config.probabilities)):
            out.append(
                SourceStats(
                    name=name,
                    target_share=target,
                    tokens=tokens[i],
                    share=tokens[i] / total,
                    docs=sum(m["docs"][i] for m in mixtures),
                    epoch=max((m["epochs"][i] for m in mixtures), default=0),
                )
            )
        return out


def _check_state(state: Any, num_shards: int | None, sources: Sequence[str] | None) -> None:
    """One :class:`DataError` line when ``state`` is not a version-2 state of this plan."""
    if isinstance(state, list) or not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        version = 1 if isinstance(state, list) else state.get("version") if isinstance(state, dict) else None
        raise DataError(
            f"data state version {version} (per-rank, from before logical data shards) cannot be resumed by "
            f"this version (needs {STATE_VERSION}); start a new --checkpoint-dir"
        )
    if num_shards is not None and state["num_shards"] != num_shards:
        raise DataError(f"data state has {state['num_shards']} logical data shards, this run {num_shards}")
    if sources is not None and list(state["sources"]) != list(sources):
        raise DataError(f"data state is for sources {list(state['sources'])}, not {list(sources)}")


def merge_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One layout-independent state from every rank's ``state_dict()``: each shard from its owner."""
    if not states:
        raise DataError("no data states to merge")
    first = states[0]
    for state in states:
        _check_state(state, first.get("num_shards"), first.get("sources"))
    owner: dict[int, dict[str, Any]] = {}
    for state in states:
        for s in state["owned"]:
            if s in owner:
                raise DataError(f"logical data shard {s} is owned by two of the states being merged")
            owner[s] = state
    if sorted(owner) != list(range(first["num_shards"])):
        raise DataError(f"the states cover {len(owner)} of {first['num_shards']} logical data shards")
    return {**first, "owned": sorted(owner), "shards": [owner[s]["shards"][s] for s in sorted(owner)]}


def tokens_per_source(state: dict[str, Any] | list) -> dict[str, int]:
    """Training tokens read from each source, from a checkpoint's data state (a merged
    state, or the per-rank list of version 1)."""
    totals: dict[str, int] = {}
    if isinstance(state, list):  # version 1: one state per rank, counts keyed by name
        for rank in state:
            for name, count in (rank.get("source_tokens") or {}).items():
                totals[name] = totals.get(name, 0) + int(count)
        return totals
    for shard in state.get("shards", []):
        for name, count in zip(state.get("sources", []), shard.get("source_tokens", [])):
            totals[name] = totals.get(name, 0) + int(count)
    return totals


def build_train_loader(
    config: MixtureConfig,
    encoder: Encoder,
    *,
    seq_len: int = 2048,
    batch_size: int = 8,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_shards: int = DEFAULT_DATA_SHARDS,
    token_budget: int | None = None,
    retry: RetryPolicy = RetryPolicy(),
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> TrainLoader:
    """The training stream for one rank; warns when ``token_budget`` would repeat a source > 4x.

    ``num_shards`` logical shards (a multiple of ``world_size * max(1, num_workers)``)
    fix the stream; see the module docstring."""
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside 0..{world_size - 1}")
    if batch_size < 1 or seq_len < 1 or num_workers < 0:
        raise DataError(
            f"need batch_size >= 1, seq_len >= 1, num_workers >= 0; got {batch_size}, {seq_len}, {num_workers}"
        )
    layout = ShardLayout(num_shards, world_size, max(1, num_workers))
    if token_budget is not None:
        warn_on_repeats(config, token_budget)
    spec = _StreamSpec(config, encoder, seq_len, batch_size, rank, layout, retry)
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
    """Fixed held-out batches per source: the same rows on every call, whatever the world size.

    Each source's validation split is read from its start, unshuffled, and packed
    until ``tokens_per_source`` (rounded down to whole rows) or the end of the
    split. Rank ``r`` gets rows ``r, r + world_size, ...``: shares may differ by a
    row (a rank may get none of a small source), none is dropped, so the set, and
    a token-weighted loss all-reduced over ranks (``pretrain.validate``), is the
    same on any number of ranks.
    """
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside 0..{world_size - 1}")
    out: dict[str, list[Batch]] = {}
    for name in names:
        blocks = _validation_blocks(name, encoder, seq_len, max(1, tokens_per_source // (seq_len + 1)), answer_format)
        if not blocks:
            raise DataError(f"validation split of '{name}' is too small for one row of {seq_len + 1} tokens")
        mine = blocks[rank::world_size]
        out[name] = [collate(mine[i : i + batch_size], [name]) for i in range(0, len(mine), batch_size)]
    return out


def _validation_blocks(name: str, encoder: Encoder, seq_len: int, max_blocks: int,
                       answer_format: AnswerFormat) -> list[Block]:
    packer = Packer(seq_len, encoder.separator_id)
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
