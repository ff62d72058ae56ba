"""A deterministic, offline stand-in for the real training and evaluation data.

:func:`bundled_corpus` turns the fact base in :mod:`pure_transformer.bundled.facts`
into three things that mirror the real pipeline's sources:

* ``medical``: textbook-style passages (the MedQA-like domain text). Every fact
  is stated in six wordings, three forward (subject first) and three in reverse
  (value first), in per-subject overviews, in comparisons between subjects and
  in short clinical-reasoning chains that start from a presentation.
* ``general``: educational prose on geography, astronomy, chemistry, physics,
  cooking, animals and history (the FineWeb-Edu stand-in), built in
  :mod:`pure_transformer.bundled.general_text`.
* ``mcq``: USMLE-style vignettes whose answer is decided by a chain of one to
  three hops over the facts, each read forward or in reverse, and whose three
  distractors come from the answer's own pool (:mod:`pure_transformer.bundled.questions`).

The trained chain types are split by question into train/validation/test; the
held-out chain types make the ``compositional`` split. Facts are shared across
splits (the model must learn them from the passages), but no evaluation question
text appears in any training text. Held-out validation text uses sentence
templates that the training text never uses.

Sentence and vignette templates live in :mod:`pure_transformer.bundled.templates`.

Each part draws from its own ``random.Random`` seeded with a string built from
``seed`` (string seeds do not depend on ``PYTHONHASHSEED``), and nothing
iterates over a set, so the same seed always gives byte-identical output.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..mcq.answer_format import AnswerFormat
from ..mcq.record import MCQ
from .facts import FACTS, Fact, Relation
from .general_text import general_passages
from .questions import (DRUG_RELATIONS, EVAL_SIZES, HELD_OUT_CHAINS, TRAINED_CHAINS, GeneratedQuestion, Hop, assemble,
                        draft, items, option_text, split_off, state, state_fact, walk)
from .templates import COMPARE_INTROS, FACT_TEMPLATES, INTROS, TRAIN_WORDINGS, cap

SPLITS = ("train", "validation", "test", "compositional")
"""``compositional`` asks the held-out chain types (:data:`~pure_transformer.bundled.questions.HELD_OUT_CHAINS`)."""
EVAL_SPLITS = ("validation", "test", "compositional")  # what training must never see


@dataclass(frozen=True)
class BundledCorpus:
    """All bundled text; cached, so treat the lists as read-only."""

    medical: list[str]  # textbook passages (train text)
    general: list[str]  # FineWeb-Edu stand-in (train text)
    mcq: dict[str, list[MCQ]]  # keys: SPLITS
    general_validation: list[str]  # held-out general passages for validation perplexity
    medical_validation: list[str]  # held-out medical passages (rephrased facts, no eval question text)


# --------------------------------------------------------------------------
# The fact base: integrity checks and pools
# --------------------------------------------------------------------------


def check_fact_base(facts: tuple[Fact, ...] = FACTS) -> None:
    """Raise DataError unless every question built from ``facts`` has one right answer.

    Each (subject, relation) has one value and each value belongs to one
    subject within its relation, so a value true for another subject is never
    true for this one, and a value read in reverse names one subject. Option
    texts must also stay distinct after formatting.
    """
    seen_pairs: set[tuple[str, Relation]] = set()
    owner: dict[tuple[Relation, str], str] = {}
    for fact in facts:
        if (fact.subject, fact.relation) in seen_pairs:
            raise DataError(f"fact base has two {fact.relation.value} values for {fact.subject!r}")
        seen_pairs.add((fact.subject, fact.relation))
        key = (fact.relation, option_text(fact.value).lower())
        if key in owner:
            raise DataError(
                f"{fact.relation.value} value {fact.value!r} belongs to both {owner[key]!r} and {fact.subject!r}"
            )
        owner[key] = fact.subject


def category_pools(facts: tuple[Fact, ...] = FACTS) -> dict[str, list[str]]:
    """The options a question may offer, by :attr:`Hop.pool`: every value of each relation, and for
    reversed hops every subject that has a value of the relation; in table order."""
    pools: dict[str, list[str]] = {}
    for fact in facts:
        pools.setdefault(fact.category, []).append(fact.value)
        pools.setdefault(Hop(fact, reverse=True).pool, []).append(fact.subject)
    return pools


@functools.lru_cache(maxsize=4)
def generate_questions(seed: int = 0) -> dict[str, tuple[GeneratedQuestion, ...]]:
    """All bundled questions by split, with the hops behind each one: ``train``, ``validation`` and
    ``test`` ask the trained chain types, ``compositional`` the held-out ones."""
    check_fact_base(FACTS)
    rng = random.Random(f"questions-{seed}")
    pools, seen = category_pools(FACTS), set()
    trained = draft(items(TRAINED_CHAINS, FACTS), pools, seen, rng)
    held_out = draft(items(HELD_OUT_CHAINS, FACTS), pools, seen, rng)
    rng.shuffle(trained)
    rng.shuffle(held_out)
    splits = split_off(trained, EVAL_SIZES)
    splits["compositional"] = held_out
    return {split: assemble(splits[split], rng) for split in SPLITS}


# --------------------------------------------------------------------------
# Medical passages
# --------------------------------------------------------------------------


def _by_subject(facts: tuple[Fact, ...]) -> dict[str, list[Fact]]:
    grouped: dict[str, list[Fact]] = {}
    for fact in facts:
        grouped.setdefault(fact.subject, []).append(fact)
    return grouped


def _overviews(facts: tuple[Fact, ...], wordings: range) -> list[str]:
    """One paragraph per subject and wording; wordings rotate across a subject's facts."""
    passages = []
    for subject, subject_facts in _by_subject(facts).items():
        for k in wordings:
            intro = cap(INTROS[k % len(INTROS)].format(s=subject))
            body = [state_fact(f, wordings[(k + j) % len(wordings)]) for j, f in enumerate(subject_facts)]
            passages.append(" ".join([intro, *body]))
    return passages


