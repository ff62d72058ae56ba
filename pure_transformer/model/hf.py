"""The Hugging Face mapping: our model as a ``LlamaForCausalLM`` (config and weight names).

The architecture mirrors Llama one to one (:mod:`.transformer`), so export is a renaming:
our parameter names gain a ``model.`` prefix, except the head. An importer of open
checkpoints maps the other way, through the same two tables.
"""

from __future__ import annotations

import torch

from .config import ModelConfig
from .transformer import Transformer


def hf_llama_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face ``LlamaForCausalLM`` names: a pure renaming."""
    out = {}
    for name, tensor in model.state_dict().items():
        out[name if name.startswith("lm_head.") else f"model.{name}"] = tensor
    if model.cfg.tie_embeddings:
        out.pop("lm_head.weight", None)
    return out


def hf_llama_config(cfg: ModelConfig) -> dict:
    """The ``config.json`` fields of the equivalent ``LlamaForCausalLM``."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len, "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
    }
