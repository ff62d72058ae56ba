"""``pure-transformer bench generate``: batched decoding with our engine against
``LlamaForCausalLM.generate`` on the same weights.

Contenders, each on the same prompts (random ids, one length, so transformers
needs no padding):

- ours with the dynamic KV cache (what ``generate``, ``serve`` and GRPO use);
- ours with the static cache and, with ``--compile``, a compiled decode step
  (CUDA graphs on CUDA);
- transformers ``generate`` with its default dynamic cache;
- transformers ``generate`` with ``cache_implementation="static"``, which it
  compiles by itself on CUDA.

Every completion is exactly ``--new-tokens`` long: our end-of-text id lies
outside the vocabulary and transformers gets none, so nothing stops early.
tokens/s counts generated tokens over the whole call (prefill included); time to
first token is the median wall time of the same call with one new token. Greedy
runs also count the sequences identical to ours (dynamic), a correctness check.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ..inference.engine import Engine, SamplingParams
from ..model.config import model_preset
from ..model.transformer import build_model
from .common import (Timed, add_device_args, alternate, device_of, environment, fmt_gb, hf_twin, markdown, per_device,
                     require_positive_flags)


class RandomIdsTokenizer:
    """What the engine asks of a tokenizer, for random ids: an end-of-text id one
    past the vocabulary (never drawn) and no text."""

    def __init__(self, vocab_size: int):
        self.eot_id, self.pad_id = vocab_size, 0
        self.stop_ids = frozenset({vocab_size})

    def decode(self, ids: list[int]) -> str:
        return ""


@dataclass
class GenerateRow:
    name: str
    tokens_per_s: float
    first_token_s: float
    call_s: float
    peak_gb: float | None
    same_as_ours: int | None
    """Sequences identical to ours with the dynamic cache (greedy only)."""
    rows: int


def bench_generate(model_name: str, device: torch.device, *, batch: int, prompt_len: int, new_tokens: int,
                   samples_per_prompt: int = 1, compile: bool = False, dtype: torch.dtype = torch.float32,
                   repeats: int = 3, seed: int = 0, say=print) -> list[GenerateRow]:
    """Time every contender, alternating; one row each, ours (dynamic cache) first."""
    cfg = model_preset(model_name)
    cfg = cfg.replace(max_seq_len=max(cfg.max_seq_len, prompt_len + new_tokens))
    torch.manual_seed(seed)
    model = build_model(cfg, device, dtype).eval()
    hf = hf_twin(model).eval()
    hf.generation_config.eos_token_id = hf.generation_config.bos_token_id = None
    hf.generation_config.pad_token_id = 0
    tok = RandomIdsTokenizer(cfg.vocab_size)
    dynamic = Engine(model, tok)  # type: ignore[arg-type]
    static = Engine(model, tok, static_cache=True, compile_backend="inductor" if compile else None)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed + 1)
    n_prompts = max(1, batch // samples_per_prompt)
    ids = torch.randint(0, cfg.vocab_size, (n_prompts, prompt_len), generator=g)
    prompts, hf_ids = ids.tolist(), ids.to(device)
    greedy = samples_per_prompt == 1

    def params(n: int) -> SamplingParams:
        return SamplingParams(max_new_tokens=n, temperature=0) if greedy else SamplingParams(
            max_new_tokens=n, temperature=1.0, top_k=40, seed=seed)

    def ours(engine: Engine, n: int):
        return lambda: [s.tokens for grp in engine.generate(prompts, params(n), samples_per_prompt) for s in grp]

    def theirs(n: int, cache: str | None):
        sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": 1.0, "top_k": 40}
        extra = {"cache_implementation": cache} if cache else {}
        if cache and not compile:
            extra["disable_compile"] = True

        def call():
            with torch.no_grad():
                out = hf.generate(hf_ids, attention_mask=torch.ones_like(hf_ids), max_new_tokens=n, min_new_tokens=n,
                                  num_return_sequences=samples_per_prompt, **sampling, **extra)
            return out[:, prompt_len:].tolist()
        return call

    compiled = " + compiled" if compile else ""
    hf_compiled = " + compiled" if compile and device.type == "cuda" else ""  # transformers compiles on CUDA only
    names = {"ours, dynamic cache": (ours(dynamic, new_tokens), ours(dynamic, 1)),
             f"ours, static cache{compiled}": (ours(static, new_tokens), ours(static, 1)),
             "transformers generate": (theirs(new_tokens, None), theirs(1, None)),
             f"transformers generate, static cache{hf_compiled}": (theirs(new_tokens, "static"), theirs(1, "static"))}
    say(f"{n_prompts} prompts x {samples_per_prompt} samples = {n_prompts * samples_per_prompt} rows, "
        f"{prompt_len} prompt tokens, {new_tokens} new tokens, {'greedy' if greedy else 'T=1, top-k 40'}, "
        f"{str(dtype).removeprefix('torch.')}; 1 warm-up + {repeats} alternating calls each (median)")
    full: dict[str, Timed] = alternate({k: v[0] for k, v in names.items()}, repeats, device)
    first: dict[str, Timed] = alternate({k: v[1] for k, v in names.items()}, repeats, device)
    reference = full["ours, dynamic cache"].result
    rows = []
    for name, t in full.items():
        tokens = sum(len(seq) for seq in t.result)
        same = sum(a == b for a, b in zip(t.result, reference)) if greedy or name.startswith("ours") else None
        rows.append(GenerateRow(name, tokens / t.median, first[name].median, t.median, t.peak_gb, same,
                                len(reference)))
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model preset (default medium-large on CUDA, tiny on CPU)")
    p.add_argument("--batch", type=int, default=None, help="rows decoded together (default 256 on CUDA, 8 on CPU)")
    p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 128 on CUDA, 32 on CPU)")
    p.add_argument("--new-tokens", type=int, default=None, help="tokens per row (default 512 on CUDA, 16 on CPU)")
    p.add_argument("--samples-per-prompt", type=int, default=1,
                   help="1: greedy; N > 1: batch / N prompts sampled N times each (T=1, top-k 40), the GRPO shape")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile our static decode step (default on CUDA only)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per contender, after one warm-up (default 3)")
    add_device_args(p)


def run(args: argparse.Namespace) -> None:
    require_positive_flags(batch=args.batch, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                           samples_per_prompt=args.samples_per_prompt, repeats=args.repeats)
    device = device_of(args)
    gpu = device.type == "cuda"
    batch, prompt_len = per_device(args.batch, device, 256, 8), per_device(args.prompt_len, device, 128, 32)
    new_tokens = per_device(args.new_tokens, device, 512, 16)
    for line in environment(device):
        print(line)
    rows = bench_generate(per_device(args.model, device, "medium-large", "tiny"), device, batch=batch,
                          prompt_len=prompt_len, new_tokens=new_tokens, samples_per_prompt=args.samples_per_prompt,
                          compile=per_device(args.compile, device, True, False),
                          dtype=torch.bfloat16 if gpu else torch.float32, repeats=args.repeats)
    print(markdown(["", "tokens/s", "first token ms", "call s", "peak GB", "same ids as ours"],
                   [[r.name, f"{r.tokens_per_s:,.0f}", f"{r.first_token_s * 1e3:.1f}", f"{r.call_s:.3f}",
                     fmt_gb(r.peak_gb), "n/a (other RNG)" if r.same_as_ours is None else f"{r.same_as_ours}/{r.rows}"]
                    for r in rows]))
    best = max(r.tokens_per_s for r in rows[:2])
    print(f"best of ours / transformers generate: {best / rows[2].tokens_per_s:.2f}x tokens/s; "
          f"/ transformers static cache: {best / rows[3].tokens_per_s:.2f}x")