def _comparisons(facts: tuple[Fact, ...], rng: random.Random, rounds: int = 2) -> list[str]:
    passages = []
    for relation in Relation:
        group = [f for f in facts if f.relation is relation]
        for _ in range(rounds):
            rng.shuffle(group)
            for i in range(0, len(group) - 2, 3):
                sentences = [state_fact(f, rng.randrange(TRAIN_WORDINGS)) for f in group[i:i + 3]]
                passages.append(" ".join([rng.choice(COMPARE_INTROS), *sentences]))
    return passages


def _reasoning_chains(facts: tuple[Fact, ...], rng: random.Random) -> list[str]:
    """Short worked chains of the trained kinds that start from a presentation (-> disease -> finding,
    and -> disease -> treatment -> each fact of the drug), each hop stated in its own direction. No
    passage starts from a finding or a named disease: those chains are held out (HELD_OUT_CHAINS)."""
    passages = []
    by_disease: dict[str, list[list[Hop]]] = {}
    for steps in TRAINED_CHAINS:
        if steps[0] == (Relation.PRESENTATION, True) and len(steps) > 1 and steps[-1][0] not in DRUG_RELATIONS:
            for hops in walk(steps, facts):
                by_disease.setdefault(hops[0].reached, []).append(list(hops))
    for disease, chains in by_disease.items():
        for chain in chains:
            if chain[-1].fact.relation is Relation.TREATMENT:  # the drug's own facts follow its name
                drug = chain[-1].reached
                chain += [Hop(f) for f in facts if f.subject == drug and f.relation in DRUG_RELATIONS]
            passages.append("Clinical reasoning: " + " ".join(state(hop, rng=rng) for hop in chain))
    return passages


def medical_passages(seed: int = 0) -> tuple[list[str], list[str]]:
    """(training passages, held-out passages); every fact is stated in all six training wordings."""
    rng = random.Random(f"medical-{seed}")
    train = _overviews(FACTS, range(TRAIN_WORDINGS))
    train += _comparisons(FACTS, rng) + _reasoning_chains(FACTS, rng)
    rng.shuffle(train)
    heldout = _overviews(FACTS, range(TRAIN_WORDINGS, len(FACT_TEMPLATES[Relation.PRESENTATION])))
    return train, heldout


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def bundled_corpus(seed: int = 0) -> BundledCorpus:
    """The whole offline corpus for ``seed``; deterministic and cached."""
    medical, medical_validation = medical_passages(seed)
    general, general_validation = general_passages(seed)
    questions = generate_questions(seed)
    return BundledCorpus(
        medical=medical,
        general=general,
        mcq={split: [q.mcq for q in questions[split]] for split in SPLITS},
        general_validation=general_validation,
        medical_validation=medical_validation,
    )


def training_texts(seed: int = 0) -> Iterator[str]:
    """The documents a tokenizer trains on when no input is given: medical and
    general passages, then the training questions as pretraining text."""
    corpus = bundled_corpus(seed)
    yield from corpus.medical
    yield from corpus.general
    yield from (AnswerFormat.LETTER.pretrain_text(mcq) for mcq in corpus.mcq["train"])


def _medqa_record(mcq: MCQ) -> dict[str, object]:
    """The schema of GBaker/MedQA-USMLE-4-options on the hub."""
    return {
        "question": mcq.question,
        "options": dict(mcq.options),
        "answer_idx": mcq.answer,
        "answer": mcq.answer_text,
        "meta_info": mcq.subject or "",  # the chain type ("finding -> disease -> treatment")
    }


def _write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_bundled(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the corpus as JSONL files shaped like their hub counterparts.

    ``general.jsonl`` and ``medical.jsonl`` hold ``{"text": ...}`` lines of
    training text; ``medqa_{train,validation,test,compositional_test}.jsonl`` use the
    MedQA hub schema, with each question's chain type as its ``meta_info``. Returns ``{"general": path, "medical": path, "medqa_train": path, ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = bundled_corpus(seed)
    paths = {
        "general": _write_jsonl(out / "general.jsonl", [{"text": t} for t in corpus.general]),
        "medical": _write_jsonl(out / "medical.jsonl", [{"text": t} for t in corpus.medical]),
    }
    for split in SPLITS:
        records = [_medqa_record(m) for m in corpus.mcq[split]]
        # "compositional_test": local files name their split, so the file reads as a test split everywhere
        name = f"medqa_{split}_test" if split == "compositional" else f"medqa_{split}"
        paths[f"medqa_{split}"] = _write_jsonl(out / f"{name}.jsonl", records)
    return paths
