"""Benchmark: GRPO scoring with one prompt pass per group versus whole sequences.

Samples one real rollout batch (bundled MCQs, G samples per prompt) from a model,
then times forward + backward of the completion log-probs both ways in the same
process, alternating, and checks that both give the same log-probs:

- shared prefix (what the trainer does): ``rl.rollout.completion_logprobs``;
- whole sequences: each prompt + completion through the model, as a plain
  causal-LM trainer would.

    python bench/bench_shared_prefix.py --model tiny --prompts 16 --group 16 --new-tokens 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pure_transformer.bundled.synthetic import bundled_corpus, training_texts
from pure_transformer.inference.engine import Engine, SamplingParams
from pure_transformer.model.config import model_preset
from pure_transformer.model.transformer import build_model
from pure_transformer.rl.grpo import masked_logprobs
from pure_transformer.rl.rewards import correctness_reward
from pure_transformer.rl.rollout import RolloutBatch, build_batch, completion_logprobs, sample_groups
from pure_transformer.tokenizer.bpe import train_tokenizer


def whole_sequence_logprobs(model: torch.nn.Module, batch: RolloutBatch, temperature: float) -> torch.Tensor:
    """(N, C) completion log-probs from full prompt + completion forward passes."""
    lengths = batch.mask.sum(1).long().tolist()
    seqs = [batch.prompts[i // batch.group_size] + batch.completions[i, :n].tolist() for i, n in enumerate(lengths)]
    ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    _, logits = model(ids[:, :-1])
    starts = torch.tensor([len(batch.prompts[i // batch.group_size]) - 1 for i in range(len(seqs))])
    cols = starts[:, None] + torch.arange(batch.completions.shape[1])[None]  # (N, C) positions predicting completions
    cols = cols.clamp(max=logits.shape[1] - 1)
    picked = logits[torch.arange(len(seqs))[:, None], cols]  # (N, C, V)
    return masked_logprobs(picked, batch.completions, temperature=temperature, keep_ids=batch.keep_ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = model_preset(args.model)
    tok = train_tokenizer(training_texts(), cfg.vocab_size, "/tmp/bench_rl_tok", show_progress=False)
    model = build_model(cfg.replace(vocab_size=max(cfg.vocab_size, tok.vocab_size)))
    questions = bundled_corpus().mcq["train"][:args.prompts]
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)
    shown, prompts, groups = sample_groups(Engine(model, tok), questions, params, args.group)
    batch = build_batch(shown, prompts, groups, correctness_reward)
    model.train()

    def timed(fn) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        logp = fn()
        (logp * batch.mask).sum().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start, logp.detach()

    shared = lambda: completion_logprobs(model, batch, 0, batch.size, 1.0)[0]  # noqa: E731
    whole = lambda: whole_sequence_logprobs(model, batch, 1.0)  # noqa: E731
    timed(shared), timed(whole)  # warmup
    times: dict[str, list[float]] = {"shared prefix": [], "whole sequences": []}
    for _ in range(args.repeats):
        t, a = timed(shared)
        times["shared prefix"].append(t)
        t, b = timed(whole)
        times["whole sequences"].append(t)
    diff = (a - b).abs()[batch.mask.bool()].max().item()
    prompt_tokens = sum(len(p) for p in prompts) * args.group
    print(f"model {args.model}, {args.prompts} prompts x {args.group} samples, {prompt_tokens / batch.size:.0f} prompt "
          f"tokens and {batch.num_completion_tokens / batch.size:.1f} completion tokens per sample; "
          f"torch threads {torch.get_num_threads()}")
    print(f"max |log-prob difference| = {diff:.2e}")
    print("| scoring (forward + backward) | median s | runs |\n|---|---:|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {', '.join(f'{t:.3f}' for t in ts)} |")
    ratio = statistics.median(times["whole sequences"]) / statistics.median(times["shared prefix"])
    print(f"speed-up of shared prefix: {ratio:.1f}x")


if __name__ == "__main__":
    main()
