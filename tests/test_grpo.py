"""The GRPO objective against hand-computed values, Monte Carlo and exact gradients.

Hand values use :mod:`math` on plain floats, so they do not share code with the
implementation. The KL checks are the published claims of DeepSeek-V3.2: ``rho * k3``
under pi_old samples is unbiased for KL(pi_theta || pi_ref), and its gradient is
the importance-weighted gradient of the true KL.
"""

from __future__ import annotations

import math

import pytest
import torch

from pure_transformer.errors import ConfigError
from pure_transformer.rl.grpo import (
    GRPOLossConfig,
    group_advantages,
    grpo_loss,
    masked_logprobs,
    zero_variance_groups,
)

NO_KL_NO_MASK = GRPOLossConfig(kl_coef=0.0, offpolicy_mask_delta=None)


def _ones(*shape: int) -> torch.Tensor:
    return torch.ones(*shape, dtype=torch.float64)


# ---------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------

@pytest.mark.fast
def test_group_advantages_mean_centred_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, 4)
    expected = [0.5, -0.5, -0.5, 0.5, -0.75, -0.75, -0.75, 2.25, 0.0, 0.0, 0.0, 0.0]
    assert adv.shape == (12,)
    assert adv.tolist() == pytest.approx(expected)


@pytest.mark.fast
def test_group_advantages_std_scaled_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 2.0, 2.0, 2.0, 2.0])
    eps = 1e-6
    adv = group_advantages(rewards, 4, scale_by_std=True, eps=eps)
    std2 = math.sqrt((3 * 0.75**2 + 2.25**2) / 4)  # population std of [0, 0, 0, 3]
    expected = [0.5 / (0.5 + eps), -0.5 / (0.5 + eps), -0.5 / (0.5 + eps), 0.5 / (0.5 + eps),
                -0.75 / (std2 + eps), -0.75 / (std2 + eps), -0.75 / (std2 + eps), 2.25 / (std2 + eps),
                0.0, 0.0, 0.0, 0.0]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.fast
def test_group_advantages_integer_rewards_and_bad_layout():
    assert group_advantages(torch.tensor([1, 0]), 2).tolist() == pytest.approx([0.5, -0.5])
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 4), 4)


@pytest.mark.fast
def test_zero_variance_groups():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert zero_variance_groups(rewards, 3).tolist() == [True, True, False]


# ---------------------------------------------------------------------------
# Clipped surrogate
# ---------------------------------------------------------------------------

