"""GRPO configuration and its named presets (typed functions; YAML and
``--set key=value`` override any field, as for pretraining)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Literal

from ..errors import ConfigError
from .overrides import pick_preset, require_positive


@dataclass(frozen=True)
class GRPOConfig:
    """One GRPO run on a multiple-choice task."""

    prompts_per_step: int = 16
    samples_per_prompt: int = 16
    """G: the group whose mean reward is each sample's baseline."""
    micro_batch: int = 8
    """Sequences per forward/backward of the gradient pass."""
    epochs: float = 2.0
    """Passes over the training questions; sets the number of steps."""
    max_steps: int | None = None
    """Stop earlier than ``epochs`` would (debug runs)."""
    budget_hours: float | None = None
    """Wall-clock hours the run is meant to finish in (``pure-transformer plan`` checks it)."""

    lr: float = 1e-5
    embedding_lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    warmup_steps: int = 0
    """Linear LR warmup; constant afterwards."""

    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 elsewhere; bf16: the CUDA code path on any device
    (:mod:`pure_transformer.model.precision`); fp32: no autocast."""
    answer_format: Literal["letter", "text", "explain"] | None = None
    """How questions are asked and answers read; None takes the pretrained checkpoint's."""
    temperature: float = 1.0
    top_k: int | None = 40
    top_p: float = 1.0
    max_new_tokens: int | None = 512
    """Generation budget; None takes the format's (24, or 96 for explain)."""
    stop_strings: tuple[str, ...] = ()
    """Extra stop strings; the format's own (a new "Question:", the answer line's end) always apply."""
    compile_decode: bool = False
    """Roll out with a static KV cache and a compiled decode step (CUDA graphs on CUDA); same
    samples as the dynamic cache, whose buffers it keeps between steps (see docs/INFERENCE.md)."""

    kl_coef: float = 0.01
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    """Upper clip (DAPO's "clip-higher" uses 0.28); None means ``clip_eps``."""
    offpolicy_mask_delta: float | None = 0.5
    """Mask a sequence's policy term when A < 0 and its mean log(pi_old/pi) exceeds this; None disables."""
    scale_adv_by_std: bool = False
    """DeepSeekMath divides advantages by the group std; Dr. GRPO and DeepSeek-V3.2 do not."""
    updates_per_rollout: int = 1
    """Optimizer passes over each batch of rollouts (>1 makes the data off-policy)."""
    ref_refresh_every: int | None = None
    """Copy the policy into the reference every N steps. None keeps the initial model:
    refreshing weakens the KL anchor, since the penalty then only limits drift since
    the last refresh rather than from the pretrained model."""
    resample_zero_variance: bool = False
    """Replace groups whose samples all got the same reward (no gradient) with new
    prompts, up to 2 extra rounds (DAPO's dynamic sampling)."""
    shuffle_options: bool = False
    """Permute each prompt's options (once per group) against letter priors."""
    format_weight: float = 0.0
    """Weight of the optional format reward added to correctness."""

    log_every: int = 1
    val_every: int = 10
    val_questions: int = 200
    ckpt_every: int = 25
    keep_last: int = 3
    seed: int = 1234
    reset_optimizer: bool = False
    """On resume, start AdamW's moments from zero instead of the checkpoint's (said aloud)."""

    def __post_init__(self) -> None:
        require_positive(self, ("prompts_per_step", "samples_per_prompt", "micro_batch", "log_every",
                                "val_every", "val_questions", "ckpt_every", "keep_last", "updates_per_rollout"))
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be positive (or None for the format's), got {self.max_new_tokens}")
        if self.samples_per_prompt < 2:
            raise ConfigError("samples_per_prompt must be >= 2: a group of one has no relative advantage")
        if self.epochs <= 0 and self.max_steps is None:
            raise ConfigError("epochs must be positive (or set max_steps)")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0 for GRPO sampling")
        if self.max_steps is not None and self.max_steps > 10**7 or self.epochs > 10**4:
            raise ConfigError(f"max_steps={self.max_steps}, epochs={self.epochs}: not a run (at most 1e7 steps, "
                              "1e4 epochs)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def grpo_usmle_2day() -> GRPOConfig:
    """Phase 2: 16 prompts x 16 samples, micro-batch 8, 2 epochs over MedQA train, lr 1e-5
    (embeddings 2e-4), KL 0.01, T=1.0, top-k 40, 512 new tokens: room for an explanation before
    the answer line, in the pretrained checkpoint's format (``explain`` after ``a100_2day``)."""
    return GRPOConfig(budget_hours=48.0)


def grpo_usmle_2day_letter() -> GRPOConfig:
    """The design's letter recipe (after ``a100_2day_letter``): the same run, answering with a
    letter, so 16 new tokens are plenty."""
    return dataclasses.replace(grpo_usmle_2day(), answer_format="letter", max_new_tokens=16)


def debug() -> GRPOConfig:
    """The tiny model on the bundled questions, on CPU, in a few minutes, in the
    checkpoint's answer format with that format's generation budget."""
    return GRPOConfig(prompts_per_step=16, samples_per_prompt=16, micro_batch=64, max_steps=60, lr=5e-5,
                      embedding_lr=5e-4, kl_coef=0.04, max_new_tokens=None, top_k=None,
                      val_every=20, val_questions=200, ckpt_every=20, warmup_steps=5)


def demo() -> GRPOConfig:
    """``make demo``'s GRPO, from the ``demo`` pretraining (explanation first): 16 prompts
    x 4 samples, lr 1e-4 for every parameter (embeddings too) after 10 warmup steps, no KL
    term (so no reference pass), options shuffled against letter priors. Samples come from the
    top 4 tokens at T=1: the tiny model's full distribution has a long tail, and rewarding
    samples near the mode is what moves greedy answers. 120 steps. Measured from that
    checkpoint at 100 steps (docs/GRPO.md): 16 x 4 beat 8 x 8 (in-distribution gain +9.3
    against +6.5 points), and KL 0 beat 0.05 (+10.8 in-distribution and +7.1 compositional,
    against +9.3 and +5.0); lr 1.5e-4 or 2e-4, or top-k 8, gained less. At 120 steps: +11.5 and +10.3."""
    return dataclasses.replace(debug(), prompts_per_step=16, samples_per_prompt=4, micro_batch=32, max_steps=120,
                               top_k=4, lr=1e-4, embedding_lr=1e-4, kl_coef=0.0, warmup_steps=10, val_every=60,
                               ckpt_every=60, val_questions=100, shuffle_options=True)


def grpo_medqa_qwen3_0_6b() -> GRPOConfig:
    """GRPO on MedQA from an imported (optionally continued-pretrained) Qwen3-0.6B, in the 16 hours of
    a one-H100 day that ``pretrain:continue_medical_1day`` leaves: 16 prompts x 16 samples,
    explanation first then the answer line (the model already writes prose), 512 new tokens, lr 1e-6
    for every parameter after 10 warmup steps (a pretrained model moves far on GRPO's usual 1e-5),
    KL 0.04, T=1 with no top-k (its distribution is not the tiny model's long tail), 2 epochs.
    Not yet run on real weights: `plan` is its only figure."""
    return GRPOConfig(answer_format="explain", max_new_tokens=512, lr=1e-6, embedding_lr=1e-6, kl_coef=0.04,
                      warmup_steps=10, top_k=None, epochs=2.0, micro_batch=16, budget_hours=16.0,
                      shuffle_options=True, val_every=50, ckpt_every=50)


def grpo_medqa_smollm2_360m() -> GRPOConfig:
    """``grpo_medqa_qwen3_0_6b``'s recipe for SmolLM2-360M: lr 2e-6 (a smaller model), micro-batch 32
    (its activations are smaller). Not yet run on real weights."""
    return dataclasses.replace(grpo_medqa_qwen3_0_6b(), lr=2e-6, embedding_lr=2e-6, micro_batch=32)


GRPO_PRESETS: dict[str, Callable[[], GRPOConfig]] = {"grpo_usmle_2day": grpo_usmle_2day,
                                                     "grpo_usmle_2day_letter": grpo_usmle_2day_letter,
                                                     "grpo_medqa_qwen3_0.6b": grpo_medqa_qwen3_0_6b,
                                                     "grpo_medqa_smollm2_360m": grpo_medqa_smollm2_360m,
                                                     "debug": debug, "demo": demo}


def grpo_preset(name: str) -> GRPOConfig:
    return pick_preset(GRPO_PRESETS, name, "rl")
