"""Model tests: exact parameter counts, causality, document masking, HF Llama
parity, loss options, activation checkpointing, compile and optimizer groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pure_transformer.errors import ConfigError
from pure_transformer.model.config import MODEL_PRESETS, ModelConfig, model_preset
from pure_transformer.model.hf import hf_llama_config, hf_llama_state_dict
from pure_transformer.model.transformer import (IGNORE_INDEX, Transformer, build_model, positions_from_doc_ids,
                                                varlen_boundaries)

SMALL = ModelConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, max_seq_len=64)


def expected_params(c: ModelConfig) -> int:
    """Hand count, written independently of the module tree."""
    attn = c.dim * c.n_heads * c.head_dim * 2 + c.dim * c.kv_heads * c.head_dim * 2  # q, o + k, v
    attn += (c.n_heads + 2 * c.kv_heads) * c.head_dim if c.qkv_bias else 0  # Qwen2's q, k, v biases
    attn += 2 * c.head_dim if c.qk_norm else 0  # Qwen3's per-head q and k RMSNorm gains
    mlp = 3 * c.dim * c.ffn_dim
    per_layer = attn + mlp + 2 * c.dim  # two RMSNorm gains
    embeddings = c.vocab_size * c.dim * (1 if c.tie_embeddings else 2)
    return embeddings + c.n_layers * per_layer + c.dim  # final norm


@pytest.mark.fast
@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_preset_parameter_counts(name: str) -> None:
    cfg = model_preset(name)
    with torch.device("meta"):  # no memory: the 0.4B model is counted without being built
        model = Transformer(cfg)
    assert model.num_params() == expected_params(cfg)


@pytest.mark.fast
def test_medium_large_is_the_design_model() -> None:
    cfg = model_preset("medium-large")
    assert (cfg.n_layers, cfg.dim, cfg.max_seq_len) == (20, 1152, 2048)
    assert 49_000 <= cfg.vocab_size <= 51_000
    n = expected_params(cfg)
    assert 350_000_000 <= n <= 450_000_000, n


@pytest.mark.fast
@pytest.mark.parametrize("tied", [False, True])
def test_build_model_draws_the_seed_stream_of_a_meta_build(tied: bool) -> None:
    # build_model constructs on the target device; its constructors' init must not shift the
    # RNG, or a seed would give other weights than the meta-device build every run used so far.
    cfg = SMALL.replace(tie_embeddings=tied)
    with torch.device("meta"):
        reference = Transformer(cfg)
    reference.to_empty(device="cpu")
    torch.manual_seed(5)
    reference.init_weights()
    after_reference = torch.rand(3)
    torch.manual_seed(5)
    model = build_model(cfg)
    assert torch.equal(torch.rand(3), after_reference)
    assert (model.lm_head.weight is model.embed_tokens.weight) == tied
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(model.rope_cos, reference.rope_cos)


@pytest.mark.fast
def test_unknown_preset_and_bad_config() -> None:
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        model_preset("huge")
    with pytest.raises(ConfigError, match="divisible by n_heads"):
        ModelConfig(dim=100, n_heads=3)
    with pytest.raises(ConfigError, match="multiple of n_kv_heads"):
        ModelConfig(dim=64, n_heads=4, n_kv_heads=3)


@pytest.mark.fast
def test_flops_per_token_by_hand() -> None:
    c = SMALL
    model = build_model(c)
    matmul = expected_params(c) - c.vocab_size * c.dim  # everything but the input lookup
    assert model.flops_per_token(16) == 6 * matmul + 12 * c.n_layers * c.n_heads * c.head_dim * 16


@pytest.mark.fast
def test_causality() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    x = torch.randint(0, SMALL.vocab_size, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, SMALL.vocab_size, (2, 8))
    _, a = model(x)
    _, b = model(y)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.fast
def test_document_masking_equals_documents_alone() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    d1, d2 = torch.randint(0, 97, (1, 7)), torch.randint(0, 97, (1, 9))
    packed = torch.cat([d1, d2], dim=1)
    doc_ids = torch.tensor([[0] * 7 + [1] * 9])
    _, masked = model(packed, doc_ids=doc_ids)
    _, alone1 = model(d1)
    _, alone2 = model(d2)
    torch.testing.assert_close(masked[:, :7], alone1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked[:, 7:], alone2, atol=1e-5, rtol=1e-5)
    _, unmasked = model(packed)  # without the mask the second document sees the first
    assert not torch.allclose(unmasked[:, 7:], alone2, atol=1e-3)


@pytest.mark.fast
def test_positions_and_varlen_boundaries() -> None:
    doc_ids = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 2, 2]])
    assert positions_from_doc_ids(doc_ids).tolist() == [[0, 1, 0, 1, 2], [0, 1, 2, 0, 1]]
    cu, max_len = varlen_boundaries(doc_ids)
    # row 2 starts a new sequence even though it continues document 1 of row 1
    assert cu.tolist() == [0, 2, 5, 8, 10] and max_len == 3


@pytest.mark.fast
@pytest.mark.parametrize("tied", [False, True])
def test_logits_match_hf_llama(tied: bool) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = SMALL.replace(tie_embeddings=tied)
    torch.manual_seed(0)
    ours = build_model(cfg).eval()
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_llama_config(cfg))).eval()
    missing, unexpected = hf.load_state_dict(hf_llama_state_dict(ours), strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if tied else set())
    x = torch.randint(0, cfg.vocab_size, (2, 33))
    with torch.no_grad():
        _, logits = ours(x)
        ref = hf(x).logits
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.fast
def test_loss_mean_ignore_and_per_token() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL)
    x = torch.randint(0, 97, (2, 10))
    labels = torch.randint(0, 97, (2, 10))
    labels[0, :4] = IGNORE_INDEX
    loss, _ = model(x, labels)
    per_token, logits = model(x, labels, reduction="none")
    logp = torch.log_softmax(logits.float(), dim=-1)
    keep = labels != IGNORE_INDEX
    manual = -logp[keep].gather(1, labels[keep][:, None]).squeeze(1)
    torch.testing.assert_close(loss, manual.mean())
    assert per_token.shape == (2, 10)
    assert torch.all(per_token[0, :4] == 0)
    torch.testing.assert_close(per_token[keep], manual)


@pytest.mark.fast
def test_activation_checkpointing_same_gradients_and_what_it_recomputes() -> None:
    """Full and selective checkpointing give the plain gradients. Counting the ops that
    run in forward + backward: full recomputes every matmul of the forward again;
    selective recomputes none of them (it saved their outputs) but does recompute
    the elementwise ops (SiLU here)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: dict = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[func] = self.calls.get(func, 0) + 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = build_model(SMALL)
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    grads, counts = [], []
    for ac in (False, True, "selective"):
        model.zero_grad()
        model.activation_checkpointing = ac
        with Count() as count:
            model(x, y)[0].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        counts.append(count.calls)
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b)
    mm, silu = torch.ops.aten.mm.default, torch.ops.aten.silu.default
    plain, full, selective = counts
    # q, k, v, o, gate, up: the recompute stops once backward has what it needs, and down_proj's
    # output is not among it (its gradient needs the input only).
    per_block_mm = 6
    assert full[mm] == plain[mm] + per_block_mm * SMALL.n_layers and selective[mm] == plain[mm]
    assert full[silu] == selective[silu] == plain[silu] + SMALL.n_layers


