"""The Hugging Face mapping, both ways: config.json fields and weight names.

Our decoder is Llama's, plus three knobs open checkpoints need (:mod:`.config`): q/k/v
biases (Qwen2), per-head QK-norm and a free head width (Qwen3), and Llama-3's RoPE
scaling. So one config maps to exactly one of ``LlamaForCausalLM``, ``Qwen2ForCausalLM``
and ``Qwen3ForCausalLM``, and the weights are a renaming: our parameter names gain a
``model.`` prefix, except the head.

Import refuses, in one :class:`~pure_transformer.errors.ConfigError` line naming the
field, anything we do not implement (another architecture, sliding-window attention,
another RoPE type, biases where we have none, another activation): a checkpoint that
loads runs exactly as transformers runs it, or it does not load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..errors import ConfigError
from .config import ModelConfig
from .transformer import Transformer

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
"""The architectures we read and write, with their ``model_type``."""

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def hf_architecture(cfg: ModelConfig) -> str:
    """The transformers class that runs ``cfg`` exactly: QK-norm is Qwen3, q/k/v biases Qwen2, else Llama."""
    if cfg.qk_norm:
        if cfg.qkv_bias:  # Qwen3's attention_bias also puts a bias on o_proj, which we do not have
            raise ConfigError("no transformers architecture has QK-norm with q/k/v-only biases (qk_norm and qkv_bias)")
        arch = "Qwen3ForCausalLM"
    else:
        arch = "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"
    if cfg.rope_scaling is not None and arch != "LlamaForCausalLM":
        raise ConfigError(f"rope_scaling {cfg.rope_scaling!r} is exported only as LlamaForCausalLM, not {arch}")
    return arch


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face names: a pure renaming (a tied head is left out, as transformers saves it)."""
    out = {}
    for name, tensor in model.state_dict().items():
        out[name if name.startswith("lm_head.") else f"model.{name}"] = tensor
    if model.cfg.tie_embeddings:
        out.pop("lm_head.weight", None)
    return out


hf_llama_state_dict = hf_state_dict  # the name export used before Qwen existed


def hf_config(cfg: ModelConfig) -> dict:
    """The ``config.json`` fields of the equivalent transformers model (:func:`hf_architecture`).

    RoPE is written the way every transformers release reads it (``rope_theta``, and
    ``rope_scaling`` for llama3); 5.x turns those into its ``rope_parameters``."""
    arch = hf_architecture(cfg)
    out: dict[str, Any] = {
        "architectures": [arch], "model_type": ARCHITECTURES[arch],
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len, "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings, "hidden_act": "silu",
    }
    if arch == "LlamaForCausalLM":
        out.update({"attention_bias": False, "mlp_bias": False})
    elif arch == "Qwen3ForCausalLM":
        out["attention_bias"] = False
    if arch != "LlamaForCausalLM":
        out.update({"use_sliding_window": False, "sliding_window": None})
    if cfg.rope_scaling == "llama3":
        out["rope_scaling"] = {"rope_type": "llama3", "factor": cfg.rope_factor,
                               "low_freq_factor": cfg.rope_low_freq_factor,
                               "high_freq_factor": cfg.rope_high_freq_factor,
                               "original_max_position_embeddings": cfg.rope_original_max_len}
    return out


hf_llama_config = hf_config


def _refuse(source: str, what: str) -> ConfigError:
    return ConfigError(f"{source}: {what}; pure_transformer implements Llama/Qwen2/Qwen3 decoders "
                       "without it, so this checkpoint cannot be imported")


