"""Tests for the bundled synthetic corpus: determinism, splits, leakage, answer uniqueness, shortcuts."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pure_transformer.bundled.facts import FACTS, Fact, Relation
from pure_transformer.bundled.questions import HELD_OUT_CHAINS, TRAINED_CHAINS, Hop, chain_name, state
from pure_transformer.bundled.synthetic import (TRAIN_WORDINGS, BundledCorpus, bundled_corpus, category_pools,
                                                check_fact_base, generate_questions, option_text, state_fact,
                                                write_bundled)
from pure_transformer.bundled.templates import FACT_TEMPLATES, is_reverse
from pure_transformer.errors import DataError
from pure_transformer.mcq.answer_format import AnswerFormat
from pure_transformer.mcq.record import MCQ
from pure_transformer.mcq.schemas import normalize_mcq

LETTERS = ("A", "B", "C", "D")  # these tests ask four-option questions


def _digest(corpus: BundledCorpus) -> str:
    parts = [*corpus.medical, *corpus.general, *corpus.medical_validation, *corpus.general_validation]
    for split in sorted(corpus.mcq):
        parts += [split, *(AnswerFormat.LETTER.pretrain_text(m) + m.answer for m in corpus.mcq[split])]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _training_text(corpus: BundledCorpus) -> str:
    train_mcq = [AnswerFormat.LETTER.pretrain_text(m) for m in corpus.mcq["train"]]
    return "\n".join([*corpus.medical, *corpus.general, *train_mcq])


@pytest.fixture(scope="module")
def corpus() -> BundledCorpus:
    return bundled_corpus(0)


# --------------------------------------------------------------------------
# Determinism, speed and size
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_same_seed_same_files_even_in_a_fresh_process(tmp_path: Path) -> None:
    here = write_bundled(tmp_path / "here", seed=0)
    # A fresh interpreter with another str-hash salt: set or dict ordering must not leak in.
    script = f"from pure_transformer.bundled.synthetic import write_bundled; write_bundled({str(tmp_path / 'there')!r})"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script], env=env, cwd=Path(__file__).resolve().parents[1], check=True)
    for name, path in here.items():
        assert (tmp_path / "there" / path.name).read_bytes() == path.read_bytes(), name


@pytest.mark.fast
def test_different_seed_different_corpus(corpus: BundledCorpus) -> None:
    assert _digest(bundled_corpus(1)) != _digest(corpus)


@pytest.mark.fast
def test_fresh_build_is_fast() -> None:
    generate_questions.cache_clear()
    bundled_corpus.cache_clear()
    start = time.perf_counter()
    bundled_corpus(3)
    assert time.perf_counter() - start < 2.0


@pytest.mark.fast
def test_training_text_size(corpus: BundledCorpus) -> None:
    size = len(_training_text(corpus).encode())
    assert 1_000_000 <= size <= 3_000_000, f"training text is {size} bytes"
    assert 300 <= len(corpus.general) <= 2000
    assert corpus.general_validation and corpus.medical_validation


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_split_sizes(corpus: BundledCorpus) -> None:
    sizes = {split: len(items) for split, items in corpus.mcq.items()}
    assert set(sizes) == {"train", "validation", "test", "compositional"}
    assert sizes["test"] >= 300 and sizes["validation"] >= 200 and sizes["train"] >= 1500, sizes
    assert sizes["compositional"] >= 300, sizes


@pytest.mark.fast
@pytest.mark.parametrize("split", ["train", "validation", "test", "compositional"])
def test_letters_are_balanced(corpus: BundledCorpus, split: str) -> None:
    counts = Counter(m.answer for m in corpus.mcq[split])
    shares = {letter: counts[letter] / len(corpus.mcq[split]) for letter in LETTERS}
    assert all(abs(share - 0.25) <= 0.03 for share in shares.values()), shares


@pytest.mark.fast
def test_questions_are_unique_across_splits_even_ignoring_case_and_punctuation(corpus: BundledCorpus) -> None:
    keys = [" ".join(re.findall(r"\w+", m.question.lower())) for items in corpus.mcq.values() for m in items]
    assert len(keys) == len(set(keys))


@pytest.mark.fast
def test_eval_questions_never_appear_in_training_text(corpus: BundledCorpus) -> None:
    training = _training_text(corpus)
    held_out_text = "\n".join(corpus.medical_validation)
    for split in ("validation", "test", "compositional"):
        for mcq in corpus.mcq[split]:
            assert mcq.question not in training, f"{split} question leaked: {mcq.question[:80]}"
            assert mcq.question not in held_out_text


@pytest.mark.fast
@pytest.mark.parametrize("split", ["test", "compositional"])
def test_every_evaluated_fact_is_taught_in_six_wordings_both_ways(corpus: BundledCorpus, split: str) -> None:
    medical = "\n".join(corpus.medical)
    facts = {fact for q in generate_questions(0)[split] for fact in q.facts}
    assert len(facts) > 100
    for fact in facts:
        for wording in range(TRAIN_WORDINGS):
            assert state_fact(fact, wording) in medical, (fact, wording)
    assert [is_reverse(w) for w in range(TRAIN_WORDINGS)].count(True) == TRAIN_WORDINGS // 2


@pytest.mark.fast
def test_templates_alternate_forward_and_reverse() -> None:
    """An even wording puts the subject first, an odd one the value: the reversal curse needs both."""
    for relation, templates in FACT_TEMPLATES.items():
        for wording, template in enumerate(templates):
            first, second = ("{v}", "{s}") if is_reverse(wording) else ("{s}", "{v}")
            assert template.index(first) < template.index(second), (relation, template)


@pytest.mark.fast
def test_every_evaluated_item_is_also_asked_in_training() -> None:
    """In-distribution test questions are other vignettes of chains training asks: new wordings only."""
    questions = generate_questions(0)
    trained = {q.hops for q in questions["train"]}
    for split in ("validation", "test"):
        assert all(q.hops in trained for q in questions[split]), split


@pytest.mark.fast
def test_compositional_split_asks_only_held_out_chain_types_whose_hops_are_all_trained() -> None:
    questions = generate_questions(0)
    held_out = {chain_name(steps) for steps in HELD_OUT_CHAINS}
    assert {chain_name(steps) for steps in TRAINED_CHAINS}.isdisjoint(held_out)
    assert {q.chain for q in questions["compositional"]} == held_out
    assert all(len(steps) >= 2 for steps in HELD_OUT_CHAINS) and len(held_out) >= 2
    for split in ("train", "validation", "test"):
        assert not {q.chain for q in questions[split]} & held_out, split
    # each hop of a held-out chain is asked on its own, in its own direction, by a training question
    single_hops = {q.hops[0] for q in questions["train"] if len(q.hops) == 1}
    missing = {hop for q in questions["compositional"] for hop in q.hops if hop not in single_hops}
    assert not missing, sorted(str(h) for h in missing)[:3]
    # and each question's explanation is its hops, stated in their directions
    q = questions["compositional"][0]
    assert q.mcq.explanation == " ".join(state(hop) for hop in q.hops)


@pytest.mark.fast
def test_no_training_text_writes_a_held_out_chain_from_its_start(corpus: BundledCorpus) -> None:
    """A held-out chain never appears whole: no training document states a finding -> disease hop and
    then that disease's treatment, and a disease -> treatment -> drug-fact run appears only as the tail of a
    chain that starts from the presentation (the 3-hop chains training asks)."""
    questions = generate_questions(0)
    documents = [*corpus.medical, *(AnswerFormat.EXPLAIN.pretrain_text(m) for m in corpus.mcq["train"])]

    def wordings(hop: Hop) -> list[str]:
        return [state(hop, w) for w in range(TRAIN_WORDINGS) if is_reverse(w) == hop.reverse]

    for q in questions["compositional"]:
        first, second = wordings(q.hops[0]), wordings(q.hops[1])
        for doc in documents:
            starts = [doc.find(s) for s in first if s in doc]
            if not starts:
                continue
            after = [doc.find(s, min(starts)) for s in second if s in doc[min(starts):]]
            if not after:
                continue
            # only a presentation-first chain may contain it, and then the presentation comes first
            assert q.hops[0].fact.relation is Relation.TREATMENT, (q.chain, doc[:200])
            presentation = Hop(next(f for f in FACTS if f.subject == q.hops[0].fact.subject
                                    and f.relation is Relation.PRESENTATION), reverse=True)
            assert any(0 <= doc.find(s) < min(starts) for s in wordings(presentation)), (q.chain, doc[:300])


@pytest.mark.fast
def test_every_fact_is_in_the_training_passages(corpus: BundledCorpus) -> None:
    medical = "\n".join(corpus.medical)
    missing = [f for f in FACTS if state_fact(f) not in medical]
    assert not missing


# --------------------------------------------------------------------------
# One correct answer per question
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_fact_base_size_and_integrity() -> None:
    assert 250 <= len(FACTS) <= 450
    check_fact_base(FACTS)
    assert set(Counter(f.relation for f in FACTS)) == set(Relation)


@pytest.mark.parametrize(
    "extra, message",
    [
        (Fact(Relation.TREATMENT, "Graves disease", "propylthiouracil", "treatment"), "two treatment values"),
        (Fact(Relation.TREATMENT, "toxic nodular goiter", "methimazole", "treatment"), "belongs to both"),
        (Fact(Relation.TREATMENT, "toxic nodular goiter", "Methimazole", "treatment"), "belongs to both"),
    ],
)
@pytest.mark.fast
def test_check_fact_base_rejects_ambiguous_facts(extra: Fact, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_fact_base(FACTS + (extra,))


@pytest.mark.fast
def test_distractors_share_the_category_and_are_never_true() -> None:
    pools = {cat: {option_text(v) for v in values} for cat, values in category_pools().items()}
    truths: dict[tuple[str, Relation], set[str]] = {}
    for fact in FACTS:
        truths.setdefault((fact.subject, fact.relation), set()).add(option_text(fact.value))
    subjects: dict[tuple[str, Relation], set[str]] = {}
    for fact in FACTS:
        subjects.setdefault((option_text(fact.value).lower(), fact.relation), set()).add(option_text(fact.subject))
    for split, questions in generate_questions(0).items():
        for q in questions:
            options = set(q.mcq.options.values())
            assert len(options) == 4, q.mcq
            assert options <= pools[q.category], (split, q.mcq)
            last = q.hops[-1]
            true_answers = (subjects[(option_text(last.fact.value).lower(), last.fact.relation)] if last.reverse
                            else truths[(last.fact.subject, last.fact.relation)])
            assert true_answers & options == {q.mcq.answer_text}, q.mcq


# --------------------------------------------------------------------------
# Shortcut baselines
# --------------------------------------------------------------------------

_STOPWORDS = frozenset(
    "a an the of and or in on at to for with by is are was were be this that which what who whom "
    "following most likely best his her he she after over from as it its into".split()
)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS}


def _always_a(mcq: MCQ) -> str:
    return "A"


def _longest(mcq: MCQ) -> str:
    return max(LETTERS, key=lambda letter: len(mcq.options[letter]))


def _shortest(mcq: MCQ) -> str:
    return min(LETTERS, key=lambda letter: len(mcq.options[letter]))


def _most_overlap(mcq: MCQ) -> str:
    stem = _words(mcq.question)
    return max(LETTERS, key=lambda letter: len(stem & _words(mcq.options[letter])))


@pytest.mark.fast
@pytest.mark.parametrize("split", ["test", "compositional"])
def test_shortcut_baselines_stay_near_chance(corpus: BundledCorpus, split: str) -> None:
    test = corpus.mcq[split]
    scores = {
        baseline.__name__: sum(baseline(m) == m.answer for m in test) / len(test)
        for baseline in (_always_a, _longest, _shortest, _most_overlap)
    }
    assert all(score <= 0.35 for score in scores.values()), f"shortcut baselines on test: {scores}"


# --------------------------------------------------------------------------
# Files on disk, read the way the real pipeline reads the hub
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_write_bundled_loads_with_datasets(tmp_path: Path, corpus: BundledCorpus) -> None:
    datasets = pytest.importorskip("datasets")
    paths = write_bundled(tmp_path, seed=0)
    assert set(paths) == {"general", "medical", "medqa_train", "medqa_validation", "medqa_test",
                          "medqa_compositional"}
    assert all(p.exists() and p.parent == tmp_path for p in paths.values())

    stream = datasets.load_dataset("json", data_files=str(paths["medical"]), split="train", streaming=True)
    texts = [row["text"] for row in stream]
    assert texts == corpus.medical

    stream = datasets.load_dataset("json", data_files=str(paths["medqa_test"]), split="train", streaming=True)
    loaded = [normalize_mcq(row, where=f"medqa_test.jsonl line {i + 1}") for i, row in enumerate(stream)]
    assert [(m.question, m.options, m.answer) for m in loaded] == [
        (m.question, m.options, m.answer) for m in corpus.mcq["test"]
    ]
    # each question's chain type travels as its meta_info, which evaluate --by groups on
    assert [m.tags["meta_info"] for m in loaded] == [m.subject for m in corpus.mcq["test"]]
