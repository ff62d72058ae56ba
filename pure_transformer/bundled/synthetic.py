"""A deterministic, offline stand-in for the real training and evaluation data.

:func:`bundled_corpus` turns the fact base in :mod:`pure_transformer.bundled.facts`
into three things that mirror the real pipeline's sources:

* ``medical``: textbook-style passages (the MedQA-like domain text). Every fact
  is stated in five different wordings, in per-subject overviews, in
  comparisons between subjects and in short clinical-reasoning chains.
* ``general``: educational prose on geography, astronomy, chemistry, physics,
  cooking, animals and history (the FineWeb-Edu stand-in), built in
  :mod:`pure_transformer.bundled.general_text`.
* ``mcq``: USMLE-style vignettes whose answer is decided by a chain of one to
  three facts (presentation -> disease -> first-line drug -> drug fact) and
  whose three distractors are other values of the same category.

Questions are split by question into train/validation/test. Facts are shared
across splits (the model must learn them from the passages), but no
validation or test question text appears in any training text. Held-out
validation text uses sentence templates that the training text never uses.

Sentence and vignette templates live in :mod:`pure_transformer.bundled.templates`.

Each part draws from its own ``random.Random`` seeded with a string built from
``seed`` (string seeds do not depend on ``PYTHONHASHSEED``), and nothing
iterates over a set, so the same seed always gives byte-identical output.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..mcq.answer_format import AnswerFormat
from ..mcq.record import LETTERS as ALL_LETTERS
from ..mcq.record import MCQ
from . import facts as fb
from .facts import FACTS, Fact, Relation
from .general_text import general_passages
from .templates import (AGES, ASKS, COMPARE_INTROS, DETAILS_ADULT, DETAILS_CHILD, DIAGNOSED, FACT_TEMPLATES, INTROS,
                        PEDIATRIC, PRESENTING_ADULT, PRESENTING_CHILD, STARTED, THEN_STARTED, TRAIN_WORDINGS, cap)

LETTERS = ALL_LETTERS[:4]  # the bundled questions have four options, A-D

SPLITS = ("train", "validation", "test")
EVAL_SIZES = {"validation": 200, "test": 400}  # train gets the rest (a multiple of 4)
VARIANTS_PER_ITEM = 5  # vignettes written per answerable item
DISEASE_CATEGORY = "disease"  # the category of diagnosis answers

_DRUG_RELATIONS = (Relation.DRUG_CLASS, Relation.MECHANISM, Relation.ADVERSE_EFFECT)  # facts about a drug


@dataclass(frozen=True)
class BundledCorpus:
    """All bundled text; cached, so treat the lists as read-only."""

    medical: list[str]  # textbook passages (train text)
    general: list[str]  # FineWeb-Edu stand-in (train text)
    mcq: dict[str, list[MCQ]]  # keys "train", "validation", "test"
    general_validation: list[str]  # held-out general passages for validation perplexity
    medical_validation: list[str]  # held-out medical passages (rephrased facts, no eval question text)


@dataclass(frozen=True)
class GeneratedQuestion:
    """An MCQ together with the facts that decide it, for auditing the generator."""

    mcq: MCQ
    facts: tuple[Fact, ...]  # the chain of facts behind the answer, last one gives it
    category: str  # the category all four options come from


@dataclass(frozen=True)
class _Item:
    """One answerable question before a patient, wording and options are chosen."""

    scenarios: tuple[str, ...]  # templates with {x} and the patient placeholders
    fill: str  # what {x} stands for
    asks: tuple[str, ...]
    answer: str  # the true value (not yet an option text)
    category: str
    facts: tuple[Fact, ...]
    band: str


# --------------------------------------------------------------------------
# Small text helpers
# --------------------------------------------------------------------------


def option_text(value: str) -> str:
    """How a fact value is shown as an option: no leading article, capitalised."""
    for article in ("a ", "an ", "the "):
        if value.startswith(article):
            value = value[len(article):]
            break
    return cap(value)


def state_fact(fact: Fact, wording: int = 0) -> str:
    """One sentence stating ``fact`` with template number ``wording``."""
    template = FACT_TEMPLATES[fact.relation][wording]
    return cap(template.format(s=fact.subject, v=fact.value))


# Explanations state the clue before what it points to ("A patient who develops {clue} most likely
# has {disease}."): the clue is copied from the vignette, so the next fact follows from the words just
# written. A small model reasons far more easily forward from nearby text than back across the prompt.
EXPLANATION_WORDING = {Relation.PRESENTATION: 3}


def explain(facts: tuple[Fact, ...]) -> str:
    """The worked explanation of a question decided by ``facts`` (the chain, in order)."""
    return " ".join(state_fact(f, EXPLANATION_WORDING.get(f.relation, 0)) for f in facts)


def _patient_fields(band: str, rng: random.Random) -> dict[str, str]:
    low, high, unit = AGES[band]
    age = rng.randint(low, high)
    female = rng.random() < 0.5
    if band in PEDIATRIC:
        noun = "girl" if female else "boy"
    else:
        noun = "woman" if female else "man"
    he, his = ("she", "her") if female else ("he", "his")
    article = "an" if str(age).startswith("8") or age in (11, 18) else "a"
    person = f"{article} {age}-{unit}-old {noun}"
    return {"P": cap(person), "p": person, "He": cap(he), "he": he, "His": cap(his), "his": his}


# --------------------------------------------------------------------------
# The fact base: integrity checks and lookups
# --------------------------------------------------------------------------


def check_fact_base(facts: tuple[Fact, ...] = FACTS) -> None:
    """Raise DataError unless every question built from ``facts`` has one right answer.

    Each (subject, relation) has one value and each value belongs to one
    subject within its relation, so a value true for another subject is never
    true for this one. Option texts must also stay distinct after formatting.
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


