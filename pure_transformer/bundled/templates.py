"""Wording for the bundled medical text: fact sentences, passage openers and vignette parts.

These are plain tables of sentence templates used by
:mod:`pure_transformer.bundled.synthetic`; the logic that fills them in lives
there. Changing, adding or reordering any template changes the generated
corpus (and its hashes), because template choice is drawn from seeded RNGs
by index. :func:`cap` is the small capitalisation helper shared with
:mod:`pure_transformer.bundled.general_text`.
"""

from __future__ import annotations

from . import facts as fb
from .facts import Relation


def cap(text: str) -> str:
    """Upper-case the first character only (``str.capitalize`` would lower the rest)."""
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------
# Sentence templates. {s} is the subject, {v} the value. Each relation has its
# statements in both directions, alternating: an even wording states the fact
# forward (subject first: "The first-line treatment for {s} is {v}."), an odd
# one in reverse (value first: "{v} is the preferred first treatment for {s}.").
# A model that reads a fact only one way cannot retrieve it the other way (the
# reversal curse, Berglund et al. 2023), and the bundled questions ask both.
# The first TRAIN_WORDINGS are training text; the rest only held-out text.
# Wordings 0 and 1 are the ones explanations use (EXPLANATION_WORDINGS).
# --------------------------------------------------------------------------

FACT_TEMPLATES: dict[Relation, tuple[str, ...]] = {
    Relation.PRESENTATION: (
        "Patients with {s} classically present with {v}.",
        "A patient who develops {v} most likely has {s}.",
        "The typical picture of {s} is {v}.",
        "{v} should raise suspicion of {s}.",
        "Clinically, {s} shows up as {v}.",
        "In anyone with {v}, {s} is the diagnosis to consider first.",
        "Textbooks describe {s} as causing {v}.",
        "When someone has {v}, the leading diagnosis is {s}.",
    ),
    Relation.TREATMENT: (
        "The first-line treatment for {s} is {v}.",
        "{v} is the preferred first treatment for {s}.",
        "For most patients with {s}, initial therapy is {v}.",
        "Guidelines recommend {v} as the initial therapy for {s}.",
        "Once {s} is diagnosed, management usually begins with {v}.",
        "The main first-line use of {v} is in {s}.",
        "Standard first-line care for {s} consists of {v}.",
        "Clinicians reach for {v} first when treating {s}.",
    ),
    Relation.FINDING: (
        "The key diagnostic finding in {s} is {v}.",
        "Finding {v} strongly supports a diagnosis of {s}.",
        "Workup of {s} characteristically reveals {v}.",
        "{v} is the hallmark finding of {s}.",
        "In {s}, testing typically shows {v}.",
        "A result of {v} points to {s}.",
        "A classic result in {s} is {v}.",
        "Investigations that demonstrate {v} suggest {s}.",
    ),
    Relation.ORGANISM: (
        "{s} is caused by {v}.",
        "Infection with {v} produces {s}.",
        "The causative organism of {s} is {v}.",
        "{v} is responsible for {s}.",
        "Most cases of {s} are due to {v}.",
        "The disease that {v} typically causes is {s}.",
        "The pathogen behind {s} is {v}.",
        "Infection by {v} leads to {s}.",
    ),
    Relation.DRUG_CLASS: (
        "{s} is {v}.",
        "As {v}, {s} shares its key properties with related agents.",
        "Pharmacologically, {s} is classified as {v}.",
        "One example of {v} is {s}.",
        "Students should remember that {s} is {v}.",
        "Among agents classed as {v}, a standard one is {s}.",
        "In drug references, {s} is listed as {v}.",
        "A well-known drug that is {v} is {s}.",
    ),
    Relation.MECHANISM: (
        "The mechanism of action of {s} is {v}.",
        "{v} is the main action of {s}.",
        "{s} works through {v}.",
        "The drug known for {v} is {s}.",
        "At the molecular level, {s} acts via {v}.",
        "Through {v}, {s} exerts its effect.",
        "{s} produces its benefit through {v}.",
        "{v} underlies the effect of {s}.",
    ),
    Relation.ADVERSE_EFFECT: (
        "A characteristic adverse effect of {s} is {v}.",
        "{v} is a classic side effect of {s}.",
        "Patients taking {s} should be warned about {v}.",
        "{v} in a treated patient should bring {s} to mind.",
        "Treatment with {s} can cause {v}.",
        "One well-known cause of {v} is treatment with {s}.",
        "Clinicians watch patients on {s} for {v}.",
        "{v} is a toxicity typical of {s}.",
    ),
}
TRAIN_WORDINGS = 6
EXPLANATION_WORDINGS = (0, 1)  # (forward, reverse): how a worked explanation states a hop


