"""DDP and FSDP2 under torchrun (2 CPU ranks, gloo) train the same model: the
same losses as one process, and checkpoints any of them can load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pure_transformer.checkpoint.store import load_model, read_meta
from pure_transformer.train.logger import read_metrics


def curve(run_dir: Path, key: str) -> list[float]:
    return [r[key] for r in read_metrics(run_dir / "logs/metrics.jsonl") if key in r]


@pytest.mark.slow
def test_fsdp_matches_ddp_and_one_process_and_resumes_exactly(tmp_path: Path, pretrain_cli, ddp_reference) -> None:
    """10 steps: one process, DDP on 2 ranks (the shared reference run), and FSDP on 2 ranks
    stopped at step 5 and resumed. Same training and validation losses throughout; the FSDP
    checkpoint holds the same full tensors as DDP's, and one process loads it."""
    from safetensors.torch import load_file

    runs = {"one": tmp_path / "one", "ddp": ddp_reference, "fsdp": tmp_path / "fsdp"}
    pretrain_cli.run(runs["one"], 1)
    pretrain_cli.run(runs["fsdp"], 2, "--set", "parallel=fsdp", "--stop-at-step", "5")
    assert read_meta(runs["fsdp"] / "step_0000005")["config"]["parallel"] == "fsdp"
    fsdp_half = {name: load_file(str(runs["fsdp"] / "step_0000005" / name))
                 for name in ("model.safetensors", "optimizer.safetensors")}
    # Resumed under FSDP again: the full saved AdamW state is split back into shards (shard_like).
    pretrain_cli.run(runs["fsdp"], 2, "--resume")
    one = curve(runs["one"], "loss")
    assert len(one) == 10 and one[-1] < one[0] - 0.5  # it learns
    for run in ("ddp", "fsdp"):
        assert curve(runs[run], "loss") == pytest.approx(one, rel=1e-5), run
        assert curve(runs[run], "val_loss") == pytest.approx(curve(runs["one"], "val_loss"), rel=1e-5), run
        # The MCQ validation ran on every layout (FSDP: on unsharded parameters, each rank its own questions);
        # greedy answers of the same weights, up to one rare argmax flip from the 1e-5 differences.
        acc = curve(runs[run], "val_mcq_acc")
        assert len(acc) == 3 and acc == pytest.approx(curve(runs["one"], "val_mcq_acc"), abs=1 / 16), run
        assert read_meta(runs[run] / "best")["best"]["metric"] == "val_mcq_acc"
    # The sharded run wrote the same full safetensors a replica does: the same names, shapes and values.
    for name, fsdp in fsdp_half.items():
        ddp = load_file(str(runs["ddp"] / "step_0000005" / name))
        assert ddp.keys() == fsdp.keys()
        for key in ddp:
            assert ddp[key].shape == fsdp[key].shape and torch.allclose(ddp[key], fsdp[key], atol=1e-5), (name, key)
    model, _, _, _ = load_model(runs["fsdp"] / "final")
    assert model.num_params() > 0


@pytest.mark.fast
def test_an_unknown_parallelism_is_one_clear_error() -> None:
    from pure_transformer.config.overrides import apply_overrides
    from pure_transformer.config.pretrain import debug
    from pure_transformer.errors import ConfigError

    with pytest.raises(ConfigError, match="parallel must be one of ddp, fsdp, got 'zero'"):
        apply_overrides(debug(), {"parallel": "zero"})


UNEQUAL_FORWARDS = """
import sys
import torch, torch.distributed as dist
from pure_transformer.model.config import model_preset
from pure_transformer.model.transformer import build_model
from pure_transformer.distributed.parallel import parallelize
from pure_transformer.distributed.runtime import init_runtime
from pure_transformer.train.validation import unsharded
rt = init_runtime("cpu")
torch.manual_seed(0)
model = build_model(model_preset("tiny").replace(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128))
parallelize(model, rt, "fsdp")
x = torch.randint(0, 512, (2, 16))
with torch.no_grad(), unsharded(model):
    for _ in range(3 if rt.rank == 0 else 1):
        model(x)
loss, _ = model(x, x)  # sharded again: a training forward and backward in lockstep
loss.backward()
# One file per rank: two ranks printing to one pipe can interleave their lines.
open(f"{sys.argv[1]}/rank{rt.rank}.txt", "w").write(
    f"rank {rt.rank} ok {type(next(model.parameters())).__name__} {loss.item():.6f}")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_unsharded_fsdp_model_generates_on_each_rank_alone(tmp_path: Path) -> None:
    """MCQ validation answers different questions on each rank, so their forward counts differ:
    inside ``unsharded`` an FSDP forward must wait on no other rank (or this would hang), and the
    parameters are shards again afterwards."""
    script = tmp_path / "unequal.py"
    script.write_text(UNEQUAL_FORWARDS)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = sorted((tmp_path / f"rank{r}.txt").read_text() for r in range(2))
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["rank 0 ok DTensor", "rank 1 ok DTensor"]
    assert len({line.rsplit(" ", 1)[1] for line in lines}) == 1  # the same loss on both ranks