@pytest.mark.fast
def test_tied_embeddings_survive_meta_init() -> None:
    model = build_model(SMALL.replace(tie_embeddings=True))
    assert model.lm_head.weight is model.embed_tokens.weight
    assert model.num_params() == expected_params(SMALL.replace(tie_embeddings=True))


@pytest.mark.fast
def test_optimizer_groups() -> None:
    model = build_model(SMALL)
    opt = model.setup_optimizers(1e-5, embedding_lr=2e-4, weight_decay=0.1)
    by_name = {g["name"]: g for g in opt.param_groups}
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert by_name["embedding"]["lr"] == 2e-4 and by_name["embedding"]["params"][0] is model.embed_tokens.weight
    assert by_name["matrices"]["lr"] == 1e-5 and by_name["matrices"]["weight_decay"] == 0.1
    assert all(p.ndim >= 2 for p in by_name["matrices"]["params"])
    assert by_name["vectors"]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in by_name["vectors"]["params"])
    assert all(g["peak_lr"] == g["lr"] for g in opt.param_groups)


@pytest.mark.fast
def test_init_statistics() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=512, dim=256, n_layers=8, n_heads=4, ffn_dim=512, max_seq_len=32)
    model = build_model(cfg)
    assert abs(model.layers[0].mlp.up_proj.weight.std().item() - 0.02) < 2e-3
    assert abs(model.layers[0].mlp.down_proj.weight.std().item() - 0.02 / 4) < 5e-4  # 1/sqrt(2*8)
    assert torch.all(model.norm.weight == 1)


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    """Inductor's forward and backward kernels against eager. ``vec_isa_ok`` trusts the CPU's flags
    for its vector ISA instead of test-building a probe library per ISA first: on a cold compile
    cache (a fresh machine, CI) the probes alone took 6 of this test's 27 s; the kernels are the same."""
    from torch._inductor import config as inductor_config

    torch.manual_seed(0)
    model = build_model(SMALL)
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    eager_loss, _ = model(x, y)
    compiled = torch.compile(model)
    with inductor_config.patch({"cpp.vec_isa_ok": True}):
        compiled_loss, _ = compiled(x, y)
        compiled_loss.backward()
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.fast
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_linear_cross_entropy_equals_the_plain_loss_and_gradients(chunk: int) -> None:
    """Value and both gradients against F.cross_entropy on materialised logits, in
    float64, with ignored targets, chunks that do not divide the rows, and a scaled
    upstream gradient (backward multiplies the stored gradients)."""
    from pure_transformer.model.losses import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (23,), generator=g)
    labels[[0, 5, 6]] = IGNORE_INDEX
    ours = linear_cross_entropy(hidden, weight, labels, chunk=chunk)
    (3.0 * ours).backward()
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ref = F.cross_entropy(hidden @ weight.T, labels, ignore_index=IGNORE_INDEX)
    (3.0 * ref).backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(got[0], hidden.grad)
    torch.testing.assert_close(got[1], weight.grad)
    with torch.no_grad():  # validation: the loss alone
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, labels, chunk=chunk), ref)


