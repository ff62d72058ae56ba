"""The GRPO objective as a few small pure functions.

Notation (see docs/GRPO.md for the derivations and sources): a prompt q is
answered G times by the sampling policy pi_old; sample o_i gets reward r_i;
pi_theta is the policy being trained and pi_ref the frozen reference. Per token,

    A_i        = r_i - mean_group(r)                      [/ (std_group(r) + eps)]
    rho_{i,t}  = pi_theta(o_{i,t}) / pi_old(o_{i,t})
    L_clip     = min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i)
    k3         = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1          (>= 0)
    D          = rho * k3                                  (rho NOT detached)
    M_i        = 0 if A_i < 0 and mean_t log(pi_old/pi_theta) > delta, else 1
    J_{i,t}    = M_i * L_clip - beta * D
    loss       = - sum_{i,t} J_{i,t} / num_tokens

Each refinement is an explicit argument rather than a named variant:
``scale_by_std`` (DeepSeekMath vs Dr. GRPO advantages), ``clip_eps_high``
(DAPO's asymmetric clip), ``offpolicy_mask_delta`` (DeepSeek-V3.2's sequence
mask), ``num_tokens`` (token-level normalisation across micro-batches) and
``keep_ids`` (the sampler's top-k/top-p set).

Where this differs from the design document: its pseudo-code masks sequences in
both advantage directions and calls the plain log-ratio an "unbiased KL". We
implement the published method (DeepSeek-V3.2, arXiv 2512.02556, sec. 3.1): the
mask drops only negative-advantage sequences that drifted, and the KL estimate
is k3 weighted by the importance ratio. ``rho * k3`` has gradient
``rho * log(pi_theta/pi_ref) * grad log pi_theta``, which in expectation over
pi_old is exactly the gradient of KL(pi_theta || pi_ref); plain k3 has gradient
``(1 - pi_ref/pi_theta) * grad log pi_theta``, biased once pi_old != pi_theta
and unbounded where pi_theta << pi_ref.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError

# ---------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------

def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """``rewards`` (N,) viewed as (num_groups, group_size); validates the layout."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards length {rewards.numel()} must be a positive multiple of group_size {group_size}")
    return rewards.reshape(-1, group_size)


def group_advantages(rewards: Tensor, group_size: int, *, scale_by_std: bool = False, eps: float = 1e-6) -> Tensor:
    """Group-relative advantage of each sample, shape (N,).

    ``rewards`` (N,) holds ``N = num_groups * group_size`` rewards with each
    group's samples contiguous. ``A_i = r_i - mean(group)`` as in Dr. GRPO and
    DeepSeek-V3.2; ``scale_by_std=True`` also divides by ``std(group) + eps`` as
    in DeepSeekMath (this up-weights near-unanimous groups, hence off by
    default). The std is the population std (no Bessel correction), so a group
    of one is defined and a zero-variance group gets A = 0 either way.
    """
    r = _grouped(rewards, group_size).to(torch.float32 if not rewards.is_floating_point() else rewards.dtype)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale_by_std:
        adv = adv / (r.std(dim=1, keepdim=True, correction=0) + eps)
    return adv.reshape(-1)


def zero_variance_groups(rewards: Tensor, group_size: int) -> Tensor:
    """(num_groups,) bool: True where every reward in the group is equal.

    Such a group has A = 0 for all its samples and contributes no policy
    gradient (only the KL term); DAPO's dynamic sampling drops and resamples it.
    """
    r = _grouped(rewards, group_size)
    return (r == r[:, :1]).all(dim=1)


# ---------------------------------------------------------------------------
# Log-probabilities under the sampler's distribution
# ---------------------------------------------------------------------------

