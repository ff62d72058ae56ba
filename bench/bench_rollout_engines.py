"""GRPO's rollout shape through the two decoders: ``Engine.generate`` (what the trainer calls) and
the serving :class:`~pure_transformer.inference.scheduler.Scheduler` (the KV pool, one sampling call
per step, prefix reuse), in one process, alternating, on the same prompts and sampling parameters.

The question it answers (issue 36, item 5): should rollouts run through the serving pool? The
trainer's batch is P prompts x G samples that start together and share nothing across prompts:
``Engine.generate`` prefills each prompt once and decodes all P x G rows as one batch, dropping
finished rows. The pool is built for arrivals at any time. Only the decode is compared: the
scheduler does not yet record the sampler's kept ids that the trainer's importance ratio needs.

    python bench/bench_rollout_engines.py [--checkpoint runs/demo/pretrain] [--prompts 8 --samples 8]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from pure_transformer.bench.rl_step import load_policy
from pure_transformer.bundled.synthetic import bundled_corpus
from pure_transformer.eval.scoring import encode_prompt
from pure_transformer.inference.engine import Engine, SamplingParams
from pure_transformer.inference.scheduler import Entry, Scheduler
from pure_transformer.serving.prometheus import Metrics


def through_scheduler(scheduler: Scheduler, prompts: list[list[int]], params: SamplingParams, samples: int,
                      seeds: list[int]) -> int:
    """Submit every prompt with its ``samples`` rows at once; wait for all; return the tokens generated."""
    done = threading.Semaphore(0)
    tokens = [0]

    def deliver(event: tuple) -> None:
        if event[0] == "done":
            tokens[0] += len(event[2].tokens)
            done.release()
        elif event[0] == "error":
            raise event[1]

    entries = [Entry(p, params, samples, seed, False, deliver) for p, seed in zip(prompts, seeds)]
    scheduler.submit(entries)
    for _ in range(len(prompts) * samples):
        done.acquire()
    return tokens[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="a checkpoint (default: a random tiny model)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok, fmt = load_policy(args.checkpoint, "tiny", torch.device("cpu"))
    model.eval()
    engine = Engine(model, tok)
    questions = bundled_corpus().mcq["train"]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, top_k=args.top_k,
                            stop_strings=fmt.stop_strings())
    scheduler = Scheduler(engine, max_rows=args.prompts * args.samples,
                          kv_tokens=args.prompts * args.samples * model.cfg.max_seq_len, queue_timeout_s=600,
                          metrics=Metrics())
    scheduler.start()
    times: dict[str, list[float]] = {"Engine.generate": [], "Scheduler (KV pool)": []}
    tokens: dict[str, list[int]] = {k: [] for k in times}
    for r in range(args.repeats + 1):  # the first round warms both up and is not counted
        batch = questions[r * args.prompts:(r + 1) * args.prompts]
        prompts = [encode_prompt(tok, q, fmt) for q in batch]
        seeds = [1000 * r + i for i in range(len(prompts))]
        order = list(times) if r % 2 == 0 else list(times)[::-1]
        for name in order:
            t = time.perf_counter()
            if name == "Engine.generate":
                n = sum(len(s.tokens) for g in engine.generate(prompts, params, args.samples, seeds=seeds) for s in g)
            else:
                n = through_scheduler(scheduler, prompts, params, args.samples, seeds)
            if r > 0:
                times[name].append(time.perf_counter() - t)
                tokens[name].append(n)
    scheduler.stop()
    if scheduler._thread is not None:  # let the model thread finish before the interpreter exits
        scheduler._thread.join()
    print(f"rollout: {args.prompts} prompts x {args.samples} samples, up to {args.max_new_tokens} new tokens, "
          f"T=1 top-k {args.top_k}, {args.checkpoint or 'random tiny'}; {args.repeats} alternating rounds "
          f"after a warm-up; torch threads {torch.get_num_threads()}")
    print("| decoder | seconds (median) | tokens generated | tokens/s |\n| --- | ---: | ---: | ---: |")
    for name in times:
        sec = statistics.median(times[name])
        print(f"| {name} | {sec:.3f} | {sum(tokens[name]) / len(tokens[name]):.0f} | "
              f"{sum(tokens[name]) / sum(times[name]):,.0f} |")


if __name__ == "__main__":
    main()
