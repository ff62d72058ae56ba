"""Evaluation: interval arithmetic by hand, log-likelihood scoring against an
independent forward pass, and the evaluate command on a tiny checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pure_transformer.bundled.synthetic import bundled_corpus
from pure_transformer.checkpoint.store import save_checkpoint, step_dir
from pure_transformer.eval.scoring import (cloze_mcq_accuracy, expected_calibration_error, loglikelihood_mcq_accuracy,
                                           paired_bootstrap_ci, passk_mcq_accuracy, sample_answers, wilson_interval)
from pure_transformer.evaluate import main as evaluate_main
from pure_transformer.mcq.answer_format import AnswerFormat
from pure_transformer.mcq.prompts import harness_prompt
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model

CFG = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=512)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    torch.manual_seed(0)
    path = step_dir(tmp_path_factory.mktemp("run"), 3)
    save_checkpoint(path, build_model(CFG), {"kind": "pretrain", "step": 3, "model_config": CFG.to_dict(),
                                             "tokenizer": "tokenizer.json"},
                    files={"tokenizer.json": tiny_tokenizer.hf.to_str()})
    return path


@pytest.mark.fast
def test_wilson_interval_by_hand() -> None:
    low, high = wilson_interval(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)


@pytest.mark.fast
def test_expected_calibration_error_by_hand() -> None:
    # bin [0.9, 1.0): confidences 0.95, 0.95, one right -> |0.5 - 0.95| * 2/4; bin [0.3, 0.4): 0.35, 0.35, both right
    ece = expected_calibration_error([0.95, 0.95, 0.35, 0.35], [True, False, True, True])
    assert ece == pytest.approx(0.45 * 0.5 + 0.65 * 0.5)


@pytest.mark.fast
def test_paired_bootstrap_ci() -> None:
    rng = np.random.default_rng(0)
    before = rng.random(400) < 0.25
    after = before | (rng.random(400) < 0.2)  # strictly better on the same questions
    low, high = paired_bootstrap_ci(before, after)
    diff = after.mean() - before.mean()
    assert 0 < low < diff < high
    low, high = paired_bootstrap_ci(before, before)
    assert low == high == 0.0


@pytest.mark.fast
def test_loglikelihood_matches_independent_scoring(tiny_ckpt: Path, tiny_tokenizer) -> None:
    from pure_transformer.checkpoint.store import load_model

    model, tok, _, _ = load_model(tiny_ckpt)
    questions = bundled_corpus().mcq["test"][:6]
    score = loglikelihood_mcq_accuracy(model, tok, questions, batch_size=4)
    for q, predicted in zip(questions, score.predictions):
        totals = []
        for letter in "ABCD":
            prompt = [tok.eot_id] + tok.encode(harness_prompt(q))
            cont = tok.encode(f" {letter}")
            with torch.no_grad():
                _, logits = model(torch.tensor([prompt + cont]))
            logp = torch.log_softmax(logits[0], dim=-1)
            totals.append(sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(cont)))
        assert predicted == "ABCD"[int(np.argmax(totals))]
    assert harness_prompt(questions[0]).endswith("\nD. " + questions[0].options["D"] + "\nAnswer:")
    assert 0 <= score.extra["ece"] <= 1 and score.n == 6


@pytest.mark.fast
def test_continuation_logprobs_match_one_forward_per_pair(tiny_ckpt: Path) -> None:
    # Shared contexts share a row, one-token and longer continuations mix, and an over-long pair
    # keeps its last max_seq_len inputs (lm-eval's rule): each value against its own forward pass.
    from pure_transformer.checkpoint.store import load_model
    from pure_transformer.eval.scoring import continuation_logprobs

    model, tok, _, _ = load_model(tiny_ckpt)
    q = bundled_corpus().mcq["test"][0]
    long_ctx = " ".join([q.question] * 40)
    pairs = [(harness_prompt(q), " A"), (harness_prompt(q), " B"), (harness_prompt(q), f" {q.options['C']}"),
             ("Question: fever\nAnswer:", " A"), (long_ctx, " B"), (long_ctx, f" {q.options['D']}")]
    assert len(tok.encode(long_ctx)) > CFG.max_seq_len
    rows = []  # the head's input rows: only the scored positions (one per distinct scored token)
    hook = model.lm_head.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    got = continuation_logprobs(model, tok, pairs)
    hook.remove()
    scored = set()  # (model input, position) of every scored token; pairs with one input share positions
    for ctx, cont in pairs:
        n = len(tok.encode(cont))
        inputs = tuple(([tok.eot_id] + tok.encode(ctx) + tok.encode(cont))[-CFG.max_seq_len - 1:-1])
        scored |= {(inputs, len(inputs) - n + i) for i in range(n)}
    assert rows == [len(scored)] and len(scored) < 2 * CFG.max_seq_len  # not every position of every row
    for value, (ctx, cont) in zip(got.tolist(), pairs):
        cont_ids = tok.encode(cont)
        inputs = ([tok.eot_id] + tok.encode(ctx) + cont_ids)[-CFG.max_seq_len - 1:-1]
        with torch.no_grad():
            _, logits = model(torch.tensor([inputs]))
        logp = torch.log_softmax(logits[0].double(), dim=-1)
        first = len(inputs) - len(cont_ids)
        assert value == pytest.approx(sum(logp[first + i, t].item() for i, t in enumerate(cont_ids)), abs=1e-4)


@pytest.mark.fast
def test_evaluate_command_writes_report(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report.json"
    code = evaluate_main(["--checkpoint", str(tiny_ckpt.parent), "--task", "synthetic", "--split", "test",
                          "--limit", "12", "--mode", "both", "--output", str(out), "--no-progress"])
    assert code == 0
    reports = json.loads(out.read_text())
    assert [r["mode"] for r in reports] == ["generate/letter", "loglikelihood"]
    for r in reports:
        assert r["task"] == "synthetic" and r["n"] == 12 and r["step"] == 3
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert math.isclose(sum(r["letters"].values()), 1.0)
        assert [q["correct"] for q in r["questions"]] == [q["prediction"] == q["gold"] for q in r["questions"]]
        assert len({q["id"] for q in r["questions"]}) == 12
    assert "loglikelihood" in capsys.readouterr().out


@pytest.mark.fast
def test_cloze_matches_independent_scoring(tiny_ckpt: Path) -> None:
    from pure_transformer.checkpoint.store import load_model

    model, tok, _, _ = load_model(tiny_ckpt)
    questions = bundled_corpus().mcq["test"][:5]
    score = cloze_mcq_accuracy(model, tok, questions, batch_size=3)
    hits_norm = 0
    for q, predicted in zip(questions, score.predictions):
        totals, normed = [], []
        for letter in "ABCD":
            prompt = [tok.eot_id] + tok.encode(f"Question: {q.question}\nAnswer:")
            cont = tok.encode(f" {q.options[letter]}")
            with torch.no_grad():
                _, logits = model(torch.tensor([prompt + cont]))
            logp = torch.log_softmax(logits[0], dim=-1)
            totals.append(sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(cont)))
            normed.append(totals[-1] / len(q.options[letter]))
        assert predicted == "ABCD"[int(np.argmax(totals))]
        hits_norm += "ABCD"[int(np.argmax(normed))] == q.answer
    assert score.extra["acc_norm"] == pytest.approx(hits_norm / 5)


@pytest.mark.fast
def test_passk_counts_by_hand(tiny_ckpt: Path) -> None:
    from pure_transformer.checkpoint.store import load_model
    from pure_transformer.inference.engine import Engine

    model, tok, _, _ = load_model(tiny_ckpt)
    questions = bundled_corpus().mcq["test"][:4]
    engine = Engine(model, tok)
    score = passk_mcq_accuracy(engine, questions, AnswerFormat.LETTER, k=4, max_new_tokens=3, seed=5)
    answers = sample_answers(engine, questions, AnswerFormat.LETTER, samples=4, temperature=1.0, max_new_tokens=3,
                             seed=5).answers
    hits = [[a == q.answer for a in group] for q, group in zip(questions, answers)]
    assert score.extra["pass@1"] == pytest.approx(sum(map(sum, hits)) / 16)
    assert score.extra["pass@4"] == pytest.approx(sum(map(any, hits)) / 4)
    assert score.extra["pass@4"] >= score.extra["pass@1"]


@pytest.mark.fast
def test_baseline_gain_and_rotation(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = tmp_path / "base.json"
    args = ["--checkpoint", str(tiny_ckpt), "--limit", "8", "--mode", "loglikelihood,cloze", "--no-progress"]
    assert evaluate_main([*args, "--output", str(base)]) == 0
    capsys.readouterr()
    assert evaluate_main([*args, "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "gain vs baseline" in out and out.count("+0.000 [+0.000, +0.000]") == 2  # the same model gains nothing
    rotated = tmp_path / "rot.json"
    assert evaluate_main([*args, "--rotate", "1", "--output", str(rotated)]) == 0
    plain, turned = json.loads(base.read_text())[0], json.loads(rotated.read_text())[0]
    letters = "ABCD"
    assert [letters[(letters.index(q["gold"]) + 1) % 4] for q in plain["questions"]] == \
        [q["gold"] for q in turned["questions"]]
    assert evaluate_main([*args, "--baseline", str(tmp_path / "missing.json")]) == 2
    assert evaluate_main([*args, "--mode", "vibes"]) == 2
    assert evaluate_main([*args, "--mode", "passk", "--k", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "Traceback" not in err and "--k must be >= 1" in err


@pytest.mark.fast
def test_evaluate_local_files_and_errors(tiny_ckpt: Path, bundled_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code = evaluate_main(["--checkpoint", str(tiny_ckpt), "--data-path", str(bundled_dir / "medqa_train.jsonl"),
                          "--split", "test", "--limit", "5", "--mode", "loglikelihood", "--no-progress"])
    assert code == 0 and "medqa_train.jsonl test" in capsys.readouterr().out
    assert evaluate_main(["--checkpoint", str(tiny_ckpt), "--task", "usmle"]) == 2
    assert "unknown task 'usmle'" in capsys.readouterr().err


@pytest.mark.fast
def test_generate_streams_reproducibly(tiny_ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    from pure_transformer.checkpoint.store import load_model
    from pure_transformer.generate import main as generate_main
    from pure_transformer.inference.engine import Engine, SamplingParams, stream_text

    args = ["--checkpoint", str(tiny_ckpt), "--prompt", "The capital of", "--max-new-tokens", "12", "--seed", "5",
            "--temperature", "1.0"]
    assert generate_main(args) == 0
    first = capsys.readouterr().out
    assert generate_main(args) == 0
    assert capsys.readouterr().out == first  # same seed, same text
    model, tok, _, _ = load_model(tiny_ckpt)
    engine = Engine(model, tok)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=5)
    streamed = "".join(stream_text(engine, "The capital of", params))
    whole = engine.generate([[tok.eot_id] + tok.encode("The capital of")], params)[0][0].text
    assert streamed == whole.rstrip("\ufffd") and first == streamed + "\n"  # a cut-off character is held back
    assert generate_main(["--checkpoint", str(tiny_ckpt), "--prompt", "x", "--top-p", "0"]) == 2
    assert "top_p" in capsys.readouterr().err


@pytest.mark.fast
@pytest.mark.parametrize("tied", [False, True])
def test_export_loads_in_transformers_with_logit_parity(tmp_path: Path, tiny_tokenizer, tied: bool) -> None:
    transformers = pytest.importorskip("transformers")
    from pure_transformer.cli import main as cli_main

    cfg = CFG.replace(tie_embeddings=tied, n_kv_heads=2)
    torch.manual_seed(1)
    ours = build_model(cfg).eval()
    ckpt = save_checkpoint(step_dir(tmp_path / "run", 1), ours, {"kind": "rl", "step": 1, "model_config": cfg.to_dict(),
                                                                "tokenizer": "tokenizer.json"},
                           files={"tokenizer.json": tiny_tokenizer.hf.to_str()})
    assert cli_main(["export", "--checkpoint", str(ckpt.parent), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Question: A 45-year-old man presents with fever. Answer:"
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    assert ids == tiny_tokenizer.encode(text) and hf_tok.eos_token_id == tiny_tokenizer.eot_id
    x = torch.tensor([[tiny_tokenizer.eot_id] + ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x)[1], atol=1e-4, rtol=1e-4)


@pytest.mark.fast
def test_evaluate_one_local_file_with_the_default_split(tiny_ckpt: Path, tmp_path: Path, write_jsonl,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Users have their MedQA test file and nothing else. Named for the test split or for no split, it is
    scored whole, as lm-eval's task reads it; the checkpoint's ledger, not a hash, decides what a run
    trained on leaves out: exactly the questions training on the file read."""
    import shutil

    from pure_transformer.data.ledger import LEDGER_FILE, sources_ledger
    from pure_transformer.eval.harness.tasks import load as lm_eval_load

    questions = bundled_corpus().mcq["test"][:40]
    rows = [{"question": q.question, "options": q.options, "answer_idx": q.answer} for q in questions]
    for name in ("x_test.jsonl", "questions.jsonl"):
        path = write_jsonl(tmp_path / name, rows)
        code = evaluate_main(["--checkpoint", str(tiny_ckpt), "--data-path", str(path), "--mode", "loglikelihood",
                              "--no-progress"])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert f"{'loglikelihood':<18}{40:>5}{0:>8}{0:>8}" in out.out
        assert len(lm_eval_load(data_path=str(path))["test"]) == 40  # what lm-eval scores of the same file
    # A checkpoint trained on the no-split file (its ledger holds the questions training read: the file's
    # train hash slice) is scored on the rest, and says how many it left out.
    trained = tmp_path / "trained" / tiny_ckpt.name
    shutil.copytree(tiny_ckpt, trained)
    ledger = sources_ledger("pretrain", [str(path)])
    (trained / LEDGER_FILE).write_text(ledger.to_json())
    held = len(ledger)
    assert 0 < held < 40
    out_json = tmp_path / "report.json"
    assert evaluate_main(["--checkpoint", str(trained), "--data-path", str(path), "--mode", "loglikelihood",
                          "--output", str(out_json), "--no-progress"]) == 0
    report = json.loads(out_json.read_text())[0]
    assert (report["n"], report["contaminated"]) == (40 - held, held)
    assert f"{'loglikelihood':<18}{40 - held:>5}{0:>8}{held:>8}" in capsys.readouterr().out


