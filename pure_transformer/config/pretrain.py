"""Pretraining configuration and its named presets.

Presets are typed functions returning a :class:`PretrainConfig`; a YAML file
and ``--set key=value`` override any field (see :mod:`pure_transformer.config.overrides`).
The schedule is counted in tokens, so changing the batch shape or the number
of GPUs leaves the learning-rate curve as it was.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

from ..errors import ConfigError
from .overrides import pick_preset, require_positive

MAX_STEPS = 10**8
"""The 2-day 0.4B run is ~4,000 optimizer steps; a plan this long is a typo."""


DEFAULT_DATA_SHARDS = 16
"""Logical shards of the training stream (see :mod:`pure_transformer.data.loader`): 16 lets up to 16
readers (e.g. 8 ranks x 2 workers, or 4 x 4) share it evenly, while a single reader's 16 small pipelines
stay cheap. The loader reads it from here, the config that sets it."""


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run needs besides its output folder."""

    model: str = "medium-large"
    """Model preset name (``pure-transformer model info NAME``)."""
    tokenizer: str | None = None
    """Tokenizer folder, tokenizer.json or hub name; None trains a byte-level BPE
    of the model's vocabulary size on the bundled corpus into DIR/tokenizer."""
    init_from: str | None = None
    """Continued pretraining: a checkpoint (step or run folder, an imported open model included) whose
    weights, model config and tokenizer the run starts from, with a fresh optimizer and LR schedule.
    ``model`` and ``tokenizer`` are then the checkpoint's; the ledger starts with the checkpoint's."""
    sources: dict[str, float] = field(default_factory=lambda: {"fineweb-edu": 0.85, "medqa": 0.15})
    """Source name (or local path) -> mixture weight."""
    weight_by: Literal["tokens", "documents"] = "tokens"
    """Whether mixture weights count tokens (exact shares) or documents."""
    shuffle_buffer: int = 10_000
    """Documents per source in the seeded shuffle windows of all logical shards together
    (each shard's window holds ceil(shuffle_buffer / data_shards); docs/DATA.md)."""
    whole_mcqs: bool = False
    """Pack every MCQ that fits a sequence into one sequence, never split across two (text documents fill
    the gaps): the part of a question cut from its start would train the explanation and answer with no
    question to read."""
    document_masking: bool = False
    """Mask attention across the documents packed into one sequence."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 elsewhere; bf16: the CUDA code path on any device
    (:mod:`pure_transformer.model.precision`); fp32: no autocast."""
    answer_format: Literal["letter", "text", "explain"] = "letter"
    """How MCQ records are written as training text (:class:`~pure_transformer.mcq.answer_format.AnswerFormat`);
    saved with every checkpoint, so RL, evaluate and serve ask questions the same way."""

    seq_len: int = 2048
    micro_batch: int = 16
    """Sequences per forward/backward on one device."""
    global_batch_tokens: int = 524_288
    """Tokens per optimizer step over all devices and accumulation steps."""
    total_tokens: int = 2_000_000_000
    budget_hours: float | None = None
    """Wall-clock hours the plan is meant to finish in (``pure-transformer plan`` checks it)."""

    peak_lr: float = 3e-4
    min_lr: float = 3e-5
    embedding_lr: float | None = None
    """Peak LR of the input embedding; None uses peak_lr."""
    warmup_tokens: int = 100_000_000
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0

    log_every: int = 10
    val_every: int = 250
    val_tokens: int = 1_000_000
    """Held-out tokens per source at each validation."""
    val_mcq: int = 64
    """Validation questions (split over the mixture's MCQ sources) asked greedily in ``answer_format``
    at each validation; ``best/`` then tracks their accuracy, ``val_mcq_acc``. 0, or a mixture
    without MCQs, validates on loss alone and ``best/`` tracks ``val_loss`` (docs/TRAINING.md)."""
    ckpt_every: int = 500
    keep_last: int = 3

    seed: int = 1337
    deterministic: bool = False
    """Deterministic kernels (tests, bit-exact resume checks); slower on GPU."""
    compile: bool = False
    """torch.compile each transformer block (before DDP/FSDP wrap it, as torchtitan does)."""
    activation_checkpointing: bool | Literal["selective"] = False
    """True recomputes every block in backward (least memory, about a third more compute);
    "selective" saves each block's matmul and attention outputs and recomputes only its
    elementwise ops (norms, RoPE, SiLU, casts): a middle ground in memory at little extra compute."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: DDP replicates the model on every rank; FSDP2 (``fully_shard`` per
    block) shards parameters, gradients and AdamW state, for models whose replicas do not
    fit. Checkpoints are the same full safetensors either way, so a run may switch on resume."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 = load in the main process); may change on resume."""
    data_shards: int = DEFAULT_DATA_SHARDS
    """Logical shards of the training stream (docs/DATA.md): the stream and its saved state depend on
    this, not on ranks x workers, so a run resumes on any world size and num_workers whose product
    world_size * max(1, num_workers) divides it."""
    max_nonfinite: int = 5
    """Stop after this many consecutive non-finite losses or gradients."""
    reset_optimizer: bool = False
    """On resume, start AdamW's moments from zero instead of the checkpoint's (said aloud)."""

    def __post_init__(self) -> None:
        require_positive(self, ("data_shards", "seq_len", "micro_batch", "global_batch_tokens", "total_tokens", "log_every",
                                "val_every", "ckpt_every", "keep_last", "max_nonfinite"))
        if self.val_mcq < 0:
            raise ConfigError(f"val_mcq must be >= 0 (0 turns MCQ validation off), got {self.val_mcq}")
        if not self.sources or any(w <= 0 for w in self.sources.values()):
            raise ConfigError(f"sources must map names to positive weights, got {self.sources}")
        if not 0 <= self.min_lr <= self.peak_lr:
            raise ConfigError(f"need 0 <= min_lr <= peak_lr, got min_lr={self.min_lr} peak_lr={self.peak_lr}")
        if self.warmup_tokens >= self.total_tokens:
            raise ConfigError(f"warmup_tokens ({self.warmup_tokens}) must be below total_tokens "
                              f"({self.total_tokens})")
        if self.total_steps > MAX_STEPS:  # total_tokens=1e30 would start a run of ~5e26 steps
            raise ConfigError(f"total_tokens={self.total_tokens:,} is {self.total_steps:,} optimizer steps of "
                              f"{self.global_batch_tokens:,} tokens; more than {MAX_STEPS:.0e} is not a run")

    def accum_steps(self, world_size: int = 1) -> int:
        """Micro-batches per optimizer step on each rank."""
        per_pass = self.micro_batch * self.seq_len * world_size
        if self.global_batch_tokens % per_pass:
            raise ConfigError(f"global_batch_tokens ({self.global_batch_tokens}) must be a multiple of "
                              f"micro_batch*seq_len*world_size ({per_pass})")
        return self.global_batch_tokens // per_pass

    def check_data_shards(self, world_size: int = 1) -> None:
        """Fail (one line) unless the readers of ``world_size`` ranks divide ``data_shards``: every
        reader then owns the same number of logical shards, which keeps the stream canonical."""
        workers = max(1, self.num_workers)
        readers = world_size * workers
        if readers > self.data_shards or self.data_shards % readers:
            raise ConfigError(f"data_shards ({self.data_shards}) must be a multiple of world_size x readers "
                              f"per rank ({world_size} x {workers} = {readers}); change num_workers, or "
                              f"data_shards in a new run")

    @property
    def total_steps(self) -> int:
        return math.ceil(self.total_tokens / self.global_batch_tokens)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def a100_2day() -> PretrainConfig:
    """Phase 1 on one A100-80GB: 2B tokens, FineWeb-Edu 85% and medical MCQs 15%, the MCQs
    written explanation first.

    The formulation follows the evidence (docs/TRAINING.md, "Which formulation"): at tiny scale
    only explanation-first training has given GRPO a gain, and MedMCQA carries an explanation
    (``exp``) for most questions, MedQA none, so MedMCQA holds two thirds of the MCQ share in the
    ``explain`` form and MedQA's training questions are written in the ``text`` form (the answer
    line alone, which is what ``explain`` does with a record that has no explanation).
    The design's letter recipe is ``a100_2day_letter``.

    524,288 tokens per step = 16 x 2048 per micro-batch x 16 accumulation steps;
    3,815 optimizer steps in all.
    """
    return PretrainConfig(sources={"fineweb-edu": 0.85, "medmcqa": 0.10, "medqa": 0.05}, answer_format="explain",
                          budget_hours=48.0)


