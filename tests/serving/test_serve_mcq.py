"""``/v1/mcq`` in the text and explain formats agrees with ``evaluate --mode generate``: the same
greedy answer, read by the same parser, question for question (no-answer ones included); what
that parser could never read, or what leaves no room for the answer, is a 400 naming the cause."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serve_checks import MCQ_BODY, assert_error

from pure_transformer.checkpoint.store import load_model
from pure_transformer.data.registry import load_mcqs
from pure_transformer.eval.run import evaluate
from pure_transformer.eval.scoring import question_id, task_source
from pure_transformer.mcq.answer_format import NO_ANSWER_CAUSES, AnswerFormat
from pure_transformer.model.config import ModelConfig
from pure_transformer.serving.app import create_app

CFG = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=256)


@pytest.mark.parametrize("fmt", ["text", "explain"])
def test_mcq_answers_equal_evaluate_generate_mode(fmt: str, tmp_path: Path, random_checkpoint, serving) -> None:
    ckpt = random_checkpoint(tmp_path, CFG, {"answer_format": fmt})
    report, = evaluate(str(ckpt), "synthetic", modes=("generate",), limit=6, first=True, save_generations=True,
                       device="cpu", progress=False)
    expected = {q["id"]: q for q in report["questions"]}
    model, tok, meta, _ = load_model(str(ckpt), "cpu")
    app = create_app(model, tok, model_name="tiny", answer_format=AnswerFormat.of_checkpoint(meta))
    questions = load_mcqs(task_source("synthetic"), "test", limit=6)
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        for q in questions:
            r = c.post("/v1/mcq", json={"question": q.question, "options": q.options, "context": q.context})
            assert r.status_code == 200, r.text
            body, want = r.json(), expected[question_id(q)]
            assert body["answer_format"] == fmt and "probabilities" not in body  # no scores posing as the answer
            assert (body["answer"], body["cause"]) == (want["prediction"], want.get("cause"))
            assert body["completion"] == want["generation"]
            assert body["cause"] is None or body["cause"] in NO_ANSWER_CAUSES
            assert ("explanation" in body) == (fmt == "explain")


def test_explain_answer_is_its_answer_line_or_none(tiny_model, tiny_tokenizer, serving) -> None:
    """The explanation is what precedes the final answer line; the answer is what that line names."""
    from pure_transformer.mcq.record import MCQ
    from pure_transformer.serving.worker import read_answer

    q = MCQ(MCQ_BODY["question"], MCQ_BODY["options"], "A")
    fmt = AnswerFormat.EXPLAIN
    read = read_answer(q, fmt, " Scurvy is a lack of ascorbic acid.\nAnswer: Vitamin C")
    assert (read["answer"], read["cause"], read["explanation"]) == ("C", None, "Scurvy is a lack of ascorbic acid.")
    read = read_answer(q, fmt, " It is either vitamin C or vitamin D.\nAnswer: Vitamin C or Vitamin D")
    assert (read["answer"], read["cause"]) == (None, "names several")
    read = read_answer(q, fmt, " No answer line at all.")
    assert (read["answer"], read["cause"], read["explanation"]) == (None, "no answer line", "No answer line at all.")


@pytest.mark.parametrize("fmt", ["text", "explain"])
def test_unanswerable_or_unfittable_questions_are_400_naming_the_cause(fmt: str, tiny_model, tiny_tokenizer,
                                                                       serving) -> None:
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", answer_format=AnswerFormat(fmt))
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        same = assert_error(c.post("/v1/mcq", json={"question": "Which?", "options": {"A": "Vitamin C",
                                                                                    "B": "vitamin c."}}), 400)
        assert same["param"] == "options" and "read the same" in same["message"], same
        nameless = assert_error(c.post("/v1/mcq", json={"question": "Which?", "options": {"A": "x", "B": "--"}}), 400)
        assert nameless["param"] == "options" and "no words or numbers" in nameless["message"], nameless
        # Four 120-word options and the cue leave no room for the answer in a 256-token context:
        # a 400 naming the numbers, never an answer to a cut prompt.
        huge = {k: " ".join(f"word{i}" for i in range(120)) + k for k in "ABCD"}
        long = assert_error(c.post("/v1/mcq", json={"question": "Which?", "options": huge}), 400)
        assert long["code"] == "context_length_exceeded" and "options and cue take" in long["message"], long
        assert c.post("/v1/mcq", json=MCQ_BODY).status_code == 200  # and the server still answers


def test_an_answered_question_agrees_too(tiny_model, tiny_tokenizer, serving) -> None:
    """A random model names no option; so option D is set to the model's own answer line, fed back
    until the line it writes with D in its prompt is D: then it answers, and both sides must say D.
    The feedback can cycle, so the stem gets a case number until one settles."""
    from pure_transformer.eval.scoring import greedy_mcq_accuracy
    from pure_transformer.inference.engine import Engine
    from pure_transformer.mcq.record import MCQ

    engine, fmt = Engine(tiny_model, tiny_tokenizer), AnswerFormat.TEXT
    for case in range(40):
        q = MCQ(f"{MCQ_BODY['question']} Case {case}.", {**MCQ_BODY["options"], "D": "placeholder"}, "A")
        for _ in range(5):
            score = greedy_mcq_accuracy(engine, [q], fmt)
            if score.predictions[0] is not None:
                break
            q = MCQ(q.question, {**q.options, "D": score.generations[0][0].split("\n")[0]}, "A")
        if score.predictions[0] is not None:
            break
    assert score.predictions == ["D"]
    questions = [q, MCQ(MCQ_BODY["question"], MCQ_BODY["options"], "A")]  # answered, and not
    score = greedy_mcq_accuracy(engine, questions, fmt)
    app = create_app(tiny_model, tiny_tokenizer, model_name="tiny", answer_format=fmt)
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        got = [c.post("/v1/mcq", json={"question": x.question, "options": x.options}).json() for x in questions]
    assert [(g["answer"], g["cause"]) for g in got] == list(zip(score.predictions, score.causes))
    assert got[0]["answer"] == "D" and got[1]["answer"] is None
