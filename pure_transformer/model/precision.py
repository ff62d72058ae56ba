"""Which numerics a run computes in, decided once: ``precision: auto | bf16 | fp32``.

``auto`` is bf16 autocast on CUDA and fp32 elsewhere, as before. ``bf16`` takes the CUDA
code path on any device, CPU included (PyTorch has bf16 autocast and fused AdamW on CPU),
so every mixed-precision branch can run before a GPU day is spent on it:

- training: the forward and backward under bf16 autocast, with fp32 master weights, fp32
  gradients and AdamW state (fused);
- sampling: the engine's KV cache in bf16 and its forward under autocast; logits are
  sampled in fp32;
- GRPO scoring: the trainer recomputes log-probs under the sampler's numerics
  (:func:`pure_transformer.inference.engine.sampler_precision`), so on-policy pi_theta / pi_old is 1 up to
  kernel noise rather than the bf16-vs-fp32 gap (docs/GRPO.md has both figures).

The choice travels with the model (``model.bf16``), so every place that runs it (engine,
scheduler, scorer) agrees without a flag in each call.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from ..errors import ConfigError

Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bf16 autocast on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (no GradScaler: bf16 has fp32's range), or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def model_uses_bf16(model: torch.nn.Module) -> bool:
    """The model's own choice (``model.bf16``, set by the run), else bf16 exactly on CUDA."""
    chosen = getattr(model, "bf16", None)
    if chosen is not None:
        return bool(chosen)
    return next(model.parameters()).device.type == "cuda"
