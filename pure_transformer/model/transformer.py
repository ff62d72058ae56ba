"""The pure_transformer model: one decoder-only, pre-norm, Llama-style Transformer.

Architecture (each choice mirrors Hugging Face ``LlamaForCausalLM`` so weights
export by renaming alone, see :mod:`pure_transformer.model.hf`):

- token embedding, no absolute positions;
- ``n_layers`` blocks of ``x + attn(rms_norm(x))`` then ``x + mlp(rms_norm(x))``;
- attention with rotary position embeddings (RoPE, the "rotate half" layout
  of GPT-NeoX/Llama, optionally with Llama-3's frequency scaling), optional
  grouped-query attention; by default no biases anywhere;
- the open-checkpoint knobs (:mod:`.config`): q/k/v biases (Qwen2), a per-head
  RMSNorm of queries and keys before RoPE (Qwen3), a head width other than
  ``dim // n_heads`` (Qwen3);
- SwiGLU MLP: ``down(silu(gate(x)) * up(x))``;
- final RMSNorm and a linear head, optionally tied to the embedding.

Packed pretraining sequences hold several documents. Passing ``doc_ids``
turns on document masking: a token attends only to earlier tokens of its own
document, and RoPE positions restart at every document, so a document scores
exactly as it would alone.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .config import ModelConfig
from .kv_cache import KVCache, StaticKVCache
from .losses import IGNORE_INDEX, linear_cross_entropy, loss_chunk
from .precision import model_uses_bf16

try:  # The flash-attn package is optional; SDPA already uses flash kernels on GPU.
    from flash_attn import flash_attn_func, flash_attn_varlen_func  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    flash_attn_func = flash_attn_varlen_func = None

# Selective activation checkpointing keeps what is costly to recompute, the matmul and attention
# outputs, and recomputes the rest of a block in backward: norms, RoPE, SiLU, products, dtype casts.
# Those elementwise results hold most of a block's activation bytes and little of its FLOPs.
_SAVED_OPS = {
    torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
}


def _save_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


_selective_context = functools.partial(create_selective_checkpoint_contexts, _save_matmuls)


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 and cast back (as HF Llama does)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def rope_frequencies(cfg: ModelConfig, device: torch.device | None = None) -> torch.Tensor:
    """The (head_dim / 2,) fp32 inverse frequencies, with Llama-3's scaling when the config asks.

    llama3 (transformers' ``_compute_llama3_parameters``, step for step): wavelengths
    longer than ``original_len / low_freq_factor`` are stretched by ``factor``, those
    shorter than ``original_len / high_freq_factor`` kept, and those between blended.
    """
    D = cfg.head_dim
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, D, 2, device=device, dtype=torch.float32) / D)
    if cfg.rope_scaling != "llama3":
        return inv_freq
    factor, low, high, old_len = (cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
                                  cfg.rope_original_max_len)
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


def rope_tables(cfg: ModelConfig, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (max_seq_len, head_dim), fp32, in the rotate-half layout."""
    inv_freq = rope_frequencies(cfg, device)  # (D/2,)
    freqs = torch.outer(torch.arange(cfg.max_seq_len, device=device, dtype=torch.float32), inv_freq)  # (T, D/2)
    angles = torch.cat([freqs, freqs], dim=-1)  # (T, D): both halves share a frequency
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) queries or keys by per-position angles; cos/sin are (B, 1, T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def positions_from_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token within its document: (B, T) -> (B, T), restarting at 0
    wherever ``doc_ids`` changes along a row."""
    T = doc_ids.shape[1]
    idx = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)
    is_start = torch.ones_like(doc_ids, dtype=torch.bool)
    is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start = torch.where(is_start, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start


def varlen_boundaries(doc_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cumulative sequence lengths over the flattened (B*T) batch for flash-attn's
    varlen kernel: every document run, and every row start, begins a sequence."""
    flat = doc_ids.reshape(-1)
    T = doc_ids.shape[1]
    new = torch.ones_like(flat, dtype=torch.bool)
    new[1:] = flat[1:] != flat[:-1]
    new[::T] = True  # a row never continues the previous row's document
    starts = new.nonzero().squeeze(1)
    cu = torch.cat([starts, starts.new_tensor([flat.numel()])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)  # (C -> H*D)
        self.k_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=cfg.qkv_bias)  # (C -> Hkv*D)
        self.v_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)  # (H*D -> C)
        # Qwen3: each head's query and key are RMS-normalised over D (one gain shared by all heads).
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, doc_ids: torch.Tensor | None,
                kv: tuple[KVCache | StaticKVCache, int, torch.Tensor] | None = None) -> torch.Tensor:
        """``kv`` is (cache, this layer's index, (B, 1, T, S) mask) when decoding."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:  # over the last axis, D: before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is None:
            y = attend(q, k, v, doc_ids)  # (B, H, T, D)
        else:  # decoding: append to this layer's cache, attend over what it holds
            cache, layer, mask = kv
            keys, values = cache.update(layer, k, v)  # (B, Hkv, S, D)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=k.shape[1] != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, doc_ids: torch.Tensor | None) -> torch.Tensor:
    """Causal attention, (B, H, T, D) in and out, k/v may have fewer (GQA) heads.

    Uses the flash-attn package on CUDA in half precision when it is installed
    (its varlen kernel handles document masking without a dense mask), else
    PyTorch SDPA: flash/efficient kernels for plain causal attention, and an
    explicit block-diagonal causal mask when documents must not see each other.
    """
    B, H, T, D = q.shape
    if flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        qf, kf, vf = (t.transpose(1, 2) for t in (q, k, v))  # flash-attn wants (B, T, H, D)
        if doc_ids is None:
            y = flash_attn_func(qf, kf, vf, causal=True)
        else:
            cu, max_len = varlen_boundaries(doc_ids)
            y = flash_attn_varlen_func(qf.reshape(B * T, H, D), kf.reshape(B * T, -1, D),
                                       vf.reshape(B * T, -1, D), cu, cu, max_len, max_len, causal=True)
            y = y.view(B, T, H, D)
        return y.transpose(1, 2)
    gqa = k.shape[1] != H
    if doc_ids is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    mask = (same_doc & causal)[:, None]  # (B, 1, T, T), True = may attend
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, doc_ids: torch.Tensor | None,
                kv: tuple[KVCache | StaticKVCache, int, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, doc_ids, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Decoder-only Transformer. Build with :func:`build_model`, which initialises it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # RoPE tables are derived, never saved: they are rebuilt by init_weights().
        self.register_buffer("rope_cos", torch.empty(cfg.max_seq_len, cfg.head_dim), persistent=False)
        self.register_buffer("rope_sin", torch.empty(cfg.max_seq_len, cfg.head_dim), persistent=False)
        self.activation_checkpointing: bool | str = False
        self.bf16: bool | None = None  # None: bf16 exactly on CUDA (pure_transformer.model.precision)
        """True: recompute each block in backward; "selective": only its elementwise ops."""

    # ----------------------------------------------------------------- init
    @torch.no_grad()
    def init_weights(self) -> None:
        """The one place weights are initialised (also fills the RoPE tables).

        Linear and embedding weights ~ N(0, init_std); the two projections that
        write into the residual stream (o_proj, down_proj) are scaled down by
        1/sqrt(2 * n_layers) as in GPT-2, so the residual variance stays flat
        with depth. Norm gains start at 1.
        """
        cfg = self.cfg
        if cfg.tie_embeddings:  # to_empty() from the meta device unties shared parameters
            self.lm_head.weight = self.embed_tokens.weight
        residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.ndim == 1:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(p, mean=0.0, std=cfg.init_std)
        self.init_rope()

    @torch.no_grad()
    def init_rope(self) -> None:
        """Fill the (non-persistent) RoPE tables; loading weights into a meta-built model needs only this."""
        cos, sin = rope_tables(self.cfg, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    # -------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, *,
                doc_ids: torch.Tensor | None = None, cache: KVCache | StaticKVCache | None = None,
                reduction: str = "mean", last_only: bool = False,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Run the model on (B, T) token ids.

        Args:
            input_ids: (B, T) token ids, T <= max_seq_len.
            labels: (B, T) next-token targets; ``IGNORE_INDEX`` entries add no loss.
            doc_ids: optional (B, T) document index of every token. When given,
                attention is masked to the token's own document and RoPE
                positions restart at each document.
            cache: a :class:`KVCache` (or :class:`StaticKVCache`) to decode with:
                the tokens are appended after its filled slots, which then grow by T.
            last_only: return logits for the last position only, (B, 1, V):
                a prefill needs nothing else, and the (B, T, V) head output
                is the largest tensor of a long prompt.
            keep: optional (B, T) bool mask: return logits only where it is True, as (N, V)
                in row-major order (N = ``keep.sum()``). Scoring a few continuation tokens
                of long rows needs the head there alone. Not with ``labels``.
            reduction: ``"mean"`` for the mean loss over non-ignored targets,
                ``"none"`` for the (B, T) per-token loss (0 at ignored targets),
                which the RL phase weights itself.

        Returns:
            ``(loss, logits)``: loss is None without labels; logits are (B, T, V)
            in the compute dtype, except with labels, ``reduction="mean"`` and more
            than one loss chunk of rows (training, validation; :func:`pure_transformer.model.losses.loss_chunk`),
            where they are None:
            that loss runs the head chunk by chunk
            (:func:`pure_transformer.model.losses.linear_cross_entropy`).
        """
        B, T = input_ids.shape
        if cache is None and T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}")
        if cache is not None:  # its capacity is at most max_seq_len
            cache.check(T)
            pos, mask = cache.positions(T), cache.attention_mask(T)
        elif doc_ids is not None:
            pos = positions_from_doc_ids(doc_ids)  # (B, T)
        else:
            pos = None
        if pos is None:
            cos, sin = self.rope_cos[:T][None, None], self.rope_sin[:T][None, None]  # (1, 1, T, D)
        else:
            cos, sin = self.rope_cos[pos][:, None], self.rope_sin[pos][:, None]  # (B, 1, T, D)
        x = self.embed_tokens(input_ids)  # (B, T, C)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for i, layer in enumerate(self.layers):
            if cache is not None:
                x = layer(x, cos, sin, None, (cache, i, mask))
            elif self.activation_checkpointing and self.training:
                # Recompute each block in backward: activation memory O(1 block) instead of O(L);
                # selective: keep the matmul and attention outputs, recompute only the cheap ops.
                context = {"context_fn": _selective_context} if self.activation_checkpointing == "selective" else {}
                x = checkpoint(layer, x, cos, sin, doc_ids, use_reentrant=False, **context)
            else:
                x = layer(x, cos, sin, doc_ids)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x = x[:, -1:]
        elif keep is not None:
            if labels is not None:
                raise ValueError("keep selects logits to return; it does not combine with labels")
            x = x[keep]  # (N, C)
        chunk = loss_chunk(x.device)
        if labels is not None and reduction == "mean" and B * T > chunk:
            # The (B, T, V) logits are never built: the head and the loss run a chunk of rows at a time.
            # (A batch of one chunk or less is the plain path below: there is nothing to save.)
            h = self.norm(x)
            return linear_cross_entropy(h.view(-1, h.shape[-1]), self.lm_head.weight, labels.reshape(-1), chunk), None
        logits = self.lm_head(self.norm(x))  # (B, T, V); (B, 1, V) with last_only; (N, V) with keep
        if labels is None:
            return None, logits
        loss = F.cross_entropy(logits.float().view(B * T, -1), labels.reshape(B * T),
                               ignore_index=IGNORE_INDEX, reduction=reduction)
        return (loss.view(B, T) if reduction == "none" else loss), logits

    # ------------------------------------------------------------ accounting
    def num_params(self, exclude_embedding: bool = False) -> int:
        """Exact parameter count (a tied matrix counts once)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed_tokens.weight.numel() if exclude_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: ``6 * N + 12 * L * H * D * T``.

        ``N`` counts the parameters used in matmuls: everything except the input
        embedding, which is a lookup (the tied or untied output head is a
        matmul and counts). Each such parameter costs 2 FLOPs forward and 4
        backward. The second term is attention's QK^T and AV products, 2 matmuls
        of 2*D*T FLOPs per head per token, times 3 for forward plus backward
        (PaLM, appendix B). It ignores the causal mask's halving, as MFU
        conventions do; ``T`` defaults to ``max_seq_len``.
        """
        cfg = self.cfg
        T = seq_len or cfg.max_seq_len
        return 6 * self.matmul_params() + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * T

    def matmul_params(self) -> int:
        """The parameters used in matmuls: all but the input embedding (a lookup); a tied
        head is a matmul, so its matrix counts once here."""
        n = self.num_params() - self.embed_tokens.weight.numel()
        return n + self.lm_head.weight.numel() if self.cfg.tie_embeddings else n

    # ------------------------------------------------------------- optimizer
    def setup_optimizers(self, lr: float, *, embedding_lr: float | None = None, weight_decay: float = 0.1,
                         betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                         fused: bool | None = None) -> torch.optim.AdamW:
        """AdamW with three parameter groups.

        - matrices (every >=2-D weight except the input embedding): ``lr``, decayed;
        - the input embedding (the head too when tied): ``embedding_lr``
          (default ``lr``), decayed. Its rows get sparse, small gradients, so a
          higher rate helps it keep up (the RL phase uses 2e-4 vs 1e-5);
        - vectors (norm gains): ``lr``, never decayed.

        Each group records its peak rate in ``group["peak_lr"]`` so a schedule
        can scale every group by the same factor. ``fused`` defaults to True on CUDA and
        wherever the model runs in bf16 (the CUDA code path, :mod:`pure_transformer.model.precision`).
        """
        embedding = self.embed_tokens.weight
        matrices = [p for p in self.parameters() if p.ndim >= 2 and p is not embedding]
        vectors = [p for p in self.parameters() if p.ndim < 2]
        groups = [
            {"params": matrices, "lr": lr, "weight_decay": weight_decay, "name": "matrices"},
            {"params": [embedding], "lr": embedding_lr or lr, "weight_decay": weight_decay, "name": "embedding"},
            {"params": vectors, "lr": lr, "weight_decay": 0.0, "name": "vectors"},
        ]
        for g in groups:
            g["peak_lr"] = g["lr"]
        if fused is None:
            fused = embedding.is_cuda or model_uses_bf16(self)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
                ) -> Transformer:
    """Construct on ``device`` and run the single :meth:`Transformer.init_weights`.

    Not on the meta device: its first ``normal_`` imports torch's Python reference
    kernels (sympy included), about 2 s of every ``evaluate``/``generate`` start, while
    the constructors' throw-away init costs milliseconds. Their draws happen on a forked
    RNG, so ``init_weights`` sees the seed's stream exactly as a meta-device build would.
    """
    device = torch.device(device)
    accel = [] if device.type == "cpu" else [device.index if device.index is not None else 0]
    with torch.random.fork_rng(devices=accel, device_type=device.type), device:
        model = Transformer(cfg)
    model.init_weights()
    if dtype is not None:
        model.to(dtype)
    return model