def _index(facts: tuple[Fact, ...]) -> dict[tuple[str, Relation], Fact]:
    return {(f.subject, f.relation): f for f in facts}


def category_pools(facts: tuple[Fact, ...] = FACTS) -> dict[str, list[str]]:
    """Every value of each category (diagnoses under ``"disease"``), in table order."""
    pools: dict[str, list[str]] = {DISEASE_CATEGORY: []}
    for fact in facts:
        pools.setdefault(fact.category, []).append(fact.value)
        if fact.relation is Relation.PRESENTATION:
            pools[DISEASE_CATEGORY].append(fact.subject)
    return pools


# --------------------------------------------------------------------------
# Items: which questions can be asked
# --------------------------------------------------------------------------


def _presenting(band: str) -> tuple[str, ...]:
    return PRESENTING_CHILD if band in PEDIATRIC else PRESENTING_ADULT


def _items(facts: tuple[Fact, ...]) -> list[_Item]:
    """Direct questions for every fact, plus chains that start from a presentation."""
    index = _index(facts)
    items: list[_Item] = []
    for fact in facts:
        band = fb.AGE_BAND.get(fact.subject, fb.ADULT)
        if fact.relation is Relation.PRESENTATION:
            # Diagnosis: the presentation is given, the disease is the answer.
            items.append(_Item(_presenting(band), fact.value, ASKS[Relation.PRESENTATION],
                               fact.subject, DISEASE_CATEGORY, (fact,), band))
            continue
        scenarios = STARTED if fact.relation in _DRUG_RELATIONS else DIAGNOSED
        items.append(_Item(scenarios, fact.subject, ASKS[fact.relation], fact.value,
                           fact.category, (fact,), band))
        presentation = index.get((fact.subject, Relation.PRESENTATION))
        if presentation is None:
            continue
        # Two hops: presentation -> disease -> treatment or finding.
        items.append(_Item(_presenting(band), presentation.value, ASKS[fact.relation],
                           fact.value, fact.category, (presentation, fact), band))
        if fact.relation is Relation.TREATMENT:
            # Three hops: ... -> first-line drug -> its class, mechanism or adverse effect.
            for relation in _DRUG_RELATIONS:
                drug_fact = index.get((fact.value, relation))
                if drug_fact is not None:
                    scenarios = tuple(s + THEN_STARTED for s in _presenting(band))
                    items.append(_Item(scenarios, presentation.value, ASKS[relation], drug_fact.value,
                                       drug_fact.category, (presentation, fact, drug_fact), band))
    return items


# --------------------------------------------------------------------------
# MCQs and splits
# --------------------------------------------------------------------------


def _vignette(item: _Item, rng: random.Random) -> str:
    fields = _patient_fields(item.band, rng)
    details = DETAILS_CHILD if item.band in PEDIATRIC else DETAILS_ADULT
    template = rng.choice(item.scenarios) + rng.choice(details) + " " + rng.choice(item.asks)
    return template.format(x=item.fill, **fields)


