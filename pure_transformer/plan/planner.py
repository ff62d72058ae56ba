"""Will a run fit in memory and finish in time? A planner, before 48 hours are committed.

``pure-transformer plan --config a100_2day --gpu a100-80gb`` (and every run's first lines)
prints one block: the memory of each component at the run's shape, the peak, the FLOPs
per token, the throughput the plan's token budget needs in its hours, and the MFU that
implies on the GPU's peak, with a verdict on each.

Memory is counted from what the code allocates, not from a rule of thumb:

- weights, gradients and AdamW's two moments are fp32 (4 bytes a parameter each);
- activations are the tensors autograd saves, per layer, as :mod:`pure_transformer.model.transformer`
  runs: under bf16 autocast (CUDA) the residual stream and the RMSNorms stay fp32 while
  the matmuls save bf16 casts of their inputs, one cast per projection (autocast caches
  weights, not activations); on CPU everything is fp32. ``tests/test_plan.py`` checks the
  per-layer count against autograd's saved tensors and the peak against measured CPU peaks;
- the chunked loss (:mod:`pure_transformer.model.losses`) holds the hidden-state and head
  gradients for the whole micro-batch and, at its worst moment, the previous chunk's
  logits, the current chunk's and ``logsumexp``'s temporary of the same size;
- the peak is what is always resident (weights, AdamW state) plus the larger of the
  forward/backward phase and the optimizer step (CPU AdamW's per-tensor temporaries;
  CUDA's fused AdamW has none).

Bytes are reported in GB (1e9 bytes), as ``peak_mem_gb`` and the benchmarks do. The
planner models one process (no FSDP sharding) in eager mode: ``compile`` fuses
elementwise ops and saves less, so a compiled run should come in under the plan.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError
from ..model.config import ModelConfig
from ..model.losses import LOSS_CHUNK
from ..model.losses import loss_chunk as device_loss_chunk  # pretrain_memory has a parameter of that name
from .hardware import GPU_SPECS

if TYPE_CHECKING:  # the configs only as types: `plan` imports no more than it runs
    from ..config.pretrain import PretrainConfig
    from ..config.rl import GRPOConfig

Checkpointing = bool | Literal["selective"]
ACHIEVABLE_MFU = 0.4
"""The MFU a plan may count on; the one ``estimated_hours_at_40pct_mfu`` already uses."""
FREE_SHARE = 0.1
"""A plan fits when it leaves this share of the device free: the CUDA context and the caching
allocator's fragmentation are outside the count (``max_memory_allocated`` excludes them too)."""
MEDQA_PROMPT_TOKENS = 512
"""The longest prompt a GRPO batch is planned for: MedQA averages ~250 tokens a question
(data/registry.py), and the longest prompt of a batch sets its cache's width."""
MEDQA_TRAIN_QUESTIONS = 9_669
"""MedQA-USMLE's 10,178 training questions less the 1 in 20 held out for validation."""
MODES: tuple[Checkpointing, ...] = (False, "selective", True)
MODE_NAMES = {False: "off", "selective": "selective", True: "full"}


@dataclass(frozen=True)
class Precision:
    """Bytes per element: ``compute`` for what the matmuls produce (bf16 under autocast),
    ``stream`` for the residual stream and the norms (the weights' fp32 either way)."""

    compute: int
    stream: int = 4

    @property
    def autocast(self) -> bool:
        return self.compute != self.stream

    @property
    def label(self) -> str:
        return "bf16 autocast" if self.autocast else "fp32"


BF16_AUTOCAST, FP32 = Precision(2), Precision(4)


@dataclass(frozen=True)
class Target:
    """The device a plan is judged against; ``peak_flops`` None where unknown (a CPU)."""

    name: str
    memory_bytes: int
    peak_flops: float | None
    precision: Precision
    """How a run computes there: bf16 autocast on a GPU, fp32 on a CPU."""
    loss_chunk: int = LOSS_CHUNK
    """Rows per chunk of the training loss there (:func:`pure_transformer.model.losses.loss_chunk`)."""


