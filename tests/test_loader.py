"""Loader: exact resume with and without workers, rank/worker sharding, validation batches."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice

import pytest
import torch

from pure_transformer.data.loader import build_train_loader, build_validation_batches, document_spans
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
        return build_train_loader(mix, tiny_tokenizer, seq_len=SEQ, batch_size=BATCH, num_workers=num_workers)

    n, m = 5, 6  # an odd N leaves the second worker next in line
    reference = list(islice(loader(), n + m))

    first = loader()
    head = list(islice(first, n))
    state = json.loads(json.dumps(first.state_dict()))  # as stored in meta.json
    resumed = loader()
    resumed.load_state_dict(state)
    tail = list(islice(resumed, m))

    assert_same_batches(head + tail, reference)
    batch = tail[0]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (BATCH, SEQ)
    assert batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    assert sum(batch["source_tokens"].values()) == BATCH * (SEQ + 1)


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

    eot_id = 0

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[int(w) for w in t.split()] for t in texts]


def test_ranks_and_workers_split_the_stream_without_duplicates_or_losses(tmp_path, write_jsonl):
    # Document i is the number 1000 + i repeated (i % 9) + 3 times.
    docs = {1000 + i: (i % 9) + 3 for i in range(120)}
    write_jsonl(tmp_path / "ids_train.jsonl", ({"text": " ".join([str(k)] * n)} for k, n in docs.items()))
    write_jsonl(tmp_path / "ids_validation.jsonl", [{"text": "1"}])  # so train is not thinned by a hold-out
    config = MixtureConfig((SourceWeight(str(tmp_path / "ids_train.jsonl"), 1.0),), stopping="first_exhausted")

    seen: Counter[int] = Counter()
    for rank in range(2):
        loader = build_train_loader(
            config, WordIdEncoder(), seq_len=16, batch_size=2, num_workers=2, rank=rank, world_size=2
        )
        for batch in loader:
            seen.update(batch["input_ids"].flatten().tolist())
            seen.update(batch["labels"][:, -1].tolist())  # the last token of each row
        # Tokens still queued in each shard's packer at the end are part of the account too.
        for shard in loader.state_dict()["shards"]:
            for _, tokens in shard["packer"]["pieces"]:
                seen.update(tokens)
    seen.pop(0)  # EOT
    assert seen == Counter(docs)


def test_validation_batches_are_fixed_and_split_across_ranks(tiny_tokenizer):
    names = ["bundled-general", "bundled-mcq"]
    kwargs = dict(seq_len=SEQ, batch_size=BATCH, tokens_per_source=20 * (SEQ + 1))
    first = build_validation_batches(names, tiny_tokenizer, **kwargs)
    again = build_validation_batches(names, tiny_tokenizer, **kwargs)
    for name in names:
        assert_same_batches(first[name], again[name])
        assert sum(len(b["input_ids"]) for b in first[name]) == 20

    ranks = [build_validation_batches(names, tiny_tokenizer, rank=r, world_size=2, **kwargs) for r in range(2)]
    rows = [torch.cat([b["input_ids"] for b in r["bundled-general"]]) for r in ranks]
    assert len(rows[0]) == len(rows[1]) == 10
    everything = torch.cat([b["input_ids"] for b in first["bundled-general"]])
    assert torch.equal(torch.stack([rows[0], rows[1]], dim=1).reshape(20, SEQ), everything)


def test_mismatched_resume_is_refused(tiny_tokenizer):
    state = build_train_loader(MIX, tiny_tokenizer, seq_len=SEQ, batch_size=BATCH).state_dict()
    other = build_train_loader(MIX, tiny_tokenizer, seq_len=SEQ, batch_size=BATCH, num_workers=2)
    with pytest.raises(DataError, match="same ranks and num_workers"):
        other.load_state_dict(state)


def test_document_spans():
    assert document_spans(torch.tensor([0, 1, 2, 0, 1, 0])) == [(0, 3), (3, 5), (5, 6)]