def _question_key(text: str) -> str:
    # Case- and punctuation-blind, like the contamination guard, so the guard
    # never has a reason to drop a bundled training question.
    return " ".join(re.findall(r"\w+", text.lower()))


def _draft(facts: tuple[Fact, ...], rng: random.Random) -> list[tuple[str, _Item, list[str]]]:
    """(question text, item, three distractor values) for every variant, unique by text."""
    pools = category_pools(facts)
    seen: set[str] = set()
    drafts = []
    for item in _items(facts):
        for _ in range(VARIANTS_PER_ITEM):
            # A few retries: small age bands can repeat a vignette exactly.
            for _attempt in range(8):
                question = _vignette(item, rng)
                if _question_key(question) not in seen:
                    break
            else:
                continue
            seen.add(_question_key(question))
            # Values are unique per category (check_fact_base), so any other
            # value of the category is false for this question.
            candidates = [v for v in pools[item.category] if v != item.answer]
            drafts.append((question, item, rng.sample(candidates, 3)))
    return drafts


def _assemble(drafts: list[tuple[str, _Item, list[str]]], rng: random.Random) -> list[GeneratedQuestion]:
    """Place the answer so that each letter is gold for exactly a quarter of a split."""
    letters = [LETTERS[i % len(LETTERS)] for i in range(len(drafts))]
    rng.shuffle(letters)
    questions = []
    for (question, item, distractors), letter in zip(drafts, letters):
        values = list(distractors)
        values.insert(LETTERS.index(letter), item.answer)
        mcq = MCQ(
            question=question,
            options={key: option_text(value) for key, value in zip(LETTERS, values)},
            answer=letter,
            explanation=explain(item.facts),
            subject=item.category,
        )
        questions.append(GeneratedQuestion(mcq, item.facts, item.category))
    return questions


@functools.lru_cache(maxsize=4)
def generate_questions(seed: int = 0) -> dict[str, tuple[GeneratedQuestion, ...]]:
    """All bundled questions by split, with the facts behind each one."""
    check_fact_base(FACTS)
    rng = random.Random(f"questions-{seed}")
    drafts = _draft(FACTS, rng)
    rng.shuffle(drafts)
    sizes = dict(EVAL_SIZES)
    train_size = len(drafts) - sum(sizes.values())
    sizes["train"] = train_size - train_size % len(LETTERS)  # keep the letters exactly balanced
    splits: dict[str, tuple[GeneratedQuestion, ...]] = {}
    start = 0
    for split in ("test", "validation", "train"):
        chunk = drafts[start:start + sizes[split]]
        start += sizes[split]
        splits[split] = tuple(_assemble(chunk, rng))
    return {split: splits[split] for split in SPLITS}


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
    """Short worked chains (presentation -> disease -> treatment -> drug facts)."""
    index = _index(facts)
    passages = []
    for fact in facts:
        if fact.relation is not Relation.PRESENTATION:
            continue
        chain = [fact]
        for relation in (Relation.FINDING, Relation.TREATMENT):
            if (fact.subject, relation) in index:
                chain.append(index[(fact.subject, relation)])
        treatment = index.get((fact.subject, Relation.TREATMENT))
        if treatment is not None:
            chain += [index[(treatment.value, r)] for r in _DRUG_RELATIONS if (treatment.value, r) in index]
        if len(chain) > 1:
            sentences = [state_fact(f, rng.randrange(TRAIN_WORDINGS)) for f in chain]
            passages.append("Clinical reasoning: " + " ".join(sentences))
    return passages


def medical_passages(seed: int = 0) -> tuple[list[str], list[str]]:
    """(training passages, held-out passages); every fact is stated in all five training wordings."""
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
        "meta_info": mcq.subject or "",
    }


def _write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_bundled(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the corpus as JSONL files shaped like their hub counterparts.

    ``general.jsonl`` and ``medical.jsonl`` hold ``{"text": ...}`` lines of
    training text; ``medqa_{train,validation,test}.jsonl`` use the MedQA hub
    schema. Returns ``{"general": path, "medical": path, "medqa_train": path, ...}``.
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
        paths[f"medqa_{split}"] = _write_jsonl(out / f"medqa_{split}.jsonl", records)
    return paths
