"""What survives what in a run folder: a second run, a kill at exact points of replacing
best/ and final/, a missing optimizer file, a full disk (issue 12's "losing work" list)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pure_transformer.checkpoint.store import (CheckpointError, RunLock, link_checkpoint, load_optimizer, read_meta,
                                               recover_run_dir, resolve_checkpoint, save_checkpoint, step_dir)
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model

CFG = ModelConfig(vocab_size=128, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=32)


def _save(run: Path, step: int, optimizer: bool = True) -> Path:
    model = build_model(CFG)
    opt = model.setup_optimizers(1e-3) if optimizer else None
    if opt is not None:  # one step, so AdamW has moments to save
        model(torch.randint(0, 128, (2, 8)), torch.randint(0, 128, (2, 8)))[0].backward()
        opt.step()
    return save_checkpoint(step_dir(run, step), model, {"kind": "pretrain", "step": step,
                                                          "model_config": CFG.to_dict()}, opt)


# ------------------------------------------------------------------ one run per folder
@pytest.mark.fast
def test_a_second_run_on_a_folder_fails_at_once(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run"):
        with pytest.raises(CheckpointError, match=rf"{tmp_path / 'run'} is in use by pid {os.getpid()} \(host "):
            RunLock(tmp_path / "run").__enter__()
    with RunLock(tmp_path / "run"):  # released on exit
        pass


@pytest.mark.fast
def test_kill_9_frees_the_lock(tmp_path: Path) -> None:
    code = ("import sys, time\nfrom pure_transformer.checkpoint.store import RunLock\n"
            "with RunLock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match=f"in use by pid {proc.pid}"):
            RunLock(tmp_path / "run").__enter__()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with RunLock(tmp_path / "run"):
        pass


@pytest.mark.fast
def test_cli_on_a_locked_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pure_transformer.cli import main

    with RunLock(tmp_path / "run"):
        code = main(["pretrain", "--config", "debug", "--checkpoint-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "is in use by pid" in err and err.count("\n") == 1


def _read_only(path: Path) -> None:
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
    elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)]).returncode:
        pytest.skip("root writes into read-only folders, and no read-only tmpfs can be mounted here")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("x"), r"--checkpoint-dir .*run is a file, not a folder"),
    (_read_only, r"cannot write to .*run: (Permission denied|Read-only file system)"),
])
@pytest.mark.fast
def test_unusable_run_folders_are_one_line(tmp_path: Path, make, message) -> None:
    make(tmp_path / "run")
    try:
        with pytest.raises(Exception, match=message):
            RunLock(tmp_path / "run").__enter__()
    finally:
        subprocess.run(["umount", str(tmp_path / "run")], capture_output=True)


# ------------------------------------------------------------------ best/ and final/
@pytest.mark.fast
def test_best_is_never_missing_when_the_swap_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    link_checkpoint(_save(run, 1), "best")
    two = _save(run, 2)

    def killed(*_: object) -> None:
        raise KeyboardInterrupt  # the process dies at os.replace: nothing after it runs

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            link_checkpoint(two, "best")
    assert read_meta(resolve_checkpoint(run / "best"))["step"] == 1  # the old best, whole
    assert len(list(run.glob(".best-step_0000002-*"))) == 1  # the new copy, orphaned ...
    recover_run_dir(run)
    assert not list(run.glob(".best-step_0000002-*"))  # ... and cleaned at start-up
    link_checkpoint(two, "best")
    assert read_meta(resolve_checkpoint(run / "best"))["step"] == 2
    assert [p.name.rsplit("-", 1)[0] for p in run.glob(".best-*")] == [".best-step_0000002"]


@pytest.mark.fast
def test_a_step_saved_again_gets_a_fresh_best_copy(tmp_path: Path) -> None:
    # A resumed run re-saves a step it had saved before: best must point at the new save's files.
    run = tmp_path / "run"
    link_checkpoint(_save(run, 2), "best")
    with open(step_dir(run, 2) / "meta.json") as f:
        first = json.load(f)
    again = save_checkpoint(step_dir(run, 2), build_model(CFG), {**first, "note": "second save"})
    link_checkpoint(again, "best")
    assert read_meta(resolve_checkpoint(run / "best")).get("note") == "second save"
    assert len(list(run.glob(".best-*"))) == 1


@pytest.mark.fast
def test_a_folder_best_from_an_older_run_is_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs before links kept best/ as a folder: killed after moving it aside, it comes back.
    run = tmp_path / "run"
    one = _save(run, 1)
    (run / "best").mkdir()
    for f in one.iterdir():
        os.link(f, run / "best" / f.name)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            link_checkpoint(_save(run, 2), "best")
    assert not os.path.lexists(run / "best") and (run / ".old-best").is_dir()
    recover_run_dir(run)
    assert read_meta(run / "best")["step"] == 1


@pytest.mark.fast
def test_a_complete_run_without_final_gets_it_on_resume(tmp_path: Path, tiny_tokenizer) -> None:
    # Killed after the last checkpoint was saved as complete, before final/ was linked.
    from test_pretrain import TINY, run, small_cfg

    cfg = small_cfg(tiny_tokenizer.source)
    run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "final").is_symlink()
    (tmp_path / "run" / "final").unlink()
    run(cfg, tmp_path / "run", resume="auto")
    meta = read_meta(resolve_checkpoint(tmp_path / "run" / "final"))
    assert meta["complete"] is True and meta["step"] == cfg.total_steps
    assert build_model(TINY).cfg.dim == meta["model_config"]["dim"]


# ------------------------------------------------------------------ optimizer state
@pytest.mark.fast
def test_missing_optimizer_file_is_refused_unless_reset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = _save(tmp_path / "run", 3)
    meta = read_meta(ckpt)
    (ckpt / "optimizer.safetensors").unlink()
    opt = build_model(CFG).setup_optimizers(1e-3)
    with pytest.raises(CheckpointError, match="has optimizer state in meta.json but no optimizer.safetensors; "
                                              "restore it, or resume with --set reset_optimizer=true"):
        load_optimizer(ckpt, opt, meta)
    load_optimizer(ckpt, opt, meta, reset=True)
    assert "reset_optimizer: AdamW's moments start from zero" in capsys.readouterr().out
    assert opt.state_dict()["state"] == {}


# ------------------------------------------------------------------ a full disk
@pytest.mark.fast
def test_disk_full_leaves_the_last_checkpoint_and_no_temporary_folder(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import pure_transformer.checkpoint.store as checkpoint

    run = tmp_path / "run"
    _save(run, 1)
    real = checkpoint.save_file

    def full(tensors: dict, path: str, metadata: dict | None = None) -> None:
        if path.endswith("optimizer.safetensors"):
            with open(path, "wb") as f:
                f.write(b"\0" * 1024)  # part of it landed before the disk filled
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(CheckpointError, match=rf"could not write checkpoint to {run}: No space left on device"):
        _save(run, 2)
    assert sorted(p.name for p in run.iterdir()) == ["step_0000001"]
    assert read_meta(resolve_checkpoint(run))["step"] == 1


@pytest.mark.fast
@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_on_a_small_tmpfs(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    weights = build_model(CFG).num_params() * 4
    # room for one checkpoint of weights, not for a second one with its optimizer moments
    size = f"size={(weights * 3 // 2) // 4096 * 4096 + 8192}"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        run = mount / "run"
        save_checkpoint(step_dir(run, 1), build_model(CFG), {"step": 1, "model_config": CFG.to_dict()})
        with pytest.raises(CheckpointError, match="No space left on device"):
            _save(run, 2)
        assert sorted(p.name for p in run.iterdir()) == ["step_0000001"]
        assert json.loads((run / "step_0000001" / "meta.json").read_text())["step"] == 1
    finally:
        time.sleep(0.1)
        subprocess.run(["umount", str(mount)])
