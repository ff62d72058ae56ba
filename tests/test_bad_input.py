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


CSV_HEADER = "question,A,B,C,D,answer\n"
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
    "a CSV row with a field too many": (lambda c, t: (t / "mcq_test.csv").write_text(
        CSV_HEADER + "What is 1?,a,b,c,d,A\nWhat is 2?,a,b,c,d,B,extra\n"), "csv",
        "mcq_test.csv': Expected 6 fields in line 3, saw 7"),
    "a CSV row with a field too many past the first chunk": (lambda c, t: (t / "mcq_test.csv").write_text(
        CSV_HEADER + "What is 1?,a,b,c,d,A\n" * 10_001 + "What is 2?,a,b,c,d,B,extra\n"), "csv",
        "mcq_test.csv': Expected 6 fields in line 10003, saw 7"),  # pandas reads 10,000 rows a chunk
    "a CSV with an unterminated quote": (lambda c, t: (t / "mcq_test.csv").write_text(
        CSV_HEADER + 'What is 1?,a,b,c,d,A\n"What is 2?,a,b,c,d,B\nWhat is 3?,a,b,c,d,C\n'), "csv",
        "mcq_test.csv': EOF inside string starting at row 2"),
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
    elif how == "csv":
        argv = ["evaluate", "--checkpoint", str(ckpt), "--data-path", str(tmp_path / "mcq_test.csv"), "--no-progress"]
    else:
        argv = ["pretrain", "--config", "debug", "--checkpoint-dir", str(tmp_path / "new"), "--set",
                how.removeprefix("set:"), "--no-progress"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert _files(tmp_path) == before  # nothing written (a lock file aside)


def _metrics_run(run: Path) -> Path:
    from pure_transformer.train.logger import MetricsLogger

    log = MetricsLogger(run / "logs", tensorboard=False)
    for step in range(1, 4):
        log.log(step, {"tokens_seen": step * 4096, "loss": 4.0 / step, "lr": 1e-3})
    log.close()
    return run


def _output_argv(command: str, ckpt: Path, tmp_path: Path, out: str) -> list[str]:
    if command == "export":
        return ["export", "--checkpoint", str(ckpt), "--out", out]
    if command == "evaluate":
        return ["evaluate", "--checkpoint", str(ckpt), "--limit", "2", "--mode", "loglikelihood", "--no-progress",
                "--output", out]
    if command == "tokenizer":
        return ["tokenizer", "train", "--vocab-size", "300", "--max-docs", "20", "--quiet", "--out", out]
    return ["plot", str(_metrics_run(tmp_path / "run")), "--out", out]


@pytest.mark.fast
@pytest.mark.parametrize("command, where", [
    *((c, "under a file") for c in ("export", "evaluate", "tokenizer", "plot")),
    *((c, "full disk") for c in ("evaluate", "tokenizer", "plot")),  # export: test_a_failed_export_leaves_no_folder
])
def test_an_output_that_cannot_be_written_is_one_line(command: str, where: str, ckpt: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """--out/--output under a regular file ("Not a directory": chmod stops no root) or on a full
    disk (/dev/full, or a folder whose file is a link to it): one line naming the path and the
    operating system's reason, exit 2, no folder left behind."""
    (tmp_path / "afile").write_text("x")
    if where == "under a file":
        out, reason = str(tmp_path / "afile" / "out"), "Not a directory"
    elif not Path("/dev/full").exists():
        pytest.skip("a full disk is /dev/full (Linux)")
    elif command == "tokenizer":  # a folder whose tokenizer.json is the full device
        (tmp_path / "tok").mkdir()
        (tmp_path / "tok" / "tokenizer.json").symlink_to("/dev/full")
        out, reason = str(tmp_path / "tok"), "No space left on device"
    else:  # a file: the device itself
        out, reason = "/dev/full", "No space left on device"
    before = _files(tmp_path)
    code = main(_output_argv(command, ckpt, tmp_path, out))
    err = capsys.readouterr().err
    assert code == 2, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [f"error: cannot write {out}: {reason}"]
    assert "Traceback" not in err and (command == "evaluate" or err.count("\n") == 1)  # evaluate's note aside
    if command == "plot":
        before |= _files(tmp_path / "run")
    assert _files(tmp_path) == before  # nothing half-written, no folder


def test_a_failed_export_leaves_no_folder(ckpt: Path, tmp_path: Path) -> None:
    """A disk that fills up in the middle of the export (a file-size limit: the config is written,
    the weights are not): one line, exit 2, and neither the folder nor the folders made for it."""
    import resource
    import signal
    import subprocess
    import sys

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    out = tmp_path / "new" / "deeper" / "hf"
    proc = subprocess.run([sys.executable, "-m", "pure_transformer", "export", "--checkpoint", str(ckpt), "--out",
                           str(out)], capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: cannot write {out}: File too large\n"
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".tmp-*"))