def _one_token_batch(rhos: list[float], advs: list[float]):
    """B sequences of one completion token each, with old_logp = 0 so rho = exp(logp)."""
    logp = torch.tensor([[math.log(r)] for r in rhos], dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros_like(logp)
    return logp, zeros, zeros.clone(), torch.tensor(advs, dtype=torch.float64), _ones(len(rhos), 1)


@pytest.mark.fast
def test_clipping_asymmetric_by_hand():
    # eps_low 0.2, eps_high 0.28: range [0.8, 1.28].
    rhos = [0.5, 0.5, 1.5, 1.5, 1.1]
    advs = [1.0, -1.0, 1.0, -1.0, 1.0]
    # min(rho*A, clip*A): 0.5 (free), -0.8 (clipped), 1.28 (clipped), -1.5 (free), 1.1 (free)
    objective = [0.5, -0.8, 1.28, -1.5, 1.1]
    clipped = [False, True, True, False, False]
    logp, old, ref, adv, mask = _one_token_batch(rhos, advs)
    cfg = GRPOLossConfig(clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.0, offpolicy_mask_delta=None)
    out = grpo_loss(logp, old, ref, adv, mask, cfg)
    assert out.loss.item() == pytest.approx(-sum(objective) / 5)
    assert out.policy_loss == pytest.approx(-sum(objective) / 5)
    assert out.clip_frac == pytest.approx(2 / 5)
    assert out.ratio_mean == pytest.approx(sum(rhos) / 5)
    out.loss.backward()
    # d(-rho*A/5)/dlogp = -rho*A/5 where unclipped; zero where the clipped branch is active.
    expected_grad = [0.0 if c else -r * a / 5 for r, a, c in zip(rhos, advs, clipped)]
    assert logp.grad.squeeze(1).tolist() == pytest.approx(expected_grad)


@pytest.mark.fast
def test_clipping_symmetric_default():
    logp, old, ref, adv, mask = _one_token_batch([1.5, 0.5], [1.0, -1.0])
    out = grpo_loss(logp, old, ref, adv, mask, NO_KL_NO_MASK)
    assert out.loss.item() == pytest.approx(-(1.2 - 0.8) / 2)
    assert out.clip_frac == pytest.approx(1.0)


@pytest.mark.fast
def test_config_validation():
    with pytest.raises(ConfigError, match="clip_eps"):
        GRPOLossConfig(clip_eps=0.0)
    with pytest.raises(ConfigError, match="kl_coef"):
        GRPOLossConfig(kl_coef=-1.0)
    with pytest.raises(ConfigError, match="offpolicy_mask_delta"):
        GRPOLossConfig(offpolicy_mask_delta=-0.1)


# ---------------------------------------------------------------------------
# KL term
# ---------------------------------------------------------------------------

@pytest.mark.fast
def test_kl_value_by_hand():
    lp, olds, refs = [-1.0, -2.0, -0.5], [-1.2, -1.5, -0.5], [-0.7, -3.0, -2.0]
    expected = []
    for a, o, r in zip(lp, olds, refs):
        rho = math.exp(a - o)
        expected.append(rho * (math.exp(r - a) - (r - a) - 1.0))
    logp = torch.tensor([lp], dtype=torch.float64)
    out = grpo_loss(logp, torch.tensor([olds], dtype=torch.float64), torch.tensor([refs], dtype=torch.float64),
                    torch.zeros(1, dtype=torch.float64), _ones(1, 3), GRPOLossConfig(kl_coef=0.1))
    assert out.kl == pytest.approx(sum(expected) / 3)
    assert out.loss.item() == pytest.approx(0.1 * sum(expected) / 3)  # A = 0: only the KL term
    assert out.policy_loss == 0.0


@pytest.mark.fast
def test_kl_nonnegative_on_policy():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(8, 5, generator=g, dtype=torch.float64) * 3
    ref = -torch.rand(8, 5, generator=g, dtype=torch.float64) * 3
    out = grpo_loss(logp, logp.clone(), ref, torch.zeros(8, dtype=torch.float64), _ones(8, 5),
                    GRPOLossConfig(kl_coef=1.0))
    assert out.ratio_mean == pytest.approx(1.0)
    assert out.kl > 0
    # Per token too: feed one token at a time.
    for b in range(8):
        one = grpo_loss(logp[b:b + 1, :1], logp[b:b + 1, :1], ref[b:b + 1, :1], torch.zeros(1, dtype=torch.float64),
                        _ones(1, 1), GRPOLossConfig(kl_coef=1.0))
        assert one.kl >= 0


@pytest.mark.fast
def test_kl_term_unaffected_by_sequence_mask():
    # Sequence 0: A < 0 and drift 1.0 > 0.5, so masked; sequence 1 is kept.
    logp = torch.tensor([[-2.0, -2.0], [-1.0, -1.0]], dtype=torch.float64)
    old = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    ref = torch.tensor([[-0.5, -3.0], [-1.5, -0.2]], dtype=torch.float64)
    adv = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    masked = grpo_loss(logp, old, ref, adv, _ones(2, 2), GRPOLossConfig(kl_coef=1.0, offpolicy_mask_delta=0.5))
    unmasked = grpo_loss(logp, old, ref, adv, _ones(2, 2), GRPOLossConfig(kl_coef=1.0, offpolicy_mask_delta=None))
    assert masked.masked_frac == pytest.approx(0.5) and unmasked.masked_frac == 0.0
    assert masked.kl == pytest.approx(unmasked.kl)
    assert masked.policy_loss != pytest.approx(unmasked.policy_loss)
    assert masked.loss.item() == pytest.approx(masked.policy_loss + masked.kl)


# ---------------------------------------------------------------------------
# Off-policy sequence mask
# ---------------------------------------------------------------------------

@pytest.mark.fast
def test_offpolicy_mask_is_one_sided():
    # Each row: one prompt position (mask 0, huge fake drift that must be ignored) + 2 completion tokens.
    # drifts (mean of old - logp over completion): 1.0, 0.1, 1.0, 0.5 (exactly delta: not masked).
    old = torch.zeros(4, 3, dtype=torch.float64)
    logp = torch.tensor([[-50.0, -1.0, -1.0],
                         [-50.0, -0.1, -0.1],
                         [-50.0, -1.5, -0.5],
                         [-50.0, -0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([-1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1]] * 4)
    out = grpo_loss(logp, old, old.clone(), adv, mask, GRPOLossConfig(kl_coef=0.0, offpolicy_mask_delta=0.5))
    assert out.masked_frac == pytest.approx(1 / 4)
    # Hand objective of the kept rows (eps 0.2): row 1 rho=e^-0.1 in range; row 2 rho e^-1.5, e^-0.5 with A>0
    # unclipped; row 3 rho=e^-0.5 < 0.8 with A<0 -> clipped to -0.8.
    r = math.exp
    kept = [-r(-0.1), -r(-0.1), r(-1.5), r(-0.5), -0.8, -0.8]
    assert out.loss.item() == pytest.approx(-sum(kept) / 8)
    out.loss.backward()
    assert torch.all(logp.grad[0] == 0)                      # masked: no policy gradient
    assert torch.all(logp.grad[:, 0] == 0)                   # prompt positions never contribute
    assert torch.all(logp.grad[1:3, 1:] != 0)                # small drift, or A > 0: kept

    no_mask = grpo_loss(logp, old, old.clone(), adv, mask, NO_KL_NO_MASK)
    assert no_mask.masked_frac == 0.0
    # Unmasked, row 0 (rho = e^-1 < 0.8, A < 0) adds its clipped value -0.8 per token.
    assert no_mask.loss.item() == pytest.approx(-(sum(kept) - 0.8 * 2) / 8)


# ---------------------------------------------------------------------------
# Unbiasedness and gradients of the KL estimate
# ---------------------------------------------------------------------------

P_OLD = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
P_THETA = torch.tensor([0.1, 0.2, 0.2, 0.2, 0.3], dtype=torch.float64)
P_REF = torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1], dtype=torch.float64)


def _exact_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p / q).log()).sum()