def config_from_hf(hf: dict, source: str = "config.json") -> ModelConfig:
    """Our :class:`ModelConfig` from a transformers ``config.json`` (old and 5.x RoPE fields alike),
    refusing in one line any architecture or value the model does not implement."""
    archs = hf.get("architectures") or []
    arch = archs[0] if len(archs) == 1 else None
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{source}: architecture {archs or hf.get('model_type')!r} is not supported "
                          f"(supported: {', '.join(ARCHITECTURES)})")
    if hf.get("hidden_act", "silu") != "silu":
        raise _refuse(source, f"hidden_act {hf['hidden_act']!r} (only silu)")
    if hf.get("mlp_bias"):
        raise _refuse(source, "mlp_bias true")
    if arch in ("LlamaForCausalLM", "Qwen3ForCausalLM") and hf.get("attention_bias"):
        raise _refuse(source, "attention_bias true (a bias on o_proj)")
    if hf.get("use_sliding_window") or any(t != "full_attention" for t in hf.get("layer_types") or []):
        raise _refuse(source, f"sliding-window attention (sliding_window {hf.get('sliding_window')})")
    if hf.get("pretraining_tp", 1) != 1:
        raise _refuse(source, f"pretraining_tp {hf['pretraining_tp']}")
    # 5.x writes rope_parameters {"rope_type", "rope_theta", ...}; earlier releases rope_theta + rope_scaling.
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3") or (rope_type == "llama3" and arch != "LlamaForCausalLM"):
        raise _refuse(source, f"rope_type {rope_type!r} (only default, and llama3 for Llama)")
    scaling: dict[str, Any] = {}
    if rope_type == "llama3":
        try:
            scaling = {"rope_scaling": "llama3", "rope_factor": float(rope["factor"]),
                       "rope_low_freq_factor": float(rope["low_freq_factor"]),
                       "rope_high_freq_factor": float(rope["high_freq_factor"]),
                       "rope_original_max_len": int(rope["original_max_position_embeddings"])}
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{source}: llama3 rope scaling lacks a valid {e}") from None
    try:
        n_heads, dim = int(hf["num_attention_heads"]), int(hf["hidden_size"])
        head_dim = hf.get("head_dim") or dim // n_heads
        return ModelConfig(
            vocab_size=int(hf["vocab_size"]), dim=dim, n_layers=int(hf["num_hidden_layers"]), n_heads=n_heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or n_heads), ffn_dim=int(hf["intermediate_size"]),
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            head_size=None if head_dim * n_heads == dim else int(head_dim),
            qkv_bias=arch == "Qwen2ForCausalLM", qk_norm=arch == "Qwen3ForCausalLM", **scaling)
    except KeyError as e:
        raise ConfigError(f"{source}: no {e} field") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: a field has the wrong type ({e})") from None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a transformers folder: ``model.safetensors``, or the shards its index names."""
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE]
    index = folder / WEIGHTS_INDEX
    if not index.is_file():
        raise ConfigError(f"{folder} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX} (only safetensors weights "
                          "are read; a pytorch_model.bin would need unpickling)")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{index} is not a safetensors index (no weight_map)") from None
    if missing := [f.name for f in files if not f.is_file()]:
        raise ConfigError(f"{index} names shards that are not there: {', '.join(missing)}")
    return files


def load_hf_weights(model: Transformer, files: list[Path]) -> None:
    """Load transformers-named safetensors ``files`` into ``model`` (built on the meta device):
    each tensor becomes the parameter itself (``assign``), in its stored dtype, so the
    weights are held once. Missing, unexpected and misshapen tensors are refused in one line."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            for hf_name in f.keys():
                name = hf_name.removeprefix("model.")
                if name == "lm_head.weight" and model.cfg.tie_embeddings:
                    continue  # a tied checkpoint may store the shared matrix twice; the embedding is it
                if name not in expected:
                    raise ConfigError(f"{file.name}: unexpected tensor {hf_name} (not in this architecture)")
                tensor = f.get_tensor(hf_name)
                if tuple(tensor.shape) != expected[name]:
                    raise ConfigError(f"{file.name}: {hf_name} is {list(tensor.shape)}, config.json implies "
                                      f"{list(expected[name])}")
                state[name] = tensor
    skip = {"lm_head.weight"} if model.cfg.tie_embeddings else set()
    if missing := sorted(set(expected) - set(state) - skip):
        raise ConfigError(f"the checkpoint lacks {len(missing)} tensor(s), first {missing[0]}")
    model.load_state_dict(state, strict=False, assign=True)
    if model.cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    device = model.embed_tokens.weight.device
    for name in ("rope_cos", "rope_sin"):  # derived buffers: allocated here, filled by init_rope
        model.register_buffer(name, torch.empty(model.cfg.max_seq_len, model.cfg.head_dim, device=device),
                              persistent=False)
    model.init_rope()


def load_hf_model(folder: str | Path) -> Transformer:
    """Our model from a local transformers folder (config.json + safetensors), built on the
    meta device and filled with the stored tensors (bf16 stays bf16)."""
    folder = Path(folder)
    try:
        hf = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder} has no config.json (not a transformers model folder)") from None
    except ValueError as e:
        raise ConfigError(f"{folder / 'config.json'} is not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ConfigError(f"{folder / 'config.json'} must be a JSON object")
    cfg = config_from_hf(hf, str(folder / "config.json"))
    files = weight_files(folder)
    with torch.device("meta"):
        model = Transformer(cfg)
    load_hf_weights(model, files)
    return model
