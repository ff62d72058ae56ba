"""Packing: no token lost or invented, block layout, positions, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pure_transformer.data.packing import Packer, pack_texts, pack_token_stream

EOT = 0
SEQ = 64


def random_docs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Lengths from empty to several blocks, ids never equal to EOT.
    return [rng.integers(1, 500, size=int(rng.integers(0, 4 * SEQ))) for _ in range(n)]


def joined(docs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.concatenate(([EOT], d)) for d in docs])


def drain(packer: Packer, docs, sources=None) -> list:
    blocks = []
    for i, doc in enumerate(docs):
        packer.add(doc, 0 if sources is None else sources[i])
        while (block := packer.pop()) is not None:
            blocks.append(block)
    return blocks


@pytest.mark.fast
def test_blocks_plus_remainder_are_exactly_the_joined_documents():
    docs = random_docs(200)
    packer = Packer(SEQ, EOT)
    blocks = drain(packer, docs)
    stream = np.concatenate([b.tokens for b in blocks] + [packer.remainder()])
    np.testing.assert_array_equal(stream, joined(docs))
    assert len(packer.remainder()) < SEQ + 1


@pytest.mark.fast
def test_block_shapes_and_per_source_counts():
    docs = random_docs(100, seed=1)
    sources = [i % 3 for i in range(len(docs))]
    blocks = drain(Packer(SEQ, EOT, num_sources=3), docs, sources)
    assert blocks
    for b in blocks:
        assert b.tokens.shape == b.position_ids.shape == (SEQ + 1,)
        assert b.tokens.dtype == np.int64
        assert b.source_tokens.sum() == SEQ + 1
    per_source = np.sum([b.source_tokens for b in blocks], axis=0)
    emitted = sum(len(b.tokens) for b in blocks)
    expected = np.array([sum(len(d) + 1 for d, s in zip(docs, sources) if s == k) for k in range(3)])
    assert per_source.sum() == emitted
    assert np.all(per_source <= expected) and np.all(expected - per_source <= SEQ)  # the rest is queued


@pytest.mark.fast
def test_position_ids_restart_at_each_document_and_each_block():
    blocks = drain(Packer(SEQ, EOT), random_docs(100, seed=2))
    for b in blocks:
        assert b.position_ids[0] == 0
        starts = b.tokens == EOT
        np.testing.assert_array_equal(b.position_ids[starts], 0)
        inside = ~starts
        inside[0] = False
        # Within a document, positions count up by one.
        np.testing.assert_array_equal(b.position_ids[inside], b.position_ids[np.flatnonzero(inside) - 1] + 1)


@pytest.mark.fast
def test_resume_with_a_carried_remainder():
    docs = random_docs(120, seed=3)
    reference = drain(Packer(SEQ, EOT), docs)

    first = Packer(SEQ, EOT)
    head = drain(first, docs[:57])
    state = json.loads(json.dumps(first.state_dict()))
    assert sum(len(p[1]) for p in state["pieces"]) == first.queued_tokens > 0
    resumed = Packer(SEQ, EOT)
    resumed.load_state_dict(state)
    tail = drain(resumed, docs[57:])
    assert len(head + tail) == len(reference)
    for got, want in zip(head + tail, reference):
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(got.position_ids, want.position_ids)


@pytest.mark.fast
def test_pack_token_stream_and_pack_texts_round_trip(tiny_tokenizer, bundled):
    texts = bundled.general[:40]
    blocks = list(pack_texts(texts, tiny_tokenizer, seq_len=SEQ))
    direct = list(pack_token_stream((tiny_tokenizer.encode(t) for t in texts), SEQ, tiny_tokenizer.eot_id))
    assert len(blocks) == len(direct) > 0
    stream = np.concatenate([b.tokens for b in blocks]).tolist()
    eot = tiny_tokenizer.eot_id
    expected = [tok for t in texts for tok in [eot, *tiny_tokenizer.encode(t)]]
    assert stream == expected[: len(stream)]
    # Documents decode back to their text between EOTs.
    decoded = tiny_tokenizer.decode(stream[1 : stream.index(eot, 1)])
    assert decoded == texts[0]


def mixed_docs(n: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """Source 1 (the "MCQs"): documents of half to most of a block; source 0 ("text"): shorter ones and
    a few longer than a block. Every document's tokens are unique, so its place in a block can be found."""
    rng = np.random.default_rng(seed)
    docs, sources, next_id = [], [], 1
    for _ in range(n):
        source = int(rng.random() < 0.6)
        size = int(rng.integers(SEQ // 2, SEQ - 4) if source else rng.choice([rng.integers(3, SEQ // 2), 2 * SEQ]))
        docs.append(np.arange(next_id, next_id + size))
        sources.append(source)
        next_id += size
    return docs, sources


def whole_in(blocks: list, doc: np.ndarray) -> bool:
    """Whether ``[EOT, *doc]`` sits inside one block."""
    for b in blocks:
        hits = np.flatnonzero(b.tokens == doc[0])
        if hits.size and hits[0] >= 1 and b.tokens[hits[0] - 1] == EOT and \
                np.array_equal(b.tokens[hits[0]:hits[0] + len(doc)], doc):
            return True
    return False


@pytest.mark.fast
def test_whole_sources_are_never_split_and_nothing_is_lost_or_duplicated():
    docs, sources = mixed_docs(400, seed=4)
    plain = drain(Packer(SEQ, EOT, num_sources=2), docs, sources)
    packer = Packer(SEQ, EOT, num_sources=2, whole=frozenset({1}))
    blocks = drain(packer, docs, sources)
    emitted = [d for d, s in zip(docs, sources) if s == 1 and d[0] < blocks[-1].tokens.max()]
    split_plain = sum(not whole_in(plain, d) for d in emitted)
    split_whole = [d for d in emitted[:-40] if not whole_in(blocks, d)]  # the last ones may still be queued
    assert split_plain > len(emitted) // 4 and not split_whole  # the plain packer splits a third of them
    # Every token of every document once, EOTs included: the blocks and the queue are a reordering.
    out = np.concatenate([b.tokens for b in blocks] + [packer.remainder()])
    np.testing.assert_array_equal(np.sort(out), np.sort(joined(docs)))
    for b in blocks:  # positions still restart at every document and at the block start
        assert b.position_ids[0] == 0 and np.all(b.position_ids[b.tokens == EOT] == 0)


@pytest.mark.fast
def test_whole_sources_resume_exactly():
    docs, sources = mixed_docs(300, seed=5)
    reference = drain(Packer(SEQ, EOT, num_sources=2, whole=frozenset({1})), docs, sources)
    first = Packer(SEQ, EOT, num_sources=2, whole=frozenset({1}))
    head = drain(first, docs[:131], sources[:131])
    resumed = Packer(SEQ, EOT, num_sources=2, whole=frozenset({1}))
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    tail = drain(resumed, docs[131:], sources[131:])
    assert len(head + tail) == len(reference)
    for got, want in zip(head + tail, reference):
        np.testing.assert_array_equal(got.tokens, want.tokens)