@pytest.mark.fast
def test_rho_k3_unbiased_plain_k3_biased_monte_carlo():
    n = 200_000
    g = torch.Generator().manual_seed(1234)
    y = torch.multinomial(P_OLD, n, replacement=True, generator=g)
    logp, old, ref = P_THETA.log()[y][:, None], P_OLD.log()[y][:, None], P_REF.log()[y][:, None]
    zeros, ones = torch.zeros(n, dtype=torch.float64), _ones(n, 1)
    cfg = GRPOLossConfig(kl_coef=1.0)
    truth = _exact_kl(P_THETA, P_REF).item()

    weighted = grpo_loss(logp, old, ref, zeros, ones, cfg)
    per_sample = (logp - old).exp() * ((ref - logp).exp() - (ref - logp) - 1)
    se = per_sample.std().item() / math.sqrt(n)
    assert weighted.kl == pytest.approx(per_sample.mean().item())
    assert abs(weighted.kl - truth) < 4 * se

    # Plain k3 (rho = 1, i.e. pretending the samples came from pi_theta) is biased under pi_old samples.
    plain = grpo_loss(logp, logp.clone(), ref, zeros, ones, cfg)
    k3 = (ref - logp).exp() - (ref - logp) - 1
    se_plain = k3.std().item() / math.sqrt(n)
    assert abs(plain.kl - truth) > 10 * se_plain


