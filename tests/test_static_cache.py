"""The fixed-shape decode path (StaticKVCache, Engine(static_cache=True), a compiled
decode step) against the dynamic cache it must match token for token."""

from __future__ import annotations

import pytest
import torch

from pure_transformer.inference.engine import Engine, SamplingParams
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.kv_cache import KVCache, StaticKVCache
from pure_transformer.model.transformer import build_model

CFG = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=128)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(CFG).eval()


def prompts(tok) -> list[list[int]]:
    texts = ["Question: A 45-year-old man presents with fever.", "The capital of", "Answer:", "A B"]
    return [[tok.eot_id] + tok.encode(t) for t in texts]


@pytest.mark.fast
@torch.no_grad()
def test_static_cache_logits_equal_the_dynamic_cache_under_left_padding(model) -> None:
    x = torch.randint(0, 512, (3, 14))
    pad = torch.tensor([0, 3, 5])  # rows start at different slots, as prefill() left-pads them
    dyn, stat = (cls.empty(CFG, 3, 20, "cpu", torch.float32, pad) for cls in (KVCache, StaticKVCache))
    outs = {}
    for name, cache in (("dynamic", dyn), ("static", stat)):
        _, first = model(x[:, :8], cache=cache)
        steps = [model(x[:, t:t + 1], cache=cache)[1] for t in range(8, 14)]
        outs[name] = torch.cat([first, *steps], dim=1)
    torch.testing.assert_close(outs["static"], outs["dynamic"], atol=1e-5, rtol=1e-5)
    assert int(stat.slot) == dyn.length == 14
    # every step attended over the same shape: the whole buffer
    assert stat.attention_mask(1).shape == (3, 1, 1, 20) and stat.positions(1).tolist() == [[14], [11], [9]]


def same_samples(a, b) -> None:
    for ga, gb in zip(a, b, strict=True):
        for sa, sb in zip(ga, gb, strict=True):
            assert sa.tokens == sb.tokens and sa.finish_reason == sb.finish_reason and sa.text == sb.text
            torch.testing.assert_close(sa.logprobs, sb.logprobs, atol=1e-5, rtol=1e-5)
            assert (sa.keep_ids is None) == (sb.keep_ids is None)
            if sa.keep_ids is not None:
                assert torch.equal(sa.keep_ids, sb.keep_ids)


@pytest.mark.parametrize("params", [
    SamplingParams(max_new_tokens=24, temperature=0),
    SamplingParams(max_new_tokens=24, temperature=1.0, top_k=20, top_p=0.9, stop_strings=("e",)),
], ids=["greedy", "sampled-stops"])
@pytest.mark.fast
def test_static_engine_gives_the_dynamic_engines_tokens_and_logprobs(model, tiny_tokenizer, params) -> None:
    ps = prompts(tiny_tokenizer)
    dynamic = Engine(model, tiny_tokenizer).generate(ps, params, num_samples=4, seeds=[1, 2, 3, 4])
    static = Engine(model, tiny_tokenizer, static_cache=True).generate(ps, params, num_samples=4, seeds=[1, 2, 3, 4])
    same_samples(static, dynamic)
    if params.stop_strings:  # rows ended at different steps, so the static batch shrank through its sizes
        assert len({len(s.tokens) for g in static for s in g}) > 3


@pytest.mark.fast
def test_compiled_decode_is_one_graph_per_batch_size(model, tiny_tokenizer) -> None:
    """fullgraph=True fails on any graph break; the backend sees each compile. The
    batch shrinks 16 -> 8 as rows stop (no further: STATIC_MIN_ROWS), and each size
    compiles once."""
    sizes: list[int] = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        sizes.append(next(t.shape[0] for t in example_inputs if isinstance(t, torch.Tensor) and t.dim() == 4))
        return gm.forward

    torch._dynamo.reset()
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_k=20, stop_strings=("e",))
    ps = prompts(tiny_tokenizer)
    compiled = Engine(model, tiny_tokenizer, compile_backend=counting_backend).generate(ps, params, 4, seeds=[5, 6, 7, 8])
    eager = Engine(model, tiny_tokenizer).generate(ps, params, 4, seeds=[5, 6, 7, 8])
    same_samples(compiled, eager)
    assert sizes == [16, 8]


@pytest.mark.fast
def test_static_buffers_are_reused_across_calls_and_stale_slots_never_leak(model, tiny_tokenizer) -> None:
    """A second call runs in the first call's buffers (same addresses, as a replayed
    CUDA graph needs) over their stale keys and values, and still matches a fresh
    dynamic cache; a call needing more slots gets new buffers."""
    ps = prompts(tiny_tokenizer)
    params = SamplingParams(max_new_tokens=20, temperature=1.0, top_k=20, stop_strings=("e",))
    static, dynamic = Engine(model, tiny_tokenizer, static_cache=True), Engine(model, tiny_tokenizer)
    static.generate(ps[::-1], params, num_samples=4, seeds=[9, 8, 7, 6])
    first = static._buffers
    address = first.k[0].data_ptr()
    again = static.generate(ps[1:], params, num_samples=4, seeds=[1, 2, 3])  # fewer rows: a view of the same buffers
    assert static._buffers is first and static._buffers.k[0].data_ptr() == address
    same_samples(again, dynamic.generate(ps[1:], params, num_samples=4, seeds=[1, 2, 3]))
    assert first.capacity == CFG.max_seq_len  # 256-slot rounding, capped at the context
    more = static.generate(ps, params, num_samples=5, seeds=[4, 3, 2, 1])  # 20 rows > 16
    assert static._buffers is not first and static._buffers.batch == 20
    same_samples(more, dynamic.generate(ps, params, num_samples=5, seeds=[4, 3, 2, 1]))
    static.free_cache()
    assert static._buffers is None