@dataclass(frozen=True)
class Component:
    name: str
    bytes: int
    note: str
    phase: str = "resident"
    """"resident" is held throughout; the peak adds the largest of the other phases
    ("forward+backward" counts in both)."""


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int
    head: int
    """0 when tied to the embedding."""
    block_matmul: int
    """The projections of all blocks: what autocast keeps bf16 copies of."""
    largest: int
    """The biggest single tensor (CPU AdamW's temporaries are sized by it)."""


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter counts from the shape (equal to ``Transformer.num_params()``)."""
    C, q, kv = cfg.dim, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim  # q == C unless head_size is set
    per_block = 2 * C * q + 2 * C * kv + 3 * C * cfg.ffn_dim  # q, o; k, v; gate, up, down
    vectors = 2 * C + (q + 2 * kv if cfg.qkv_bias else 0) + (2 * cfg.head_dim if cfg.qk_norm else 0)
    embedding = cfg.vocab_size * C
    head = 0 if cfg.tie_embeddings else embedding
    total = embedding + head + cfg.n_layers * (per_block + vectors) + C
    return ParamCounts(total, embedding, head, cfg.n_layers * per_block, max(embedding, C * cfg.ffn_dim))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """``Transformer.flops_per_token``'s formula (6 N + 12 L H D T) from the shape alone."""
    p = param_counts(cfg)
    matmul = p.total - p.embedding + (p.embedding if cfg.tie_embeddings else 0)
    return 6 * matmul + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def layer_saved_bytes(cfg: ModelConfig, tokens: int, mode: Checkpointing, prec: Precision) -> int:
    """Bytes one block leaves saved for backward over ``tokens`` tokens.

    Off: the block input and both norms' fp32 output and gain product, the projections'
    inputs (one cast per projection under autocast: 3 for q/k/v, 2 for gate/up), RoPE'd
    q and k and v and the attention output (SDPA's saved set; RoPE itself keeps only its
    tables), SwiGLU's gate, SiLU, up and product, and the small per-row norms and log-sum-exp.
    Selective keeps the outputs of every matmul (q, k, v, o, gate, up, down) and of SDPA,
    plus the input. Full keeps the input alone."""
    C, kv, F, s, c = cfg.dim, cfg.kv_heads * cfg.head_dim, cfg.ffn_dim, prec.stream, prec.compute
    q = cfg.n_heads * cfg.head_dim  # the query and attention-output width: C unless head_size is set
    small = tokens * (2 * 4 + 4 * cfg.n_heads)  # two rstd columns and SDPA's lse, fp32
    if mode is True:
        return tokens * C * s
    if mode == "selective":  # q, k, v, o, gate, up, down and SDPA's output
        return tokens * (C * s + (2 * C + 2 * q + 2 * kv + 2 * F) * c) + tokens * 4 * cfg.n_heads
    casts = (3 + 2) if prec.autocast else 2  # the inputs the projections save
    return tokens * (4 * C * s + casts * C * c + 2 * q * c + 2 * kv * c + 4 * F * c) + small


def loss_components(cfg: ModelConfig, rows: int, prec: Precision, chunk: int = LOSS_CHUNK) -> list[Component]:
    """The head and loss of one micro-batch of ``rows`` tokens, ``chunk`` rows of logits at a
    time, in the forward/backward phase."""
    V, C, s, c, a = cfg.vocab_size, cfg.dim, prec.stream, prec.compute, 4
    final = Component("final norm (input, output, hidden)", 3 * rows * C * s, "3 x rows x dim, fp32", "forward")
    if rows <= chunk:  # the plain path: logits (and their fp32 log-softmax) for every row
        live = rows * V * (c + 3 * a)  # logits kept by the caller, log-softmax saved, two gradients in backward
        return [final, Component("logits + cross-entropy", live, f"rows x vocab x ({c} + 3 x 4)", "backward")]
    sizes = [min(chunk, rows - i) for i in range(0, rows, chunk)]
    prev_held = 0  # what the loop's `grad` still holds of the previous chunk
    worst = 0
    for k, n in enumerate(sizes):
        prev = sizes[k - 1] if k else 0
        at_cast = prev_held + (prev * a if prec.autocast else 0) + n * c + (n * a if prec.autocast else 0)
        at_lse = prev_held + 2 * n * a  # logsumexp builds a temporary as big as its input
        at_grad_w = n * a + (n * c if prec.autocast else 0)
        worst = max(worst, at_cast * V, at_lse * V, at_grad_w * V + V * C * (c + (a if prec.autocast else 0)))
        prev_held = n * (c if prec.autocast else a)
    kept = rows * C * s + V * C * a  # grad_hidden and grad_weight, then the gradients backward returns
    out = [final, Component("chunked loss: saved gradients", kept, "rows x dim x 4 + vocab x dim x 4",
                            "forward+backward"),
           Component(f"chunked loss: {chunk}-row logits", worst, "previous + current chunk + logsumexp temporary",
                     "forward")]
    if prec.autocast:
        out.append(Component("chunked loss: bf16 head copy", V * C * c, "vocab x dim x 2", "forward"))
    return out


