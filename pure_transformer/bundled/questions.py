"""The bundled MCQs: the questions the fact base can ask, as chains of hops, and their splits.

A question is a chain of hops. A :class:`Hop` is one fact read forward, from its
subject to its value ("the first-line treatment for Graves disease is ..."), or in
reverse, from the value back to the subject ("methimazole is the first treatment for
..."). The vignette gives the chain's first entity (a presentation, a finding, a named
disease or drug ...) and asks for its last; the worked explanation states every hop in
order and in the direction it is read, so it runs from what is given to what is asked.

Chain types are named by the kinds they pass through ("finding -> disease -> treatment").
:data:`TRAINED_CHAINS` are asked in training and in the in-distribution ``validation``
and ``test`` splits, whose questions are other vignettes of chains training asks.
:data:`HELD_OUT_CHAINS` are asked only in the ``compositional`` split: no training
question asks them and no training text writes them out whole, while every hop in
them is taught, in both directions, by the passages and by single-hop training
questions. That split measures composition of known facts, not recall of trained
chains (docs/GRPO.md, "What the demo's gain means").
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from ..mcq.record import LETTERS as ALL_LETTERS
from ..mcq.record import MCQ
from . import facts as fb
from .facts import Fact, Relation
from .templates import (ASKS, DETAILS_ADULT, DETAILS_CHILD, DIAGNOSED, EXPLANATION_WORDINGS, FACT_TEMPLATES, FOUND,
                        INFECTED, PEDIATRIC, PRESENTING_ADULT, PRESENTING_CHILD, STARTED, THEN_STARTED,
                        THEN_STARTED_KNOWN, TRAIN_WORDINGS, TREATED, AGES, cap, is_reverse)

LETTERS = ALL_LETTERS[:4]  # the bundled questions have four options, A-D
EVAL_SIZES = {"validation": 200, "test": 400}  # in-distribution; train gets the rest (a multiple of 4)
VARIANTS_PER_ITEM = 3  # vignettes written per answerable chain
DRUG_RELATIONS = (Relation.DRUG_CLASS, Relation.MECHANISM, Relation.ADVERSE_EFFECT)  # facts about a drug

KINDS: dict[Relation, tuple[str, str]] = {  # (what the subject is, what the value is)
    Relation.PRESENTATION: ("disease", "presentation"),
    Relation.TREATMENT: ("disease", "treatment"),
    Relation.FINDING: ("disease", "finding"),
    Relation.ORGANISM: ("infection", "organism"),
    Relation.DRUG_CLASS: ("drug", "drug class"),
    Relation.MECHANISM: ("drug", "mechanism"),
    Relation.ADVERSE_EFFECT: ("drug", "adverse effect"),
}

Step = tuple[Relation, bool]  # a relation and whether it is read in reverse
_P, _T, _F, _O = Relation.PRESENTATION, Relation.TREATMENT, Relation.FINDING, Relation.ORGANISM

TRAINED_CHAINS: tuple[tuple[Step, ...], ...] = (
    # every single hop: a disease's treatment and finding and an infection's organism both ways, a
    # drug's facts forward, a presentation only as the clue (as an answer, its paragraph-long options
    # kept the tiny model from learning to read the vignette by 2M tokens: docs/GRPO.md)
    ((_P, True),), ((_T, False),), ((_T, True),), ((_F, False),), ((_F, True),), ((_O, False),), ((_O, True),),
    *(((r, False),) for r in DRUG_RELATIONS),
    # chains through the disease that start from what a patient shows
    ((_P, True), (_T, False)), ((_P, True), (_F, False)),
    *(((_P, True), (_T, False), (r, False)) for r in DRUG_RELATIONS),
)
HELD_OUT_CHAINS: tuple[tuple[Step, ...], ...] = (
    ((_F, True), (_T, False)),  # a test result -> the diagnosis -> its treatment
    *(((_T, False), (r, False)) for r in DRUG_RELATIONS),  # a named disease -> its drug -> a fact of the drug
)


@dataclass(frozen=True)
class Hop:
    """One fact, read from its subject to its value or (``reverse``) back."""

    fact: Fact
    reverse: bool = False

    @property
    def given(self) -> str:
        return self.fact.value if self.reverse else self.fact.subject

    @property
    def reached(self) -> str:
        return self.fact.subject if self.reverse else self.fact.value

    @property
    def source(self) -> str:
        return KINDS[self.fact.relation][self.reverse]

    @property
    def target(self) -> str:
        return KINDS[self.fact.relation][not self.reverse]

    @property
    def pool(self) -> str:
        """The category every option of a question ending here comes from: the relation's values, or
        for a reversed hop the subjects that have such a value ("disease (treatment)")."""
        return f"{self.target} ({self.fact.relation.value})" if self.reverse else self.fact.category


def chain_name(steps: tuple[Step, ...]) -> str:
    """``"finding -> disease -> treatment"``: the kinds a chain type passes through."""
    first, reverse = steps[0]
    return " -> ".join([KINDS[first][reverse], *(KINDS[r][not rev] for r, rev in steps)])


def state_fact(fact: Fact, wording: int = 0) -> str:
    """One sentence stating ``fact`` with template number ``wording`` (even: forward, odd: reverse)."""
    return cap(FACT_TEMPLATES[fact.relation][wording].format(s=fact.subject, v=fact.value))


def state(hop: Hop, wording: int | None = None, rng: random.Random | None = None) -> str:
    """One sentence stating ``hop`` in its own direction: the explanation's wording, or with ``rng``
    one of the training wordings of that direction."""
    if wording is None:
        choices = [w for w in range(TRAIN_WORDINGS) if is_reverse(w) == hop.reverse]
        wording = rng.choice(choices) if rng is not None else EXPLANATION_WORDINGS[hop.reverse]
    return state_fact(hop.fact, wording)


def explain(hops: tuple[Hop, ...]) -> str:
    """The worked explanation of a question decided by ``hops``: each stated from the clue it starts at,
    so the next fact follows from the words just written (a small model reasons far more easily
    forward from nearby text than back across the prompt)."""
    return " ".join(state(hop) for hop in hops)


def walk(steps: tuple[Step, ...], facts: tuple[Fact, ...]) -> list[tuple[Hop, ...]]:
    """Every chain of ``steps`` the fact base supports, in fact-table order."""
    forward = {(f.subject, f.relation): f for f in facts}
    backward = {(f.value, f.relation): f for f in facts}
    chains: list[tuple[Hop, ...]] = []
    first, reverse = steps[0]
    for fact in facts:
        if fact.relation is not first:
            continue
        hops = [Hop(fact, reverse)]
        for relation, rev in steps[1:]:
            nxt = (backward if rev else forward).get((hops[-1].reached, relation))
            if nxt is None:
                break
            hops.append(Hop(nxt, rev))
        else:
            chains.append(tuple(hops))
    return chains


# --------------------------------------------------------------------------
# Vignettes
# --------------------------------------------------------------------------

_SCENARIOS = {"disease": DIAGNOSED, "infection": DIAGNOSED, "finding": FOUND, "treatment": TREATED,
              "organism": INFECTED, "drug": STARTED}  # "presentation": by age band, below


@dataclass(frozen=True)
class Item:
    """One answerable question before a patient, wording and options are chosen."""

    hops: tuple[Hop, ...]
    chain: str  # its chain type's name

    @property
    def band(self) -> str:
        for hop in self.hops:  # the first patient-level subject sets the age
            if hop.fact.subject in fb.AGE_BAND:
                return fb.AGE_BAND[hop.fact.subject]
        return fb.ADULT

    @property
    def answer(self) -> str:
        return self.hops[-1].reached

    def scenarios(self) -> tuple[str, ...]:
        start = self.hops[0].source
        if start == "presentation":
            base = PRESENTING_CHILD if self.band in PEDIATRIC else PRESENTING_ADULT
        else:
            base = _SCENARIOS[start]
        if len(self.hops) > 1 and self.hops[-1].fact.relation in DRUG_RELATIONS:
            # The chain goes on from a treatment to its drug: say the drug was started, without naming it.
            return tuple(s + (THEN_STARTED if start == "presentation" else THEN_STARTED_KNOWN) for s in base)
        return base


def patient_fields(band: str, rng: random.Random) -> dict[str, str]:
    low, high, unit = AGES[band]
    age = rng.randint(low, high)
    female = rng.random() < 0.5
    noun = ("girl" if female else "boy") if band in PEDIATRIC else ("woman" if female else "man")
    he, his = ("she", "her") if female else ("he", "his")
    article = "an" if str(age).startswith("8") or age in (11, 18) else "a"
    person = f"{article} {age}-{unit}-old {noun}"
    return {"P": cap(person), "p": person, "He": cap(he), "he": he, "His": cap(his), "his": his}


def vignette(item: Item, rng: random.Random) -> str:
    fields = patient_fields(item.band, rng)
    details = DETAILS_CHILD if item.band in PEDIATRIC else DETAILS_ADULT
    template = rng.choice(item.scenarios()) + rng.choice(details) + " " + rng.choice(ASKS[item.hops[-1].target])
    return template.format(x=item.hops[0].given, **fields)


def items(chains: tuple[tuple[Step, ...], ...], facts: tuple[Fact, ...]) -> list[Item]:
    return [Item(hops, chain_name(steps)) for steps in chains for hops in walk(steps, facts)]


# --------------------------------------------------------------------------
# Drafts and splits
# --------------------------------------------------------------------------


def question_key(text: str) -> str:
    # Case- and punctuation-blind, like the contamination guard, so the guard
    # never has a reason to drop a bundled training question.
    return " ".join(re.findall(r"\w+", text.lower()))


Draft = tuple[str, Item, list[str]]  # (question text, item, three distractor values)


def draft(chosen: list[Item], pools: dict[str, list[str]], seen: set[str], rng: random.Random) -> list[Draft]:
    """Up to VARIANTS_PER_ITEM vignettes of every item, unique by text among ``seen`` (which grows)."""
    drafts = []
    for item in chosen:
        for _ in range(VARIANTS_PER_ITEM):
            # A few retries: small age bands can repeat a vignette exactly.
            for _attempt in range(8):
                question = vignette(item, rng)
                if question_key(question) not in seen:
                    break
            else:
                continue
            seen.add(question_key(question))
            # Values are unique per category (check_fact_base), so any other
            # member of the pool is false for this question.
            candidates = [v for v in pools[item.hops[-1].pool] if v != item.answer]
            drafts.append((question, item, rng.sample(candidates, 3)))
    return drafts


def split_off(drafts: list[Draft], sizes: dict[str, int]) -> dict[str, list[Draft]]:
    """Deal shuffled ``drafts`` into held-out splits of ``sizes``, the rest to train, never taking an
    item's last vignette: every in-distribution test question asks a chain that training asks too,
    in other words."""
    left = Counter(d[1] for d in drafts)
    out: dict[str, list[Draft]] = {split: [] for split in (*sizes, "train")}
    for d in drafts:
        split = next((s for s in sizes if len(out[s]) < sizes[s]), "train")
        if split != "train" and left[d[1]] == 1:
            split = "train"
        left[d[1]] -= 1
        out[split].append(d)
    extra = len(out["train"]) % len(LETTERS)  # keep the letters exactly balanced
    out["train"] = out["train"][:len(out["train"]) - extra]
    return out


@dataclass(frozen=True)
class GeneratedQuestion:
    """An MCQ together with the hops that decide it, for auditing the generator."""

    mcq: MCQ
    hops: tuple[Hop, ...]  # the chain behind the answer, in order; the last one gives it
    chain: str  # its chain type's name (also the MCQ's subject)
    category: str  # the pool all four options come from

    @property
    def facts(self) -> tuple[Fact, ...]:
        return tuple(h.fact for h in self.hops)


def option_text(value: str) -> str:
    """How a fact value is shown as an option: no leading article, capitalised."""
    for article in ("a ", "an ", "the "):
        if value.startswith(article):
            value = value[len(article):]
            break
    return cap(value)


def assemble(drafts: list[Draft], rng: random.Random) -> tuple[GeneratedQuestion, ...]:
    """Place the answer so that each letter is gold for exactly a quarter of a split (up to rounding)."""
    letters = [LETTERS[i % len(LETTERS)] for i in range(len(drafts))]
    rng.shuffle(letters)
    questions = []
    for (question, item, distractors), letter in zip(drafts, letters):
        values = list(distractors)
        values.insert(LETTERS.index(letter), item.answer)
        mcq = MCQ(question=question, options={key: option_text(value) for key, value in zip(LETTERS, values)},
                  answer=letter, explanation=explain(item.hops), subject=item.chain, tags={"meta_info": item.chain})
        questions.append(GeneratedQuestion(mcq, item.hops, item.chain, item.hops[-1].pool))
    return tuple(questions)