@pytest.mark.fast
def test_kl_gradient_is_importance_weighted_true_kl_gradient():
    """E_{pi_old}[grad(rho*k3)] = E_{pi_old}[rho * log(pi_theta/pi_ref) * grad log pi_theta] = grad KL, exactly."""
    z = P_THETA.log().clone().requires_grad_(True)           # logits of pi_theta
    cfg = GRPOLossConfig(kl_coef=1.0)
    V = len(P_OLD)
    total = torch.zeros(V, dtype=torch.float64)
    for y in range(V):                                       # exact expectation over the categorical
        logits = z.view(1, 1, V)
        logp = masked_logprobs(logits, torch.tensor([[y]]))
        out = grpo_loss(logp, P_OLD.log()[y].view(1, 1), P_REF.log()[y].view(1, 1),
                        torch.zeros(1, dtype=torch.float64), _ones(1, 1), cfg)
        (grad,) = torch.autograd.grad(out.loss, z)
        total += P_OLD[y] * grad

    p = torch.softmax(z.detach(), 0)
    identity = torch.zeros(V, dtype=torch.float64)
    for y in range(V):
        rho = p[y] / P_OLD[y]
        grad_logp = torch.nn.functional.one_hot(torch.tensor(y), V).double() - p
        identity += P_OLD[y] * rho * (p[y] / P_REF[y]).log() * grad_logp
    torch.testing.assert_close(total, identity)

    z2 = z.detach().clone().requires_grad_(True)
    p2 = torch.softmax(z2, 0)
    (true_grad,) = torch.autograd.grad(_exact_kl(p2, P_REF), z2)
    torch.testing.assert_close(total, true_grad)


def _loss_inputs(seed: int):
    """Policy logits theta (3, 4, 5) and the tokens, pi_old and pi_ref log-probs, advantages and
    completion mask of a small batch whose rows mix prompt, completion and padding positions."""
    g = torch.Generator().manual_seed(seed)
    B, T, V = 3, 4, 5
    theta = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, V, (B, T), generator=g)
    old = masked_logprobs(theta + 0.3 * torch.randn(B, T, V, generator=g, dtype=torch.float64), tokens)
    ref = masked_logprobs(theta + 0.5 * torch.randn(B, T, V, generator=g, dtype=torch.float64), tokens)
    adv = torch.tensor([1.0, -0.5, -1.0], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]])
    return theta, tokens, old, ref, adv, mask


@pytest.mark.fast
def test_grpo_loss_gradient_matches_finite_differences():
    theta, tokens, old, ref, adv, mask = _loss_inputs(7)
    cfg = GRPOLossConfig(clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.1, offpolicy_mask_delta=0.05)

    def loss_of(t: torch.Tensor) -> torch.Tensor:
        return grpo_loss(masked_logprobs(t, tokens), old, ref, adv, mask, cfg).loss

    th = theta.clone().requires_grad_(True)
    out = grpo_loss(masked_logprobs(th, tokens), old, ref, adv, mask, cfg)
    assert 0 < out.clip_frac and out.clip_frac < 1 and 0 < out.masked_frac < 1  # all branches exercised
    (grad,) = torch.autograd.grad(out.loss, th)
    h = 1e-6
    numeric = torch.zeros_like(theta)
    flat = numeric.view(-1)
    for i in range(theta.numel()):
        e = torch.zeros(theta.numel(), dtype=torch.float64)
        e[i] = h
        e = e.view_as(theta)
        flat[i] = (loss_of(theta + e) - loss_of(theta - e)) / (2 * h)
    torch.testing.assert_close(grad, numeric, atol=1e-8, rtol=1e-6)


# ---------------------------------------------------------------------------
# Token-level normalisation across micro-batches
# ---------------------------------------------------------------------------

