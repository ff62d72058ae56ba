"""Benchmark: batched generation throughput, our Engine vs Hugging Face ``generate``.

In one run and on identical weights it:

* builds our model from a preset (``--model``, random init, ``--seed``) and a
  ``transformers.LlamaForCausalLM`` from ``hf_llama_config(cfg)`` loaded with
  ``hf_llama_state_dict(model)`` (a pure renaming), both in eval mode, same
  dtype and device;
* makes ``--batch`` prompts of ``--prompt-len`` random token ids (all the same
  length, so HF needs no padding);
* times two variants: one warmup call each, then ``--repeats`` calls of ours and
  HF alternately (so load from other processes hits both alike), median reported:

  - **greedy**: ``--batch`` prompts, one completion each (ours:
    ``SamplingParams(temperature=0)``; HF: ``do_sample=False``);
  - **sampled**: ``--sample-prompts`` prompts x ``--num-samples`` completions,
    temperature 1, top-k 40 (ours: ``num_samples=16``, one shared prefill per
    prompt, the GRPO rollout path; HF: ``num_return_sequences=16``, which
    expands the prompts before prefill);

  every completion is exactly ``--new-tokens`` long on both sides: our engine
  gets an end-of-text id outside the vocabulary (it can never be drawn) and HF
  gets no EOS token, so neither can stop early; the tokens actually generated
  are counted, not assumed;
* checks correctness: the greedy token ids of ours and HF are compared on every
  prompt (fraction of identical sequences, first divergence), and the prefill
  logits of the first prompts are compared directly.

Throughput is generated tokens / wall time of the whole call (prefill included).
Not a test; run it by hand, e.g.

    .venv/bin/python bench/bench_generate.py --model tiny                 # CPU defaults
    python bench/bench_generate.py --model medium-large --dtype bfloat16  # GPU: batch 256

On CUDA our engine always computes under bf16 autocast with a bf16 KV cache,
so compare with ``--dtype bfloat16`` there (HF then runs in bf16 as well).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pure_transformer.config import MODEL_PRESETS, model_preset  # noqa: E402
from pure_transformer.engine import Engine, SamplingParams  # noqa: E402
from pure_transformer.model import build_model, hf_llama_config, hf_llama_state_dict  # noqa: E402


class BenchTokenizer:
    """The three things the engine asks of a tokenizer, for random token ids.

    ``eot_id`` is one past the vocabulary, so no sampled token can end a row
    early; ``decode`` returns nothing (HF generate does not decode either).
    """

    def __init__(self, vocab_size: int):
        self.eot_id = vocab_size
        self.pad_id = 0

    def decode(self, ids: list[int]) -> str:
        return ""


@dataclass
class Timing:
    tokens: int
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def rate(self) -> float:
        return self.tokens / self.median


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pair(fa, fb, device: torch.device, repeats: int) -> tuple[object, list[float], object, list[float]]:
    """Warm up ``fa`` and ``fb`` once each, then time them alternately ``repeats`` times
    (a, b, a, b, ...), so load from other processes hits both sides alike.
    Returns the last result and the wall times of each."""
    fa()
    fb()
    out = {0: None, 1: None}
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for k, fn in ((0, fa), (1, fb)):
            sync(device)
            t0 = time.perf_counter()
            out[k] = fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return out[0], times[0], out[1], times[1]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} CPUs visible, torch threads {torch.get_num_threads()}"


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", choices=list(MODEL_PRESETS), help="model preset (default tiny)")
    p.add_argument("--dim", type=int, help="override the preset's width (n_heads kept; head_dim = dim // n_heads)")
    p.add_argument("--layers", type=int, help="override the preset's layer count")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16 only on CUDA")
    p.add_argument("--batch", type=int, default=None, help="greedy prompts (default 256 on GPU, 64 on CPU)")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--num-samples", type=int, default=16, help="samples per prompt in the sampled variant")
    p.add_argument("--sample-prompts", type=int, default=None,
                   help="prompts in the sampled variant (default batch // num-samples, so both variants "
                        "decode the same number of rows)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-sampled", action="store_true")
    args = p.parse_args()
    if args.batch is None:
        args.batch = 256 if args.device.startswith("cuda") else 64
    if args.sample_prompts is None:
        args.sample_prompts = max(1, args.batch // args.num_samples)
    if args.dtype == "bfloat16" and not args.device.startswith("cuda"):
        p.error("--dtype bfloat16 is only supported on CUDA")
    return args


def main() -> int:
    args = parse_args()
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    cfg = model_preset(args.model)
    overrides = {}
    if args.dim:
        overrides["dim"] = args.dim
    if args.layers:
        overrides["n_layers"] = args.layers
    need = args.prompt_len + args.new_tokens
    if need > cfg.max_seq_len:
        overrides["max_seq_len"] = need
    if overrides:
        cfg = cfg.replace(**overrides)

    torch.manual_seed(args.seed)
    ours = build_model(cfg, device=device, dtype=dtype).eval()
    hf_cfg = transformers.LlamaConfig(**hf_llama_config(cfg))
    hf = transformers.LlamaForCausalLM(hf_cfg).to(device=device, dtype=dtype).eval()
    missing, unexpected = hf.load_state_dict(hf_llama_state_dict(ours), strict=False)
    if unexpected or set(missing) - ({"lm_head.weight"} if cfg.tie_embeddings else set()):
        raise SystemExit(f"weight mapping failed: missing={missing} unexpected={unexpected}")
    if cfg.tie_embeddings:
        hf.tie_weights()
    # No EOS at all, so HF generates exactly max_new_tokens and no logits processor touches the scores.
    hf.generation_config.eos_token_id = None
    hf.generation_config.bos_token_id = None
    hf.generation_config.pad_token_id = 0
    engine = Engine(ours, BenchTokenizer(cfg.vocab_size))  # type: ignore[arg-type]

    g = torch.Generator().manual_seed(args.seed + 1)
    prompts_t = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt_len), generator=g)
    prompts = prompts_t.tolist()
    hf_input = prompts_t.to(device)
    hf_mask = torch.ones_like(hf_input)

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"device: {device} ({device_name(device)})")
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"model: {args.model} {cfg.to_dict()}")
    print(f"params: {ours.num_params() / 1e6:.2f}M, dtype {args.dtype}, HF attention "
          f"{getattr(hf.config, '_attn_implementation', '?')}")
    try:
        print(f"load average: {os.getloadavg()}")
    except OSError:
        pass
    print(f"greedy: {args.batch} prompts x {args.prompt_len} tokens -> {args.new_tokens} new tokens; "
          f"sampled: {args.sample_prompts} prompts x {args.num_samples} samples, T=1, top_k={args.top_k}; "
          f"warmup 1, repeats {args.repeats} (median)")
    sys.stdout.flush()

    # ---- correctness: prefill logits on the first prompts
    with torch.no_grad():
        probe = hf_input[: min(4, args.batch)]
        _, ours_logits = ours(probe)
        hf_logits = hf(probe).logits
        logit_diff = (ours_logits.float() - hf_logits.float()).abs().max().item()
    print(f"prefill logits, first {probe.shape[0]} prompts: max |ours - HF| = {logit_diff:.3g} "
          f"(logit scale {hf_logits.float().abs().max().item():.3g})")

    rows: list[tuple[str, Timing, Timing]] = []

    # ---- greedy
    greedy = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)

    def ours_greedy():
        return engine.generate(prompts, greedy, num_samples=1)

    def hf_greedy():
        with torch.no_grad():
            return hf.generate(hf_input, attention_mask=hf_mask, do_sample=False, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, use_cache=True, pad_token_id=0,
                               eos_token_id=None, temperature=None, top_p=None, top_k=None)

    ours_out, ours_times, hf_out, hf_times = timed_pair(ours_greedy, hf_greedy, device, args.repeats)
    ours_tokens = sum(len(s.tokens) for group in ours_out for s in group)
    hf_new = hf_out[:, args.prompt_len:].cpu()
    hf_tokens = hf_new.numel()
    rows.append(("greedy", Timing(ours_tokens, ours_times), Timing(hf_tokens, hf_times)))

    same = 0
    first_div: list[int] = []
    for i, group in enumerate(ours_out):
        a, b = group[0].tokens, hf_new[i].tolist()
        if a == b:
            same += 1
        else:
            first_div.append(next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))))
    frac = same / len(ours_out)
    print(f"greedy ids identical (ours vs HF): {same}/{len(ours_out)} sequences ({frac:.1%})")
    if first_div:
        print(f"MISMATCH: {len(first_div)} sequences differ; first differing step: min {min(first_div)}, "
              f"median {statistics.median(first_div)} (of {args.new_tokens}); near-tied logits of a random-init "
              f"model flip under tiny numeric differences, bf16 makes this common")
    if ours_tokens != hf_tokens:
        print(f"NOTE: token counts differ: ours {ours_tokens}, HF {hf_tokens}")

    # ---- sampled, shared prefill
    if not args.skip_sampled:
        sp = [prompts[i % args.batch] for i in range(args.sample_prompts)]
        sp_input = torch.tensor(sp, device=device)
        sampled = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, top_k=args.top_k, seed=args.seed)

        def ours_sampled():
            return engine.generate(sp, sampled, num_samples=args.num_samples)

        def hf_sampled():
            torch.manual_seed(args.seed)
            with torch.no_grad():
                return hf.generate(sp_input, attention_mask=torch.ones_like(sp_input), do_sample=True,
                                   temperature=1.0, top_k=args.top_k, top_p=1.0,
                                   num_return_sequences=args.num_samples, max_new_tokens=args.new_tokens,
                                   min_new_tokens=args.new_tokens, use_cache=True, pad_token_id=0,
                                   eos_token_id=None)

        o_out, o_times, h_out, h_times = timed_pair(ours_sampled, hf_sampled, device, args.repeats)
        o_tokens = sum(len(s.tokens) for group in o_out for s in group)
        h_tokens = h_out[:, args.prompt_len:].numel()
        rows.append((f"sampled {args.sample_prompts}x{args.num_samples}", Timing(o_tokens, o_times),
                     Timing(h_tokens, h_times)))

    # ---- table
    print()
    print("| variant | rows | ours tok/s | HF tok/s | ours/HF | ours s (runs) | HF s (runs) |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, o, h in rows:
        n_rows = o.tokens // args.new_tokens
        print(f"| {name} | {n_rows} | {o.rate:,.0f} | {h.rate:,.0f} | {o.rate / h.rate:.2f}x | "
              f"{o.median:.3f} ({', '.join(f'{t:.3f}' for t in o.times)}) | "
              f"{h.median:.3f} ({', '.join(f'{t:.3f}' for t in h.times)}) |")
    print(f"\ngenerated tokens/s = generated tokens / median wall time of the whole call (prefill included); "
          f"greedy ids identical: {frac:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
