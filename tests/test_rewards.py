"""Tests for the GRPO rewards: correctness, format shaping, scoring, shuffling, diagnostics."""

from __future__ import annotations

import random

import pytest
import torch

from pure_transformer.mcq.answer_format import AnswerFormat
from pure_transformer.mcq.record import MCQ

LETTERS = ("A", "B", "C", "D")  # these tests ask four-option questions
from pure_transformer.rl.rewards import (RewardConfig, correctness_reward, format_reward, letter_distribution,
                                         make_reward, prepare_question, score)

OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}


def _mcq(answer: str = "C") -> MCQ:
    return MCQ(question="Which drug inhibits vitamin K epoxide reductase?",
               options=dict(OPTIONS), answer=answer)


# --------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (" C. Aspirin", "C", 1.0),
        ("C", "C", 1.0),
        ("The answer is B", "B", 1.0),
        ("The answer is B", "C", 0.0),
        ("a patient with chest pain", "A", 0.0),
        ("A patient with chest pain", "A", 0.0),
        ("A. Aspirin", "A", 1.0),
        ("", "C", 0.0),
        ("   ", "C", 0.0),
        ("Both A and C", "C", 0.0),
        ("E", "C", 0.0),
        ("D", "C", 0.0),
    ],
)
@pytest.mark.fast
def test_correctness_reward(completion: str, gold: str, expected: float) -> None:
    assert correctness_reward(_mcq(gold), completion) == expected


# --------------------------------------------------------------------------
# Format shaping and the combined reward
# --------------------------------------------------------------------------


@pytest.mark.fast
@pytest.mark.parametrize("completion", ["C", "C.", "C. Warfarin", " D. Alteplase", "B\nbecause"])
def test_format_reward_accepts_a_leading_letter(completion: str) -> None:
    assert format_reward(_mcq(), completion) == 1.0


@pytest.mark.fast
@pytest.mark.parametrize("completion", ["", "A patient", "A 49-year-old", "D-dimer", "A or B", "CD", "E.", "It is C"])
def test_format_reward_rejects_other_forms(completion: str) -> None:
    assert format_reward(_mcq(), completion) == 0.0


@pytest.mark.fast
def test_rewards_read_the_run_format() -> None:
    explain = AnswerFormat.EXPLAIN
    assert correctness_reward(_mcq("C"), " Warfarin blocks VKORC1.\nAnswer: Warfarin", explain) == 1.0
    assert correctness_reward(_mcq("C"), " Warfarin blocks VKORC1.\nAnswer: C", explain) == 0.0
    assert correctness_reward(_mcq("C"), " Warfarin blocks VKORC1.", explain) == 0.0
    assert format_reward(_mcq("C"), " x\nAnswer: Heparin", explain) == 1.0
    assert format_reward(_mcq("C"), " x\nAnswer: Heparin or warfarin", explain) == 0.0
    reward = make_reward(RewardConfig(format_weight=0.5, answer_format=explain))
    assert reward(_mcq("C"), " x\nAnswer: Warfarin") == pytest.approx(1.5)
    assert reward(_mcq("C"), " x\nAnswer: Heparin") == pytest.approx(0.5)


@pytest.mark.fast
def test_format_reward_ignores_correctness() -> None:
    assert format_reward(_mcq("C"), "D. Alteplase") == 1.0


@pytest.mark.fast
def test_default_reward_is_correctness_only() -> None:
    reward = make_reward(RewardConfig())
    assert reward(_mcq("C"), "C. Warfarin") == 1.0
    assert reward(_mcq("C"), "D. Alteplase") == 0.0  # well formed, wrong: no format bonus
    assert reward(_mcq("C"), "The answer is C") == 1.0


@pytest.mark.fast
def test_combined_reward_weights() -> None:
    reward = make_reward(RewardConfig(format_weight=0.25))
    assert reward(_mcq("C"), "C. Warfarin") == pytest.approx(1.25)
    assert reward(_mcq("C"), "D. Alteplase") == pytest.approx(0.25)
    assert reward(_mcq("C"), "The answer is C") == pytest.approx(1.25)  # a leading cue is the answer form too
    assert reward(_mcq("C"), "a patient") == 0.0


@pytest.mark.fast
def test_reward_config_is_frozen() -> None:
    cfg = RewardConfig()
    with pytest.raises(AttributeError):
        cfg.format_weight = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------
# Scoring a batch
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_score_shape_dtype_and_values() -> None:
    questions = [_mcq("C")] * 3 + [_mcq("A")]
    completions = ["C", "B", "", "A. Aspirin"]
    rewards = score(correctness_reward, questions, completions)
    assert rewards.dtype == torch.float32
    assert rewards.shape == (4,)
    assert rewards.tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.fast
def test_score_takes_any_callable() -> None:
    rewards = score(lambda mcq, text: float(len(text)), [_mcq()] * 2, ["ab", "abcd"])
    assert rewards.tolist() == [2.0, 4.0]


@pytest.mark.fast
def test_score_empty_and_mismatched() -> None:
    assert score(correctness_reward, [], []).shape == (0,)
    with pytest.raises(ValueError, match="2 questions but 1 completions"):
        score(correctness_reward, [_mcq()] * 2, ["C"])


# --------------------------------------------------------------------------
# Option shuffling
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_prepare_question_without_rng_is_identity() -> None:
    mcq = _mcq()
    assert prepare_question(mcq, None) is mcq


@pytest.mark.fast
def test_prepare_question_keeps_gold_text_and_option_set() -> None:
    mcq = _mcq("C")
    rng = random.Random(0)
    for _ in range(20):
        shuffled = prepare_question(mcq, rng)
        assert shuffled.answer_text == "Warfarin"
        assert sorted(shuffled.options.values()) == sorted(OPTIONS.values())
        assert tuple(shuffled.options) == LETTERS
        assert shuffled.question == mcq.question


@pytest.mark.fast
def test_prepare_question_is_seeded() -> None:
    first = [prepare_question(_mcq(), random.Random(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng_a, rng_b = random.Random(123), random.Random(123)
    assert [prepare_question(_mcq(), rng_a) for _ in range(10)] == [
        prepare_question(_mcq(), rng_b) for _ in range(10)
    ]


@pytest.mark.fast
def test_prepare_question_moves_the_gold_letter() -> None:
    rng = random.Random(0)
    golds = {prepare_question(_mcq("C"), rng).answer for _ in range(50)}
    assert golds == set(LETTERS)


# --------------------------------------------------------------------------
# Letter distribution
# --------------------------------------------------------------------------


@pytest.mark.fast
def test_letter_distribution_fractions() -> None:
    completions = ["A", "A. Aspirin", "The answer is B", "a patient", "", "D"]
    dist = letter_distribution([_mcq()] * len(completions), completions)
    assert set(dist) == {"A", "B", "C", "D", "None"}
    assert sum(dist.values()) == pytest.approx(1.0)
    assert dist == pytest.approx({"A": 2 / 6, "B": 1 / 6, "C": 0.0, "D": 1 / 6, "None": 2 / 6})


@pytest.mark.fast
def test_letter_distribution_empty() -> None:
    assert letter_distribution([], []) == {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0, "None": 0.0}
