"""Benchmark: one fp32 training step of a preset at several loss-chunk sizes, on this machine.

The training loss runs the head and the cross-entropy ``chunk`` rows at a time
(:func:`pure_transformer.model.losses.linear_cross_entropy`). A micro-batch of ``chunk``
rows or fewer takes the plain path instead: all its logits at once, then
``F.cross_entropy``. On a CPU a chunk whose logits stay in cache is faster than
either, which is why :data:`~pure_transformer.model.losses.CPU_LOSS_CHUNK` is smaller than
the GPU's. This times forward, backward and AdamW of the same model and batch for
each chunk size, alternating the contenders round by round in one process so
that a load change hits them alike, and prints the best round of each and its
ratio to the first contender. Not a test; run it by hand:

    .venv/bin/python bench/bench_loss_chunk.py                 # make demo's step: tiny, 8 x 256
    .venv/bin/python bench/bench_loss_chunk.py --chunks 2048,1024,512,256
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

import pure_transformer.model.transformer as model_module
from pure_transformer.model.config import model_preset
from pure_transformer.model.losses import CPU_LOSS_CHUNK, LOSS_CHUNK
from pure_transformer.model.transformer import build_model


def step_with_chunk(preset: str, vocab: int, micro_batch: int, seq_len: int, chunk: int) -> Callable[[], None]:
    """A closure running one training step of a seeded model with the loss in ``chunk``-row pieces."""
    torch.manual_seed(0)
    model = build_model(model_preset(preset).replace(vocab_size=vocab, max_seq_len=seq_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (micro_batch, seq_len))  # (B, T)
    y = torch.randint(0, vocab, (micro_batch, seq_len))

    def step() -> None:
        # The model asks losses.loss_chunk for its chunk size; point it at this contender's.
        model_module.loss_chunk = lambda device: chunk
        loss, _ = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--chunks", default=f"{LOSS_CHUNK},{CPU_LOSS_CHUNK}", help="comma-separated rows per chunk")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="steps per contender per round")
    args = p.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    original = model_module.loss_chunk
    try:
        steps = {c: step_with_chunk(args.preset, args.vocab_size, args.micro_batch, args.seq_len, c) for c in chunks}
        for step in steps.values():  # warm-up: first-touch allocations, oneDNN kernel choice
            step(), step()
        best = {c: float("inf") for c in chunks}
        for _ in range(args.rounds):
            for c, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                best[c] = min(best[c], (time.perf_counter() - start) / args.steps)
    finally:
        model_module.loss_chunk = original
    rows = args.micro_batch * args.seq_len
    print(f"{args.preset}, vocab {args.vocab_size}, {args.micro_batch} x {args.seq_len} = {rows} rows, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    for c in chunks:
        path = "plain (all logits at once)" if rows <= c else f"chunked, {c} rows"
        print(f"  chunk {c:>5}: {best[c] * 1e3:7.1f} ms/step  {best[chunks[0]] / best[c]:.2f}x  {path}")


if __name__ == "__main__":
    main()
