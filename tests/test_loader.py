"""Loader: exact resume with and without workers, logical shards resumed on other layouts, validation batches."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice

import pytest
import torch

from pure_transformer.data.loader import build_train_loader, build_validation_batches, document_spans, merge_states
from pure_transformer.data.mixing import MixtureConfig, SourceWeight
from pure_transformer.errors import DataError

MIX = MixtureConfig(
    (SourceWeight("bundled-general", 0.85), SourceWeight("bundled-mcq", 0.15)), shuffle_buffer=64, seed=1
)
SEQ, BATCH = 64, 4


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for key in ("input_ids", "labels", "position_ids"):
            assert torch.equal(g[key], w[key]), key
        assert g["source_tokens"] == w["source_tokens"]


@pytest.mark.parametrize("files", [False, True], ids=["in-memory", "datasets-streaming"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_yields_exactly_the_uninterrupted_batches(tiny_tokenizer, bundled_dir, num_workers, files):
    mix = MIX
    if files:  # the same mixture through the datasets streaming path, MCQ normalisation and guard
        weights = (
            SourceWeight(str(bundled_dir / "general.jsonl"), 0.85),
            SourceWeight(str(bundled_dir / "medqa_train.jsonl"), 0.15),
        )
        mix = MixtureConfig(weights, shuffle_buffer=64, seed=1)

    def loader():
        return build_train_loader(mix, tiny_tokenizer, seq_len=SEQ, batch_size=BATCH - 1, num_workers=num_workers)

    n, m = 5, 6  # 5 batches of 3 rows: an odd count leaves the second worker next in line
    reference = list(islice(loader(), n + m))

    first = loader()
    head = list(islice(first, n))
    state = json.loads(json.dumps(first.state_dict()))  # as stored in meta.json
    resumed = loader()
    resumed.load_state_dict(state)
    tail = list(islice(resumed, m))

    assert_same_batches(head + tail, reference)
    batch = tail[0]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (BATCH - 1, SEQ)
    assert batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    assert sum(batch["source_tokens"].values()) == (BATCH - 1) * (SEQ + 1)


@pytest.mark.fast
def test_stats_report_the_achieved_mixture(tiny_tokenizer):
    # One logical shard: the token-deficit rule is exact per shard to within a document, and 200 batches
    # split over 16 shards would add up 16 such errors on a stream too short to hide them.
    loader = build_train_loader(MIX, tiny_tokenizer, seq_len=SEQ, batch_size=BATCH, num_shards=1)
    list(islice(loader, 200))
    stats = {s.name: s for s in loader.stats()}
    assert sum(s.tokens for s in stats.values()) == 200 * BATCH * (SEQ + 1)
    assert stats["bundled-mcq"].share == pytest.approx(0.15, abs=0.02)
    assert stats["bundled-mcq"].docs > 0 and stats["bundled-general"].target_share == pytest.approx(0.85)


class WordIdEncoder:
    """Encodes the numbers in a text as themselves: exact bookkeeping of which document a token is from."""

    eot_id = separator_id = 0

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[int(w) for w in t.split()] for t in texts]


def id_source(tmp_path, write_jsonl, n: int = 120) -> tuple[MixtureConfig, Counter[int]]:
    """A finite one-pass source whose document i is the number 1000 + i repeated (i % 9) + 3 times."""
    docs = {1000 + i: (i % 9) + 3 for i in range(n)}
    write_jsonl(tmp_path / "ids_train.jsonl", ({"text": " ".join([str(k)] * c)} for k, c in docs.items()))
    write_jsonl(tmp_path / "ids_validation.jsonl", [{"text": "1"}])  # so train is not thinned by a hold-out
    config = MixtureConfig((SourceWeight(str(tmp_path / "ids_train.jsonl"), 1.0),), stopping="first_exhausted",
                           shuffle_buffer=16)
    return config, Counter(docs)


def rows_of(batches: list[dict]) -> Counter[tuple[int, ...]]:
    """Each packed row (its full block: inputs plus the last label) as a hashable key."""
    out: Counter[tuple[int, ...]] = Counter()
    for b in batches:
        blocks = torch.cat([b["input_ids"], b["labels"][:, -1:]], dim=1)
        out.update(tuple(row) for row in blocks.tolist())
    return out


def leftover_tokens(state: dict) -> Counter[int]:
    """Tokens still queued in the packers of a (merged) state: consumed by no batch yet."""
    out: Counter[int] = Counter()
    for shard in state["shards"]:
        for _, tokens in (shard["pipeline"] or {"packer": {"pieces": []}})["packer"]["pieces"]:
            out.update(tokens)
    return out


@pytest.mark.fast
def test_ranks_and_workers_split_the_stream_without_duplicates_or_losses(tmp_path, write_jsonl):
    config, docs = id_source(tmp_path, write_jsonl)
    seen: Counter[int] = Counter()
    states = []
    for rank in range(2):
        loader = build_train_loader(config, WordIdEncoder(), seq_len=16, batch_size=2, num_workers=2, rank=rank,
                                    world_size=2, num_shards=8)
        for batch in loader:
            seen.update(batch["input_ids"].flatten().tolist())
            seen.update(batch["labels"][:, -1].tolist())  # the last token of each row
        states.append(loader.state_dict())
    seen.update(leftover_tokens(merge_states(states)))  # the tails that never filled a row count too
    seen.pop(0)  # EOT
    assert seen == docs


def consume(config: MixtureConfig, world_size: int, num_workers: int, batches: int | None,
            state: dict | None = None) -> tuple[list[dict], dict]:
    """Every rank of a layout takes ``batches`` batches (None: to the end); returns them and the merged state."""
    taken, states = [], []
    for rank in range(world_size):
        # 3 rows a batch: an odd count leaves a reader other than the first one next in line.
        loader = build_train_loader(config, WordIdEncoder(), seq_len=16, batch_size=3, num_workers=num_workers,
                                    rank=rank, world_size=world_size, num_shards=4)
        if state is not None:
            loader.load_state_dict(state)
        taken += list(islice(loader, batches))
        states.append(loader.state_dict())
    return taken, json.loads(json.dumps(merge_states(states)))  # as stored in meta.json


@pytest.mark.parametrize("before, after", [((2, 2), (1, 0)), ((1, 0), (2, 2)), ((4, 0), (1, 2))],
                         ids=["2x2-readers-to-1", "1-reader-to-2x2", "4x1-readers-to-1x2"])
def test_state_saved_by_some_readers_resumes_on_others(tmp_path, write_jsonl, before, after):
    config, docs = id_source(tmp_path, write_jsonl)
    whole, _ = consume(config, 1, 0, None)  # the canonical stream, one reader, to the end
    (world, workers), (world2, workers2) = before, after
    head, state = consume(config, world, workers, 3)  # every rank stops after the same batch (a step boundary)
    tail, end = consume(config, world2, workers2, None, state)
    # The first 3 * world batches are exactly the canonical stream's first ones, whoever read them ...
    assert rows_of(head) == rows_of(whole[: 3 * world])
    # ... and the resumed readers produce exactly the rest: no row lost or repeated.
    assert rows_of(head) + rows_of(tail) == rows_of(whole)
    assert sum(s["rows"] for s in end["shards"]) == sum(len(b["input_ids"]) for b in whole)
    # Document by document: every token of every document once, in a row or left in a packer at the end.
    seen = Counter(t for row in (rows_of(head) + rows_of(tail)).elements() for t in row)
    seen.update(leftover_tokens(end))
    seen.pop(0)  # EOT
    assert seen == docs


@pytest.mark.fast
def test_validation_batches_are_fixed_and_the_same_on_any_world_size(tiny_tokenizer):
    names = ["bundled-general", "bundled-mcq"]
    kwargs = dict(seq_len=SEQ, batch_size=BATCH, tokens_per_source=21 * (SEQ + 1))
    first = build_validation_batches(names, tiny_tokenizer, **kwargs)
    again = build_validation_batches(names, tiny_tokenizer, **kwargs)
    for name in names:
        assert_same_batches(first[name], again[name])
        assert sum(len(b["input_ids"]) for b in first[name]) == 21

    for world in (2, 4):  # 21 rows do not divide: ranks take uneven shares, none is dropped
        ranks = [build_validation_batches(names, tiny_tokenizer, rank=r, world_size=world, **kwargs)
                 for r in range(world)]
        for name in names:
            rows = [torch.cat([b["input_ids"] for b in r[name]]) for r in ranks]
            assert [len(r) for r in rows] == [len(range(r, 21, world)) for r in range(world)]
            everything = torch.cat([b["input_ids"] for b in first[name]])
            for r in range(world):
                assert torch.equal(rows[r], everything[r::world])


@pytest.mark.fast
def test_mismatched_or_old_states_are_refused(tiny_tokenizer):
    loader = build_train_loader(MIX, tiny_tokenizer, seq_len=SEQ, batch_size=BATCH, num_shards=4)
    state = loader.state_dict()
    with pytest.raises(DataError, match="has 4 logical data shards, this run 8"):
        build_train_loader(MIX, tiny_tokenizer, seq_len=SEQ, batch_size=BATCH, num_shards=8).load_state_dict(state)
    with pytest.raises(DataError, match="version 1 .* cannot be resumed"):
        loader.load_state_dict([state])  # the old format: one state per rank
    ranks = [build_train_loader(MIX, tiny_tokenizer, seq_len=SEQ, batch_size=BATCH, num_shards=4, rank=r,
                                world_size=2) for r in range(2)]
    with pytest.raises(DataError, match="does not cover logical shard"):
        ranks[1].load_state_dict(ranks[0].state_dict())  # rank 0 alone does not speak for rank 1's shards
    with pytest.raises(DataError, match="cover 2 of 4 logical data shards"):
        merge_states([ranks[0].state_dict()])
    with pytest.raises(DataError, match="must be a multiple of that"):
        build_train_loader(MIX, tiny_tokenizer, num_shards=4, num_workers=3)


@pytest.mark.fast
def test_document_spans():
    assert document_spans(torch.tensor([0, 1, 2, 0, 1, 0])) == [(0, 3), (3, 5), (5, 6)]


@pytest.mark.fast
def test_tokens_per_source_sums_every_logical_shard_and_reads_old_states() -> None:
    from pure_transformer.data.loader import tokens_per_source

    merged = {"sources": ["web", "mcq"], "shards": [{"source_tokens": [10, 2]}, {"source_tokens": [5, 0]},
                                                    {"source_tokens": [1, 7]}]}
    assert tokens_per_source(merged) == {"web": 16, "mcq": 9}
    per_rank = [{"source_tokens": {"web": 3, "mcq": 1}}, {"source_tokens": {"web": 4}}]  # version 1
    assert tokens_per_source(per_rank) == {"web": 7, "mcq": 1}
    assert tokens_per_source([]) == {}