@pytest.mark.fast
def test_partial_baseline_is_refused_and_passk_gains_pair_on_shares(tiny_ckpt: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    base = tmp_path / "base.json"
    common = ["--checkpoint", str(tiny_ckpt), "--mode", "passk", "--k", "4", "--max-new-tokens", "3", "--no-progress"]
    assert evaluate_main([*common, "--first", "4", "--output", str(base)]) == 0
    report = json.loads(base.read_text())[0]
    shares = [q["share"] for q in report["questions"]]
    assert report["accuracy"] == pytest.approx(sum(shares) / 4)  # pass@1 is the mean share
    assert report["ci95"][1] > report["ci95"][0]  # never zero-width, even when every sample is wrong
    capsys.readouterr()
    assert evaluate_main([*common, "--first", "8", "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    assert "error: the baseline pairs 4 of the 8 questions scored in passk" in err and err.count("\n") == 1
    assert evaluate_main([*common, "--first", "8", "--baseline", str(base), "--allow-partial-baseline"]) == 0
    assert "on 4 paired" in capsys.readouterr().out
    assert evaluate_main([*common, "--first", "4", "--baseline", str(base)]) == 0
    assert "+0.000 [+0.000, +0.000] on 4 paired" in capsys.readouterr().out  # same seed, same samples


@pytest.mark.fast
@pytest.mark.parametrize("mode", ["generate", "passk"])
def test_save_generations_keeps_the_texts_the_answers_were_read_from(tiny_ckpt: Path, tmp_path: Path,
                                                                     mode: str) -> None:
    out = tmp_path / "r.json"
    common = ["--checkpoint", str(tiny_ckpt), "--mode", mode, "--k", "3", "--limit", "4", "--format", "explain",
              "--max-new-tokens", "12", "--no-progress", "--output", str(out)]
    assert evaluate_main(common) == 0
    assert not any("generation" in key for q in json.loads(out.read_text())[0]["questions"] for key in q)
    assert evaluate_main([*common, "--save-generations"]) == 0
    report = json.loads(out.read_text())[0]
    questions = bundled_corpus().mcq["test"][:4]
    for q, row in zip(questions, report["questions"]):
        texts = [row["generation"]] if mode == "generate" else row["generations"]
        reads = [AnswerFormat.EXPLAIN.read(q, t) for t in texts]  # the parser, run again on the saved text
        assert len(texts) == (1 if mode == "generate" else 3)
        if mode == "generate":
            assert (row["prediction"], row.get("cause")) == reads[0]
        else:
            assert row["share"] == pytest.approx(sum(letter == q.answer for letter, _ in reads) / 3)


@pytest.mark.fast
def test_a_baseline_of_other_questions_or_modes_is_one_line(tiny_ckpt: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    base = tmp_path / "base.json"
    common = ["--checkpoint", str(tiny_ckpt), "--mode", "loglikelihood", "--limit", "4", "--no-progress"]
    assert evaluate_main([*common, "--output", str(base)]) == 0
    capsys.readouterr()
    for extra, message in ((["--rotate", "1", "--allow-partial-baseline"], "the baseline shares none of the 4"),
                           (["--mode", "cloze"], "the baseline has no mode of this run (it has loglikelihood)")):
        assert evaluate_main([*common, *extra, "--baseline", str(base)]) == 2
        err = capsys.readouterr().err
        assert err.count("error: ") == 1 and message in err and "Traceback" not in err


@pytest.mark.fast
def test_by_field_breaks_a_report_down_per_group_with_paired_gains(tiny_ckpt: Path, tmp_path: Path, write_jsonl,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """--by works on any field of a file's records: each group's n and accuracy are recomputed here from
    the report's own per-question rows, its gain from a baseline whose answers we rewrite by hand, and a
    field no record has is one error line."""
    questions = bundled_corpus().mcq["test"][:30]
    rows = [{"question": q.question, "options": q.options, "answer_idx": q.answer,
             "meta_info": ["step1", "step2&3", "step2&3"][i % 3], "year": 2000 + i % 2}
            for i, q in enumerate(questions)]
    path = write_jsonl(tmp_path / "q_test.jsonl", rows)
    args = ["--checkpoint", str(tiny_ckpt), "--data-path", str(path), "--mode", "loglikelihood", "--no-progress"]
    report_path = tmp_path / "report.json"
    assert evaluate_main([*args, "--by", "meta_info", "--output", str(report_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())[0]
    by_text = {q.question: r["meta_info"] for q, r in zip(questions, rows)}
    from pure_transformer.eval.scoring import question_id
    group_of_id = {question_id(q): by_text[q.question] for q in questions}
    assert all(row["group"] == group_of_id[row["id"]] for row in report["questions"])
    groups = {g["group"]: g for g in report["groups"]}
    assert (groups["step2&3"]["n"], groups["step1"]["n"]) == (20, 10)
    for name, g in groups.items():
        hits = [row["correct"] for row in report["questions"] if row["group"] == name]
        assert g["accuracy"] == pytest.approx(sum(hits) / len(hits))
        assert f"{name:<11}{g['n']:>5}{g['accuracy']:>10.3f}" in out
    # a baseline that got every step1 question wrong and every step2&3 question right
    baseline = json.loads(report_path.read_text())
    for row in baseline[0]["questions"]:
        row["correct"] = row["group"] == "step2&3"
    (tmp_path / "base.json").write_text(json.dumps(baseline))
    assert evaluate_main([*args, "--by", "year", "--baseline", str(tmp_path / "base.json")]) == 0
    assert evaluate_main([*args, "--by", "meta_info", "--baseline", str(tmp_path / "base.json")]) == 0
    out = capsys.readouterr().out
    assert "loglikelihood by year:" in out and "loglikelihood by meta_info:" in out
    step1 = [row["correct"] for row in report["questions"] if row["group"] == "step1"]
    gain = sum(step1) / len(step1) - 0.0
    assert f"{'step1':<11}{10:>5}{0.0:>9.3f}{gain + 0.0:>10.3f}" in out and f"{gain:+.3f} [" in out
    assert evaluate_main([*args, "--by", "specialty"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "no question" in err and "meta_info" in err and "Traceback" not in err


@pytest.mark.fast
def test_the_compositional_split_is_a_split_of_the_bundled_set_and_grouped_by_chain(
        tiny_ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    assert evaluate_main(["--checkpoint", str(tiny_ckpt), "--split", "compositional", "--limit", "12",
                          "--mode", "loglikelihood", "--by", "meta_info", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bundled-mcq compositional" in out and "finding -> disease -> treatment" in out
    assert evaluate_main(["--checkpoint", str(tiny_ckpt), "--split", "heldout", "--no-progress"]) == 2
    assert "unknown split 'heldout'; use one of train, validation, test, compositional" in capsys.readouterr().err
