"""Checkpoint tests: round trip, run-folder resolution, corruption fallback,
retention, no pickle, and a kill -9 in the middle of a save."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pure_transformer.checkpoint.store import (CheckpointError, link_checkpoint, load_optimizer, load_weights,
                                               prune_checkpoints, read_meta, resolve_checkpoint, save_checkpoint,
                                               step_dir, step_dirs)
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model

CFG = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_seq_len=32, tie_embeddings=True)


def trained_pair() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(CFG)
    opt = model.setup_optimizers(1e-3)
    for _ in range(2):
        x = torch.randint(0, 64, (2, 8))
        model(x, x)[0].backward()
        opt.step()
        opt.zero_grad()
    return model, opt


@pytest.mark.fast
def test_round_trip_weights_optimizer_and_meta(tmp_path: Path) -> None:
    model, opt = trained_pair()
    save_checkpoint(step_dir(tmp_path, 2), model, {"step": 2, "model_config": CFG.to_dict(), "data": {"pos": [1, 2]}},
                    opt)
    ckpt = resolve_checkpoint(tmp_path)
    assert ckpt.name == "step_0000002"
    fresh = build_model(CFG)
    fresh_opt = fresh.setup_optimizers(1e-3)
    meta = read_meta(ckpt)
    load_weights(ckpt, fresh)
    load_optimizer(ckpt, fresh_opt, meta)
    assert fresh.lm_head.weight is fresh.embed_tokens.weight
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randint(0, 64, (2, 8))
    for m, o in ((model, opt), (fresh, fresh_opt)):  # one more identical step must agree exactly
        m(x, x)[0].backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert meta["data"] == {"pos": [1, 2]}


@pytest.mark.fast
def test_run_folder_prefers_final_then_newest(tmp_path: Path) -> None:
    model, _ = trained_pair()
    for step in (1, 2, 3):
        save_checkpoint(step_dir(tmp_path, step), model, {"step": step, "model_config": CFG.to_dict()})
    assert resolve_checkpoint(tmp_path).name == "step_0000003"
    link_checkpoint(step_dir(tmp_path, 2), "final")
    assert resolve_checkpoint(tmp_path).name == "final"
    assert read_meta(resolve_checkpoint(tmp_path))["step"] == 2


@pytest.mark.fast
def test_corrupt_newest_is_skipped_with_warning(tmp_path: Path) -> None:
    model, _ = trained_pair()
    for step in (1, 2):
        save_checkpoint(step_dir(tmp_path, step), model, {"step": step, "model_config": CFG.to_dict()})
    weights = step_dir(tmp_path, 2) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="skipping unloadable checkpoint"):
        assert resolve_checkpoint(tmp_path).name == "step_0000001"
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        resolve_checkpoint(step_dir(tmp_path, 2))
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")


@pytest.mark.fast
def test_retention_keeps_last_three_plus_best(tmp_path: Path) -> None:
    model, _ = trained_pair()
    for step in range(1, 7):
        save_checkpoint(step_dir(tmp_path, step), model, {"step": step, "model_config": CFG.to_dict()})
        if step == 2:
            link_checkpoint(step_dir(tmp_path, 2), "best")
        prune_checkpoints(tmp_path, keep_last=3)
    assert [p.name for p in step_dirs(tmp_path)] == ["step_0000004", "step_0000005", "step_0000006"]
    assert read_meta(tmp_path / "best")["step"] == 2
    load_weights(tmp_path / "best", build_model(CFG))  # survives its step folder's deletion


@pytest.mark.fast
def test_no_pickle_in_checkpoint(tmp_path: Path) -> None:
    model, opt = trained_pair()
    ckpt = save_checkpoint(step_dir(tmp_path, 1), model, {"step": 1, "model_config": CFG.to_dict()}, opt)
    for f in ckpt.iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"PK", f"{f.name} looks like a pickle/zip"
    json.loads((ckpt / "meta.json").read_text())


KILLER = """
import sys, torch
from pure_transformer.checkpoint.store import save_checkpoint, step_dir
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model
cfg = ModelConfig(vocab_size=4096, dim=512, n_layers=4, n_heads=8, ffn_dim=2048, max_seq_len=64)
model = build_model(cfg)
run = sys.argv[1]
step = 1
while True:
    with torch.no_grad():
        model.norm.weight.fill_(step)
    save_checkpoint(step_dir(run, step), model, {"step": step, "model_config": cfg.to_dict()})
    print(step, flush=True)
    step += 1
"""


def test_kill_during_save_leaves_loadable_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "1"  # the first save finished
    time.sleep(0.3)  # saves of ~60 MB are in flight now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = resolve_checkpoint(tmp_path)
    meta = read_meta(ckpt)
    model = build_model(ModelConfig(vocab_size=4096, dim=512, n_layers=4, n_heads=8, ffn_dim=2048, max_seq_len=64))
    load_weights(ckpt, model)
    assert torch.all(model.norm.weight == meta["step"])  # weights and meta belong together
    prune_checkpoints(tmp_path, keep_last=3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


class _Canary:
    """Unpickling this runs os.system: it must never happen when loading a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.fast
def test_malicious_pickle_is_never_unpickled(tmp_path: Path) -> None:
    import pickle

    model, opt = trained_pair()
    ckpt = save_checkpoint(step_dir(tmp_path, 1), model, {"step": 1, "model_config": CFG.to_dict()}, opt)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Canary(marker))
    for name in ("model.safetensors", "optimizer.safetensors"):
        (ckpt / name).write_bytes(payload)
        torch.save({"x": _Canary(marker)}, ckpt / "extra.pt")  # a stray torch pickle beside it is ignored
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        resolve_checkpoint(ckpt)
    with pytest.raises(Exception):
        load_weights(ckpt, build_model(CFG))
    assert not marker.exists()


def test_a_checkpoint_written_before_the_rooms_still_loads() -> None:
    """``tests/fixtures/checkpoint_before_rooms`` is a 6-step pretraining checkpoint of a 2-layer model,
    written by the package as it was before its modules moved into rooms (23c01a2), with the greedy
    tokens that code generated from it. Today's code loads it and generates the same tokens."""
    from pure_transformer.checkpoint.store import load_model
    from pure_transformer.inference.engine import Engine, SamplingParams

    folder = Path(__file__).parent / "fixtures" / "checkpoint_before_rooms"
    expected = json.loads((folder / "expected_greedy.json").read_text())
    model, tok, meta, ckpt = load_model(folder)
    assert (meta["step"], meta["kind"], ckpt) == (expected["step"], "pretrain", folder)
    out = Engine(model, tok).generate([tok.encode(expected["prompt"])],
                                      SamplingParams(max_new_tokens=len(expected["greedy_tokens"]), temperature=0), 1)
    assert out[0][0].tokens == expected["greedy_tokens"]
