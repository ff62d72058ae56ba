"""Batched sampling with a KV cache: the one generation engine behind GRPO
rollouts, evaluation, ``generate`` and the HTTP server.

How a call runs:

1. Prompts of different lengths are left-padded into one batch and prefilled
   **once**; for ``n`` samples per prompt the cache rows are then repeated, so
   the 16 samples of a GRPO group share one prefill.
2. Each step samples one token for every unfinished row, at a temperature and
   optionally restricted to the top-k and/or top-p (nucleus) set. Sampling is
   the exponential race (argmax of p / q, q ~ Exp(1), an exact draw from p)
   with each prompt's noise from its own generator, so a prompt's samples depend
   on its seed alone, not on which other prompts share the batch: one process
   and several GRPO ranks, or a batched and a lone server request, draw alike.
3. A row finishes on a stop id (``tok.stop_ids``: our end-of-text), on a stop string or at
   ``max_new_tokens``. Finished rows are dropped from the batch (the cache is
   compacted once a quarter of the rows are done), so they stop costing compute.

``Engine(static_cache=True)`` decodes with a :class:`StaticKVCache` instead: each
step has one shape, the batch shrinks only to power-of-two sizes, and the buffers
(capacity rounded up to ``STATIC_CAPACITY_STEP``) are kept for the next call, so
``compile_backend="inductor"`` compiles the decode step once per size and, on CUDA,
replays it as a CUDA graph (``mode="reduce-overhead"``). Both caches give the same
tokens.

For RL every sample carries the log-probability of each token under the exact
distribution it was drawn from, and the ids of the tokens that distribution
kept (``keep_ids``), so the trainer can apply the same truncation when it
recomputes the policy ("keep sampling mask", see docs/GRPO.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model.kv_cache import KVCache, StaticKVCache
from ..model.precision import autocast, model_uses_bf16
from ..model.transformer import Transformer
from ..tokenizer.bpe import Tokenizer


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 512
    temperature: float = 1.0
    """0 means greedy decoding."""
    top_k: int | None = None
    top_p: float = 1.0
    """Nucleus mass; alone (no top_k) it is sought among the ``TOP_P_CANDIDATES`` most likely tokens."""
    stop_strings: tuple[str, ...] = ()
    """Generation ends once the completion text contains one of these (it is cut before it)."""
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Sample:
    """One completion of one prompt."""

    tokens: list[int]
    """Generated ids, including the end-of-text or stop-string token that ended it."""
    logprobs: torch.Tensor
    """(len(tokens),) float32: log-probability of each token under the sampling distribution."""
    keep_ids: torch.Tensor | None
    """(len(tokens), K) int32, -1 padded: the token ids the sampler could draw at each
    step; None when the whole vocabulary was allowed (no top-k/top-p, or greedy)."""
    finish_reason: Literal["stop", "length"]
    text: str = ""
    """Decoded completion, cut before a stop string, without the end-of-text token."""


@dataclass
class Row:
    prompt: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    keep: list[torch.Tensor] = field(default_factory=list)


def prompt_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (e.g. run seed, step, prompt index):
    nearby keys give unrelated streams, unlike ``seed + i``."""
    return int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0]) >> 1


STATIC_CAPACITY_STEP = 256
"""A static cache's slots are a multiple of this: calls of similar lengths share buffers and graphs."""

STATIC_MIN_ROWS = 8
"""A static batch shrinks no further: a decode step reads every weight whatever the row count,
so fewer rows save nothing, and each size is one more compiled graph."""

COMPILED_SHAPES = 64
"""dynamo's recompile limit while an engine compiles: one graph per (rows, capacity) pair,
shared by every engine, would pass the default 8 (it would then silently run eagerly)."""

TOP_P_CANDIDATES = 1024
"""Top-p without top-k looks for its nucleus among this many most likely tokens."""


