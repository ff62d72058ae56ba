"""Bad input that used to print a traceback: each is one ``error:`` line, exit status 2,
and nothing written (issue 12's measured cases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pure_transformer.checkpoint.store import model_tensors, save_checkpoint, save_safetensors, step_dir
from pure_transformer.cli import main
from pure_transformer.config.pretrain import debug
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model

CFG = ModelConfig(vocab_size=512, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=128)


@pytest.fixture
def ckpt(tmp_path: Path, tiny_tokenizer) -> Path:
    return save_checkpoint(step_dir(tmp_path / "run", 4), build_model(CFG),
                           {"kind": "pretrain", "step": 4, "model_config": CFG.to_dict(), "tokenizer": "tokenizer.json",
                            "config": debug().to_dict(), "data": [], "tokens_seen": 4096},
                           files={"tokenizer.json": tiny_tokenizer.hf.to_str()})


def _edit_meta(ckpt: Path, change) -> None:
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps(change(meta)))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.name != ".lock"}


CASES = {
    "meta.json is {}": (lambda c, t: _edit_meta(c, lambda m: {}), "evaluate", "has no 'model_config'"),
    "meta.json is a list": (lambda c, t: _edit_meta(c, lambda m: [1, 2]), "evaluate", "must be a JSON object"),
    "model_config.dim is a string": (lambda c, t: _edit_meta(c, lambda m: {**m, "model_config": {**m["model_config"],
                                                                                              "dim": "32"}}),
                                     "evaluate", "dim must be int, got '32'"),
    "no rng on --resume": (lambda c, t: None, "resume", "has no 'rng'; it cannot be resumed"),
    "config is a list": (lambda c, t: _edit_meta(c, lambda m: {**m, "config": [1]}), "resume",
                         "meta.json: config must be dict, got [1]"),
    "tokenizer is a number": (lambda c, t: _edit_meta(c, lambda m: {**m, "tokenizer": 5}), "evaluate",
                              "meta.json: tokenizer must be str, got 5"),
    "weights of another shape": (lambda c, t: save_safetensors(c / "model.safetensors", model_tensors(
        build_model(CFG.replace(dim=64)))), "evaluate", "is another model shape: embed_tokens.weight is [512, 64] in the "
        "checkpoint, [512, 32] in this model"),
    "--resume into another model": (lambda c, t: _edit_meta(c, lambda m: {**m, "rng": {}}), "resume",
                                    "is another model shape: checkpoint has vocab_size 512, this run 4096; dim 32, "
                                    "this run 128"),
    "--checkpoint-dir is a file": (lambda c, t: (t / "afile").write_text("x"), "file-dir", "is a file, not a folder"),
    "betas of three": (lambda c, t: None, "set:betas=[0.9,0.95,0.99]", "betas must have 2 values, got 3"),
    "total_tokens=1e30": (lambda c, t: None, "set:total_tokens=1e30", "total_tokens must be a whole number of at most"),
    "an empty MCQ file": (lambda c, t: (t / "empty_test.jsonl").write_text(""), "empty", "contains no records"),
}


@pytest.mark.fast
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(case: str, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prepare, how, message = CASES[case]
    prepare(ckpt, tmp_path)
    before = _files(tmp_path)
    if how == "evaluate":
        argv = ["evaluate", "--checkpoint", str(ckpt), "--limit", "2", "--no-progress"]
    elif how == "resume":
        argv = ["pretrain", "--config", "debug", "--checkpoint-dir", str(ckpt.parent), "--resume", "--no-progress"]
    elif how == "file-dir":
        argv = ["pretrain", "--config", "debug", "--checkpoint-dir", str(tmp_path / "afile"), "--no-progress"]
    elif how == "empty":
        argv = ["evaluate", "--checkpoint", str(ckpt), "--data-path", str(tmp_path / "empty_test.jsonl"),
                "--no-progress"]
    else:
        argv = ["pretrain", "--config", "debug", "--checkpoint-dir", str(tmp_path / "new"), "--set",
                how.removeprefix("set:"), "--no-progress"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert _files(tmp_path) == before  # nothing written (a lock file aside)
