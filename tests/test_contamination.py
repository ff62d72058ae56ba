"""Contamination guard on MCQ training sources, and n-gram overlap measurement."""

from __future__ import annotations

import json
from itertools import takewhile

import pytest

from pure_transformer.data.contamination import ContaminationGuard, ngram_overlap, normalize_question
from pure_transformer.data.registry import open_source
from pure_transformer.mcq.answer_format import AnswerFormat
from pure_transformer.mcq.schemas import normalize_mcq


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


@pytest.mark.fast
def test_eval_questions_injected_into_training_are_dropped_and_counted(tmp_path, bundled_dir, write_jsonl):
    train = read_jsonl(bundled_dir / "medqa_train.jsonl")
    test = read_jsonl(bundled_dir / "medqa_test.jsonl")
    validation = read_jsonl(bundled_dir / "medqa_validation.jsonl")
    leaked = test[:3] + validation[:2]
    # A reformatted copy (case, spacing) must be caught too.
    shouty = dict(test[3], question="  " + test[3]["question"].upper().replace(" ", "   "))
    write_jsonl(tmp_path / "medqa_train.jsonl", train[:20] + leaked + [shouty] + train[20:40])
    write_jsonl(tmp_path / "medqa_test.jsonl", test)
    write_jsonl(tmp_path / "medqa_validation.jsonl", validation)

    source = open_source(str(tmp_path / "medqa_train.jsonl"), "train")
    texts = [d.text for d in takewhile(lambda d: d.epoch == 0, source)]
    eval_texts = {AnswerFormat.LETTER.pretrain_text(normalize_mcq(r)) for r in test + validation}
    assert not eval_texts & set(texts)
    clean = [r for r in train[:40] if r["question"] not in {e["question"] for e in test + validation}]
    assert len(texts) == len(clean)
    assert source.guard.dropped == 6 + (40 - len(clean))
    assert source.state_dict()["dropped"] == source.guard.dropped


@pytest.mark.fast
def test_bundled_mcq_training_stream_excludes_its_eval_questions(bundled):
    source = open_source("bundled-mcq", "train")
    texts = {d.text for d in takewhile(lambda d: d.epoch == 0, source)}
    held = {AnswerFormat.LETTER.pretrain_text(m) for split in ("validation", "test", "compositional")
            for m in bundled.mcq[split]}
    assert not texts & held
    assert len(texts) + source.guard.dropped >= len(set(AnswerFormat.LETTER.pretrain_text(m) for m in bundled.mcq["train"]))


@pytest.mark.fast
def test_guard_normalises_formatting():
    guard = ContaminationGuard(["What is the most likely diagnosis?"])
    assert normalize_question("  WHAT is the most-likely\tdiagnosis ") == "what is the most likely diagnosis"
    assert not guard.admits("what is the MOST likely diagnosis")
    assert guard.admits("What is the least likely diagnosis?")
    assert guard.dropped == 1


@pytest.mark.fast
def test_ngram_overlap_on_a_hand_made_example():
    train = ["the quick brown fox jumps over the lazy dog", "nothing to see here at all"]
    evals = [
        "a quick brown fox appears",  # shares "quick brown fox"
        "completely different words entirely",  # shares nothing
        "lazy dog sleeps",  # 1 trigram, not in train ("lazy dog sleeps")
        "short",  # no trigram at all
    ]
    report = ngram_overlap(train, evals, n=3)
    assert report.train_docs == 2
    assert report.contaminated_items == 1
    assert report.item_fraction == pytest.approx(1 / 4)
    # Eval trigrams: 3 + 2 + 1 + 0 = 6 distinct, one of them seen.
    assert report.eval_ngrams == 6
    assert report.shared_ngrams == 1
    assert report.ngram_fraction == pytest.approx(1 / 6)
    assert "1/4 eval items" in report.summary()


@pytest.mark.fast
def test_the_bundled_guard_blocks_the_compositional_split_like_the_test_split(bundled):
    """A compositional question slipped into training text is dropped, as a test question would be."""
    source = open_source("bundled-mcq", "train")
    guard = source.guard
    for split in ("test", "compositional"):
        assert all(not guard.admits(m.question) for m in bundled.mcq[split][:20]), split
    assert all(guard.admits(m.question) for m in bundled.mcq["train"][:20])
