"""The contamination ledger: fingerprints that survive re-casing, re-punctuation and
re-lettering; a ledger written by pretraining, kept through resume, extended by GRPO,
copied by export; and ``evaluate`` leaving its questions out unless told otherwise."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pure_transformer.bundled.synthetic import bundled_corpus
from pure_transformer.checkpoint.store import read_meta
from pure_transformer.cli import main as cli_main
from pure_transformer.config.overrides import apply_overrides
from pure_transformer.data.ledger import (LEDGER_FILE, Ledger, LedgerEntry, fingerprint, read_ledger, sources_ledger,
                                          split_contaminated)
from pure_transformer.data.registry import load_mcqs
from pure_transformer.errors import DataError
from pure_transformer.eval.scoring import question_id
from pure_transformer.mcq.record import MCQ, rotate_options, shuffle_options
from pure_transformer.mcq.schemas import mcq_to_record
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model

QUESTION = MCQ("A 45-year-old man has crushing chest pain. Which drug first?",
               {"A": "Aspirin", "B": "Warfarin", "C": "0.5 mg digoxin", "D": "Heparin"}, "A")


@pytest.mark.fast
def test_fingerprint_survives_formatting_and_relettering() -> None:
    copies = [
        replace(QUESTION, question=QUESTION.question.upper()),
        replace(QUESTION, question="A 45 year old man has crushing chest pain -- which drug first"),
        rotate_options(QUESTION, 1),
        shuffle_options(QUESTION, random.Random(3)),
        replace(QUESTION, options={k: v.lower() + "." for k, v in QUESTION.options.items()}),
        replace(QUESTION, explanation="Because.", subject="cardiology"),
    ]
    assert all(fingerprint(c) == fingerprint(QUESTION) for c in copies)
    others = [
        replace(QUESTION, question="A 46-year-old man has crushing chest pain. Which drug first?"),
        replace(QUESTION, options={**QUESTION.options, "C": "5 mg digoxin"}),  # a dose 10x off is another option
        replace(QUESTION, options={**QUESTION.options, "E": "Morphine"}),
    ]
    assert len({fingerprint(q) for q in [QUESTION, *others]}) == 4


@pytest.mark.fast
def test_ledger_round_trip_and_a_corrupt_file(tmp_path: Path) -> None:
    train = bundled_corpus().mcq["train"][:30]
    ledger = Ledger((LedgerEntry.of("pretrain", "bundled-mcq", train),)).extended(
        [LedgerEntry.of("rl", "mine.jsonl", train[:10] + [QUESTION])])
    assert len(ledger) == 31 and ledger.summary() == "31 questions (pretrain bundled-mcq 30; rl mine.jsonl 11)"
    (tmp_path / LEDGER_FILE).write_text(ledger.to_json())
    back = read_ledger(tmp_path)
    assert back == ledger and len(back) == 31 and rotate_options(QUESTION, 2) in back
    clean, dirty = split_contaminated([train[3], bundled_corpus().mcq["test"][0], QUESTION], back)
    assert dirty == [train[3], QUESTION] and clean == [bundled_corpus().mcq["test"][0]]
    assert read_ledger(tmp_path / "elsewhere") is None
    (tmp_path / LEDGER_FILE).write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="is not a readable ledger"):
        read_ledger(tmp_path)


MODEL = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=320)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> dict[str, Path]:
    """A pretraining run on a local course file (and the same run stopped and resumed), GRPO from it,
    and its export."""
    from pure_transformer.config.pretrain import debug
    from pure_transformer.config.rl import debug as rl_debug
    from pure_transformer.rl.train import grpo_train
    from pure_transformer.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("ledger")
    course = root / "course_train.jsonl"
    course.write_text("".join(json.dumps(mcq_to_record(q)) + "\n" for q in bundled_corpus().mcq["train"][:60]))
    cfg = apply_overrides(debug(), dict(
        tokenizer=tiny_tokenizer.source, sources={"bundled-general": 0.5, str(course): 0.5}, seq_len=64,
        micro_batch=4, global_batch_tokens=512, total_tokens=512 * 8, warmup_tokens=512, log_every=1, val_every=4,
        val_tokens=1024, ckpt_every=4, num_workers=0, shuffle_buffer=64))

    def run(run_dir: Path, **kw: object) -> object:
        torch.manual_seed(0)
        return pretrain(cfg, run_dir, model=build_model(MODEL), progress=False, **kw)

    run(root / "whole")
    assert run(root / "split", stop_at_step=4).stopped == "stop_at_step"  # type: ignore[attr-defined]
    run(root / "split", resume="auto")
    rl = apply_overrides(rl_debug(), dict(prompts_per_step=4, samples_per_prompt=4, micro_batch=8, max_steps=2,
                                          val_every=2, val_questions=8, ckpt_every=2, max_new_tokens=4,
                                          answer_format="letter"))
    grpo_train(rl, root / "split" / "final", root / "rl", data_path=str(course), progress=False)
    assert cli_main(["export", "--checkpoint", str(root / "rl"), "--out", str(root / "hf")]) == 0
    return {"course": course, "whole": root / "whole", "split": root / "split", "rl": root / "rl",
            "hf": root / "hf", "root": root}


def test_pretraining_writes_the_ledger_and_resume_keeps_it(trained: dict[str, Path]) -> None:
    course = str(trained["course"])
    expected = sources_ledger("pretrain", ["bundled-general", course])  # text sources hold no questions
    assert [(e.phase, e.source) for e in expected.entries] == [("pretrain", course)]
    assert len(expected) == len(load_mcqs(course, "train")) < 60  # a lone *_train file holds out validation
    assert read_ledger(trained["whole"] / "final") == expected
    assert read_ledger(trained["split"] / "final") == expected  # resumed from step 4
    for step in sorted(trained["split"].glob("step_*")):
        assert read_ledger(step) == expected
    held_out = load_mcqs(course, "validation")
    assert held_out and not any(q in expected for q in held_out)


@pytest.mark.fast
def test_grpo_extends_its_parents_ledger_and_export_copies_it(trained: dict[str, Path]) -> None:
    course = str(trained["course"])
    rl = read_ledger(trained["rl"] / "final")
    parent = read_ledger(trained["split"] / "final")
    assert rl is not None and parent is not None
    assert rl.entries[:-1] == parent.entries and (rl.entries[-1].phase, rl.entries[-1].source) == ("rl", course)
    assert rl.entries[-1].fingerprints  # the GRPO training questions (some were held out to validate on)
    assert read_ledger(trained["hf"]) == rl
    card = (trained["hf"] / "README.md").read_text()
    assert f"`ledger.json` fingerprints the {len(rl):,} questions" in card
    assert read_meta(trained["rl"] / "final")["kind"] == "rl"


def _exam(trained: dict[str, Path], seen: list[MCQ], unseen: list[MCQ]) -> Path:
    """Copies of trained-on questions, disguised, among questions never trained on."""
    disguised = [rotate_options(replace(q, question=q.question.upper().replace(",", " ;")), 1) for q in seen]
    path = trained["root"] / "exam_test.jsonl"
    path.write_text("".join(json.dumps(mcq_to_record(q)) + "\n" for q in unseen[:3] + disguised + unseen[3:]))
    return path


@pytest.mark.fast
def test_evaluate_leaves_trained_questions_out(trained: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    seen = load_mcqs(str(trained["course"]), "train")[:4]
    unseen = bundled_corpus().mcq["test"][:6]
    exam = _exam(trained, seen, unseen)
    out = trained["root"] / "clean.json"
    assert cli_main(["evaluate", "--checkpoint", str(trained["rl"]), "--data-path", str(exam), "--mode",
                     "loglikelihood", "--output", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: contamination: 4 of 10 questions (40.0%) were trained on; scoring the 6 clean ones" in err
    report = json.loads(out.read_text())[0]
    assert report["n"] == 6 and [q["id"] for q in report["questions"]] == [question_id(q) for q in unseen]
    assert report["contamination"] == {"count": 4, "share": 0.4, "of": 10, "included": False,
                                       "ledger_questions": len(read_ledger(trained["rl"] / "final")), "unseen": []}

    every = trained["root"] / "all.json"
    assert cli_main(["evaluate", "--checkpoint", str(trained["rl"]), "--data-path", str(exam), "--mode",
                     "loglikelihood", "--include-contaminated", "--output", str(every), "--no-progress"]) == 0
    assert "are scored (--include-contaminated): the accuracy overstates" in capsys.readouterr().err
    report_all = json.loads(every.read_text())[0]
    assert report_all["n"] == 10 and report_all["contamination"]["included"] is True
    # The clean questions are scored alike either way: the six clean ids are a subset of the ten.
    assert {q["id"] for q in report["questions"]} < {q["id"] for q in report_all["questions"]}


@pytest.mark.fast
def test_evaluate_refuses_a_set_that_is_all_trained_on(trained: dict[str, Path],
                                                       capsys: pytest.CaptureFixture) -> None:
    code = cli_main(["evaluate", "--checkpoint", str(trained["rl"]), "--data-path", str(trained["course"]),
                     "--split", "train", "--mode", "loglikelihood", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: all ") and "--include-contaminated" in err and "\n" not in err


@pytest.mark.fast
def test_a_checkpoint_without_a_ledger_says_so(tmp_path: Path, tiny_tokenizer,
                                                capsys: pytest.CaptureFixture) -> None:
    from pure_transformer.checkpoint.store import save_checkpoint, step_dir

    torch.manual_seed(0)
    ckpt = save_checkpoint(step_dir(tmp_path / "old", 1), build_model(MODEL),
                           {"kind": "pretrain", "step": 1, "model_config": MODEL.to_dict(),
                            "tokenizer": "tokenizer.json"}, files={"tokenizer.json": tiny_tokenizer.hf.to_str()})
    out = tmp_path / "r.json"
    assert cli_main(["evaluate", "--checkpoint", str(ckpt), "--mode", "loglikelihood", "--limit", "4",
                     "--output", str(out), "--no-progress"]) == 0
    assert "note: the checkpoint has no training ledger" in capsys.readouterr().err
    assert json.loads(out.read_text())[0]["contamination"] is None
