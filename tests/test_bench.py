"""The benchmarks run end to end on the tiny model on CPU: for correctness (the
contenders hold the same weights and agree), not for speed."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from pure_transformer.bench.generate import bench_generate
from pure_transformer.bench.rl_step import PHASES, bench_rl_step
from pure_transformer.bench.train import bench_config, bench_train
from pure_transformer.cli import main as cli_main
from pure_transformer.config.rl import grpo_preset
from pure_transformer.model.config import model_preset

CPU = torch.device("cpu")


def test_train_bench_matches_transformers_loss_and_reports_mfu_by_its_formula() -> None:
    cfg = bench_config("tiny", micro_batch=2, seq_len=64, compile=False, activation_checkpointing=False,
                       num_workers=0, batches=8)
    lines: list[str] = []
    rows = bench_train(cfg, CPU, steps=1, repeats=2, peak_flops=1e12, say=lines.append)
    ours, hf = rows
    assert [r.name for r in rows] == ["ours", "transformers"]
    assert ours.first_loss == pytest.approx(hf.first_loss, abs=1e-4)  # same weights, same batch
    from pure_transformer.model.config import model_preset
    from pure_transformer.model.transformer import build_model

    flops = build_model(model_preset("tiny")).flops_per_token(64)
    for r in rows:
        assert r.tokens_per_s == pytest.approx(2 * 64 / r.step_s)
        assert r.mfu == pytest.approx(flops * r.tokens_per_s / 1e12)
        assert 0 <= r.data_wait_frac < 1 and r.peak_gb is None  # CPU: no per-contender peak
    assert any(f"= {flops:,}" in line for line in lines)  # the formula is printed with its result


@pytest.mark.fast
def test_generate_bench_contenders_agree_token_for_token() -> None:
    rows = bench_generate("tiny", CPU, batch=4, prompt_len=8, new_tokens=6, repeats=1, say=lambda *_: None)
    assert [r.name for r in rows] == ["ours, dynamic cache", "ours, static cache", "transformers generate",
                                      "transformers generate, static cache"]
    for r in rows:
        assert r.rows == 4 and r.same_as_ours == 4, r  # greedy ids equal across all four
        assert r.tokens_per_s == pytest.approx(4 * 6 / r.call_s) and 0 < r.first_token_s
    sampled = bench_generate("tiny", CPU, batch=4, prompt_len=8, new_tokens=6, samples_per_prompt=2, repeats=1,
                             say=lambda *_: None)
    assert sampled[1].same_as_ours == 4 and sampled[2].same_as_ours is None  # our seeds, their own RNG


@pytest.mark.fast
def test_rl_step_bench_times_every_phase_of_real_steps() -> None:
    cfg = dataclasses.replace(grpo_preset("grpo_usmle_2day"), prompts_per_step=2, samples_per_prompt=4,
                              max_new_tokens=8, micro_batch=4)
    steps = bench_rl_step(cfg, CPU, model_name="tiny", steps=1, say=lambda *_: None)
    assert len(steps) == 1
    assert all(steps[0][p] > 0 for p in PHASES)
    assert 0 < steps[0]["completion_tokens"] <= 2 * 4 * 8


def test_rl_step_bench_fits_the_presets_budget_to_a_short_context() -> None:
    # The 2-day preset asks 512 new tokens; the tiny model has 256 positions in all.
    cfg = dataclasses.replace(grpo_preset("grpo_usmle_2day"), prompts_per_step=2, samples_per_prompt=2, micro_batch=4)
    assert cfg.max_new_tokens + 1 > model_preset("tiny").max_seq_len
    said: list[str] = []
    steps = bench_rl_step(cfg, CPU, model_name="tiny", steps=1, say=said.append)
    note = next(line for line in said if line.startswith("note: "))
    fitted = int(note.split("generating up to ")[1].split()[0])
    assert f"note: {cfg.max_new_tokens} new tokens do not fit the 256-token context" in note and 0 < fitted < 256
    assert 0 < steps[0]["completion_tokens"] <= 2 * 2 * fitted


@pytest.mark.parametrize("argv, message", [
    (["bench", "train", "--steps", "0"], "error: --steps must be >= 1, got 0"),
    (["bench", "generate", "--batch", "0"], "error: --batch must be >= 1, got 0"),
    (["bench", "rl-step", "--set", "nonsense=1"], "error: unknown"),
    (["bench", "rl-step", "--config", "nope"], "error: unknown rl preset 'nope'"),
    (["bench", "train", "--num-workers", "-1"], "error: --num-workers must be >= 0, got -1"),
    (["bench", "train", "--threads", "0"], "error: --threads must be >= 1, got 0"),
    (["bench", "generate", "--device", "gpu0"], "error: unknown device 'gpu0'"),
    (["bench", "rl-step", "--checkpoint", "/no/such/run"], "error: checkpoint path not found: /no/such/run"),
])
@pytest.mark.fast
def test_bad_bench_arguments_are_one_error_line(argv, message, capsys) -> None:
    assert cli_main(argv if "--device" in argv else [*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err


@pytest.mark.fast
def test_bench_generate_command_prints_its_table(capsys) -> None:
    assert cli_main(["bench", "generate", "--device", "cpu", "--batch", "2", "--prompt-len", "4", "--new-tokens",
                     "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| ours, dynamic cache |" in out and "| transformers generate |" in out and "torch 2." in out
    assert "best of ours / transformers generate:" in out


@pytest.mark.fast
def test_the_header_names_the_command_as_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m pure_transformer bench ...`` puts ``.../__main__.py`` in argv[0]; the header says the module."""
    import importlib.util
    import types

    from pure_transformer.bench.common import command_line

    main = types.ModuleType("__main__")
    main.__spec__ = importlib.util.find_spec("pure_transformer.__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/x/pure_transformer/__main__.py", "bench", "train", "--model", "tiny"])
    assert command_line() == "python -m pure_transformer bench train --model tiny"
    main.__spec__ = None  # the console script: its own name
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pure-transformer", "bench", "serve", "--url", "http://a b"])
    assert command_line() == "pure-transformer bench serve --url 'http://a b'"