def is_reverse(wording: int) -> bool:
    """Whether template number ``wording`` states its fact value first."""
    return wording % 2 == 1


INTROS = (
    "This section reviews {s}.",
    "Key points about {s} follow.",
    "{s} is a frequent topic on licensing examinations.",
    "Consider what every student should know about {s}.",
    "Here is a short summary of {s}.",
)

# --------------------------------------------------------------------------
# Vignette building blocks. {x} is the presentation, subject or drug.
# --------------------------------------------------------------------------

PRESENTING_ADULT = (
    "{P} comes to the emergency department with {x}.",
    "{P} visits {his} primary care physician because of {x}.",
    "{P} is evaluated in the clinic for {x}.",
    "{P} presents with {x}.",
)
PRESENTING_CHILD = (
    "{P} is brought to the emergency department with {x}.",
    "{P} is brought to the pediatrician because of {x}.",
    "The parents of {p} seek care because of {x}.",
    "{P} is evaluated by a pediatrician for {x}.",
)
DIAGNOSED = (
    "{P} has recently been diagnosed with {x}.",
    "{P} is found to have {x}.",
    "{P} with newly diagnosed {x} comes to the clinic for a follow-up visit.",
)
STARTED = (
    "{P} is started on {x}.",
    "{P} begins treatment with {x}.",
    "{P} has been prescribed {x}.",
)
FOUND = (
    "Evaluation of {p} shows {x}.",
    "{P} has testing that reveals {x}.",
    "{P} undergoes a workup, which shows {x}.",
)
TREATED = (
    "{P} is started on {x} as first-line therapy for a new diagnosis.",
    "{P} begins first-line treatment with {x} for a newly diagnosed condition.",
    "{P} is prescribed {x}, the first-line therapy for {his} new diagnosis.",
)
INFECTED = (
    "{P} is found to be infected with {x}.",
    "Testing in {p} identifies {x} as the cause of {his} illness.",
    "{P} has an infection with {x}.",
)
THEN_STARTED = " {He} is started on the first-line drug for the most likely diagnosis."
THEN_STARTED_KNOWN = " {He} is started on the first-line drug for this condition."
DETAILS_ADULT = (
    "",
    " {He} has no known drug allergies.",
    " {He} works as a teacher.",
    " {He} works as an accountant.",
    " {He} works as an electrician.",
    " {He} works as a bus driver.",
    " {He} lives with {his} spouse.",
    " {He} recently moved to a new city.",
)
DETAILS_CHILD = (
    "",
    " {He} has no known drug allergies.",
    " {He} is accompanied by {his} mother.",
    " {He} is accompanied by {his} father.",
    " {He} is accompanied by {his} grandmother.",
)

ASKS: dict[str, tuple[str, ...]] = {  # keyed by the kind of answer asked for (synthetic.KINDS)
    "disease": (
        "Which of the following is the most likely diagnosis?",
        "What is the most likely diagnosis?",
        "Which condition best explains these findings?",
    ),
    "treatment": (
        "Which of the following is the most appropriate first-line treatment?",
        "What is the recommended initial therapy?",
        "Which management is most appropriate first?",
    ),
    "finding": (
        "Further evaluation is most likely to show which of the following?",
        "Which of the following findings is most characteristic of this condition?",
        "Which result would best support the diagnosis?",
    ),
    "infection": (
        "Which of the following conditions is this organism most likely to cause?",
        "Which infection does this organism classically produce?",
    ),
    "organism": (
        "Which of the following is the most likely causative organism?",
        "Which organism is the most likely cause?",
        "Infection with which pathogen is responsible?",
    ),
    "drug class": (
        "To which drug class does this medication belong?",
        "This drug is best classified as which of the following?",
    ),
    "mechanism": (
        "What is the mechanism of action of this drug?",
        "This medication works primarily through which mechanism?",
    ),
    "adverse effect": (
        "Which adverse effect is most characteristic of this drug?",
        "This patient should be counseled about which characteristic adverse effect?",
    ),
}

# age band -> (youngest, oldest, unit); infants are described in weeks
AGES = {
    fb.INFANT: (2, 10, "week"),
    fb.TODDLER: (1, 3, "year"),
    fb.CHILD: (4, 12, "year"),
    fb.YOUNG: (18, 34, "year"),
    fb.ADULT: (30, 64, "year"),
    fb.OLDER: (62, 88, "year"),
}
PEDIATRIC = {fb.INFANT, fb.TODDLER, fb.CHILD}

# Openers for passages that compare facts of the same relation.
COMPARE_INTROS = (
    "Several associations are easy to confuse.",
    "It helps to learn these facts side by side.",
    "The following facts are often tested together.",
    "Compare the statements below.",
)