def masked_logprobs(logits: Tensor, tokens: Tensor, *, temperature: float = 1.0,
                    keep_ids: Tensor | None = None) -> Tensor:
    """log pi(token) (...) under ``softmax(logits / temperature)`` restricted to the kept set.

    ``logits`` (..., V) predict ``tokens`` (...): (B, T, V) for a padded batch, or (N, V)
    for the N real tokens of one. ``keep_ids`` (..., K) long, padded with -1, lists the
    distinct ids the sampler kept (top-k / top-p) at each position, so pi_theta is the
    same truncated distribution pi_old was sampled from and the importance ratio compares
    like with like. A position whose list is all padding (a prompt position, say) is not
    restricted. ``None`` means the full vocabulary everywhere.

    Cost: the restricted log-normaliser is a logsumexp over the K kept logits, gathered,
    not over V masked ones: at the demo's top-4 of 4,096 ids the full-vocabulary version
    spent more time normalising (and backpropagating through) the logits than the model
    spent computing them. Only unrestricted positions pay for all V. Half-precision logits
    are normalised in float32; the caller's logits are never edited.
    """
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(f"need logits (..., V) and tokens (...), got {tuple(logits.shape)} and {tuple(tokens.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).to(dtype) / temperature   # (...)
    if keep_ids is None:
        return picked - torch.logsumexp(logits.to(dtype) / temperature, dim=-1)
    if keep_ids.shape[:-1] != tokens.shape:
        raise ValueError(f"keep_ids must be (..., K) with (...) = {tuple(tokens.shape)}, got {tuple(keep_ids.shape)}")
    keep_ids = keep_ids.long()
    valid = keep_ids >= 0                                                 # (..., K)
    restricted = valid.any(dim=-1)                                        # (...)
    if not bool(((keep_ids == tokens.unsqueeze(-1)).any(dim=-1) | ~restricted).all()):
        raise ValueError("a token lies outside its position's keep_ids set; it cannot have been sampled")
    kept = logits.gather(-1, keep_ids.clamp(min=0)).to(dtype) / temperature  # (..., K)
    # Padding slots drop out of the sum; an unrestricted row keeps finite values (its result is
    # replaced below), so no all -inf logsumexp puts NaN into the backward pass.
    kept = kept.masked_fill(~valid & restricted.unsqueeze(-1), float("-inf"))
    lse = torch.logsumexp(kept, dim=-1)                                   # (...)
    if not bool(restricted.all()):  # free positions take the whole vocabulary's normaliser
        free = ~restricted
        lse = lse.masked_scatter(free, torch.logsumexp(logits[free].to(dtype) / temperature, -1))
    return picked - lse


# ---------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GRPOLossConfig:
    """The knobs of :func:`grpo_loss`."""

    clip_eps: float = 0.2
    """eps_low: the ratio is clipped below at 1 - clip_eps."""
    clip_eps_high: float | None = None
    """eps_high: clipped above at 1 + clip_eps_high; None = clip_eps (DAPO uses 0.28)."""
    kl_coef: float = 0.01
    """beta, the weight of the KL penalty to the reference; 0 drops it."""
    offpolicy_mask_delta: float | None = 0.5
    """delta of the off-policy sequence mask (the paper gives none); None disables masking."""

    def __post_init__(self) -> None:
        if not 0 < self.clip_eps < 1:
            raise ConfigError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.clip_eps_high is not None and self.clip_eps_high <= 0:
            raise ConfigError(f"clip_eps_high must be positive or None, got {self.clip_eps_high}")
        if self.kl_coef < 0:
            raise ConfigError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.offpolicy_mask_delta is not None and self.offpolicy_mask_delta < 0:
            raise ConfigError(f"offpolicy_mask_delta must be >= 0 or None, got {self.offpolicy_mask_delta}")


@dataclass
class GRPOLossOutput:
    """The loss to backpropagate and detached statistics for logging.

    ``loss == policy_loss + kl_coef * kl``. The token-level statistics
    (``policy_loss``, ``kl``, ``clip_frac``, ``ratio_mean``) are divided by the
    same ``num_tokens`` as the loss, so summing them over the micro-batches of a
    step gives the step's value. ``masked_frac`` is the fraction of this call's
    sequences that the off-policy mask dropped.
    """

    loss: Tensor
    policy_loss: float
    """-sum(M * L_clip) / num_tokens."""
    kl: float
    """sum(rho * k3) / num_tokens: the unbiased estimate of KL(pi_theta || pi_ref) per token."""
    clip_frac: float
    """Completion tokens whose clipped branch is active (no gradient) / num_tokens."""
    masked_frac: float
    """Sequences with M_i = 0 / sequences in this call."""
    ratio_mean: float
    """sum(rho) / num_tokens."""


def grpo_loss(logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, advantages: Tensor, mask: Tensor,
              cfg: GRPOLossConfig, *, num_tokens: float | None = None) -> GRPOLossOutput:
    """GRPO loss with DAPO clipping, DeepSeek-V3.2's unbiased KL and off-policy mask.

    Shapes: ``logp``, ``old_logp``, ``ref_logp`` and ``mask`` are (B, T);
    ``advantages`` is (B,), one value per sequence.

    - ``logp``: log pi_theta of the sampled tokens (carries the gradient).
    - ``old_logp``: log pi_old, what the sampler used; detached here.
    - ``ref_logp``: log pi_ref, the frozen reference; detached here. None when there is
      no KL term (``kl_coef`` 0: the trainer then skips the reference pass); ``kl`` is then 0.
    - ``mask``: 1 on completion tokens, 0 on prompt and padding. Values at
      masked positions are ignored entirely, even if non-finite.
    - ``num_tokens``: the divisor; defaults to ``mask.sum()``. With gradient
      accumulation pass the completion-token count of the whole step, so the
      summed micro-batch losses equal the loss of one big batch.

    Per token: ``J = M_i * min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A) - beta * rho * k3``
    and ``loss = -sum(J * mask) / num_tokens``. The sequence mask
    ``M_i = 0 iff A_i < 0 and mean_t(old_logp - logp) > delta`` is computed on
    detached values and multiplies the policy term only, never the KL term:
    it stops pushing down samples the current policy no longer resembles,
    while the anchor to the reference keeps applying to every token.

    Design-document note: its pseudo-code masks both advantage signs and uses
    the plain log-ratio as "unbiased KL". We follow the paper: one-sided mask,
    and ``rho * k3`` with rho not detached, whose gradient is the
    importance-weighted gradient of the true KL (see the module docstring).
    """
    if ref_logp is None and cfg.kl_coef:
        raise ValueError(f"kl_coef {cfg.kl_coef} needs the reference's log-probs")
    ref_shape = logp.shape if ref_logp is None else ref_logp.shape
    if not (logp.dim() == 2 and logp.shape == old_logp.shape == ref_shape == mask.shape):
        raise ValueError("logp, old_logp, ref_logp and mask must share one (B, T) shape, got "
                         f"{tuple(logp.shape)}, {tuple(old_logp.shape)}, {tuple(ref_shape)}, {tuple(mask.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be (B,) = ({logp.shape[0]},), got {tuple(advantages.shape)}")
    on = mask.bool()
    if num_tokens is None:
        num_tokens = max(float(on.sum()), 1.0)
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")

    # Zero the ignored positions first, so padding never produces inf/NaN values or gradients.
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    logp = torch.where(on, logp, zero)
    old_logp = torch.where(on, old_logp.detach(), zero)
    adv = advantages.detach().to(logp.dtype).unsqueeze(1)                 # (B, 1)

    # Clipped surrogate.
    eps_low = cfg.clip_eps
    eps_high = cfg.clip_eps if cfg.clip_eps_high is None else cfg.clip_eps_high
    rho = torch.exp(logp - old_logp)                                      # (B, T)
    unclipped = rho * adv
    clipped = rho.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    l_clip = torch.minimum(unclipped, clipped)

    # Unbiased KL: rho * k3, with rho carrying gradient.
    tok = on.to(logp.dtype)
    if ref_logp is None:
        kl_sum = torch.zeros((), dtype=logp.dtype, device=logp.device)
    else:
        log_ref_ratio = torch.where(on, ref_logp.detach(), zero) - logp   # log(pi_ref / pi_theta)
        k3 = torch.exp(log_ref_ratio) - log_ref_ratio - 1.0
        kl_sum = (rho * k3 * tok).sum()

    # Off-policy sequence mask, one-sided (negative advantages only).
    lengths = on.sum(dim=1)                                               # (B,)
    if cfg.offpolicy_mask_delta is None:
        keep_seq = torch.ones_like(lengths, dtype=torch.bool)
    else:
        drift = (old_logp - logp.detach()).sum(dim=1) / lengths.clamp(min=1)
        keep_seq = ~((advantages.detach() < 0) & (drift > cfg.offpolicy_mask_delta))
    m = keep_seq.to(logp.dtype).unsqueeze(1)                              # (B, 1)

    policy_sum = -(m * l_clip * tok).sum()
    loss = (policy_sum + cfg.kl_coef * kl_sum) / num_tokens

    with torch.no_grad():
        clip_active = (clipped < unclipped) & on                          # the min picked the clipped branch
        has_tokens = lengths > 0
        masked = (~keep_seq & has_tokens).sum()
        return GRPOLossOutput(
            loss=loss,
            policy_loss=float(policy_sum) / num_tokens,
            kl=float(kl_sum) / num_tokens,
            clip_frac=float(clip_active.sum()) / num_tokens,
            masked_frac=float(masked) / max(int(has_tokens.sum()), 1),
            ratio_mean=float((rho * tok).sum()) / num_tokens,
        )