def pretrain_memory(cfg: ModelConfig, micro_batch: int, seq_len: int, checkpointing: Checkpointing,
                    accum_steps: int, prec: Precision, loss_chunk: int = LOSS_CHUNK) -> list[Component]:
    """Every component of one pretraining step's memory (see the module docstring)."""
    p, N, L = param_counts(cfg), micro_batch * seq_len, cfg.n_layers
    mode_name = MODE_NAMES[checkpointing]
    out = [Component("weights (fp32)", 4 * p.total, "params x 4"),
           Component("AdamW moments (fp32)", 8 * p.total, "2 x params x 4")]
    if accum_steps > 1:  # micro-batches 2.. run with the previous ones' gradients held
        out.append(Component("gradients (fp32, accumulating)", 4 * p.total, "params x 4", "forward+backward"))
    if prec.autocast:
        out.append(Component("bf16 weight copies (autocast cache)", 2 * p.block_matmul, "block matmul params x 2",
                             "forward+backward"))
    out.append(Component(f"activations, checkpointing {mode_name}", L * layer_saved_bytes(cfg, N, checkpointing, prec)
                         + N * 8, f"{L} layers x saved bytes of {micro_batch} x {seq_len} tokens", "forward+backward"))
    C, kv, F, s, c = cfg.dim, cfg.kv_heads * cfg.head_dim, cfg.ffn_dim, prec.stream, prec.compute
    if checkpointing:  # backward rebuilds one block at a time, less what the block kept
        kept = N * C * s + (N * (kv + C + 2 * F) * c if checkpointing == "selective" else 0)
        out.append(Component("one block recomputed in backward", layer_saved_bytes(cfg, N, False, prec) - kept,
                             "off minus what is kept, one layer", "backward"))
    out.append(Component("block gradients in flight", N * (3 * F * c + 2 * C * s), "rows x (3 x ffn x c + 2 x dim x 4)",
                         "backward"))
    out += loss_components(cfg, N, prec, loss_chunk)
    out.append(Component("gradients (fp32)", 4 * p.total, "params x 4", "optimizer step"))
    if not prec.autocast:  # CPU AdamW runs tensor by tensor: sqrt and a division of the largest one
        out.append(Component("AdamW temporaries (CPU, per tensor)", 8 * p.largest, "2 x largest tensor x 4",
                             "optimizer step"))
    return out


def grpo_memory(cfg: ModelConfig, prompts: int, samples: int, micro_batch: int, new_tokens: int, prec: Precision,
                prompt_tokens: int = MEDQA_PROMPT_TOKENS, reference_pass: bool = True) -> list[Component]:
    """GRPO's memory: policy, reference, AdamW, then the rollout (KV cache of every sample at
    prompt + budget), the reference pass and the update of ``micro_batch`` rows, whichever is largest.

    The update scores completions on top of a repeated prompt cache with a (rows, 1, W, S) mask;
    with GQA no fused SDPA kernel takes that, so the attention probabilities are counted as saved."""
    p, L, V, c = param_counts(cfg), cfg.n_layers, cfg.vocab_size, prec.compute
    prompt_tokens = max(1, min(prompt_tokens, cfg.max_seq_len - new_tokens))  # run_plan fits prompts to the context
    width = prompt_tokens + new_tokens
    kv_row = L * 2 * cfg.kv_heads * cfg.head_dim * c  # bytes per cached token
    rows = prompts * samples
    logits = micro_batch * new_tokens * V
    probs = (L * micro_batch * cfg.n_heads * new_tokens * width * c) if cfg.kv_heads != cfg.n_heads else 0
    update_acts = L * layer_saved_bytes(cfg, micro_batch * new_tokens, False, prec) + probs
    return [Component("policy weights (fp32)", 4 * p.total, "params x 4"),
            Component("reference model (fp32 copy)", 4 * p.total, "params x 4"),
            Component("AdamW moments (fp32)", 8 * p.total, "2 x params x 4"),
            Component(f"rollout KV cache, {prompts} x {samples} rows", rows * width * kv_row,
                      f"rows x ({prompt_tokens} + {new_tokens}) x {L} x 2 x kv_heads x head_dim x {c}", "rollout"),
            Component("rollout prefill attention (one layer)", prompts * cfg.n_heads * prompt_tokens * width * c,
                      "prompts x heads x prompt x width", "rollout"),
            Component("reference logits + log-probs" if reference_pass else "reference pass (none: kl_coef 0)",
                      logits * (c + 4 + 4) if reference_pass else 0, "rows x budget x vocab x (c + 4 + 4)",
                      "reference"),
            Component("update: gradients (fp32)", 4 * p.total, "params x 4", "update"),
            Component("update: bf16 weight copies" if prec.autocast else "update: (no autocast copies)",
                      2 * p.block_matmul if prec.autocast else 0, "block matmul params x 2", "update"),
            Component(f"update: activations of {micro_batch} x {new_tokens}", update_acts,
                      "layers x saved bytes" + (" + attention probabilities" if probs else ""), "update"),
            Component("update: repeated prompt cache", micro_batch * width * kv_row, "rows x width x kv bytes",
                      "update"),
            Component("update: logits, log-probs and their gradient", logits * (c + 4 + 4 + 1 + 4),
                      "rows x budget x vocab x (c + fp32 copy + logsumexp + mask + grad)", "update")]


