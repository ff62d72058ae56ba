"""Cross-entropy through the output head without materialising the logits.

A 16 x 2048 micro-batch against a 50K vocabulary has 1.6 billion logits: 6.6 GB
in fp32, plus as much again for their gradient, while the hidden states they
come from are 32K x 1024. :func:`linear_cross_entropy` runs the head and the
loss on ``chunk`` rows at a time and computes each chunk's gradient with respect
to the hidden states and the head weight in the same pass (softmax minus the
one-hot target, the closed form), so only one chunk of logits ever exists and
backward just scales the stored gradients. Nothing is recomputed, unlike
checkpointing the head. The same idea as Liger-Kernel's fused linear
cross-entropy, written with plain torch ops.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
LOSS_CHUNK = 2048
"""Rows per chunk on a GPU: (2048, 50304) fp32 logits are 412 MB."""
CPU_LOSS_CHUNK = 512
"""Rows per chunk on a CPU, where a chunk's logits should stay in cache: (512, 4096) fp32 logits
are 8 MB. The demo's training step (8 x 256 rows, 4,096-token vocabulary) is 1.11x faster than
with all 2,048 rows of logits at once (bench/bench_loss_chunk.py, docs/benchmarks.md)."""


def loss_chunk(device: torch.device) -> int:
    """The rows per chunk of :func:`linear_cross_entropy` on ``device``."""
    return CPU_LOSS_CHUNK if device.type == "cpu" else LOSS_CHUNK


def _chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int, dtype: torch.dtype,
                  grads: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The loss, and with ``grads`` its gradients with respect to ``hidden`` and ``weight``
    (``weight``'s in the accumulation dtype), one chunk of logits at a time."""
    # hidden (N, C); weight (V, C); labels (N,) with IGNORE_INDEX entries; matmuls in ``dtype``
    count = (labels != IGNORE_INDEX).sum().clamp(min=1)
    w = weight.to(dtype)
    acc = torch.promote_types(dtype, torch.float32)  # half-precision logits are normalised in fp32
    grad_hidden = torch.empty_like(hidden) if grads else None
    grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if grads else None
    total = torch.zeros((), dtype=acc, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start:start + chunk].to(dtype), labels[start:start + chunk]
        logits = (h @ w.T).to(acc)  # (n, V): the only logits alive
        keep = y != IGNORE_INDEX
        safe = torch.where(keep, y, 0)
        lse = torch.logsumexp(logits, dim=-1)  # (n,)
        total += ((lse - logits.gather(1, safe[:, None]).squeeze(1)) * keep).sum()
        if grad_hidden is None or grad_weight is None:
            continue
        grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place: d(sum CE)/d logits = softmax - onehot
        grad[torch.arange(len(y), device=y.device), safe] -= keep.float()
        grad *= keep[:, None] / count
        grad = grad.to(dtype)
        grad_hidden[start:start + chunk] = (grad @ w).to(hidden.dtype)
        grad_weight += (grad.T @ h).to(acc)
    return total / count, grad_hidden, grad_weight


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``labels`` with its gradients
    computed in the forward pass; see the module docstring."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int,
                dtype: torch.dtype) -> torch.Tensor:
        loss, grad_hidden, grad_weight = _chunked_loss(hidden, weight, labels, chunk, dtype, grads=True)
        assert grad_hidden is not None and grad_weight is not None
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_out.to(grad_hidden.dtype), grad_weight * grad_out.to(grad_weight.dtype),
                None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk: int = LOSS_CHUNK) -> torch.Tensor:
    """Mean cross-entropy of ``hidden`` (N, C) through a bias-free head ``weight``
    (V, C) against ``labels`` (N,), over the targets that are not ``IGNORE_INDEX``;
    equal to ``F.cross_entropy(hidden @ weight.T, labels)`` in value and gradients.
    The head runs in autocast's dtype when autocast is on, as ``nn.Linear`` would."""
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1] or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"need hidden (N, C), weight (V, C), labels (N,); got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(labels.shape)}")
    kind = hidden.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        # Validation runs under no_grad, where the Function's needs_input_grad still follows
        # requires_grad: asking it would build both gradients (a V x C fp32 buffer) for nothing.
        return _chunked_loss(hidden, weight, labels, chunk, dtype, grads=False)[0]
    return _LinearCrossEntropy.apply(hidden, weight, labels, chunk, dtype)
