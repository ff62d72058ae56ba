"""``pure-transformer bench train``: one pretraining step of ours against
``LlamaForCausalLM`` with the same weights, on batches from the real loader.

A step is: wait for the next packed batch, forward, backward, clip, AdamW
(fused on CUDA), under the training precision (bf16 autocast on CUDA). Ours runs
:func:`pure_transformer.train.pretrain.train_step` itself; transformers takes
its usual ``model(input_ids, labels=input_ids)`` call. Reported per side:

- tokens/s and the median step time;
- MFU = flops_per_token x tokens/s / peak, the formula printed with its terms;
- peak allocated memory (CUDA; a CPU process has one resident peak for both);
- data wait: the share of the step spent in ``next(batches)``.

The data is the bundled offline mixture (the hub is not reachable everywhere),
tokenised by a BPE trained on it; speed does not depend on which ids arrive.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.pretrain import PretrainConfig, debug
from ..data.mixing import DataRepeatWarning
from ..distributed.parallel import parallelize
from ..distributed.runtime import Runtime
from ..errors import ConfigError
from ..model.config import model_preset
from ..model.transformer import build_model
from ..plan.hardware import device_peak_flops
from ..train.pretrain import train_loader, train_step
from .common import (add_device_args, alternate, bundled_tokenizer, device_of, environment, fmt_gb, hf_twin, markdown,
                     per_device, require_positive_flags)


@dataclass
class TrainRow:
    """One side's figures; ``mfu`` is None where the device's peak is unknown."""

    name: str
    tokens_per_s: float
    step_s: float
    mfu: float | None
    peak_gb: float | None
    data_wait_frac: float
    first_loss: float
    """Loss on the first batch before any step: the same weights must give the same loss."""


def bench_config(model: str, micro_batch: int, seq_len: int, compile: bool, activation_checkpointing: bool | str,
                 num_workers: int, batches: int) -> PretrainConfig:
    """The ``debug`` preset's offline mixture at the given model and batch shape, with
    a token budget of ``batches`` micro-batches."""
    return dataclasses.replace(debug(), model=model, micro_batch=micro_batch, seq_len=seq_len,
                               global_batch_tokens=micro_batch * seq_len, compile=compile,
                               activation_checkpointing=activation_checkpointing, num_workers=num_workers,
                               data_shards=max(1, num_workers),
                               total_tokens=micro_batch * seq_len * batches, warmup_tokens=0)


def bench_train(cfg: PretrainConfig, device: torch.device, *, steps: int = 3, repeats: int = 3,
                peak_flops: float | None = None, say=print) -> list[TrainRow]:
    """Time ``steps`` training steps per round, ``repeats`` rounds alternating ours and
    transformers; returns one row per side (ours first)."""
    rt = Runtime(0, 1, 0, device)
    mcfg = model_preset(cfg.model).replace(max_seq_len=max(cfg.seq_len, model_preset(cfg.model).max_seq_len))
    tok = bundled_tokenizer(mcfg.vocab_size)
    torch.manual_seed(cfg.seed)
    ours = build_model(mcfg, device)
    hf = hf_twin(ours).train()
    ours.train()
    ours.activation_checkpointing = cfg.activation_checkpointing
    if cfg.activation_checkpointing is True:
        hf.gradient_checkpointing_enable()
    with warnings.catch_warnings():  # a benchmark's tiny budget over the bundled corpus repeats it, knowingly
        warnings.simplefilter("ignore", DataRepeatWarning)
        batches = iter(train_loader(cfg, tok, rt))
    check = next(batches)
    with torch.no_grad(), rt.autocast():  # same weights, same batch: the same loss
        x, y = check["input_ids"].to(device), check["labels"].to(device)
        losses = {"ours": float(ours(x, y)[0]),
                  "transformers": float(F.cross_entropy(hf(input_ids=x).logits.float().flatten(0, 1), y.flatten()))}
    say(f"loss on the first batch: ours {losses['ours']:.6f}, transformers {losses['transformers']:.6f} "
        f"(|diff| {abs(losses['ours'] - losses['transformers']):.2e})")
    train_ours = parallelize(ours, rt, compile=cfg.compile)  # per block, as pretraining compiles
    if cfg.compile:
        for layer in hf.model.layers:
            layer.compile()
    opt_ours = ours.setup_optimizers(cfg.peak_lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=cfg.peak_lr, weight_decay=cfg.weight_decay, betas=cfg.betas,
                               fused=device.type == "cuda")
    waits: dict[str, list[float]] = {"ours": [], "transformers": []}  # per call; the first is the warm-up

    def fetch(name: str) -> dict:
        start = time.perf_counter()
        batch = next(batches)
        waits[name][-1] += time.perf_counter() - start
        return batch

    def ours_steps() -> None:
        waits["ours"].append(0.0)
        for _ in range(steps):
            train_step(train_ours, [fetch("ours")], rt, cfg)
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)

    def hf_steps() -> None:
        waits["transformers"].append(0.0)
        for _ in range(steps):
            x = fetch("transformers")["input_ids"].to(device, non_blocking=True)
            with rt.autocast():
                loss = hf(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), cfg.grad_clip)
            opt_hf.step()
            opt_hf.zero_grad(set_to_none=True)

    timed = alternate({"ours": ours_steps, "transformers": hf_steps}, repeats, device)
    tokens = cfg.micro_batch * cfg.seq_len * steps
    peak = peak_flops or device_peak_flops(device)
    flops = ours.flops_per_token(cfg.seq_len)
    rows = []
    for name, t in timed.items():
        rate = tokens / t.median
        rows.append(TrainRow(name, rate, t.median / steps, flops * rate / peak if peak else None, t.peak_gb,
                             sum(waits[name][1:]) / sum(t.seconds), losses[name]))
    c = ours.cfg
    say(f"MFU = flops_per_token x tokens/s / peak; flops_per_token = 6 N + 12 L H D T = 6 x {ours.matmul_params():,} "
        f"+ 12 x {c.n_layers} x {c.n_heads} x {c.head_dim} x {cfg.seq_len} = {flops:,}"
        + (f"; peak {peak:.4g} FLOP/s" if peak else "; no peak known for this device (--peak-tflops)"))
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model preset (default medium-large on CUDA, tiny on CPU)")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per step (default 16 on CUDA, 4 on CPU)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 2048 on CUDA, 256 on CPU)")
    p.add_argument("--steps", type=int, default=3, help="training steps per timed call (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per side, after one warm-up (default 3)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile every block of both models (default on CUDA only)")
    p.add_argument("--activation-checkpointing", choices=["full", "selective"], default=None,
                   help="recompute blocks in backward: full (both models) or selective (ours only: transformers has "
                        "no equivalent and runs without)")
    p.add_argument("--num-workers", type=int, default=2, help="loader worker processes (default 2)")
    add_device_args(p)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak, for MFU where no datasheet figure is known (e.g. a CPU)")


def run(args: argparse.Namespace) -> None:
    require_positive_flags(micro_batch=args.micro_batch, seq_len=args.seq_len, steps=args.steps, repeats=args.repeats)
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {args.num_workers}")
    device = device_of(args)
    gpu = device.type == "cuda"
    cfg = bench_config(per_device(args.model, device, "medium-large", "tiny"),
                       per_device(args.micro_batch, device, 16, 4), per_device(args.seq_len, device, 2048, 256),
                       per_device(args.compile, device, True, False),
                       {None: False, "full": True, "selective": "selective"}[args.activation_checkpointing],
                       args.num_workers,
                       batches=2 * args.steps * (args.repeats + 1) + 1)
    for line in environment(device):
        print(line)
    print(f"train step: {cfg.model}, micro-batch {cfg.micro_batch} x {cfg.seq_len} tokens, "
          f"{'bf16 autocast' if gpu else 'fp32'}, compile {cfg.compile}, activation checkpointing "
          f"{cfg.activation_checkpointing}, {cfg.num_workers} loader workers; {args.steps} steps per call, "
          f"1 warm-up + {args.repeats} alternating calls per side (median)")
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    rows = bench_train(cfg, device, steps=args.steps, repeats=args.repeats, peak_flops=peak)
    ours, hf = rows
    print(markdown(["", "tokens/s", "step ms", "MFU", "peak GB", "data wait"],
                   [[r.name, f"{r.tokens_per_s:,.0f}", f"{r.step_s * 1e3:.1f}",
                     "n/a (no peak known)" if r.mfu is None else f"{r.mfu:.1%}", fmt_gb(r.peak_gb),
                     f"{r.data_wait_frac:.2%}"] for r in rows]))
    print(f"ours / transformers: {ours.tokens_per_s / hf.tokens_per_s:.2f}x tokens/s")