def peak_bytes(components: list[Component]) -> tuple[int, str]:
    """(resident + the largest phase, that phase's name)."""
    resident = sum(x.bytes for x in components if x.phase == "resident")
    phases: dict[str, int] = {}
    for x in components:
        for phase in x.phase.split("+") if x.phase != "resident" else ():
            phases[phase] = phases.get(phase, 0) + x.bytes
    worst = max(phases, key=phases.__getitem__) if phases else "resident"
    return resident + phases.get(worst, 0), worst


@dataclass(frozen=True)
class TimePlan:
    flops_per_token: int
    tokens: int
    hours: float | None
    peak_flops: float | None
    note: str = ""

    @property
    def required_tokens_per_s(self) -> float | None:
        return self.tokens / (self.hours * 3600) if self.hours else None

    @property
    def implied_mfu(self) -> float | None:
        rate = self.required_tokens_per_s
        return rate * self.flops_per_token / self.peak_flops if rate and self.peak_flops else None

    @property
    def hours_at_achievable(self) -> float | None:
        if not self.peak_flops:
            return None
        return self.tokens * self.flops_per_token / (ACHIEVABLE_MFU * self.peak_flops) / 3600


def time_plan(flops: int, tokens: int, hours: float | None, peak_flops: float | None, note: str = "") -> TimePlan:
    return TimePlan(flops, tokens, hours, peak_flops, note)


def verdict(peak: int, target: Target, tp: TimePlan) -> list[str]:
    """One line on memory (fits, and by how much), one on time (on time, and the margin)."""
    usable = target.memory_bytes * (1 - FREE_SHARE)
    spare = target.memory_bytes - peak
    fits = peak <= usable
    lines = [f"memory: {'fits' if fits else 'does NOT fit'}: peak {_gb(peak)} of {_gb(target.memory_bytes)}, "
             f"{_gb(abs(spare))} ({abs(spare) / target.memory_bytes:.0%}) {'to spare' if spare >= 0 else 'over'}"
             + ("" if fits or spare < 0 else f" (under the {FREE_SHARE:.0%} kept free)")]
    if tp.implied_mfu is None:
        why = "no budget_hours in this config" if not tp.hours else f"no peak FLOP/s known for {target.name}"
        at = f"; {tp.hours_at_achievable:.2g} h at {ACHIEVABLE_MFU:.0%} MFU" if tp.hours_at_achievable else ""
        lines.append(f"time: no verdict ({why}){at}")
    else:
        ok = tp.implied_mfu <= ACHIEVABLE_MFU
        lines.append(f"time: {'on time' if ok else 'NOT on time'}: {tp.hours:g} h needs "
                     f"{tp.required_tokens_per_s:,.0f} "
                     f"tokens/s = {tp.implied_mfu:.1%} MFU (<= {ACHIEVABLE_MFU:.0%} counted on); at "
                     f"{ACHIEVABLE_MFU:.0%} MFU it takes {tp.hours_at_achievable:.1f} h, "
                     f"{abs(tp.hours - tp.hours_at_achievable):.1f} h {'early' if ok else 'late'}")
    return lines


