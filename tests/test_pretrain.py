"""Pretraining loop tests: bit-exact resume, accumulation equivalence, retention,
non-finite skipping, SIGTERM, metrics sinks and the debug preset."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pure_transformer.checkpoint import read_meta, step_dirs
from pure_transformer.config import model_preset
from pure_transformer.model import build_model
from pure_transformer.errors import ConfigError
from pure_transformer.overrides import apply_overrides
from pure_transformer.train.config import PretrainConfig, debug
from pure_transformer.train.metrics import read_metrics
from pure_transformer.train.pretrain import TrainingError, pretrain

TINY = model_preset("tiny").replace(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=64)


def small_cfg(tokenizer: str, **changes: object) -> PretrainConfig:
    base = dict(tokenizer=tokenizer, seq_len=64, micro_batch=4, global_batch_tokens=512, total_tokens=512 * 12,
                warmup_tokens=512 * 2, log_every=1, val_every=4, val_tokens=2048, ckpt_every=4, num_workers=0,
                deterministic=True, shuffle_buffer=64)
    base.update(changes)
    return apply_overrides(debug(), base)


def run(cfg: PretrainConfig, run_dir: Path, **kw: object):
    torch.manual_seed(cfg.seed)  # the same initial weights for every run of a test
    return pretrain(cfg, run_dir, model=build_model(TINY), progress=False, **kw)


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "logs" / "metrics.jsonl") if "loss" in r}


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_exact(tmp_path: Path, tiny_tokenizer, workers: int) -> None:
    cfg = small_cfg(tiny_tokenizer.source, num_workers=workers)
    whole = run(cfg, tmp_path / "whole")
    first = run(cfg, tmp_path / "split", stop_at_step=6)
    assert first.stopped == "stop_at_step" and first.step == 6
    second = run(cfg, tmp_path / "split", resume="auto")
    assert second.stopped is None and second.step == whole.step == cfg.total_steps
    a, b = losses(tmp_path / "whole"), losses(tmp_path / "split")
    assert sorted(a) == list(range(1, 13)) and a == b  # every step, bit for bit
    assert whole.val == second.val


def test_accumulation_equivalence(tmp_path: Path, tiny_tokenizer) -> None:
    one = run(small_cfg(tiny_tokenizer.source, micro_batch=16, global_batch_tokens=1024, total_tokens=1024 * 4,
                        deterministic=False), tmp_path / "one")
    four = run(small_cfg(tiny_tokenizer.source, micro_batch=4, global_batch_tokens=1024, total_tokens=1024 * 4,
                         deterministic=False), tmp_path / "four")
    a, b = losses(tmp_path / "one"), losses(tmp_path / "four")
    assert a.keys() == b.keys() and len(a) == 4
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-5)
    assert one.val["val_loss"] == pytest.approx(four.val["val_loss"], rel=1e-4)


def test_retention_best_final_and_metrics(tmp_path: Path, tiny_tokenizer) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_cfg(tiny_tokenizer.source, total_tokens=512 * 24, ckpt_every=2)
    result = run(cfg, tmp_path)
    assert [p.name for p in step_dirs(tmp_path)] == ["step_0000020", "step_0000022", "step_0000024"]
    final, best = read_meta(tmp_path / "final"), read_meta(tmp_path / "best")
    assert final["step"] == 24 and final["complete"] and final["tokens_seen"] == 512 * 24
    assert best["val"]["val_loss"] == best["best_val_loss"] == min(
        r["val_loss"] for r in read_metrics(tmp_path / "logs/metrics.jsonl") if "val_loss" in r and r["step"] > 0)
    assert (tmp_path / "final" / "tokenizer.json").exists()

    records = read_metrics(tmp_path / "logs" / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert {"step", "tokens_seen", "loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_gb"} <= train[0].keys()
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val] == [0, 4, 8, 12, 16, 20, 24]
    names = list(cfg.sources)
    assert all(f"val_loss/{n}" in val[-1] and f"val_ppl/{n}" in val[-1] for n in names)
    assert val[-1]["val_ppl"] == pytest.approx(math.exp(val[-1]["val_loss"]))
    assert val[-1]["val_loss"] < val[0]["val_loss"]
    assert result.val == {k: v for k, v in val[-1].items() if k.startswith("val_")}

    events = EventAccumulator(str(tmp_path / "logs"))
    events.Reload()
    assert {"train/loss", "train/lr", "val/loss", f"val/loss/{names[0]}"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 25))


def test_nonfinite_steps_are_skipped_then_stop(tmp_path: Path, tiny_tokenizer) -> None:
    calls = {"n": 0}
    poison = {3, 4}  # optimizer steps whose (single) training forward returns NaN

    def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        if not module.training:  # validation passes stay clean
            return output
        calls["n"] += 1
        return output * float("nan") if calls["n"] in poison else output

    cfg = small_cfg(tiny_tokenizer.source, micro_batch=8, val_every=100, ckpt_every=100, total_tokens=512 * 6)
    torch.manual_seed(cfg.seed)
    model = build_model(TINY)
    handle = model.norm.register_forward_hook(hook)
    pretrain(cfg, tmp_path, model=model, progress=False)
    handle.remove()
    records = read_metrics(tmp_path / "logs" / "metrics.jsonl")
    skipped = [r for r in records if r.get("nonfinite_skipped") and math.isnan(r["loss"])]
    assert [r["step"] for r in skipped] == [3, 4] and skipped[-1]["nonfinite_skipped"] == 2
    assert all(math.isfinite(p.detach().sum().item()) for p in model.parameters())

    # Always NaN: the weights never change and training stops after max_nonfinite steps in a row.
    torch.manual_seed(cfg.seed)
    model = build_model(TINY)
    before = [p.detach().clone() for p in model.parameters()]
    model.norm.register_forward_hook(lambda m, i, o: o * float("nan") if m.training else o)
    with pytest.raises(TrainingError, match="non-finite for 3 steps in a row"):
        pretrain(apply_overrides(cfg, {"max_nonfinite": 3}), tmp_path / "nan", model=model, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sigterm_saves_and_exits_zero(tmp_path: Path, tiny_tokenizer) -> None:
    args = [sys.executable, "-m", "pure_transformer.run_train", "pretrain", "--config", "debug",
            "--checkpoint-dir", str(tmp_path), "--no-progress", "--set", f"tokenizer={tiny_tokenizer.source}",
            "--set", "model=tiny", "--set", "log_every=1", "--set", "ckpt_every=1000", "--set", "val_every=1000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "logs" / "metrics.jsonl"

    def reached(step: int) -> bool:
        try:
            return any(r.get("step", 0) >= step for r in read_metrics(metrics))
        except ValueError:  # a line caught half-written
            return False

    deadline = time.time() + 120
    while time.time() < deadline and not reached(3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped early (signal)" in out
    ckpt = step_dirs(tmp_path)[-1]
    meta = read_meta(ckpt)
    assert 3 <= meta["step"] < debug().total_steps and not meta["complete"]


def test_bad_flags_give_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for extra, message in [(["--config", "nope"], "unknown pretrain config 'nope'"),
                           (["--model", "huge"], "unknown model preset 'huge'"),
                           (["--set", "lr=1"], "unknown config key 'lr'"),
                           (["--resume", str(tmp_path / "missing")], "checkpoint path not found"),
                           (["--config-file", str(tmp_path / "x.yaml")], "config file not found")]:
        proc = subprocess.run([sys.executable, "-m", "pure_transformer.run_train", "pretrain",
                               "--checkpoint-dir", str(tmp_path / "run"), *extra],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


@pytest.mark.slow
def test_debug_preset_learns(tmp_path: Path) -> None:
    """The real debug run, flags as documented: validation loss must fall clearly."""
    proc = subprocess.run([sys.executable, "-m", "pure_transformer.run_train", "pretrain", "--config", "debug",
                           "--model", "tiny", "--checkpoint-dir", str(tmp_path), "--no-progress"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    val = [r for r in read_metrics(tmp_path / "logs" / "metrics.jsonl") if "val_loss" in r]
    assert val[0]["step"] == 0 and val[-1]["step"] == debug().total_steps
    assert val[-1]["val_loss"] < 0.6 * val[0]["val_loss"], (val[0], val[-1])


@pytest.mark.slow
def test_two_process_ddp_resume_matches(tmp_path: Path, tiny_tokenizer) -> None:
    """torchrun with 2 CPU ranks (gloo): a stopped-and-resumed run logs the same losses."""
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "pure_transformer.run_train", "pretrain", "--config", "debug", "--no-progress",
            "--set", f"tokenizer={tiny_tokenizer.source}", "--set", "total_tokens=16384", "--set", "micro_batch=4",
            "--set", "warmup_tokens=2048", "--set", "val_every=4", "--set", "ckpt_every=4", "--set", "log_every=1",
            "--set", "val_tokens=4096", "--set", "deterministic=true"]
    for name, extra in [("whole", []), ("split", ["--stop-at-step", "3"]), ("split", ["--resume"])]:
        proc = subprocess.run(base + ["--checkpoint-dir", str(tmp_path / name), *extra], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert losses(tmp_path / "whole") == losses(tmp_path / "split") and len(losses(tmp_path / "whole")) == 8
    meta = read_meta(tmp_path / "split" / "final")
    # One data state for the whole run, merged from both ranks' logical shards.
    assert meta["world_size"] == 2 and meta["data"]["owned"] == list(range(meta["data"]["num_shards"]))
    assert {s["rows"] for s in meta["data"]["shards"]} == {16384 // 256 // meta["data"]["num_shards"]}


def test_resume_may_change_execution_not_the_plan(tmp_path: Path, tiny_tokenizer) -> None:
    from pure_transformer.errors import ConfigError

    cfg = small_cfg(tiny_tokenizer.source, total_tokens=512 * 4)
    run(cfg, tmp_path, stop_at_step=2)
    with pytest.raises(ConfigError, match="cannot change total_tokens when resuming"):
        run(apply_overrides(cfg, {"total_tokens": 512 * 8}), tmp_path, resume="auto")
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run(cfg, tmp_path)
    done = run(apply_overrides(cfg, {"micro_batch": 2}), tmp_path, resume="auto")  # 4 accumulation steps now
    assert done.step == 4 and done.stopped is None


def test_out_of_memory_names_the_remedies(tmp_path: Path, tiny_tokenizer) -> None:
    cfg = small_cfg(tiny_tokenizer.source)
    torch.manual_seed(cfg.seed)
    model = build_model(TINY)

    def oom(module, inputs, output):  # what a CUDA allocation failure raises mid-forward
        if module.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return output

    model.norm.register_forward_hook(oom)
    with pytest.raises(TrainingError, match="out of memory at micro_batch=4, seq_len=64") as err:
        pretrain(cfg, tmp_path, model=model, progress=False)
    assert "micro_batch=2" in str(err.value) and "activation_checkpointing=true" in str(err.value)


def test_a_batch_that_does_not_divide_fails_before_any_work(tmp_path: Path) -> None:
    # global_batch_tokens 1000 is not a multiple of micro_batch*seq_len = 256: no tokenizer is trained first.
    cfg = apply_overrides(debug(), {"micro_batch": 4, "seq_len": 64, "global_batch_tokens": 1000,
                                    "total_tokens": 100_000, "warmup_tokens": 1000})
    with pytest.raises(ConfigError, match=r"global_batch_tokens \(1000\) must be a multiple of"):
        pretrain(cfg, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]
