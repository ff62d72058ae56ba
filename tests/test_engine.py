"""Sampling engine tests against independent references: the no-cache forward
pass, hand-masked softmaxes, and runs with and without batch compaction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pure_transformer.inference.engine import Engine, SamplingParams, sample_next
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.kv_cache import KVCache
from pure_transformer.model.transformer import build_model

CFG = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=128)


@pytest.fixture(scope="module")
def engine(tiny_tokenizer) -> Engine:
    torch.manual_seed(0)
    return Engine(build_model(CFG).eval(), tiny_tokenizer)


def prompts(tok) -> list[list[int]]:
    texts = ["Question: A 45-year-old man presents with fever.", "The capital of", "Answer:"]
    return [[tok.eot_id] + tok.encode(t) for t in texts]


def greedy_without_cache(model, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        _, logits = model(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.fast
def test_cache_matches_full_forward_logits(engine: Engine) -> None:
    model = engine.model
    x = torch.randint(0, 512, (2, 12))
    _, full = model(x)
    cache = KVCache.empty(CFG, 2, 16, "cpu", torch.float32)
    _, first = model(x[:, :7], cache=cache)
    steps = [model(x[:, t:t + 1], cache=cache)[1] for t in range(7, 12)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.fast
def test_greedy_kv_cache_equals_no_cache(engine: Engine) -> None:
    ps = prompts(engine.tok)  # different lengths: exercises left padding
    out = engine.generate(ps, SamplingParams(max_new_tokens=12, temperature=0))
    for p, group in zip(ps, out):
        expected = greedy_without_cache(engine.model, p, 12)
        got = group[0].tokens
        assert got == expected[:len(got)]
        assert group[0].finish_reason == ("stop" if len(got) < 12 else "length")


@pytest.mark.fast
def test_logprobs_equal_full_forward_under_the_same_truncation(engine: Engine) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.9, seed=3)
    ps = prompts(engine.tok)
    for p, group in zip(ps, engine.generate(ps, params, num_samples=4)):
        for s in group:
            ids = torch.tensor([p + s.tokens])
            _, logits = engine.model(ids)
            step_logits = logits[0, len(p) - 1:-1] / params.temperature  # positions predicting the completion
            assert s.keep_ids is not None and s.keep_ids.shape[0] == len(s.tokens)
            for t, token in enumerate(s.tokens):
                kept = s.keep_ids[t][s.keep_ids[t] >= 0]
                assert token in kept.tolist() and len(kept) <= 20
                expected = F.log_softmax(step_logits[t, kept], dim=-1)[kept.tolist().index(token)]
                assert s.logprobs[t].item() == pytest.approx(expected.item(), abs=1e-4)


@pytest.mark.fast
def test_top_k_logprob_is_log_softmax_over_kept_set() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    tokens, logp, keep = sample_next(logits, SamplingParams(temperature=1.5, top_k=4))
    for r in range(6):
        kept = logits[r].topk(4).indices
        assert set(keep[r].tolist()) == set(kept.tolist()) and tokens[r] in kept
        ref = torch.log_softmax(logits[r, kept] / 1.5, dim=0)[(kept == tokens[r]).nonzero()[0, 0]]
        assert logp[r].item() == pytest.approx(ref.item(), abs=1e-6)
    # top-p keeps the smallest prefix whose mass reaches p
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    _, _, keep = sample_next(probs, SamplingParams(top_p=0.75))
    assert sorted(k for k in keep[0].tolist() if k >= 0) == [0, 1]


@pytest.mark.fast
def test_top_p_alone_keeps_at_most_the_candidate_cap() -> None:
    """A flat 5,000-token distribution at top_p 0.99 would keep ~4,950 ids per step;
    the nucleus is sought among the 1,024 most likely, so the kept set stays bounded."""
    from pure_transformer.inference.engine import TOP_P_CANDIDATES

    logits = torch.zeros(3, 5000)
    logits[:, :10] = 1.0  # ten favourites, then a flat tail
    tokens, logp, keep = sample_next(logits, SamplingParams(top_p=0.99))
    assert keep.shape == (3, TOP_P_CANDIDATES) and all(t in k for t, k in zip(tokens.tolist(), keep.tolist()))
    kept = keep[0][keep[0] >= 0]
    assert set(range(10)) <= set(kept.tolist()) and len(kept) <= TOP_P_CANDIDATES
    # a narrow nucleus is untouched by the cap
    _, _, keep = sample_next(torch.tensor([[20.0, 19.0] + [0.0] * 3000]), SamplingParams(top_p=0.9))
    assert sorted(k for k in keep[0].tolist() if k >= 0) == [0, 1]


@pytest.mark.fast
def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    ps = prompts(engine.tok)
    a = engine.generate(ps, SamplingParams(max_new_tokens=8, temperature=1.0, seed=7), num_samples=3)
    b = engine.generate(ps, SamplingParams(max_new_tokens=8, temperature=1.0, seed=7), num_samples=3)
    c = engine.generate(ps, SamplingParams(max_new_tokens=8, temperature=1.0, seed=8), num_samples=3)
    tok = lambda out: [[s.tokens for s in g] for g in out]  # noqa: E731
    assert tok(a) == tok(b) and tok(a) != tok(c)


@pytest.mark.fast
def test_exponential_race_draws_from_the_truncated_distribution() -> None:
    """argmax(p / q), q ~ Exp(1), is an exact draw from p: 40,000 draws match p
    within 4 standard errors, under top-k and top-p truncation alike."""
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).expand(40_000, 6)
    for params in (SamplingParams(temperature=0.8), SamplingParams(top_k=3), SamplingParams(top_p=0.9)):
        tokens, _, keep = sample_next(logits, params)
        z = logits[0] / params.temperature
        if params.top_k is not None:
            z = z.masked_fill(z < z.topk(params.top_k).values[-1], float("-inf"))
        if params.top_p < 1:
            p = z.softmax(0)
            z = z.masked_fill(p.cumsum(0) - p >= params.top_p, float("-inf"))
        expected = z.softmax(0)
        freq = torch.bincount(tokens, minlength=6).double() / len(tokens)
        se = (expected * (1 - expected) / len(tokens)).sqrt().double()
        assert ((freq - expected).abs() <= 4 * se + 1e-9).all(), (params, freq, expected)


@pytest.mark.fast
def test_a_prompt_samples_alike_whatever_its_batch(engine: Engine) -> None:
    """Seeds are per prompt: prompt 1 asked with others or alone (or batch order
    reversed) draws the same tokens; this is what lets GRPO ranks split a step."""
    ps = prompts(engine.tok)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=20)
    together = engine.generate(ps, params, num_samples=3, seeds=[11, 22, 33])
    alone = engine.generate([ps[1]], params, num_samples=3, seeds=[22])
    reversed_ = engine.generate(ps[::-1], params, num_samples=3, seeds=[33, 22, 11])
    assert [s.tokens for s in together[1]] == [s.tokens for s in alone[0]]
    assert [s.tokens for s in together[1]] == [s.tokens for s in reversed_[1]]
    for a, b in zip(together[1], alone[0]):
        assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5)
    assert [s.tokens for s in together[0]] != [s.tokens for s in together[1]]
    with pytest.raises(ValueError, match="2 seeds for"):
        engine.generate(ps, params, seeds=[1, 2])


@pytest.mark.fast
def test_prefill_once_per_prompt(engine: Engine) -> None:
    batch_sizes = []
    handle = engine.model.embed_tokens.register_forward_hook(lambda m, i, o: batch_sizes.append(tuple(i[0].shape)))
    engine.generate(prompts(engine.tok), SamplingParams(max_new_tokens=3, temperature=1.0, seed=0), num_samples=16)
    handle.remove()
    assert batch_sizes[0][0] == 3 and batch_sizes[0][1] > 1  # one prefill of the 3 prompts
    assert all(shape == (48, 1) for shape in batch_sizes[1:])  # then 3 x 16 rows, one token each


@pytest.mark.fast
def test_stop_on_eot_and_stop_strings_with_compaction(engine: Engine) -> None:
    eot = engine.tok.eot_id
    ps = prompts(engine.tok)
    last_input: dict[str, torch.Tensor] = {}

    def remember(module, args):
        last_input["ids"], last_input["prefill"] = args[0][:, -1], args[0].shape[1] > 1

    # Every row counts up from its prompt's last token (the next token is always input + 1) and ends
    # with EOT on reaching a fixed id, so rows end at different steps whatever the weights or the
    # tokenizer's ids are: the row whose prompt ends in the largest id first, the others later or
    # at the length limit.
    ends = sorted({p[-1] for p in ps})
    assert len(ends) > 1 and eot not in range(ends[0], ends[-1] + 4)
    finish_at = ends[-1] + 3

    def force_eot(module, inputs, logits):
        ids = last_input["ids"]  # (B,) the token each row was fed last
        nxt = torch.where(ids + 1 >= finish_at, torch.full_like(ids, eot), ids + 1)
        out = torch.full_like(logits, -1e4)
        out[torch.arange(len(ids)), -1, nxt] = 1e4
        return out

    runs = []
    for fraction in (0.0, 2.0):  # compact at every finish / never compact
        hooks = [engine.model.register_forward_pre_hook(remember), engine.model.lm_head.register_forward_hook(force_eot)]
        runs.append(Engine(engine.model, engine.tok, compact_fraction=fraction).generate(
            ps, SamplingParams(max_new_tokens=10, temperature=0), num_samples=2))
        for h in hooks:
            h.remove()
    lengths = [len(s.tokens) for g in runs[0] for s in g]
    assert len(set(lengths)) > 1  # rows really finished at different steps
    for out in runs:
        for g in out:
            for s in g:
                assert s.finish_reason == ("stop" if s.tokens[-1] == eot else "length")
                assert eot not in engine.tok.encode(s.text)
    assert [[s.tokens for s in g] for g in runs[0]] == [[s.tokens for s in g] for g in runs[1]]

    free = engine.generate(ps[:1], SamplingParams(max_new_tokens=12, temperature=0))[0][0]
    stop = free.text[3:6]
    cut = engine.generate(ps[:1], SamplingParams(max_new_tokens=12, temperature=0, stop_strings=(stop,)))[0][0]
    assert cut.finish_reason == "stop" and stop not in cut.text and free.text.startswith(cut.text)
    assert len(cut.tokens) < len(free.tokens) or free.finish_reason == "stop"


@pytest.mark.fast
def test_bad_requests() -> None:
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