@dataclass(frozen=True)
class Plan:
    title: str
    target: Target
    precision: Precision
    components: list[Component]
    time: TimePlan
    alternatives: dict[str, int] = field(default_factory=dict)
    """Peak bytes under other settings (each checkpointing mode), for the table's last line."""

    @property
    def peak(self) -> int:
        return peak_bytes(self.components)[0]

    def render(self, detail: bool = True) -> str:
        """One block: header, the components (one line of them unless ``detail``), the
        alternatives, the FLOPs and the verdicts."""
        peak, phase = peak_bytes(self.components)
        tflops = f", {self.target.peak_flops / 1e12:g} TFLOP/s bf16" if self.target.peak_flops else ""
        lines = [f"plan: {self.title} on {self.target.name} ({_gb(self.target.memory_bytes)}{tflops}), "
                 f"{self.precision.label}"]
        if detail:
            for x in self.components:
                if x.bytes:
                    lines.append(f"  {x.name:<46}{_gb(x.bytes):>10}  [{x.phase}] {x.note}")
            lines.append(f"  {'peak (resident + ' + phase + ')':<46}{_gb(peak):>10}")
        else:
            lines.append("  " + ", ".join(f"{x.name} {_gb(x.bytes)}" for x in self.components if x.bytes >= 0.01e9))
        if self.alternatives:
            lines.append("  peak by activation checkpointing: " + ", ".join(
                f"{k} {_gb(v)}" for k, v in self.alternatives.items()))
        t = self.time
        lines.append(f"  {t.flops_per_token:,} FLOPs/token x {t.tokens:,} tokens{t.note}")
        return "\n".join(lines + ["  " + v for v in verdict(peak, self.target, t)])


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def gpu_target(name: str) -> Target:
    """A GPU of :data:`pure_transformer.plan.hardware.GPU_SPECS`; unknown: a one-line ConfigError."""
    if name not in GPU_SPECS:
        raise ConfigError(f"unknown gpu '{name}'; choose one of: {', '.join(GPU_SPECS)}")
    memory, flops = GPU_SPECS[name]
    return Target(name, memory, flops, BF16_AUTOCAST)


def device_target(device: "object") -> Target:
    """The device a run is on: a CUDA device's total memory and known peak, else this machine's RAM."""
    import torch

    from .hardware import device_peak_flops

    dev = torch.device(device)  # type: ignore[call-overload]
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return Target(props.name, props.total_memory, device_peak_flops(dev), BF16_AUTOCAST, device_loss_chunk(dev))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return Target(f"{dev.type} (RAM)", ram, None, FP32, device_loss_chunk(dev))


def pretrain_plan(cfg: "PretrainConfig", model_cfg: ModelConfig, target: Target, name: str = "",
                  prec: Precision | None = None, world_size: int = 1) -> Plan:
    """The plan of a :class:`~pure_transformer.config.pretrain.PretrainConfig` on ``target``."""
    prec = prec or target.precision
    accum = cfg.accum_steps(world_size)
    shape = dict(micro_batch=cfg.micro_batch, seq_len=cfg.seq_len, accum_steps=accum, prec=prec,
                 loss_chunk=target.loss_chunk)
    components = pretrain_memory(model_cfg, checkpointing=cfg.activation_checkpointing, **shape)
    alternatives = {MODE_NAMES[m]: peak_bytes(pretrain_memory(model_cfg, checkpointing=m, **shape))[0] for m in MODES}
    tokens = math.ceil(cfg.total_tokens / cfg.global_batch_tokens) * cfg.global_batch_tokens
    tp = time_plan(flops_per_token(model_cfg, cfg.seq_len), tokens, cfg.budget_hours, target.peak_flops,
                   f" ({world_size} device{'s' if world_size > 1 else ''})")
    if world_size > 1 and tp.peak_flops:
        tp = dataclasses.replace(tp, peak_flops=tp.peak_flops * world_size)
    title = (f"{name + ': ' if name else ''}{cfg.model} ({param_counts(model_cfg).total:,} parameters), micro-batch "
             f"{cfg.micro_batch} x {cfg.seq_len} x {accum} accumulation, checkpointing "
             f"{MODE_NAMES[cfg.activation_checkpointing]}"
             + (" (compile on; planned eager, which saves more)" if cfg.compile else ""))
    return Plan(title, target, prec, components, tp, alternatives)


