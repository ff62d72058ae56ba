"""Model configuration and the named model presets.

A preset is a plain function returning a validated :class:`ModelConfig`; the
registry maps the public preset names (``tiny``, ``small``, ``medium``,
``medium-large``) to those functions. Invalid combinations fail in
``__post_init__`` with a message that names the broken invariant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..config.overrides import apply_overrides, pick_preset, require_positive
from ..errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder-only Transformer (names follow Hugging Face Llama)."""

    vocab_size: int = 50304
    """Embedding rows; a multiple of 64 keeps the output matmul efficient."""
    dim: int = 1152
    """Residual stream width (``hidden_size``)."""
    n_layers: int = 20
    n_heads: int = 18
    """Query heads; ``head_dim = dim // n_heads`` unless ``head_size`` says otherwise."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; ``None`` means ``n_heads`` (plain MHA)."""
    ffn_dim: int = 3072
    """Hidden width of the SwiGLU MLP (``intermediate_size``)."""
    max_seq_len: int = 2048
    """Longest context the RoPE tables are built for."""
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    """Share the input embedding with the output projection."""
    init_std: float = 0.02
    head_size: int | None = None
    """Width of one attention head when it is not ``dim // n_heads`` (Qwen3's ``head_dim``);
    ``None``: ``dim // n_heads``. Read it as :attr:`head_dim`."""
    qkv_bias: bool = False
    """Biases on the q/k/v projections (Qwen2); o_proj and the MLP never have one."""
    qk_norm: bool = False
    """Per-head RMSNorm of queries and keys (over ``head_dim``) before RoPE (Qwen3)."""
    rope_scaling: str | None = None
    """``None``: plain RoPE; ``"llama3"``: Llama-3.1's frequency-dependent scaling, set by
    the four ``rope_*`` fields below (transformers' ``rope_type: llama3``)."""
    rope_factor: float = 8.0
    """llama3 scaling: low frequencies are divided by this factor."""
    rope_low_freq_factor: float = 1.0
    """llama3 scaling: wavelengths above ``original_len / low_freq_factor`` are scaled fully."""
    rope_high_freq_factor: float = 4.0
    """llama3 scaling: wavelengths below ``original_len / high_freq_factor`` are kept; between, smoothed."""
    rope_original_max_len: int = 8192
    """llama3 scaling: the context length the model was pretrained at (``original_max_position_embeddings``)."""

    def __post_init__(self) -> None:
        require_positive(self, ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len"), "ModelConfig.")
        if self.head_size is not None and self.head_size <= 0:
            raise ConfigError(f"head_size must be positive or null, got {self.head_size}")
        if self.head_size is None and self.dim % self.n_heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim ({self.head_dim}) must be even for rotary embeddings")
        if self.n_kv_heads is not None and (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads):
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a positive multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.rope_scaling not in (None, "llama3"):
            raise ConfigError(f"rope_scaling must be null or 'llama3', got {self.rope_scaling!r}")
        if self.rope_scaling == "llama3" and not (
                self.rope_factor > 0 and self.rope_original_max_len > 0
                and 0 < self.rope_low_freq_factor < self.rope_high_freq_factor):
            raise ConfigError("llama3 rope scaling needs rope_factor > 0, rope_original_max_len > 0 and "
                              f"0 < rope_low_freq_factor < rope_high_freq_factor, got {self.rope_factor}, "
                              f"{self.rope_original_max_len}, {self.rope_low_freq_factor}, "
                              f"{self.rope_high_freq_factor}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``head_size``, else ``dim // n_heads``."""
        return self.head_size if self.head_size is not None else self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    def replace(self, **changes: object) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from a saved dict; keys this version does not know are ignored and
        missing keys take their defaults, so old checkpoints keep loading."""
        if not isinstance(d, dict):
            raise ConfigError(f"model_config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        # Through the same type checks as --set: a "dim": "64" fails as one line, not deep in torch.
        return apply_overrides(cls(), {k: v for k, v in d.items() if k in known}, strict=True)


def tiny() -> ModelConfig:
    """~1.4M parameters: trains on 2 CPU cores in minutes (debug runs, tests)."""
    return ModelConfig(vocab_size=4096, dim=128, n_layers=4, n_heads=4, ffn_dim=384, max_seq_len=256,
                       tie_embeddings=True)


def small() -> ModelConfig:
    """~77M parameters (25.8M in the embedding, 25.8M in the untied head): quick single-GPU experiments."""
    return ModelConfig(dim=512, n_layers=8, n_heads=8, ffn_dim=1408, max_seq_len=1024)


def medium() -> ModelConfig:
    """~0.15B parameters: a GPT-2-small-sized model with GQA."""
    return ModelConfig(dim=768, n_layers=12, n_heads=12, n_kv_heads=4, ffn_dim=2048, max_seq_len=2048)


def medium_large() -> ModelConfig:
    """The design's ~0.4B model: 20 layers, width 1152, 2048 context, 50,304 vocab.

    18 query heads of 64 dims share 6 key/value heads (GQA), which shrinks the
    KV cache 3x for the 16-samples-per-prompt GRPO rollouts.
    """
    return ModelConfig(dim=1152, n_layers=20, n_heads=18, n_kv_heads=6, ffn_dim=3072, max_seq_len=2048)


# The shapes of the open models `pure-transformer import` reads, from their config.json files: for `plan`
# and random-weight benchmarks of the real size (the device machines cannot reach the hub either). An
# imported checkpoint carries its own config; these never stand in for its weights.
def smollm2_360m() -> ModelConfig:
    """SmolLM2-360M: 32 layers of width 960, 15 query heads of 64 sharing 5 key/value heads, tied
    embeddings, 49,152 vocabulary, RoPE theta 1e5 (362M parameters)."""
    return ModelConfig(vocab_size=49152, dim=960, n_layers=32, n_heads=15, n_kv_heads=5, ffn_dim=2560,
                       max_seq_len=8192, rope_theta=100_000.0, tie_embeddings=True)


def qwen2_5_0_5b() -> ModelConfig:
    """Qwen2.5-0.5B: 24 layers of width 896, 14 query heads of 64 sharing 2 key/value heads, q/k/v biases,
    tied embeddings, 151,936 vocabulary (494M parameters)."""
    return ModelConfig(vocab_size=151936, dim=896, n_layers=24, n_heads=14, n_kv_heads=2, ffn_dim=4864,
                       max_seq_len=32768, rope_theta=1_000_000.0, norm_eps=1e-6, tie_embeddings=True, qkv_bias=True)


def qwen3_0_6b() -> ModelConfig:
    """Qwen3-0.6B: 28 layers of width 1024, 16 query heads of 128 (wider than 1024 / 16) sharing 8
    key/value heads, per-head RMSNorm on q and k, tied embeddings, 151,936 vocabulary (596M parameters)."""
    return ModelConfig(vocab_size=151936, dim=1024, n_layers=28, n_heads=16, n_kv_heads=8, head_size=128,
                       ffn_dim=3072, max_seq_len=40960, rope_theta=1_000_000.0, norm_eps=1e-6, tie_embeddings=True,
                       qk_norm=True)


def llama3_2_1b() -> ModelConfig:
    """Llama-3.2-1B: 16 layers of width 2048, 32 query heads of 64 sharing 8 key/value heads, llama3 RoPE
    scaling (factor 32 from 8,192 positions), tied embeddings, 128,256 vocabulary (1.24B parameters)."""
    return ModelConfig(vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
                       max_seq_len=131072, rope_theta=500_000.0, tie_embeddings=True, rope_scaling="llama3",
                       rope_factor=32.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                       rope_original_max_len=8192)


MODEL_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": tiny,
    "small": small,
    "medium": medium,
    "medium-large": medium_large,
    "smollm2-360m": smollm2_360m,
    "qwen2.5-0.5b": qwen2_5_0_5b,
    "qwen3-0.6b": qwen3_0_6b,
    "llama3.2-1b": llama3_2_1b,
}


def model_preset(name: str) -> ModelConfig:
    """The named preset's config; an unknown name raises a one-line ConfigError."""
    return pick_preset(MODEL_PRESETS, name, "model", by_phase=False)