def a100_2day_letter() -> PretrainConfig:
    """The design's phase 1 as written: FineWeb-Edu 85% / MedQA 15%, MCQs in the letter format."""
    return PretrainConfig(budget_hours=48.0)


def h200_1day() -> PretrainConfig:
    """``a100_2day``'s recipe on one H100/H200 in a day: micro-batch 32 (8 accumulation steps)
    and torch.compile. Micro-batch 64 would not fit 141 GB without activation checkpointing
    (``pure-transformer plan --config h200_1day --set micro_batch=64``: 171 GB planned)."""
    return dataclasses.replace(a100_2day(), micro_batch=32, compile=True, num_workers=4, budget_hours=24.0)


def debug() -> PretrainConfig:
    """The tiny model on the bundled offline corpus: ~0.6M tokens in 2-3 minutes on 2 CPU cores."""
    return PretrainConfig(
        model="tiny",
        sources={"bundled-general": 0.5, "bundled-medical": 0.35, "bundled-mcq": 0.15},
        shuffle_buffer=1_000, seq_len=256, micro_batch=8, global_batch_tokens=2048, total_tokens=600_000,
        peak_lr=3e-3, min_lr=3e-4, warmup_tokens=20_000, log_every=10, val_every=100, val_tokens=16_384,
        ckpt_every=100, num_workers=0, seed=1337,
    )