def grpo_plan(cfg: "GRPOConfig", model_cfg: ModelConfig, target: Target, new_tokens: int, name: str = "",
              prec: Precision | None = None, questions: int = MEDQA_TRAIN_QUESTIONS,
              world_size: int = 1) -> Plan:
    """The plan of a :class:`~pure_transformer.config.rl.GRPOConfig` on ``target``: memory per
    rank; time counts every sample at the full budget, sampled and scored by the reference once
    per rollout, and trained on ``updates_per_rollout`` times (2 + 2 + 6 x updates FLOPs a
    parameter a completion token), as :func:`pure_transformer.rl.train.grpo_step` does."""
    prec = prec or target.precision
    prompts = cfg.prompts_per_step // world_size
    components = grpo_memory(model_cfg, prompts, cfg.samples_per_prompt, cfg.micro_batch, new_tokens, prec,
                             reference_pass=bool(cfg.kl_coef))
    steps = math.ceil(cfg.epochs * questions / cfg.prompts_per_step)
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    tokens = steps * cfg.prompts_per_step * cfg.samples_per_prompt * new_tokens
    train_flops = flops_per_token(model_cfg, min(model_cfg.max_seq_len, MEDQA_PROMPT_TOKENS + new_tokens))
    # Sampling and the reference are a forward each (a third of training), once per rollout; only the
    # policy's forward and backward repeat for each of the updates on that rollout.
    flops = train_flops * cfg.updates_per_rollout + 2 * (train_flops // 3)
    peak = target.peak_flops * world_size if target.peak_flops else None
    tp = time_plan(flops, tokens, cfg.budget_hours, peak,
                   f" completion tokens ({steps:,} steps over {questions:,} questions, each sample at the "
                   f"{new_tokens}-token budget; decoding is memory-bound, so MFU flatters it)")
    title = (f"{name + ': ' if name else ''}GRPO of {param_counts(model_cfg).total:,} parameters, "
             f"{cfg.prompts_per_step} x {cfg.samples_per_prompt} samples, {new_tokens} new tokens, micro-batch "
             f"{cfg.micro_batch}")
    return Plan(title, target, prec, components, tp)


def plan_for(config: str, gpu: str, overrides: dict | None = None, model: str | None = None) -> Plan:
    """The plan of a named preset on a named GPU: a pretraining preset (``pretrain:a100_2day``, ...)
    or a GRPO one (``rl:grpo_usmle_2day``) for ``model`` (default medium-large, the design's). A bare
    name is the pretraining preset where both phases have it (``debug``), else the GRPO one.
    ``overrides`` are ``--set`` pairs on that config."""
    from ..config.overrides import apply_overrides, preset_names
    from ..config.pretrain import PRETRAIN_PRESETS, pretrain_preset
    from ..config.rl import GRPO_PRESETS, grpo_preset
    from ..model.config import model_preset

    target = gpu_target(gpu)
    phase, _, bare = config.rpartition(":")
    # A bare name means pretraining where both phases have it (debug, demo), as it always did.
    phase = phase or ("pretrain" if bare in PRETRAIN_PRESETS or bare not in GRPO_PRESETS else "rl")
    if phase not in ("pretrain", "rl") or bare not in (PRETRAIN_PRESETS if phase == "pretrain" else GRPO_PRESETS):
        raise ConfigError(f"unknown config '{config}'; choose one of: "
                          f"{', '.join(preset_names(PRETRAIN_PRESETS, 'pretrain') + preset_names(GRPO_PRESETS, 'rl'))}")
    if phase == "pretrain":
        cfg = apply_overrides(pretrain_preset(bare), {**(overrides or {}), **({"model": model} if model else {})})
        return pretrain_plan(cfg, model_preset(cfg.model), target, f"pretrain:{bare}")
    from ..mcq.answer_format import AnswerFormat

    rl = apply_overrides(grpo_preset(bare), overrides or {})
    fmt = AnswerFormat(rl.answer_format or "letter")  # the checkpoint's format when None; letter plans the least
    return grpo_plan(rl, model_preset(model or "medium-large"), target, rl.max_new_tokens or fmt.max_new_tokens(),
                     f"rl:{bare}")


def run_plan(cfg: "PretrainConfig | GRPOConfig", model_cfg: ModelConfig, device: "object",
             grpo_new_tokens: int | None = None, questions: int = MEDQA_TRAIN_QUESTIONS, world_size: int = 1) -> str:
    """The block a run prints at its start: its plan on the device it runs on (GRPO: with
    ``grpo_new_tokens`` and the run's number of training ``questions``)."""
    target = device_target(device)
    if grpo_new_tokens is not None:
        plan = grpo_plan(cfg, model_cfg, target, grpo_new_tokens, questions=questions, world_size=world_size)
    else:
        plan = pretrain_plan(cfg, model_cfg, target, world_size=world_size)
    return plan.render(detail=False)  # `pure-transformer plan` prints every component
