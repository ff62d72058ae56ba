"""Import: an open transformers checkpoint (Llama-3.x/SmolLM2, Qwen2.5, Qwen3) as a project checkpoint.

    pure-transformer import Qwen/Qwen2.5-0.5B --out runs/qwen     # a hub name (needs the network)
    pure-transformer import ~/models/SmolLM2-135M --out runs/smol  # a local transformers folder

The source's ``config.json`` becomes our :class:`~pure_transformer.model.config.ModelConfig`
(:func:`pure_transformer.model.hf.config_from_hf` refuses what we do not implement, in one
line), its safetensors weights are renamed into a model built on the meta device (held once,
in their stored dtype), and its tokenizer keeps its roles and chat template
(:mod:`pure_transformer.tokenizer.roles`). The result is an ordinary checkpoint folder:
``model.safetensors``, ``meta.json`` (``kind: import``, the source), the tokenizer files and a
``README.md`` naming the source, which ``evaluate``, ``generate``, ``serve``, ``export`` and
``rl --checkpoint`` take as they take our own.
"""

from __future__ import annotations

from pathlib import Path

from ..data.ledger import IMPORTED, LEDGER_FILE, Ledger, LedgerEntry
from ..errors import ConfigError
from ..model.hf import hf_architecture, load_hf_model
from ..tokenizer.bpe import Tokenizer
from .store import save_checkpoint

HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.md"]
"""What a hub download fetches: configs, tokenizer, safetensors weights, the model card; never pickles."""


def _looks_local(src: str) -> bool:
    return src.startswith((".", "/", "~")) or src.count("/") != 1 or "\\" in src


def source_folder(src: str) -> Path:
    """The local folder ``src`` names, downloading a hub name (``owner/name``) first.

    Offline, a hub name fails at once in one line (the same DNS check the data sources make)
    instead of retrying for half a minute."""
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    if path.exists() or _looks_local(src):
        raise ConfigError(f"import source '{src}' is not a folder (give a transformers model folder or a hub name "
                          "like Qwen/Qwen2.5-0.5B)")
    from ..data.registry import hub_lookup_error  # on use: the registry imports the datasets stack

    if (why := hub_lookup_error()) is not None:
        raise ConfigError(f"cannot download '{src}' from the Hugging Face Hub: {why}; offline, give a local "
                          "transformers model folder in the name's place")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(src, allow_patterns=HUB_FILES))
    except Exception as e:  # the hub client raises many types (not found, gated, offline); each means "no model"
        raise ConfigError(f"cannot download '{src}' from the Hugging Face Hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})"[:400]) from None


def import_card(src: str, arch: str, meta: dict, num_params: int) -> str:
    """The imported checkpoint's ``README.md``: where it came from and what it is."""
    cfg = meta["model_config"]
    return "\n".join([
        f"# {src} (imported)", "",
        f"Imported by `pure-transformer import` from `{src}` ({arch}), unchanged: {num_params:,} parameters, "
        f"{cfg['n_layers']} layers, width {cfg['dim']}, {cfg['n_heads']} heads ({cfg['n_kv_heads']} key/value), "
        f"vocabulary {cfg['vocab_size']}, context {cfg['max_seq_len']}.", "",
        "Its license and model card are the source's: see the source repository before using or sharing it.", ""])


def import_checkpoint(src: str, out_dir: str | Path) -> Path:
    """Write the transformers model ``src`` (a local folder or a hub name) as a checkpoint in ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not empty; choose a new folder")
    folder = source_folder(src)
    if not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"{folder} has no tokenizer.json (only fast tokenizers are imported)")
    model = load_hf_model(folder)
    tok = Tokenizer.load(folder, imported=True)
    cfg = model.cfg
    if tok.vocab_size > cfg.vocab_size:
        raise ConfigError(f"{folder}: the tokenizer has {tok.vocab_size} ids, the model's embedding "
                          f"{cfg.vocab_size} rows")
    arch = hf_architecture(cfg)
    meta = {"kind": "import", "step": 0, "model_config": cfg.to_dict(), "tokenizer": "tokenizer.json",
            "source": src, "hf_architecture": arch}
    # The ledger cannot fingerprint what the open model read: an entry that says so, which every
    # descendant (continued pretraining, GRPO) copies, and evaluate and the model card repeat.
    ledger = Ledger((LedgerEntry(IMPORTED, src, ()),))
    files = {**tok.files(), "README.md": import_card(src, arch, meta, model.num_params()),
             LEDGER_FILE: ledger.to_json()}
    return save_checkpoint(out, model, meta, files=files)