@pytest.mark.fast
def test_micro_batches_with_total_token_count_equal_one_batch():
    g = torch.Generator().manual_seed(3)
    B, T = 6, 7
    base = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    old = base + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = base + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5, 1, 6, 2])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    cfg = GRPOLossConfig(clip_eps_high=0.28)

    full_p = base.clone().requires_grad_(True)
    full = grpo_loss(full_p, old, ref, adv, mask, cfg)
    full.loss.backward()

    split_p = base.clone().requires_grad_(True)
    total = float(mask.sum())
    summed, kl = 0.0, 0.0
    for sl in (slice(0, 2), slice(2, 6)):
        part = grpo_loss(split_p[sl], old[sl], ref[sl], adv[sl], mask[sl], cfg, num_tokens=total)
        part.loss.backward()
        summed += part.loss.item()
        kl += part.kl
    assert summed == pytest.approx(full.loss.item())
    assert kl == pytest.approx(full.kl)
    torch.testing.assert_close(split_p.grad, full_p.grad)

    # The default divisor is per call, so naive accumulation does NOT match one batch (lengths differ).
    naive = sum(grpo_loss(base[sl], old[sl], ref[sl], adv[sl], mask[sl], cfg).loss.item()
                for sl in (slice(0, 2), slice(2, 6)))
    assert naive != pytest.approx(full.loss.item())


@pytest.mark.fast
def test_padding_values_are_ignored():
    logp = torch.tensor([[-1.0, float("-inf")]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.1, float("nan")]], dtype=torch.float64)
    out = grpo_loss(logp, old, old.clone(), torch.tensor([1.0], dtype=torch.float64),
                    torch.tensor([[1, 0]]), GRPOLossConfig())
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and torch.isfinite(logp.grad).all()


@pytest.mark.fast
def test_grpo_loss_without_a_reference_is_the_kl_free_loss_bit_for_bit():
    """kl_coef 0: passing no reference (the trainer then skips its forward pass) gives the same
    loss and gradient, to the bit, as passing one; a KL weight with no reference is refused."""
    theta, tokens, old, ref, adv, mask = _loss_inputs(3)
    cfg = GRPOLossConfig(kl_coef=0.0, offpolicy_mask_delta=0.05)
    a, b = theta.clone().requires_grad_(True), theta.clone().requires_grad_(True)
    with_ref = grpo_loss(masked_logprobs(a, tokens), old, ref, adv, mask, cfg)
    without = grpo_loss(masked_logprobs(b, tokens), old, None, adv, mask, cfg)
    with_ref.loss.backward()
    without.loss.backward()
    assert torch.equal(with_ref.loss, without.loss) and torch.equal(a.grad, b.grad)
    assert with_ref.kl > 0 and without.kl == 0.0 and with_ref.policy_loss == without.policy_loss
    with pytest.raises(ValueError, match="needs the reference"):
        grpo_loss(masked_logprobs(theta, tokens), old, None, adv, mask, GRPOLossConfig(kl_coef=0.1))


# ---------------------------------------------------------------------------
# masked_logprobs
# ---------------------------------------------------------------------------

def _top_k_case(k: int = 4, temperature: float = 0.7):
    g = torch.Generator().manual_seed(11)
    B, T, V = 2, 3, 11
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    top = logits.topk(k, dim=-1).indices                                  # (B, T, k)
    pad = torch.full((B, T, 2), -1, dtype=torch.long)
    keep_ids = torch.cat([top, pad], dim=-1)                              # (B, T, k + 2), padded
    choice = torch.randint(0, k, (B, T), generator=g)
    tokens = top.gather(-1, choice[..., None]).squeeze(-1)
    # Independent reference: log_softmax over only the kept logits.
    kept = logits.gather(-1, top) / temperature
    expected = torch.log_softmax(kept, dim=-1).gather(-1, choice[..., None]).squeeze(-1)
    return logits, tokens, keep_ids, expected


