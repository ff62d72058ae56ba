"""Export: a checkpoint as a Hugging Face ``LlamaForCausalLM`` folder (``Qwen2ForCausalLM`` or
``Qwen3ForCausalLM`` when its knobs say so: :func:`pure_transformer.model.hf.hf_architecture`).

The model maps 1:1 onto those (same RoPE layout, RMSNorm, SwiGLU, names up to a
``model.`` prefix), so the weights are a renaming. An imported checkpoint keeps its own
tokenizer roles (Llama-3's begin-of-text, Qwen's none) and chat template. The folder is complete, so the
tools people use need no hand-made preprocessing:

- ``config.json`` (with ``dtype`` and ``transformers_version``), ``model.safetensors``,
  ``generation_config.json`` (end-of-text as eos/pad, :mod:`pure_transformer.commands.generate`'s
  default sampling);
- ``tokenizer.json`` whose post-processor prepends end-of-text, the token every
  training document starts after: plain ``tokenizer(prompt)`` in transformers,
  lm-evaluation-harness and vLLM then sees exactly the ids our own scoring does;
- ``tokenizer_config.json`` with that token as ``bos_token``, the context length,
  and the server's chat template (:mod:`pure_transformer.mcq.chat`);
- ``README.md``, the model card (:mod:`pure_transformer.checkpoint.model_card`);
- ``ledger.json``, the checkpoint's contamination ledger (:mod:`pure_transformer.data.ledger`), unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from safetensors import SafetensorError
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.processors import TemplateProcessing

from ..data.ledger import LEDGER_FILE, read_ledger
from ..errors import writing
from ..mcq.answer_format import AnswerFormat
from ..mcq.chat import CHAT_TEMPLATE
from ..model.hf import hf_config, hf_state_dict
from ..tokenizer.bpe import Tokenizer
from .model_card import model_card, read_reports
from .store import load_model, save_safetensors

if TYPE_CHECKING:
    from ..model.transformer import Transformer

# The generate command's defaults, for `model.generate(**inputs)` without arguments.
DEFAULT_SAMPLING = {"do_sample": True, "temperature": 0.8, "top_p": 1.0, "top_k": 0, "max_new_tokens": 128}


def bos_prefixed(tok: Tokenizer) -> HFTokenizer:
    """A copy of ``tok``'s tokenizers object that prepends its start id (ours: end-of-text) to every
    encoding (``add_special_tokens=False`` still gives the bare ids); unchanged when it has none (Qwen)."""
    hf = HFTokenizer.from_str(tok.hf.to_str())
    if tok.start_ids:
        start = tok.hf.id_to_token(tok.start_ids[0])
        hf.post_processor = TemplateProcessing(single=f"{start} $A", pair=f"{start} $A $B:1",
                                               special_tokens=[(start, tok.start_ids[0])])
    return hf


def _transformers_version() -> str:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:  # the folder is written without transformers installed
        return "4.40.0"  # the oldest release this layout is meant for (the dev extra's floor)


def export_hf(checkpoint: str | Path, out_dir: str | Path, reports: Sequence[str | Path] = ()) -> Path:
    """Write the checkpoint as a complete transformers folder in ``out_dir``; ``reports``
    are ``evaluate --output`` files whose results go into the model card."""
    results = read_reports(reports)  # before any write: a bad report path leaves no half folder
    model, tok, meta, ckpt = load_model(checkpoint)
    out = Path(out_dir)
    # Written to a hidden sibling and moved into place: a full disk or a kill leaves no half folder
    # under the name, and folders made for it are removed again. One error line names the reason.
    made = next((p for p in reversed((out, *out.parents)) if not p.exists()), None)
    absolute = Path(os.path.abspath(out))  # ``--out .`` has a name too
    tmp = absolute.with_name(f".tmp-{absolute.name}-{os.getpid()}")
    with writing(out, (OSError, SafetensorError)):
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)  # under a regular file: "Not a directory"
            _write_folder(tmp, model, tok, meta, ckpt, results)
            if out.is_dir():  # an existing folder keeps its other files; ours replace their namesakes
                for f in tmp.iterdir():
                    os.replace(f, out / f.name)
                tmp.rmdir()
            else:
                os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if made is not None and made != out:
                shutil.rmtree(made, ignore_errors=True)
            raise
    return out


def _write_folder(out: Path, model: Transformer, tok: Tokenizer, meta: dict, ckpt: Path, results: list) -> None:
    """The export's files, written into the (empty) folder ``out``."""
    # Ours: end-of-text starts, ends and pads; an imported model keeps its own roles (no bos for Qwen).
    bos, pad = (tok.start_ids or [None])[0], tok.pad_id
    eos = list(tok.roles.stop_ids) if len(tok.stop_ids) > 1 else tok.eot_id  # the source's order
    config = {**hf_config(model.cfg), "torch_dtype": "float32", "dtype": "float32",
              "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
              "transformers_version": _transformers_version(),
              "pure_transformer": {"checkpoint": str(ckpt), "kind": meta.get("kind"), "step": meta.get("step"),
                                   "answer_format": AnswerFormat.of_checkpoint(meta).value}}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    save_safetensors(out / "model.safetensors", hf_state_dict(model), metadata={"format": "pt"})
    generation = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, **DEFAULT_SAMPLING,
                  "transformers_version": config["transformers_version"]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=1) + "\n")

    tok.save(out)  # tokenizer_config.json and special_tokens_map.json, then the export's own additions
    bos_prefixed(tok).save(str(out / "tokenizer.json"))
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    tok_config.update({"bos_token": None if bos is None else tok.hf.id_to_token(bos), "add_bos_token": bos is not None,
                       "model_max_length": model.cfg.max_seq_len, "chat_template": tok.chat_template or CHAT_TEMPLATE})
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    ledger = read_ledger(ckpt)
    if ledger is not None:
        (out / LEDGER_FILE).write_text(ledger.to_json())
    (out / "README.md").write_text(model_card(meta, model.cfg, model.num_params(), results, ledger))
