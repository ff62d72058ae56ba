"""``pure-transformer bench rl-step``: the wall time of GRPO steps, split into
the phases of :func:`pure_transformer.rl.train.grpo_train`'s step:

- generation: the rollout (``prompts_per_step`` x ``samples_per_prompt``
  completions with pi_old and the kept sets) and the rewards;
- reference: log pi_ref of every completion token;
- policy: log pi_theta, the GRPO loss and its statistics;
- backward: gradients (summed over ranks under torchrun);
- optimizer: clipping and AdamW.

The step is the trainer's own (:func:`pure_transformer.rl.train.grpo_step`),
timed with the device synchronised at each boundary. The default shape is the
``grpo_usmle_2day`` preset's. Without ``--checkpoint`` the model is a randomly
initialised preset, which almost never ends a completion early: every row runs
the whole token budget, the worst case for generation's share.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics

import torch

from ..config.rl import GRPOConfig, grpo_preset
from ..distributed.runtime import PhaseTimer, Runtime, peak_memory_gb
from ..errors import ConfigError
from ..eval.scoring import encode_prompt, task_source
from ..inference.engine import Engine
from ..mcq.answer_format import AnswerFormat
from ..rl.questions import rl_questions
from ..rl.rewards import RewardConfig, make_reward
from ..rl.train import fitting, grpo_step, loss_config, sampling_budget
from .common import (add_device_args, bundled_tokenizer, device_of, environment, markdown, per_device,
                     require_positive_flags)

PHASES = ("generation", "reference", "policy", "backward", "optimizer")


def load_policy(checkpoint: str | None, model_name: str, device: torch.device):
    """(model, tokenizer, answer format): a checkpoint's, or a random preset's with a
    BPE trained on the bundled corpus (ids past its vocabulary decode to nothing)."""
    from ..checkpoint.store import load_model
    from ..model.config import model_preset
    from ..model.transformer import build_model

    if checkpoint:
        model, tok, meta, _ = load_model(checkpoint, device)
        return model, tok, AnswerFormat.of_checkpoint(meta)
    cfg = model_preset(model_name)
    return build_model(cfg, device), bundled_tokenizer(cfg.vocab_size), AnswerFormat.EXPLAIN


def fitting_budget(cfg: GRPOConfig, fmt: AnswerFormat, prompt_tokens: list[int], context: int, say=print) -> int:
    """The preset's token budget, or, when it leaves no room for the median prompt in the
    model's context (the 2-day preset's 512 tokens on the tiny model's 256), the room that
    median prompt leaves, said in one note: a bench measures the model it was given."""
    budget, _ = sampling_budget(cfg, fmt)
    median = int(statistics.median(prompt_tokens))
    if median + budget <= context:
        return budget
    if median >= context - 8:
        raise ConfigError(f"the median question takes {median} of the model's {context} context tokens: no room to "
                          "generate; pass --model or --checkpoint with a longer context")
    fitted = context - median
    say(f"note: {budget} new tokens do not fit the {context}-token context after a median {median}-token prompt; "
        f"generating up to {fitted} (--set max_new_tokens=N to choose)")
    return fitted


def bench_rl_step(cfg: GRPOConfig, device: torch.device, *, checkpoint: str | None = None,
                  model_name: str = "tiny", steps: int = 2, say=print) -> list[dict[str, float]]:
    """Run ``steps`` GRPO steps after one warm-up step; returns each timed step's
    seconds per phase, plus its "completion_tokens"."""
    torch.manual_seed(cfg.seed)
    rt = Runtime(0, 1, 0, device)
    model, tok, fmt = load_policy(checkpoint, model_name, device)
    fmt = AnswerFormat(cfg.answer_format) if cfg.answer_format else fmt
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = model.setup_optimizers(cfg.lr, embedding_lr=cfg.embedding_lr, weight_decay=cfg.weight_decay,
                                       betas=cfg.betas)
    train, _ = rl_questions(task_source("synthetic"), None, cfg.val_questions)  # the bundled questions
    budget = fitting_budget(cfg, fmt, [len(encode_prompt(tok, q, fmt)) for q in train], model.cfg.max_seq_len, say)
    cfg = dataclasses.replace(cfg, max_new_tokens=budget)
    train = fitting(train, tok, fmt, budget, model.cfg.max_seq_len, "train", False)
    engine = Engine(model, tok, compile_backend="inductor" if cfg.compile_decode else None)
    reward_fn = make_reward(RewardConfig(format_weight=cfg.format_weight, answer_format=fmt))
    say(f"GRPO step: {model.num_params():,} parameters, {cfg.prompts_per_step} prompts x {cfg.samples_per_prompt} "
        f"samples, up to {budget} new tokens (T={cfg.temperature}, top-k {cfg.top_k}, top-p {cfg.top_p}), micro-batch "
        f"{cfg.micro_batch}, {cfg.updates_per_rollout} update(s) per rollout, {fmt.value} format, "
        f"{checkpoint or 'random ' + model_name}; 1 warm-up + {steps} timed steps")
    cursor, out = 0, []
    for step in range(steps + 1):
        timer = PhaseTimer(device)
        batch, cursor, _ = grpo_step(engine, ref, optimizer, cfg, loss_config(cfg), train, cursor, step, reward_fn,
                                     fmt, rt, timer)
        if step > 0:
            out.append({**{p: timer.seconds.get(p, 0.0) for p in PHASES},
                        "completion_tokens": float(batch.num_completion_tokens)})
    return out


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="grpo_usmle_2day", help="GRPO preset giving the shape (default grpo_usmle_2day)")
    p.add_argument("--checkpoint", default=None, help="a pretraining or RL checkpoint (default: a random model)")
    p.add_argument("--model", default=None, help="preset of the random model (default medium-large on CUDA, tiny "
                                                 "on CPU)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a GRPO config field, e.g. --set max_new_tokens=64 (repeatable)")
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up (default 2)")
    add_device_args(p)


def run(args: argparse.Namespace) -> None:
    from ..config.overrides import apply_overrides, parse_set

    require_positive_flags(steps=args.steps)
    cfg = apply_overrides(grpo_preset(args.config), parse_set(args.set))
    device = device_of(args)
    for line in environment(device):
        print(line)
    steps = bench_rl_step(cfg, device, checkpoint=args.checkpoint,
                          model_name=per_device(args.model, device, "medium-large", "tiny"),
                          steps=args.steps)
    median = {p: statistics.median(s[p] for s in steps) for p in (*PHASES, "completion_tokens")}
    total = sum(median[p] for p in PHASES)
    print(markdown(["phase", "seconds (median)", "share of step"],
                   [[p, f"{median[p]:.3f}", f"{median[p] / total:.1%}"] for p in PHASES]
                   + [["step", f"{total:.3f}", "100%"]]))
    print(f"generation: {median['completion_tokens']:,.0f} completion tokens per step, "
          f"{median['completion_tokens'] / median['generation']:,.0f} tokens/s; "
          f"share of the step {median['generation'] / total:.1%} (target <= 50%)")
    what = "allocated" if device.type == "cuda" else "resident, the process's"
    print(f"{1 / total:.3f} GRPO steps/s; peak memory {peak_memory_gb(device):.2f} GB ({what})")
