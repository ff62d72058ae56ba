"""``python -m pure_transformer.launch``: torchrun with the grace period as its
shutdown timeout, and exit 0 when SIGTERM to torchrun itself made the run save."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pure_transformer.checkpoint import read_meta, resume_checkpoint
from pure_transformer.launch import shutdown_timeout, split_argv
from pure_transformer.train.metrics import read_metrics


def test_arguments_split_at_the_phase_and_the_timeout_follows_the_grace_period(monkeypatch) -> None:
    assert split_argv(["--standalone", "--nproc-per-node", "2", "rl", "--config", "debug"]) == (
        ["--standalone", "--nproc-per-node", "2"], ["rl", "--config", "debug"])
    monkeypatch.delenv("PURE_TRANSFORMER_GRACE_S", raising=False)
    assert shutdown_timeout([]) == []  # torchrun's default
    monkeypatch.setenv("PURE_TRANSFORMER_GRACE_S", "300")
    assert shutdown_timeout(["--standalone"]) == ["--shutdown-timeout", "285"]
    assert shutdown_timeout(["--shutdown-timeout=60"]) == []  # an explicit choice wins
    monkeypatch.setenv("PURE_TRANSFORMER_GRACE_S", "10")
    assert shutdown_timeout([]) == ["--shutdown-timeout", "5"]


def test_bad_usage_is_one_line(tmp_path: Path) -> None:
    for argv, message in [(["--standalone"], "usage: python -m pure_transformer.launch"),
                          (["pretrain", "--checkpoint-dir", str(tmp_path)], "must be a number of seconds")]:
        env = {**os.environ, "PURE_TRANSFORMER_GRACE_S": "soon"}
        proc = subprocess.run([sys.executable, "-m", "pure_transformer.launch", *argv], capture_output=True,
                              text=True, timeout=60, env=env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "logs" / "metrics.jsonl") if "loss" in r}


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_exits_0_and_resumes_exactly(tmp_path: Path, tiny_tokenizer) -> None:
    """Kubernetes signals PID 1, which is torchrun, not the workers: the workers
    finish their step and save, and the launcher exits 0 (plain torchrun exits 1)."""
    launch = [sys.executable, "-m", "pure_transformer.launch", "--standalone", "--nproc-per-node", "2",
              "pretrain", "--config", "debug", "--no-progress", "--set", f"tokenizer={tiny_tokenizer.source}",
              "--set", "total_tokens=32768", "--set", "micro_batch=4", "--set", "warmup_tokens=2048",
              "--set", "val_every=1000", "--set", "ckpt_every=1000", "--set", "log_every=1",
              "--set", "val_tokens=4096", "--set", "deterministic=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PURE_TRANSFORMER_GRACE_S": "60"}
    whole = subprocess.run([*launch, "--checkpoint-dir", str(tmp_path / "whole")], capture_output=True, text=True,
                           timeout=300, env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    total = max(losses(tmp_path / "whole"))

    split = tmp_path / "split"
    proc = subprocess.Popen([*launch, "--checkpoint-dir", str(split)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (split / "logs/metrics.jsonl").exists() or max(losses(split), default=0) < 2:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be signalled"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the launcher, i.e. torchrun's agent, only
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert "stopped on SIGTERM; the run saved a checkpoint" in err
    ckpt = resume_checkpoint(split, "auto")
    meta = read_meta(ckpt)
    assert meta["stopped"] == "signal" and 2 <= meta["step"] < total and not meta["complete"]

    resumed = subprocess.run([*launch, "--checkpoint-dir", str(split), "--resume"], capture_output=True, text=True,
                             timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(split) == losses(tmp_path / "whole") and len(losses(split)) == total


def test_a_step_plus_a_save_longer_than_the_grace_period_is_said_once(monkeypatch) -> None:
    from pure_transformer.train.runtime import GraceCheck

    monkeypatch.delenv("PURE_TRANSFORMER_GRACE_S", raising=False)
    assert GraceCheck().observe(step_s=1e6, save_s=1e6) is None  # no grace period known: nothing to say
    monkeypatch.setenv("PURE_TRANSFORMER_GRACE_S", "300")
    check = GraceCheck()
    assert check.observe(step_s=200) is None  # no save seen yet
    assert check.observe(save_s=50) is None and check.observe(step_s=240) is None  # 240 + 50 fits in 300
    warning = check.observe(step_s=280)
    assert warning is not None and warning.startswith("warning: a step (280 s) plus a checkpoint (50 s)")
    assert "300 s grace period" in warning and check.observe(step_s=400) is None  # said once
