"""Benchmark: peak memory and time of one training forward + backward, in two comparisons.

- ``--compare loss``: the loss through materialised (B, T, V) logits versus the
  chunked head (:func:`pure_transformer.model.losses.linear_cross_entropy`);
- ``--compare checkpointing``: activation checkpointing off, ``"selective"`` (matmul
  and attention outputs saved, elementwise ops recomputed) and full (every block
  recomputed), all with the chunked loss.

Each variant runs in a fresh process (peak resident memory is per process, and
CPU allocations are not visible to torch's allocator statistics), alternating,
``--repeats`` times; the first step of each process is a warm-up. The losses are
printed side by side as a correctness check.

    .venv/bin/python bench/bench_memory.py --compare loss --model small --batch 4 --seq-len 2048
    .venv/bin/python bench/bench_memory.py --compare checkpointing --model small --batch 4 --seq-len 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

# variant -> (loss through materialised logits, model.activation_checkpointing)
COMPARISONS = {
    "loss": {"materialised": (True, False), "chunked": (False, False)},
    "checkpointing": {"none": (False, False), "selective": (False, "selective"), "full": (False, True)},
}


def one(compare: str, variant: str, model: str, batch: int, seq_len: int) -> dict:
    import torch

    from pure_transformer.model.config import model_preset
    from pure_transformer.model.transformer import IGNORE_INDEX, build_model

    materialised, checkpointing = COMPARISONS[compare][variant]
    torch.manual_seed(0)
    cfg = model_preset(model)
    net = build_model(cfg.replace(max_seq_len=max(cfg.max_seq_len, seq_len)))
    net.activation_checkpointing = checkpointing
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    y = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    times, loss = [], None
    for _ in range(2):
        net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        if materialised:
            per_token, _ = net(x, y, reduction="none")  # materialises (B, T, V) logits and their gradient
            loss = per_token.sum() / (y != IGNORE_INDEX).sum()
        else:
            loss, _ = net(x, y)
        loss.backward()
        times.append(time.perf_counter() - start)
    return {"variant": variant, "loss": float(loss), "step_s": times[-1],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", choices=list(COMPARISONS), default="loss")
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.compare, args.child, args.model, args.batch, args.seq_len)))
        return
    runs: dict[str, list[dict]] = {variant: [] for variant in COMPARISONS[args.compare]}
    for _ in range(args.repeats):
        for variant in runs:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--compare", args.compare, "--model",
                                  args.model, "--batch", str(args.batch), "--seq-len", str(args.seq_len)],
                                 capture_output=True, text=True, check=True)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.model}, micro-batch {args.batch} x {args.seq_len}, one forward + backward on CPU")
    print(f"{args.compare:<14}{'loss value':>12}{'peak RSS GB':>14}{'step s':>10}")
    base = next(iter(runs))
    median = {v: (statistics.median(r["peak_rss_gb"] for r in rs), statistics.median(r["step_s"] for r in rs))
              for v, rs in runs.items()}
    for variant, rs in runs.items():
        print(f"{variant:<14}{rs[0]['loss']:>12.6f}{median[variant][0]:>14.2f}{median[variant][1]:>10.2f}")
    for variant in list(runs)[1:]:
        print(f"{variant} / {base}: peak memory {median[variant][0] / median[base][0]:.2f}x, "
              f"step time {median[variant][1] / median[base][1]:.2f}x")


if __name__ == "__main__":
    main()