@pytest.mark.fast
def test_chunked_loss_without_gradients_does_only_the_forward_matmuls() -> None:
    """Under no_grad (validation), or when no input needs a gradient, the loss is the plain
    one and only the head's forward matmul runs per chunk: no softmax gradient, no
    gradient matmuls, no V x C gradient buffer."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from pure_transformer.model.losses import linear_cross_entropy

    class CountMatmuls(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.count += func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm)
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (23,), generator=g)
    ref = F.cross_entropy(hidden.detach() @ weight.detach().T, labels)
    chunks = 3  # 23 rows in chunks of 8
    for grad_mode, h, w in [(False, hidden, weight), (True, hidden.detach(), weight.detach())]:
        with torch.set_grad_enabled(grad_mode), CountMatmuls() as counter:
            loss = linear_cross_entropy(h, w, labels, chunk=8)
        torch.testing.assert_close(loss, ref)
        assert counter.count == chunks and not loss.requires_grad
    with CountMatmuls() as counter:  # training: the forward and both gradient matmuls
        loss = linear_cross_entropy(hidden, weight, labels, chunk=8)
    assert counter.count == 3 * chunks and loss.requires_grad


@pytest.mark.fast
def test_model_loss_uses_the_chunked_path_with_the_same_gradients() -> None:
    """The model's training loss (tied head included) against the per-token loss of
    its materialised logits: same value, same parameter gradients."""
    from pure_transformer.model.losses import LOSS_CHUNK

    torch.manual_seed(0)
    model = build_model(SMALL.replace(max_seq_len=1024))
    x, y = torch.randint(0, 97, (3, 700)), torch.randint(0, 97, (3, 700))  # 2,100 rows: more than one chunk
    assert x.numel() > LOSS_CHUNK
    y[0, :3] = IGNORE_INDEX
    loss, none = model(x, y)
    assert none is None  # the logits were never materialised
    loss.backward()
    chunked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    per_token, _ = model(x, y, reduction="none")
    (per_token.sum() / (y != IGNORE_INDEX).sum()).backward()
    torch.testing.assert_close(loss, per_token.sum() / (y != IGNORE_INDEX).sum())
    for a, (name, p) in zip(chunked, model.named_parameters()):
        torch.testing.assert_close(a, p.grad, msg=name)
