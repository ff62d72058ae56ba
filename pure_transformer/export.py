"""``pure-transformer export``: a checkpoint as a Hugging Face ``LlamaForCausalLM`` folder.

The model maps 1:1 onto Llama (same RoPE layout, RMSNorm, SwiGLU, names up to a
``model.`` prefix), so export is a renaming: ``config.json``,
``model.safetensors`` and the tokenizer files. The folder then loads with
``transformers.AutoModelForCausalLM`` and works with vLLM and lm-evaluation-harness.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import save_file

from .checkpoint import load_model
from .model import hf_llama_config, hf_llama_state_dict


def export_hf(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the checkpoint's weights, config and tokenizer to ``out_dir``."""
    model, tok, meta, ckpt = load_model(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {**hf_llama_config(model.cfg), "torch_dtype": "float32", "bos_token_id": tok.eot_id,
              "eos_token_id": tok.eot_id, "pad_token_id": tok.pad_id,
              "pure_transformer": {"checkpoint": str(ckpt), "kind": meta.get("kind"), "step": meta.get("step")}}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    tensors = {k: v.detach().contiguous() for k, v in hf_llama_state_dict(model).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    generation = {"bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id, "pad_token_id": tok.pad_id}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=1))
    tok.save(out)
    return out


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="step folder or run folder (final, else the newest)")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> None:
    print(f"wrote {export_hf(args.checkpoint, args.out)} (LlamaForCausalLM + tokenizer)")
