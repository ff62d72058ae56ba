"""Mixture: token and document weighting, stopping strategies, repeat warnings, exact resume."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest

from pure_transformer.data.mixing import (
    DataRepeatWarning,
    MixtureConfig,
    ShuffleWindow,
    SourceWeight,
    build_mixture,
    parse_mixture,
    warn_on_repeats,
)
from pure_transformer.data.registry import open_source
from pure_transformer.errors import DataError

BUNDLED = (SourceWeight("bundled-general", 0.85), SourceWeight("bundled-mcq", 0.15))


def take_tokens(mixture, budget: int) -> np.ndarray:
    """Tokens per source (EOT included) over the first ``budget`` tokens of the stream."""
    totals = np.zeros(len(mixture.streams), dtype=np.int64)
    for source, tokens in mixture:
        totals[source] += len(tokens) + 1
        if totals.sum() >= budget:
            break
    return totals


@pytest.mark.fast
def test_token_weighting_hits_the_shares(tiny_tokenizer):
    mixture = build_mixture(MixtureConfig(BUNDLED, shuffle_buffer=None), tiny_tokenizer)
    totals = take_tokens(mixture, 200_000)
    shares = totals / totals.sum()
    assert shares == pytest.approx([0.85, 0.15], abs=0.02)
    # Token-accurate means within one document at every point, not just on average.
    assert abs(totals[1] - 0.15 * totals.sum()) < 2_000
    assert mixture.tokens == totals.tolist()


@pytest.mark.fast
def test_document_weighting_hits_the_probabilities(tiny_tokenizer):
    config = MixtureConfig(BUNDLED, weight_by="documents", shuffle_buffer=None, seed=3)
    picks = [source for source, _ in islice(build_mixture(config, tiny_tokenizer), 3000)]
    assert np.mean(np.array(picks) == 1) == pytest.approx(0.15, abs=0.025)


@pytest.fixture
def small_sources(tmp_path, write_jsonl):
    """Two local sources of 12 and 40 documents (none held out: they have validation siblings)."""
    paths = {}
    for name, n in (("small", 12), ("large", 40)):
        docs = [{"text": f"{name} document {i} " + "word " * (i % 5)} for i in range(n)]
        paths[name] = write_jsonl(tmp_path / f"{name}_train.jsonl", docs)
        write_jsonl(tmp_path / f"{name}_validation.jsonl", [{"text": "held out"}])
    return {name: str(p) for name, p in paths.items()}


@pytest.mark.fast
@pytest.mark.parametrize("weight_by", ["tokens", "documents"])
def test_first_exhausted_stops_when_one_source_ends(tiny_tokenizer, small_sources, weight_by):
    config = MixtureConfig(
        (SourceWeight(small_sources["small"], 0.5), SourceWeight(small_sources["large"], 0.5)),
        weight_by=weight_by,
        stopping="first_exhausted",
        shuffle_buffer=8,
    )
    mixture = build_mixture(config, tiny_tokenizer)
    out = list(mixture)
    assert mixture.done and out
    assert mixture.docs[0] == 12 or mixture.docs[1] == 40  # one source ran out exactly
    assert mixture.docs[0] <= 12 and mixture.docs[1] <= 40  # and nothing repeated


@pytest.mark.fast
def test_all_exhausted_restarts_finished_sources_until_every_one_ends(tiny_tokenizer, small_sources):
    config = MixtureConfig(
        (SourceWeight(small_sources["small"], 0.5), SourceWeight(small_sources["large"], 0.5)),
        weight_by="documents",
        stopping="all_exhausted",
        shuffle_buffer=None,
    )
    mixture = build_mixture(config, tiny_tokenizer)
    list(mixture)
    assert mixture.docs[1] == 40  # the stream ended as the large source finished
    assert mixture.docs[0] > 12  # the small one was restarted meanwhile
    assert mixture.exhausted == [True, True]


@pytest.mark.fast
def test_cycling_forever_is_the_default(tiny_tokenizer, small_sources):
    config = MixtureConfig((SourceWeight(small_sources["small"], 1.0),), shuffle_buffer=None)
    mixture = build_mixture(config, tiny_tokenizer)
    assert len(list(islice(mixture, 100))) == 100
    assert mixture.epochs == [8]  # the 100th document is in the 9th pass over 12


@pytest.mark.fast
def test_repeat_warning_for_medqa_at_two_billion_tokens():
    with pytest.warns(DataRepeatWarning, match=r"medqa would repeat ~1[0-9]{2}x over 2B tokens at 15%"):
        heavy = warn_on_repeats(MixtureConfig(), 2_000_000_000)
    assert [e.name for e in heavy] == ["medqa"]  # FineWeb-Edu's 10B tokens are plenty


@pytest.mark.fast
def test_config_validation_and_parsing():
    assert parse_mixture("fineweb-edu:0.85, medqa:0.15") == MixtureConfig().sources
    with pytest.raises(DataError, match="must be > 0"):
        MixtureConfig((SourceWeight("medqa", 0.0),))
    with pytest.raises(DataError, match="weight_by must be one of tokens, documents"):
        MixtureConfig(weight_by="bytes")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="bad mixture weight"):
        parse_mixture("medqa:lots")


@pytest.mark.fast
def test_shuffle_window_permutes_within_windows(tiny_tokenizer):
    plain = ShuffleWindow(open_source("bundled-general"), tiny_tokenizer, None, 0, 0)
    shuffled = ShuffleWindow(open_source("bundled-general"), tiny_tokenizer, 32, 0, 0)
    a = [d.tokens.tolist() for d in islice(plain, 32)]
    b = [d.tokens.tolist() for d in islice(shuffled, 32)]
    assert a != b and sorted(a) == sorted(b)


@pytest.mark.fast
@pytest.mark.parametrize("weight_by", ["tokens", "documents"])
def test_resume_with_shuffle_buffer_is_exact(tiny_tokenizer, weight_by):
    config = MixtureConfig(BUNDLED, weight_by=weight_by, shuffle_buffer=50, seed=7)
    reference = [(s, t.tolist()) for s, t in islice(build_mixture(config, tiny_tokenizer), 400)]

    first = build_mixture(config, tiny_tokenizer)
    head = [(s, t.tolist()) for s, t in islice(first, 137)]
    state = json.loads(json.dumps(first.state_dict()))
    resumed = build_mixture(config, tiny_tokenizer)
    resumed.load_state_dict(state)
    tail = [(s, t.tolist()) for s, t in islice(resumed, 263)]
    assert head + tail == reference
