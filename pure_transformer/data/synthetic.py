"""A deterministic, offline stand-in for the real training and evaluation data.

:func:`bundled_corpus` turns the fact base in :mod:`pure_transformer.data.facts`
into three things that mirror the real pipeline's sources:

* ``medical``: textbook-style passages (the MedQA-like domain text). Every fact
  is stated in five different wordings, in per-subject overviews, in
  comparisons between subjects and in short clinical-reasoning chains.
* ``general``: educational prose on geography, astronomy, chemistry, physics,
  cooking, animals and history (the FineWeb-Edu stand-in).
* ``mcq``: USMLE-style vignettes whose answer is decided by a chain of one to
  three facts (presentation -> disease -> first-line drug -> drug fact) and
  whose three distractors are other values of the same category.

Questions are split by question into train/validation/test. Facts are shared
across splits (the model must learn them from the passages), but no
validation or test question text appears in any training text. Held-out
validation text uses sentence templates that the training text never uses.

Each part draws from its own ``random.Random`` seeded with a string built from
``seed`` (string seeds do not depend on ``PYTHONHASHSEED``), and nothing
iterates over a set, so the same seed always gives byte-identical output.
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from pure_transformer.data import facts as fb
from pure_transformer.data.facts import FACTS, Fact, Relation
from pure_transformer.data.mcq import LETTERS, MCQ
from pure_transformer.errors import DataError

SPLITS = ("train", "validation", "test")
EVAL_SIZES = {"validation": 200, "test": 400}  # train gets the rest (a multiple of 4)
VARIANTS_PER_ITEM = 5  # vignettes written per answerable item
DISEASE_CATEGORY = "disease"  # the category of diagnosis answers

# --------------------------------------------------------------------------
# Sentence templates. {s} is the subject, {v} the value. The first five per
# relation are used in training text, the rest only in held-out text.
# --------------------------------------------------------------------------

_TEMPLATES: dict[Relation, tuple[str, ...]] = {
    Relation.PRESENTATION: (
        "Patients with {s} classically present with {v}.",
        "The typical picture of {s} is {v}.",
        "{s} should be suspected in anyone with {v}.",
        "A patient who develops {v} most likely has {s}.",
        "Clinically, {s} shows up as {v}.",
        "Textbooks describe {s} as causing {v}.",
        "When someone has {v}, the leading diagnosis is {s}.",
    ),
    Relation.TREATMENT: (
        "The first-line treatment for {s} is {v}.",
        "For most patients with {s}, initial therapy is {v}.",
        "{v} is the preferred first treatment for {s}.",
        "Once {s} is diagnosed, management usually begins with {v}.",
        "Guidelines recommend {v} as the initial therapy for {s}.",
        "Standard first-line care for {s} consists of {v}.",
        "Clinicians typically start the management of {s} with {v}.",
    ),
    Relation.FINDING: (
        "The key diagnostic finding in {s} is {v}.",
        "Workup of {s} characteristically reveals {v}.",
        "{v} is the hallmark finding of {s}.",
        "In {s}, testing typically shows {v}.",
        "Finding {v} strongly supports a diagnosis of {s}.",
        "A classic result in {s} is {v}.",
        "Investigations in {s} usually demonstrate {v}.",
    ),
    Relation.ORGANISM: (
        "{s} is caused by {v}.",
        "The causative organism of {s} is {v}.",
        "{v} is responsible for {s}.",
        "Infection with {v} produces {s}.",
        "Most cases of {s} are due to {v}.",
        "The pathogen behind {s} is {v}.",
        "{s} results from infection by {v}.",
    ),
    Relation.DRUG_CLASS: (
        "{s} is {v}.",
        "Pharmacologically, {s} is classified as {v}.",
        "{s} is best described as {v}.",
        "As {v}, {s} shares its key properties with related agents.",
        "Students should remember that {s} is {v}.",
        "In drug references, {s} is listed as {v}.",
        "{s} counts as {v}.",
    ),
    Relation.MECHANISM: (
        "The mechanism of action of {s} is {v}.",
        "{s} works through {v}.",
        "{s} exerts its effect by way of {v}.",
        "The therapeutic effect of {s} comes from {v}.",
        "{v} is the main action of {s}.",
        "At the molecular level, {s} acts via {v}.",
        "{s} produces its benefit through {v}.",
    ),
    Relation.ADVERSE_EFFECT: (
        "A characteristic adverse effect of {s} is {v}.",
        "Patients taking {s} should be warned about {v}.",
        "{v} is a classic side effect of {s}.",
        "Treatment with {s} can cause {v}.",
        "One well-known toxicity of {s} is {v}.",
        "{s} is notorious for causing {v}.",
        "Clinicians watch patients on {s} for {v}.",
    ),
}
TRAIN_WORDINGS = 5

_INTROS = (
    "This section reviews {s}.",
    "Key points about {s} follow.",
    "{s} is a frequent topic on licensing examinations.",
    "Consider what every student should know about {s}.",
    "Here is a short summary of {s}.",
)
_CONNECTIVES = ("By contrast,", "Similarly,", "In comparison,", "On the other hand,", "Likewise,")

# --------------------------------------------------------------------------
# Vignette building blocks. {x} is the presentation, subject or drug.
# --------------------------------------------------------------------------

_PRESENTING_ADULT = (
    "{P} comes to the emergency department with {x}.",
    "{P} visits {his} primary care physician because of {x}.",
    "{P} is evaluated in the clinic for {x}.",
    "{P} presents with {x}.",
)
_PRESENTING_CHILD = (
    "{P} is brought to the emergency department with {x}.",
    "{P} is brought to the pediatrician because of {x}.",
    "The parents of {p} seek care because of {x}.",
    "{P} is evaluated by a pediatrician for {x}.",
)
_DIAGNOSED = (
    "{P} has recently been diagnosed with {x}.",
    "{P} is found to have {x}.",
    "{P} with newly diagnosed {x} comes to the clinic for a follow-up visit.",
)
_STARTED = (
    "{P} is started on {x}.",
    "{P} begins treatment with {x}.",
    "{P} has been prescribed {x}.",
)
_THEN_STARTED = " {He} is started on the first-line drug for the most likely diagnosis."
_DETAILS_ADULT = (
    "",
    " {He} has no known drug allergies.",
    " {He} works as a teacher.",
    " {He} works as an accountant.",
    " {He} works as an electrician.",
    " {He} works as a bus driver.",
    " {He} lives with {his} spouse.",
    " {He} recently moved to a new city.",
)
_DETAILS_CHILD = (
    "",
    " {He} has no known drug allergies.",
    " {He} is accompanied by {his} mother.",
    " {He} is accompanied by {his} father.",
    " {He} is accompanied by {his} grandmother.",
)

_ASKS: dict[Relation, tuple[str, ...]] = {
    Relation.PRESENTATION: (
        "Which of the following is the most likely diagnosis?",
        "What is the most likely diagnosis?",
        "Which condition best explains these findings?",
    ),
    Relation.TREATMENT: (
        "Which of the following is the most appropriate first-line treatment?",
        "What is the recommended initial therapy?",
        "Which management is most appropriate first?",
    ),
    Relation.FINDING: (
        "Further evaluation is most likely to show which of the following?",
        "Which of the following findings is most characteristic of this condition?",
        "Which result would best support the diagnosis?",
    ),
    Relation.ORGANISM: (
        "Which of the following is the most likely causative organism?",
        "Which organism is the most likely cause?",
        "Infection with which pathogen is responsible?",
    ),
    Relation.DRUG_CLASS: (
        "To which drug class does this medication belong?",
        "This drug is best classified as which of the following?",
    ),
    Relation.MECHANISM: (
        "What is the mechanism of action of this drug?",
        "This medication works primarily through which mechanism?",
    ),
    Relation.ADVERSE_EFFECT: (
        "Which adverse effect is most characteristic of this drug?",
        "This patient should be counseled about which characteristic adverse effect?",
    ),
}

# age band -> (youngest, oldest, unit); infants are described in weeks
_AGES = {
    fb.INFANT: (2, 10, "week"),
    fb.TODDLER: (1, 3, "year"),
    fb.CHILD: (4, 12, "year"),
    fb.YOUNG: (18, 34, "year"),
    fb.ADULT: (30, 64, "year"),
    fb.OLDER: (62, 88, "year"),
}
_PEDIATRIC = {fb.INFANT, fb.TODDLER, fb.CHILD}
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


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def option_text(value: str) -> str:
    """How a fact value is shown as an option: no leading article, capitalised."""
    for article in ("a ", "an ", "the "):
        if value.startswith(article):
            value = value[len(article):]
            break
    return _cap(value)


def state_fact(fact: Fact, wording: int = 0) -> str:
    """One sentence stating ``fact`` with template number ``wording``."""
    template = _TEMPLATES[fact.relation][wording]
    return _cap(template.format(s=fact.subject, v=fact.value))


def _patient_fields(band: str, rng: random.Random) -> dict[str, str]:
    low, high, unit = _AGES[band]
    age = rng.randint(low, high)
    female = rng.random() < 0.5
    if band in _PEDIATRIC:
        noun = "girl" if female else "boy"
    else:
        noun = "woman" if female else "man"
    he, his = ("she", "her") if female else ("he", "his")
    article = "an" if str(age).startswith("8") or age in (11, 18) else "a"
    person = f"{article} {age}-{unit}-old {noun}"
    return {"P": _cap(person), "p": person, "He": _cap(he), "he": he, "His": _cap(his), "his": his}


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
    return _PRESENTING_CHILD if band in _PEDIATRIC else _PRESENTING_ADULT


def _items(facts: tuple[Fact, ...]) -> list[_Item]:
    """Direct questions for every fact, plus chains that start from a presentation."""
    index = _index(facts)
    items: list[_Item] = []
    for fact in facts:
        band = fb.AGE_BAND.get(fact.subject, fb.ADULT)
        if fact.relation is Relation.PRESENTATION:
            # Diagnosis: the presentation is given, the disease is the answer.
            items.append(_Item(_presenting(band), fact.value, _ASKS[Relation.PRESENTATION],
                               fact.subject, DISEASE_CATEGORY, (fact,), band))
            continue
        scenarios = _STARTED if fact.relation in _DRUG_RELATIONS else _DIAGNOSED
        items.append(_Item(scenarios, fact.subject, _ASKS[fact.relation], fact.value,
                           fact.category, (fact,), band))
        presentation = index.get((fact.subject, Relation.PRESENTATION))
        if presentation is None:
            continue
        # Two hops: presentation -> disease -> treatment or finding.
        items.append(_Item(_presenting(band), presentation.value, _ASKS[fact.relation],
                           fact.value, fact.category, (presentation, fact), band))
        if fact.relation is Relation.TREATMENT:
            # Three hops: ... -> first-line drug -> its class, mechanism or adverse effect.
            for relation in _DRUG_RELATIONS:
                drug_fact = index.get((fact.value, relation))
                if drug_fact is not None:
                    scenarios = tuple(s + _THEN_STARTED for s in _presenting(band))
                    items.append(_Item(scenarios, presentation.value, _ASKS[relation], drug_fact.value,
                                       drug_fact.category, (presentation, fact, drug_fact), band))
    return items


# --------------------------------------------------------------------------
# MCQs and splits
# --------------------------------------------------------------------------


def _vignette(item: _Item, rng: random.Random) -> str:
    fields = _patient_fields(item.band, rng)
    details = _DETAILS_CHILD if item.band in _PEDIATRIC else _DETAILS_ADULT
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
            explanation=" ".join(state_fact(f) for f in item.facts),
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

_COMPARE_INTROS = (
    "Several associations are easy to confuse.",
    "It helps to learn these facts side by side.",
    "The following facts are often tested together.",
    "Compare the statements below.",
)


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
            intro = _cap(_INTROS[k % len(_INTROS)].format(s=subject))
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
                passages.append(" ".join([rng.choice(_COMPARE_INTROS), *sentences]))
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
    heldout = _overviews(FACTS, range(TRAIN_WORDINGS, len(_TEMPLATES[Relation.PRESENTATION])))
    return train, heldout


# --------------------------------------------------------------------------
# General (non-medical) prose: the FineWeb-Edu stand-in
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Topic:
    """A table of facts plus sentence templates that name its columns."""

    rows: tuple[tuple[str, ...], ...]
    fields: tuple[str, ...]
    sentences: tuple[str, ...]  # used in training text
    heldout: tuple[str, ...]  # used only in validation text


_TOPICS = (
    _Topic(fb.COUNTRIES, ("country", "capital", "continent", "language", "sight"), (
        "{country} is a country in {continent}.",
        "The capital of {country} is {capital}.",
        "Most people in {country} speak {language}.",
        "Visitors to {country} often travel to see {sight}.",
        "{capital} is the seat of government of {country}.",
        "Geography lessons about {continent} often mention {country} and {sight}.",
    ), (
        "Among the nations of {continent}, {country} is known for {sight}.",
        "Government offices in {country} are concentrated in {capital}, and {language} is widely spoken.",
    )),
    _Topic(fb.PLANETS, ("planet", "position", "feature", "moons"), (
        "{planet} is the {position} planet from the Sun.",
        "On {planet}, {feature}.",
        "{planet} has {moons}.",
        "Astronomers studying {planet} point out that {feature}.",
        "Counting outward from the Sun, {planet} comes {position}.",
    ), (
        "Space probes sent to {planet}, the {position} planet, confirmed that {feature}.",
        "Observers have counted {moons} around {planet}.",
    )),
    _Topic(fb.ELEMENTS, ("element", "symbol", "number", "description"), (
        "{element} has the chemical symbol {symbol}.",
        "The atomic number of {element} is {number}, so each atom holds {number} protons.",
        "{element} is {description}.",
        "Chemists write {element} as {symbol} in formulas.",
        "In the periodic table, element number {number} is {element}.",
    ), (
        "On a periodic table, look for {symbol}: that is {element}, {description}.",
        "Every atom of {element} carries {number} protons in its nucleus.",
    )),
    _Topic(fb.PHYSICS, ("concept", "definition", "unit", "example"), (
        "In physics, {concept} is {definition}.",
        "The SI unit of {concept} is the {unit}.",
        "A simple example of {concept} is {example}.",
        "When teachers explain {concept}, they often point to {example}.",
        "Scientists express {concept} in units called the {unit}.",
    ), (
        "Think of {example}: it illustrates {concept}, which physicists define as {definition}.",
        "Measurements of {concept} are reported using the {unit}.",
    )),
    _Topic(fb.COOKING, ("technique", "meaning", "dish"), (
        "In the kitchen, {technique} means {meaning}.",
        "A classic use of {technique} is for {dish}.",
        "Cooks often choose {technique} when preparing {dish}.",
        "Home cooks learning {technique} usually start with {dish}.",
        "The technique called {technique} involves {meaning}.",
    ), (
        "Recipes for {dish} frequently rely on {technique}, that is, {meaning}.",
        "Culinary students practice {technique} early in their training.",
    )),
    _Topic(fb.ANIMALS, ("animal", "habitat", "diet", "trait"), (
        "{animal} lives in {habitat}.",
        "The diet of {animal} consists mostly of {diet}.",
        "A remarkable fact about {animal} is that {trait}.",
        "Biologists who study {animal} in {habitat} have learned that {trait}.",
        "{animal} feeds on {diet}.",
    ), (
        "Field guides note that {animal} eats {diet} and that {trait}.",
        "You would look for {animal} in {habitat}.",
    )),
    _Topic(fb.HISTORY, ("topic", "when", "summary"), (
        "Historians place {topic} {when}.",
        "The story of {topic} shows how {summary}.",
        "Students learning about {topic} discover that {summary}.",
        "{topic} is usually dated {when}.",
        "A turning point came with {topic}: {summary}.",
    ), (
        "Looking back at {topic} {when}, we see that {summary}.",
        "Museums about {topic} explain how {summary}.",
    )),
)
_LESSON_OPENERS = ("", "Here is a short lesson. ", "Let us review a few facts. ", "Did you know? ", "Study note: ")
GENERAL_PASSAGES_PER_ROW = 10


def _row_passage(topic: _Topic, row: tuple[str, ...], templates: tuple[str, ...], rng: random.Random) -> str:
    values = dict(zip(topic.fields, row))
    count = min(len(templates), rng.randint(3, 4))
    sentences = [_cap(t.format(**values)) for t in rng.sample(templates, count)]
    return rng.choice(_LESSON_OPENERS) + " ".join(sentences)


def general_passages(seed: int = 0) -> tuple[list[str], list[str]]:
    """(training passages, held-out passages) of educational prose on non-medical topics."""
    rng = random.Random(f"general-{seed}")
    train: list[str] = []
    heldout: list[str] = []
    for topic in _TOPICS:
        for row in topic.rows:
            variants = {_row_passage(topic, row, topic.sentences, rng) for _ in range(GENERAL_PASSAGES_PER_ROW)}
            train.extend(sorted(variants))  # sorted: set order is not stable across runs
            values = dict(zip(topic.fields, row))
            heldout.append(" ".join(_cap(t.format(**values)) for t in topic.heldout))
    rng.shuffle(train)
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
