"""DDP and FSDP2 under torchrun (2 CPU ranks, gloo) train the same model: the
same losses as one process, and checkpoints any of them can load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pure_transformer.checkpoint import load_model, read_meta
from pure_transformer.train.metrics import read_metrics


def pretrain_cli(run_dir: Path, ranks: int, tokenizer: str, *extra: str) -> None:
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
              if ranks > 1 else [sys.executable])
    sets = [f"tokenizer={tokenizer}", "total_tokens=20480", "micro_batch=4", "warmup_tokens=2048", "val_every=5",
            "ckpt_every=5", "log_every=1", "val_tokens=4096", "deterministic=true", "peak_lr=3e-3",
            f"num_workers={2 // ranks}"]
    cmd = [*launch, "-m", "pure_transformer.run_train", "pretrain", "--config", "debug", "--no-progress",
           "--checkpoint-dir", str(run_dir), *[a for s in sets for a in ("--set", s)], *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def curve(run_dir: Path, key: str) -> list[float]:
    return [r[key] for r in read_metrics(run_dir / "logs/metrics.jsonl") if key in r]


@pytest.mark.slow
def test_fsdp_matches_ddp_and_one_process_and_its_checkpoint_loads_anywhere(tmp_path: Path, tiny_tokenizer) -> None:
    pretrain_cli(tmp_path / "one", 1, tiny_tokenizer.source)
    pretrain_cli(tmp_path / "ddp", 2, tiny_tokenizer.source)
    pretrain_cli(tmp_path / "fsdp", 2, tiny_tokenizer.source, "--set", "parallel=fsdp")
    one = curve(tmp_path / "one", "loss")
    assert len(one) == 10 and one[-1] < one[0] - 0.5  # it learns
    for run in ("ddp", "fsdp"):
        assert curve(tmp_path / run, "loss") == pytest.approx(one, rel=1e-5), run
    assert curve(tmp_path / "fsdp", "val_loss") == pytest.approx(curve(tmp_path / "ddp", "val_loss"), rel=1e-5)
    assert read_meta(tmp_path / "fsdp/final")["config"]["parallel"] == "fsdp"
    # The sharded run wrote the same full safetensors a replica would: one process loads them.
    ddp, _, _, _ = load_model(tmp_path / "ddp/final")
    fsdp, _, _, _ = load_model(tmp_path / "fsdp/final")
    for (name, a), (_, b) in zip(ddp.state_dict().items(), fsdp.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name
    from safetensors.torch import load_file
    optim = [load_file(str(tmp_path / run / "final/optimizer.safetensors")) for run in ("ddp", "fsdp")]
    assert optim[0].keys() == optim[1].keys()
    for key in optim[0]:
        assert optim[0][key].shape == optim[1][key].shape and torch.allclose(optim[0][key], optim[1][key], atol=1e-5)
