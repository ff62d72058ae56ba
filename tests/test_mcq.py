"""Tests for the MCQ record: schema normalisation, formatting, answer extraction, shuffling."""

from __future__ import annotations

import random

import pytest

from pure_transformer.errors import DataError, UserError
from pure_transformer.mcq.record import MCQ, rotate_options, shuffle_options
from pure_transformer.mcq.schemas import mcq_to_record, normalize_mcq

OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}


def _mcq(**overrides: object) -> MCQ:
    fields: dict[str, object] = {"question": "Which drug inhibits vitamin K epoxide reductase?",
                                 "options": dict(OPTIONS), "answer": "C"}
    fields.update(overrides)
    return MCQ(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# The record itself
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_mcq_takes_two_to_ten_options_lettered_in_order() -> None:
    five = _mcq(options={**OPTIONS, "E": "Clopidogrel"}, answer="E")
    assert five.letters == ("A", "B", "C", "D", "E") and five.answer_text == "Clopidogrel" and five.chance == 0.2
    assert _mcq(options={"A": "yes", "B": "no"}, answer="B").letters == ("A", "B")
    ten = {chr(65 + i): f"option {i}" for i in range(10)}
    assert _mcq(options=ten, answer="J").letters[-1] == "J"
    for bad in ({"A": "only"}, {**ten, "K": "eleven"}, {"A": "x", "C": "y"}, {"A": "x", "B": "y", "D": "z"}):
        with pytest.raises(DataError, match=r"2 to 10 lettered from A in order"):
            _mcq(options=bad, answer="A")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"answer": "E"}, "answer 'E' is not one of A, B, C, D"),
        ({"context": "  "}, "context, when given, must be non-empty"),
        ({"options": {**OPTIONS, "B": "  "}}, "option B is empty"),
        ({"question": ""}, "question is empty"),
    ],
)
@pytest.mark.fast
def test_mcq_validation_messages(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        _mcq(**overrides)


@pytest.mark.fast
def test_mcq_orders_options_and_data_error_is_a_user_error() -> None:
    mcq = _mcq(options={"D": "Alteplase", "C": "Warfarin", "B": "Heparin", "A": "Aspirin"})
    assert tuple(mcq.options) == ("A", "B", "C", "D")
    assert mcq.answer_text == "Warfarin"
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)


# --------------------------------------------------------------------------
# normalize_mcq
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_normalize_medqa_hub_record() -> None:
    record = {"question": "Q?", "options": dict(OPTIONS), "answer_idx": "C", "answer": "Warfarin",
              "meta_info": "step1"}
    mcq = normalize_mcq(record)
    assert mcq == MCQ("Q?", dict(OPTIONS), "C", subject="step1")


@pytest.mark.fast
def test_normalize_bigbio_option_list() -> None:
    record = {"question": "Q?", "options": [{"key": k, "value": v} for k, v in OPTIONS.items()],
              "answer_idx": "B"}
    mcq = normalize_mcq(record)
    assert mcq.options == OPTIONS and mcq.answer == "B"


@pytest.mark.fast
def test_normalize_reads_five_option_medqa_and_locates_a_bad_answer() -> None:
    record = {"question": "Q?", "options": {**OPTIONS, "E": "Clopidogrel"}, "answer_idx": "E"}
    assert normalize_mcq(record).answer_text == "Clopidogrel"
    with pytest.raises(DataError) as err:
        normalize_mcq({**record, "answer_idx": "F"}, where="medqa.jsonl line 7")
    assert str(err.value) == "MCQ answer 'F' is not one of A, B, C, D, E (medqa.jsonl line 7)"


@pytest.mark.fast
def test_normalize_names_missing_question() -> None:
    record = {"options": dict(OPTIONS), "answer_idx": "A"}
    with pytest.raises(DataError) as err:
        normalize_mcq(record, where="file.jsonl line 3")
    assert str(err.value) == "MedQA record is missing field(s) question (file.jsonl line 3)"
    assert "\n" not in str(err.value)


@pytest.mark.fast
def test_normalize_medmcqa() -> None:
    record = {"question": "Q?", "opa": "w", "opb": "x", "opc": "y", "opd": "z", "cop": 3,
              "exp": "Because z.", "subject_name": "Pharmacology"}
    mcq = normalize_mcq(record)
    assert mcq.options == {"A": "w", "B": "x", "C": "y", "D": "z"}
    assert (mcq.answer, mcq.explanation, mcq.subject) == ("D", "Because z.", "Pharmacology")


@pytest.mark.fast
@pytest.mark.parametrize("cop", [-1, None])
def test_normalize_medmcqa_hidden_label(cop: object) -> None:
    record = {"question": "Q?", "opa": "w", "opb": "x", "opc": "y", "opd": "z", "cop": cop}
    with pytest.raises(DataError, match=r"MedMCQA record has no answer \(cop=.*\); its test labels are "
                                        r"hidden, use the validation split"):
        normalize_mcq(record)


@pytest.mark.fast
def test_normalize_medmcqa_missing_option() -> None:
    with pytest.raises(DataError, match="MedMCQA record is missing field\\(s\\) opd"):
        normalize_mcq({"question": "Q?", "opa": "w", "opb": "x", "opc": "y", "cop": 1})


@pytest.mark.fast
def test_normalize_rejects_non_dict() -> None:
    with pytest.raises(DataError, match="must be a dict, got list"):
        normalize_mcq(["Q?"])  # type: ignore[arg-type]


@pytest.mark.parametrize("explanation, subject, context", [(None, None, None),
                                                           ("Vitamin K.", "Pharmacology", "An abstract.")])
@pytest.mark.fast
def test_round_trip_through_normalised_record(explanation: str | None, subject: str | None,
                                              context: str | None) -> None:
    mcq = _mcq(explanation=explanation, subject=subject, context=context)
    record = mcq_to_record(mcq)
    extra = {"explanation", "subject", "context"} if subject else set()
    assert set(record) == {"question", "options", "answer"} | extra
    assert normalize_mcq(record) == mcq


# --------------------------------------------------------------------------
# shuffle_options
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_shuffle_options_keeps_gold_text() -> None:
    mcq = _mcq(explanation="why", subject="pharm")
    rng = random.Random(0)
    answers = set()
    for _ in range(40):
        shuffled = shuffle_options(mcq, rng)
        assert shuffled.answer_text == "Warfarin"
        assert sorted(shuffled.options.values()) == sorted(OPTIONS.values())
        assert (shuffled.question, shuffled.explanation, shuffled.subject) == (mcq.question, "why", "pharm")
        answers.add(shuffled.answer)
    assert answers == set(mcq.letters)  # the gold letter really moves


@pytest.mark.fast
def test_shuffle_options_is_deterministic_for_a_seed() -> None:
    mcq = _mcq()
    assert shuffle_options(mcq, random.Random(7)) == shuffle_options(mcq, random.Random(7))


@pytest.mark.fast
@pytest.mark.parametrize("count", [2, 3, 5])
def test_shuffle_and_rotate_follow_the_option_count(count: int) -> None:
    options = {chr(65 + i): f"option {i}" for i in range(count)}
    mcq = MCQ("q?", options, "B", context="ctx")
    for shift in range(count):
        rotated = rotate_options(mcq, shift)
        assert rotated.letters == mcq.letters and rotated.answer_text == "option 1" and rotated.context == "ctx"
        assert rotated.options[chr(65 + shift % count)] == "option 0"
    assert rotate_options(mcq, count) == mcq
    seen = {shuffle_options(mcq, random.Random(seed)).answer for seed in range(30)}
    assert seen == set(mcq.letters)
