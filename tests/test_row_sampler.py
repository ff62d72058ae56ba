"""One sampling call for rows with their own settings draws, row by row, what ``sample_next`` draws
for that row alone with the same noise."""

from __future__ import annotations

import pytest
import torch

from pure_transformer.inference.engine import SamplingParams, candidate_width, sample_next
from pure_transformer.inference.row_sampler import noise_width, sample_rows

SETTINGS = [SamplingParams(temperature=0), SamplingParams(temperature=0.7), SamplingParams(temperature=1.3, top_k=5),
            SamplingParams(temperature=1.0, top_p=0.5), SamplingParams(temperature=0.9, top_k=40, top_p=0.9),
            SamplingParams(temperature=1.0, top_k=1), SamplingParams(temperature=0.5, top_p=0.95)]


@pytest.mark.fast
def test_each_row_draws_what_sample_next_draws_for_it_alone():
    torch.manual_seed(0)
    vocab = 1500  # wider than top-p's 1024 candidates, so every kind of width occurs
    params = [SETTINGS[i % len(SETTINGS)] for i in range(21)]
    logits = torch.randn(len(params), vocab) * 3
    width = noise_width(params, vocab)
    assert width == vocab  # an untruncated sampled row draws over the whole vocabulary
    noise = torch.ones(len(params), width)
    for i, p in enumerate(params):
        w = candidate_width(p, vocab)
        noise[i, :w] = torch.empty(w).exponential_()
    tokens, logps = sample_rows(logits, params, noise)
    for i, p in enumerate(params):
        w = candidate_width(p, vocab)
        want, want_lp, _ = sample_next(logits[i:i + 1], p, noise[i:i + 1, :w] if p.temperature > 0 else None)
        assert tokens[i].item() == want.item(), (i, p)
        torch.testing.assert_close(logps[i], want_lp[0], atol=1e-5, rtol=1e-5)
    # Truncation holds: a top-1 row takes the argmax, a top-5 row one of the 5 likeliest.
    assert tokens[5].item() == logits[5].argmax().item()
    assert tokens[2].item() in logits[2].topk(5).indices.tolist()


@pytest.mark.fast
def test_greedy_only_batches_read_no_noise():
    logits = torch.randn(3, 50)
    tokens, _ = sample_rows(logits, [SamplingParams(temperature=0)] * 3, torch.ones(3, noise_width([], 50)))
    assert tokens.tolist() == logits.argmax(-1).tolist()