@pytest.mark.fast
def test_masked_logprobs_top_k_matches_renormalised_kept_logits():
    logits, tokens, keep_ids, expected = _top_k_case()
    got = masked_logprobs(logits, tokens, temperature=0.7, keep_ids=keep_ids)
    torch.testing.assert_close(got, expected)
    # Restricting raises the probability of kept tokens relative to the full vocabulary.
    assert torch.all(got > masked_logprobs(logits, tokens, temperature=0.7))


@pytest.mark.fast
def test_masked_logprobs_gradient_through_keep_mask():
    logits, tokens, keep_ids, _ = _top_k_case(temperature=1.3)
    a = logits.clone().requires_grad_(True)
    masked_logprobs(a, tokens, temperature=1.3, keep_ids=keep_ids).sum().backward()
    b = logits.clone().requires_grad_(True)
    top = keep_ids[..., :4]
    ref = torch.log_softmax(b.gather(-1, top) / 1.3, dim=-1)
    ref.gather(-1, (top == tokens[..., None]).long().argmax(-1, keepdim=True)).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.all(a.grad.scatter(-1, top, 0.0) == 0)                  # dropped logits get no gradient
    assert torch.equal(a.detach(), logits)                               # the caller's logits are untouched


@pytest.mark.fast
def test_masked_logprobs_full_vocab_and_temperature():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 9, generator=g)
    tokens = torch.randint(0, 9, (2, 4), generator=g)
    plain = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(masked_logprobs(logits, tokens), plain)
    hot = torch.log_softmax(logits / 2.5, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(masked_logprobs(logits, tokens, temperature=2.5), hot)
    assert not torch.allclose(hot, plain)
    # Higher temperature flattens: the argmax token's log-prob falls.
    top = logits.argmax(-1)
    assert torch.all(masked_logprobs(logits, top, temperature=2.5) < masked_logprobs(logits, top))
    # bf16 logits are computed in float32.
    assert masked_logprobs(logits.bfloat16(), tokens).dtype == torch.float32


@pytest.mark.fast
def test_masked_logprobs_unrestricted_positions_and_invalid_tokens():
    logits, tokens, keep_ids, _ = _top_k_case()
    keep_ids = keep_ids.clone()
    keep_ids[0, 0] = -1                                                   # e.g. a prompt position
    tokens = tokens.clone()
    tokens[0, 0] = logits[0, 0].argmin()                                  # outside any top-k
    got = masked_logprobs(logits, tokens, keep_ids=keep_ids)
    assert got[0, 0].item() == pytest.approx(torch.log_softmax(logits[0, 0], -1)[tokens[0, 0]].item())
    tokens[0, 1] = logits[0, 1].argmin()
    with pytest.raises(ValueError, match="outside its position's keep_ids"):
        masked_logprobs(logits, tokens, keep_ids=keep_ids)


@pytest.mark.fast
def test_masked_logprobs_packed_rows_mixing_restricted_and_free_positions():
    """(N, V) logits, as the trainer passes its real tokens: restricted rows renormalise over
    their kept ids, a free row over the whole vocabulary, and the gradients of both are finite
    and equal to those of the dense definition (mask the dropped logits to -inf, log_softmax)."""
    logits, tokens, keep_ids, _ = _top_k_case(temperature=0.9)
    logits, tokens, keep_ids = logits.reshape(6, -1), tokens.reshape(6), keep_ids.reshape(6, -1).clone()
    keep_ids[2] = -1                                                      # free: the full vocabulary
    a = logits.clone().requires_grad_(True)
    masked_logprobs(a, tokens, temperature=0.9, keep_ids=keep_ids).sum().backward()
    b = logits.clone().requires_grad_(True)
    V = logits.shape[-1]                                                  # padding (-1) lands in a spare slot V
    kept = torch.zeros(6, V + 1, dtype=torch.bool).scatter(-1, torch.where(keep_ids >= 0, keep_ids, V), True)
    dropped = ~kept[:, :V]
    dropped[2] = False
    dense = torch.log_softmax((b / 0.9).masked_fill(dropped, float("-inf")), -1)
    dense.gather(-1, tokens[:, None]).sum().backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad, b.grad)