def demo() -> PretrainConfig:
    """``make demo``'s pretraining: the tiny model learns the bundled questions in the
    explanation-first format, stopped while GRPO still has headroom (greedy well
    below the ceiling, pass@16 far above pass@1; docs/GRPO.md).

    2M tokens at a peak lr of 6e-3 (min 6e-4) after 200K tokens of warmup. The model learns to
    copy the vignette's clue into its explanation in a sudden transition, and the learning rate
    sets when: at 3e-3 it came between 2M tokens (greedy 0.21) and 2.5M (0.34). At 6e-3 with the
    debug preset's 20K-token warmup it came by 2M on one thread (0.45) and not on two (0.05): the
    first hundred steps ran hot, and which side of the transition 2M tokens lands on followed
    the rounding. The longer warmup takes the early steps off that edge (docs/GRPO.md); 1e-2
    diverges. MCQs are packed whole (``whole_mcqs``), so no explanation is trained without its
    question. One logical data shard: the demo is one process with no workers, and its recipe was
    measured on that stream (on 16 shards an earlier recipe wrote no answer line for 64% of the
    test questions)."""
    return dataclasses.replace(
        debug(), answer_format="explain", total_tokens=2_000_000, peak_lr=6e-3, min_lr=6e-4, warmup_tokens=200_000,
        val_every=250, ckpt_every=250, sources={"bundled-general": 0.1, "bundled-medical": 0.4, "bundled-mcq": 0.5},
        data_shards=1, whole_mcqs=True,
    )


def continue_medical_1day() -> PretrainConfig:
    """Continued medical pretraining of an imported open model (``--init-from``; its shape and
    tokenizer replace ``model``, here Qwen3-0.6B for ``plan``) in 8 of a one-H100 day's hours, GRPO
    taking the rest: 500M tokens of FineWeb-Edu 80%, MedMCQA 14% and MedQA 6% (MedQA's 2.5M training
    tokens repeat ~12x, MedMCQA's ~4x: the knowledge the model lacks, without drowning its general
    text), MCQs explanation first, peak lr 3e-5 (a tenth of from-scratch: the weights are already
    good) with 1% warmup. Not yet run on real weights."""
    return PretrainConfig(model="qwen3-0.6b", sources={"fineweb-edu": 0.80, "medmcqa": 0.14, "medqa": 0.06},
                          answer_format="explain", total_tokens=500_000_000, peak_lr=3e-5, min_lr=3e-6,
                          warmup_tokens=5_000_000, micro_batch=16, compile=True, num_workers=4, budget_hours=8.0)


PRETRAIN_PRESETS: dict[str, Callable[[], PretrainConfig]] = {
    "a100_2day": a100_2day,
    "a100_2day_letter": a100_2day_letter,
    "h200_1day": h200_1day,
    "continue_medical_1day": continue_medical_1day,
    "debug": debug,
    "demo": demo,
}


def pretrain_preset(name: str) -> PretrainConfig:
    return pick_preset(PRETRAIN_PRESETS, name, "pretrain")
