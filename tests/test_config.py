"""Config tests: presets, accumulation arithmetic, overrides, LR schedule."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from pure_transformer.config.overrides import apply_overrides, load_yaml, parse_set
from pure_transformer.config.pretrain import PRETRAIN_PRESETS, pretrain_preset
from pure_transformer.config.rl import grpo_preset
from pure_transformer.errors import ConfigError
from pure_transformer.train.schedule import lr_at, set_lr


@pytest.mark.fast
def test_a100_2day_matches_the_design() -> None:
    cfg = pretrain_preset("a100_2day")
    assert cfg.total_tokens == 2_000_000_000 and cfg.global_batch_tokens == 524_288
    assert (cfg.micro_batch, cfg.seq_len) == (16, 2048)
    assert cfg.accum_steps(world_size=1) == 16 and cfg.accum_steps(world_size=8) == 2
    assert (cfg.peak_lr, cfg.min_lr, cfg.betas, cfg.weight_decay, cfg.grad_clip) == (3e-4, 3e-5, (0.9, 0.95), 0.1, 1.0)
    assert cfg.warmup_tokens == 100_000_000
    assert (cfg.log_every, cfg.val_every, cfg.val_tokens, cfg.ckpt_every, cfg.keep_last) == (10, 250, 1_000_000, 500, 3)
    # MCQs explanation first, MedMCQA (which has explanations) for two thirds of the 15% MCQ share.
    assert cfg.sources == {"fineweb-edu": 0.85, "medmcqa": 0.10, "medqa": 0.05} and cfg.answer_format == "explain"
    assert cfg.total_steps == 3815
    letter = pretrain_preset("a100_2day_letter")  # the design's recipe, as written
    assert letter.sources == {"fineweb-edu": 0.85, "medqa": 0.15} and letter.answer_format == "letter"
    assert dataclasses.replace(letter, sources=cfg.sources, answer_format="explain") == cfg


@pytest.mark.fast
def test_every_preset_validates_and_h200_uses_memory() -> None:
    for name in PRETRAIN_PRESETS:
        pretrain_preset(name).accum_steps()
    h200 = pretrain_preset("h200_1day")
    assert h200.accum_steps() < pretrain_preset("a100_2day").accum_steps()
    assert (h200.sources, h200.answer_format) == (pretrain_preset("a100_2day").sources, "explain")
    assert grpo_preset("grpo_usmle_2day").answer_format is None  # the checkpoint's: explain after a100_2day
    assert grpo_preset("grpo_usmle_2day_letter").answer_format == "letter"
    with pytest.raises(ConfigError, match="unknown pretrain preset 'nope'"):
        pretrain_preset("nope")


@pytest.mark.fast
def test_presets_are_named_by_phase() -> None:
    """``debug`` and ``demo`` exist in both phases: ``pretrain:debug`` and ``rl:debug`` say which, the bare
    name still works within its phase's command, and another phase's name is refused, naming the choices."""
    from pure_transformer.plan.planner import plan_for

    assert pretrain_preset("pretrain:debug") == pretrain_preset("debug") != pretrain_preset("demo")
    assert grpo_preset("rl:demo") == grpo_preset("demo") != grpo_preset("debug")
    with pytest.raises(ConfigError, match=r"^'rl:debug' is not a pretrain preset; choose one of: pretrain:a100_2day, "):
        pretrain_preset("rl:debug")
    with pytest.raises(ConfigError, match=r"^unknown rl preset 'rl:nope'; choose one of: rl:grpo_usmle_2day, .*rl:debug"):
        grpo_preset("rl:nope")
    # plan: a bare name shared by both phases is the pretraining preset, as it always was.
    assert plan_for("debug", "h100-80gb").title.startswith("pretrain:debug: ")
    assert plan_for("rl:debug", "h100-80gb").title.startswith("rl:debug: GRPO of ")
    assert plan_for("grpo_usmle_2day", "h100-80gb").title.startswith("rl:grpo_usmle_2day: GRPO of ")
    with pytest.raises(ConfigError, match="unknown config 'pretrain:grpo_usmle_2day'; choose one of: pretrain:"):
        plan_for("pretrain:grpo_usmle_2day", "h100-80gb")


@pytest.mark.fast
def test_accumulation_must_divide() -> None:
    cfg = apply_overrides(pretrain_preset("debug"), {"global_batch_tokens": 3000})
    with pytest.raises(ConfigError, match="must be a multiple of micro_batch"):
        cfg.accum_steps()


@pytest.mark.fast
def test_overrides_parse_and_validate(tmp_path: Path) -> None:
    cfg = apply_overrides(pretrain_preset("debug"), parse_set(["peak_lr=1e-3", "compile=true", "total_tokens=2e6",
                                                              "sources={a: 0.5, b: 0.5}", "tokenizer=gpt2"]))
    assert cfg.peak_lr == 1e-3 and cfg.compile is True and cfg.total_tokens == 2_000_000
    assert cfg.sources == {"a": 0.5, "b": 0.5} and cfg.tokenizer == "gpt2"
    with pytest.raises(ConfigError, match="unknown config key 'lr'"):
        apply_overrides(cfg, {"lr": 1.0})
    with pytest.raises(ConfigError, match="compile must be bool"):
        apply_overrides(cfg, {"compile": "yes please"})
    with pytest.raises(ConfigError, match="weight_by must be one of"):
        apply_overrides(cfg, {"weight_by": "bytes"})
    assert apply_overrides(cfg, parse_set(["activation_checkpointing=selective"])).activation_checkpointing == "selective"
    assert apply_overrides(cfg, parse_set(["activation_checkpointing=true"])).activation_checkpointing is True
    with pytest.raises(ConfigError, match="^activation_checkpointing must be bool or one of selective, got 'full'$"):
        apply_overrides(cfg, {"activation_checkpointing": "full"})
    with pytest.raises(ConfigError, match="min_lr <= peak_lr"):
        apply_overrides(cfg, {"min_lr": 1.0})
    assert apply_overrides(cfg, parse_set(["val_mcq=0"])).val_mcq == 0  # loss-only validation
    with pytest.raises(ConfigError, match=r"^val_mcq must be >= 0 \(0 turns MCQ validation off\), got -1$"):
        apply_overrides(cfg, {"val_mcq": -1})
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["peak_lr"])
    (tmp_path / "c.yaml").write_text("micro_batch: 4\nbetas: [0.9, 0.99]\n")
    cfg = apply_overrides(cfg, load_yaml(tmp_path / "c.yaml"))
    assert cfg.micro_batch == 4 and cfg.betas == (0.9, 0.99)
    (tmp_path / "bad.yaml").write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")


@pytest.mark.fast
def test_lr_schedule_warmup_cosine_floor() -> None:
    kw = dict(peak_lr=1.0, min_lr=0.1, warmup_tokens=100, total_tokens=1100)
    assert lr_at(0, **kw) == 0.0
    assert lr_at(50, **kw) == pytest.approx(0.5)
    assert lr_at(100, **kw) == pytest.approx(1.0)
    assert lr_at(600, **kw) == pytest.approx(0.55)  # halfway through the cosine: (1 + 0.1) / 2
    assert lr_at(100 + 250, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert lr_at(1100, **kw) == pytest.approx(0.1)
    assert lr_at(5000, **kw) == 0.1
    values = [lr_at(t, **kw) for t in range(100, 1101, 10)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warmup


@pytest.mark.fast
def test_set_lr_scales_every_group() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1], "lr": 1e-5, "peak_lr": 1e-5},
                             {"params": [p2], "lr": 2e-4, "peak_lr": 2e-4}])
    set_lr(opt, 0.5e-5, peak_lr=1e-5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-5) and opt.param_groups[1]["lr"] == pytest.approx(1e-4)


@pytest.mark.fast
def test_whole_mcqs_takes_a_boolean_and_names_itself_otherwise() -> None:
    cfg = apply_overrides(pretrain_preset("debug"), parse_set(["whole_mcqs=true"]))
    assert cfg.whole_mcqs is True and pretrain_preset("demo").whole_mcqs is True
    with pytest.raises(ConfigError, match="whole_mcqs"):
        apply_overrides(pretrain_preset("debug"), parse_set(["whole_mcqs=sometimes"]))
