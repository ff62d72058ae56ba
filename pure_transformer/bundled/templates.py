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
# Sentence templates. {s} is the subject, {v} the value. The first five per
# relation are used in training text, the rest only in held-out text.
# --------------------------------------------------------------------------

FACT_TEMPLATES: dict[Relation, tuple[str, ...]] = {
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

INTROS = (
    "This section reviews {s}.",
    "Key points about {s} follow.",
    "{s} is a frequent topic on licensing examinations.",
    "Consider what every student should know about {s}.",
    "Here is a short summary of {s}.",
)
CONNECTIVES = ("By contrast,", "Similarly,", "In comparison,", "On the other hand,", "Likewise,")

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
THEN_STARTED = " {He} is started on the first-line drug for the most likely diagnosis."
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

ASKS: dict[Relation, tuple[str, ...]] = {
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