def candidate_width(params: SamplingParams, vocab_size: int) -> int:
    """How many candidates a sampling step draws over: the vocabulary without
    truncation, else the top-k, else (top-p alone) the ``TOP_P_CANDIDATES`` most likely.

    The cap bounds what a sample records: its kept ids, (tokens, K), which the GRPO
    batch stacks to (N, C, K); with a 50K vocabulary and a flat distribution, top-p's
    nucleus could otherwise be most of it (tens of GB for a 256 x 512 rollout), and a
    full sort per step. It changes the distribution only where the nucleus is wider
    than 1024 tokens, which then keeps the 1024 most likely. Fixed per call, so each
    row's noise has one shape."""
    if params.top_k is None and params.top_p >= 1.0:
        return vocab_size
    return min(params.top_k or TOP_P_CANDIDATES, vocab_size)


def sample_next(logits: torch.Tensor, params: SamplingParams, noise: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Draw one token per row from (R, V) logits.

    ``noise`` (R, W) holds Exp(1) draws over the ``candidate_width`` candidates
    (fresh ones from torch's global generator when None); the token is the
    candidate maximising p / q, which is distributed exactly as p.

    Returns (tokens (R,), log-probs (R,) under the truncated, tempered
    distribution, kept ids (R, K) or None). Greedy decoding reports the
    log-softmax of the raw logits.
    """
    logits = logits.float()
    if params.temperature == 0:
        tokens = logits.argmax(dim=-1)
        return tokens, F.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1), None
    logits = logits / params.temperature
    ids = None
    if params.top_k is not None or params.top_p < 1.0:
        # Work in the sorted candidate set: the top-k logits, or the whole sorted vocabulary.
        logits, ids = logits.topk(candidate_width(params, logits.shape[-1]), dim=-1)  # (R, K), descending
        if params.top_p < 1.0:
            probs = F.softmax(logits, dim=-1)
            # Drop a candidate once the mass before it already reaches top_p (the first always stays).
            drop = probs.cumsum(dim=-1) - probs >= params.top_p
            logits = logits.masked_fill(drop, float("-inf"))
            ids = ids.masked_fill(drop, -1)
    logp = F.log_softmax(logits, dim=-1)  # (R, W)
    if noise is None:
        noise = torch.empty_like(logp).exponential_()
    choice = (logp.exp() / noise).argmax(dim=-1, keepdim=True)  # (R, 1); a dropped candidate has p = 0
    if ids is None:
        return choice.squeeze(1), logp.gather(1, choice).squeeze(1), None
    return ids.gather(1, choice).squeeze(1), logp.gather(1, choice).squeeze(1), ids


class _PromptNoise:
    """Exp(1) noise for each row from its prompt's own generator.

    Every step, each prompt with a live row draws (num_samples, W) values, so
    sample s of prompt p sees the same stream whatever the batch around it and
    whenever finished rows are compacted away."""

    def __init__(self, seeds: Sequence[int], num_samples: int, width: int, device: torch.device) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.num_samples, self.width, self.device = num_samples, width, device

    def draw(self, active: list[int], live: list[bool]) -> torch.Tensor:
        """(len(active), W) noise; ``active[j]`` is the row (prompt * n + sample) in cache row j."""
        out = torch.ones(len(active), self.width, device=self.device)
        by_prompt: dict[int, list[tuple[int, int]]] = {}
        for j, r in enumerate(active):
            if live[j]:
                by_prompt.setdefault(r // self.num_samples, []).append((j, r % self.num_samples))
        for p, slots in by_prompt.items():
            q = torch.empty(self.num_samples, self.width, device=self.device).exponential_(
                generator=self.generators[p])
            rows, samples = zip(*slots)
            out[list(rows)] = q[list(samples)]
        return out


def row_stopped(tok: Tokenizer, row: Row, params: SamplingParams) -> bool:
    """Whether ``row``'s last token ended it: a stop id (end-of-text), or a stop string now in its text."""
    if row.tokens[-1] in tok.stop_ids:
        return True
    if not params.stop_strings:
        return False
    # Only the tail can complete a stop string that was not there one token ago.
    tail = tok.decode(row.tokens[-16:])
    return any(s in tail for s in params.stop_strings)


def finish_row(tok: Tokenizer, row: Row, reason: Literal["stop", "length"], params: SamplingParams) -> Sample:
    """The :class:`Sample` of a finished row: its text cut before a stop string."""
    body = row.tokens[:-1] if row.tokens and row.tokens[-1] in tok.stop_ids else row.tokens
    text = tok.decode(body)
    for s in params.stop_strings:
        if s in text:
            text = text[:text.index(s)]
    if reason == "length":
        # The budget can end inside a multi-byte character; its bytes decode to U+FFFD,
        # which is no text the model wrote (stream_text holds it back the same way).
        text = text.rstrip("\ufffd")
    keep = None
    if row.keep:
        width = max(k.numel() for k in row.keep)
        keep = torch.full((len(row.keep), width), -1, dtype=torch.int32)  # ids < 2**31; half of int64
        for t, k in enumerate(row.keep):
            keep[t, :k.numel()] = k
    return Sample(list(row.tokens), torch.tensor(row.logprobs, dtype=torch.float32), keep, reason, text)


def prefill(model: Transformer, prompts: list[list[int]], capacity: int, dtype: torch.dtype, pad_id: int = 0
            ) -> tuple[KVCache, torch.Tensor]:
    """Left-pad the prompts into one batch and run them once into a fresh cache of
    ``capacity`` slots; returns the cache and the (P, 1, V) last-position logits.
    Under autograd the cache stays in the graph (the GRPO trainer relies on it)."""
    device = model.embed_tokens.weight.device
    longest = max(len(p) for p in prompts)
    pad = torch.tensor([longest - len(p) for p in prompts], device=device)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long, device=device)  # (P, L)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):] = torch.tensor(p, dtype=torch.long)
    cache = KVCache.empty(model.cfg, len(prompts), capacity, device, dtype, pad)
    _, logits = model(ids, cache=cache, last_only=True)
    return cache, logits


def decode_step(model: Transformer, tokens: torch.Tensor, cache: KVCache | StaticKVCache) -> torch.Tensor:
    """One token per row, (R,) ids -> (R, V) next-token logits; the unit ``Engine`` compiles."""
    _, logits = model(tokens[:, None], cache=cache)
    return logits[:, -1]


def sampler_precision(model: Transformer) -> tuple[torch.dtype, contextlib.AbstractContextManager]:
    """(KV-cache dtype, autocast) the engine samples under: bf16 when the model runs in bf16
    (on CUDA by default, anywhere with ``precision=bf16``: the cache in bf16 halves its memory;
    logits are still sampled in fp32), else the weights' dtype. The GRPO scorer recomputes
    log-probs under the same, so on-policy pi_theta / pi_old is 1 up to kernel noise rather
    than the bf16-vs-fp32 gap."""
    if model_uses_bf16(model):
        return torch.bfloat16, autocast(model.embed_tokens.weight.device, True)
    return model.embed_tokens.weight.dtype, contextlib.nullcontext()


class Engine:
    """Generates from a :class:`Transformer` with a :class:`Tokenizer`.

    Args:
        compact_fraction: with the dynamic cache, drop finished rows once this
            share of the batch is done.
        static_cache: decode with a :class:`StaticKVCache` (one shape per step).
        compile_backend: a ``torch.compile`` backend for the decode step, e.g.
            "inductor"; implies ``static_cache``. On CUDA, inductor records CUDA graphs.
    """

    def __init__(self, model: Transformer, tokenizer: Tokenizer, *, compact_fraction: float = 0.25,
                 static_cache: bool = False, compile_backend: str | Callable | None = None):
        self.model = model
        self.tok = tokenizer
        self.compact_fraction = compact_fraction
        self.static_cache = static_cache or compile_backend is not None
        self.graphs = compile_backend == "inductor" and self.device.type == "cuda"
        self._decode = decode_step
        if compile_backend is not None:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_SHAPES)
            self._decode = torch.compile(decode_step, backend=compile_backend, fullgraph=True, dynamic=False,
                                         mode="reduce-overhead" if self.graphs else None)
        self._buffers: StaticKVCache | None = None

    def free_cache(self) -> None:
        """Drop the static cache's buffers (they are otherwise kept for the next call)."""
        self._buffers = None

    def _static_rows(self, prefilled: KVCache, rows: torch.Tensor, capacity: int) -> StaticKVCache:
        """The kept buffers (reallocated when too small or of another capacity or dtype),
        loaded with ``rows`` of the prefilled cache."""
        capacity = min(-(-capacity // STATIC_CAPACITY_STEP) * STATIC_CAPACITY_STEP, self.model.cfg.max_seq_len)
        b = self._buffers
        if b is None or b.batch < len(rows) or b.capacity != capacity or b.k[0].dtype != prefilled.k[0].dtype:
            self._buffers = b = None  # free the old buffers (both references) before allocating the new ones
            b = self._buffers = StaticKVCache.empty(self.model.cfg, len(rows), capacity, self.device,
                                                    prefilled.k[0].dtype)
        return self._marked(b.load_(prefilled, rows))

    def _marked(self, cache: StaticKVCache) -> StaticKVCache:
        if self.graphs:  # a replayed graph reads and writes these in place, at fixed addresses
            for t in (*cache.k, *cache.v, cache.pad, cache.slot):
                torch._dynamo.mark_static_address(t)
        return cache

    def _decode_next(self, tokens: torch.Tensor, cache: KVCache | StaticKVCache) -> torch.Tensor:
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        return self._decode(self.model, tokens, cache)

    def _compaction(self, live: torch.Tensor) -> torch.Tensor | None:
        """The cache rows to keep, or None to keep them all.

        Dynamic cache: the live rows, once ``compact_fraction`` are finished.
        Static cache: the batch halves (or more) to the power of two at or above
        the live count (at least ``STATIC_MIN_ROWS``), padded with finished rows, so a
        compiled step sees few sizes."""
        n, alive = len(live), int(live.sum())
        if not self.static_cache:
            return live.nonzero().squeeze(1) if n - alive >= max(1, self.compact_fraction * n) else None
        size = max(STATIC_MIN_ROWS, 1 << max(0, alive - 1).bit_length())
        if size >= n:
            return None
        filler = (~live).nonzero().squeeze(1)[:size - alive]
        return torch.cat([live.nonzero().squeeze(1), filler]).sort().values

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams, num_samples: int = 1, *,
                 seeds: Sequence[int] | None = None) -> list[list[Sample]]:
        """``num_samples`` completions for each prompt (token ids), grouped by prompt.

        Prompt i samples from its own generator, seeded by ``seeds[i]``, else by
        ``prompt_seed(params.seed, i)``, else at random."""
        *_, groups = self._run(prompts, params, num_samples, stream=False, seeds=seeds)
        return groups  # type: ignore[return-value]

    @torch.no_grad()
    def stream(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield the tokens of one completion as they are generated."""
        for event in self._run([prompt], params, 1, stream=True):
            if isinstance(event, int):
                yield event

    def _run(self, prompts: list[list[int]], params: SamplingParams, num_samples: int, stream: bool,
             seeds: Sequence[int] | None = None):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        longest = max(len(p) for p in prompts)
        capacity = min(longest + params.max_new_tokens, self.model.cfg.max_seq_len)
        if capacity <= longest:
            raise ValueError(f"prompt of {longest} tokens leaves no room in the {self.model.cfg.max_seq_len}-token "
                             f"context")
        was_training = self.model.training
        self.model.eval()
        noise = None
        if params.temperature > 0:
            if seeds is None:
                base = params.seed if params.seed is not None else int(torch.randint(2**62, ()).item())
                seeds = [prompt_seed(base, i) for i in range(len(prompts))]
            noise = _PromptNoise(seeds, num_samples, candidate_width(params, self.model.cfg.vocab_size),
                                 self.device)
        dtype, autocast = sampler_precision(self.model)
        with autocast:
            # The static path prefills into a cache of the prompts' length, then copies it into its buffers.
            prefilled, logits = prefill(self.model, prompts, longest if self.static_cache else capacity, dtype,
                                        self.tok.pad_id)
            # Share each prompt's prefill among its samples: repeat its cache rows.
            rows_idx = torch.arange(len(prompts), device=self.device).repeat_interleave(num_samples)
            logits = logits[:, -1][rows_idx]
            cache = (self._static_rows(prefilled, rows_idx, capacity) if self.static_cache
                     else prefilled.select(rows_idx))
            del prefilled
            rows = [Row(prompt=i // num_samples) for i in range(len(prompts) * num_samples)]
            active = list(range(len(rows)))  # rows[active[j]] lives in cache row j
            live = torch.ones(len(active), dtype=torch.bool)  # on the host: read row by row, never a device sync
            done: dict[int, Sample] = {}
            for step in range(capacity - longest):
                tokens, logps, keep = sample_next(logits, params, noise.draw(active, live.tolist()) if noise else None)
                tokens_list, logps_list = tokens.tolist(), logps.tolist()
                keep_host = keep.cpu() if keep is not None else None  # one copy per step, not one per row
                for j, r in enumerate(active):
                    if not live[j]:
                        continue
                    row = rows[r]
                    row.tokens.append(tokens_list[j])
                    row.logprobs.append(logps_list[j])
                    if keep_host is not None:
                        row.keep.append(keep_host[j][keep_host[j] >= 0])
                    if stream:
                        yield tokens_list[j]
                    if row_stopped(self.tok, row, params):
                        done[r] = finish_row(self.tok, row, "stop", params)
                        live[j] = False
                if not live.any() or step == capacity - longest - 1:
                    break
                if (keep_rows := self._compaction(live)) is not None:
                    active, live = [active[j] for j in keep_rows.tolist()], live[keep_rows]
                    keep_rows = keep_rows.to(self.device)
                    tokens = tokens[keep_rows]
                    cache = (self._marked(self._buffers.compact_(keep_rows)) if isinstance(cache, StaticKVCache)
                             else cache.select(keep_rows))
                logits = self._decode_next(tokens, cache)
        for r, row in enumerate(rows):
            if r not in done:
                done[r] = finish_row(self.tok, row, "length", params)
        self.model.train(was_training)
        yield [[done[p * num_samples + s] for s in range(num_samples)] for p in range(len(prompts))]


class TextStream:
    """Incremental text of one completion, token by token (what :func:`stream_text` and the
    server's streams emit).

    Byte-level BPE can split one character over several tokens, so the text is
    re-decoded and only the new, complete suffix is emitted (a trailing U+FFFD
    means a character is still incomplete). End-of-text or a stop string ends it."""

    def __init__(self, tok: Tokenizer, stop_strings: Sequence[str]):
        self.tok, self.stop_strings = tok, tuple(stop_strings)
        self.tokens: list[int] = []
        self.shown, self.done = "", False

    def feed(self, token: int) -> str:
        """The new text after ``token`` ("" when none is complete yet, or once done)."""
        if self.done:
            return ""
        if token in self.tok.stop_ids:
            self.done = True
            return ""
        self.tokens.append(token)
        text = self.tok.decode(self.tokens)
        if text.endswith("\ufffd"):
            return ""
        stop = next((s for s in self.stop_strings if s in text), None)
        if stop is not None:
            text, self.done = text[:text.index(stop)], True
        piece = text[len(self.shown):] if len(text) > len(self.shown) else ""
        self.shown = max(self.shown, text, key=len)
        return piece


def stream_text(engine: Engine, prompt: str | list[int], params: SamplingParams) -> Iterator[str]:
    """Yield the completion of ``prompt`` as text pieces, as tokens arrive (see :class:`TextStream`).
    A text prompt starts after the start ids (our end-of-text, as every training document); ids are used as given."""
    ids = prompt if isinstance(prompt, list) else engine.tok.start_ids + engine.tok.encode(prompt)
    text = TextStream(engine.tok, params.stop_strings)
    for token in engine.stream(ids, params):
        if piece := text.feed(token):
            yield piece
        if text.done:
            break
