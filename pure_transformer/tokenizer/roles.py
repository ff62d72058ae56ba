"""The roles of a tokenizer's special tokens, read from a transformers folder.

Our own tokenizer has one special token that does everything: every document and
prompt starts after end-of-text (``<|endoftext|>``), generation stops at it, and it
pads when there is no ``<|pad|>``. Open checkpoints split the roles:

============  =========================  ===================================  =============
family        a document starts with     generation stops at                  pad
============  =========================  ===================================  =============
ours, GPT-2   ``<|endoftext|>``          ``<|endoftext|>``                    ``<|pad|>``
Llama-3.x     ``<|begin_of_text|>``      ``<|end_of_text|>`` (+ ``<|eot_id|>``)  config's
Qwen2.5/3     nothing                    ``<|endoftext|>``, ``<|im_end|>``    ``<|endoftext|>``
============  =========================  ===================================  =============

:func:`read_roles` reads them from ``tokenizer_config.json`` (``special_tokens_map.json``
when the config lacks a token) and ``generation_config.json``, deciding the start token
as transformers' tokenizer does when it encodes a prompt (see :func:`_start_id`).
The chat template is used by :mod:`pure_transformer.tokenizer.chat`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers

from ..errors import TokenizerError


@dataclass(frozen=True)
class TokenRoles:
    """Which ids a tokenizer starts, stops and pads with, and its chat template."""

    start_id: int | None
    """The id every document and prompt starts with; None: none (Qwen)."""
    stop_ids: tuple[int, ...]
    """Generation ends at any of these; the first is the end-of-text id (``Tokenizer.eot_id``)."""
    pad_id: int
    chat_template: str | None = None
    """The model's Jinja chat template (tokenizer_config.json's), None for ours (:mod:`pure_transformer.mcq.chat`)."""
    config: dict | None = None
    """The tokenizer_config.json these came from (written back into checkpoints and exports)."""
    generation: dict | None = None
    """generation_config.json, where the folder has one."""

    def saved_config(self) -> dict | None:
        """tokenizer_config.json as a checkpoint keeps it: the source's, with the start token said
        explicitly (``add_bos_token``), so the roles read back the same wherever they came from."""
        if self.config is None:
            return None
        return {**self.config, "add_bos_token": self.start_id is not None,
                **({"chat_template": self.chat_template} if self.chat_template is not None else {})}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise TokenizerError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} must be a JSON object")
    return data


def token_text(value: Any) -> str | None:
    """A token as tokenizer_config.json writes it: a string or an AddedToken mapping."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _id_of(hf: tokenizers.Tokenizer, value: Any, field: str, where: Path) -> int | None:
    text = token_text(value)
    if text is None:
        return None
    token_id = hf.token_to_id(text)
    if token_id is None:
        raise TokenizerError(f"{where}: {field} {text!r} is not in the vocabulary")
    return token_id


def _start_id(hf: tokenizers.Tokenizer, config: dict, bos: int | None, eos: int | None, imported: bool
              ) -> int | None:
    """The id a prompt starts with:

    1. ``add_bos_token`` in the config, when it says (true: the bos token, false: none);
    2. else what tokenizer.json's post-processor puts in front of an encoding (Llama-3's
       ``<|begin_of_text|>``; our export's end-of-text);
    3. else, for our own tokenizer folders (not ``imported``), the bos token when it is also
       the eos token: every document starts after end-of-text (``tokenizer train`` writes
       bos = eos = ``<|endoftext|>`` and no post-processor);
    4. else none (Qwen's bos_token is null; SmolLM2's and GPT-2's bos = eos is not added).

    Steps 1, 2 and 4 are what transformers does when it encodes a prompt; an import writes its
    answer back as ``add_bos_token`` (:meth:`TokenRoles.saved_config`), so step 1 decides on reload."""
    if isinstance(config.get("add_bos_token"), bool):
        return bos if config["add_bos_token"] else None
    with_specials = hf.encode("a", add_special_tokens=True).ids
    plain = hf.encode("a", add_special_tokens=False).ids
    if len(with_specials) > len(plain) and with_specials[-len(plain):] == plain:
        return with_specials[0]
    return bos if not imported and bos is not None and bos == eos else None


def read_roles(hf: tokenizers.Tokenizer, folder: Path, *, imported: bool = False) -> TokenRoles | None:
    """The roles a transformers folder gives its tokens, or None when it has no
    ``tokenizer_config.json`` (our checkpoints: the defaults, end-of-text for all).
    ``imported``: an open model's folder, whose start token is exactly transformers' (:func:`_start_id`)."""
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    config = _read_json(config_file)
    specials = _read_json(folder / "special_tokens_map.json")
    generation = _read_json(folder / "generation_config.json")

    def role(name: str) -> int | None:
        value = config[name] if name in config else specials.get(name)
        return _id_of(hf, value, name, config_file)

    bos, eos, pad = role("bos_token"), role("eos_token"), role("pad_token")
    stops = [eos] if eos is not None else []
    gen_eos = generation.get("eos_token_id")
    for token_id in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
        if isinstance(token_id, int) and not isinstance(token_id, bool):
            stops.append(token_id)
    stops = [s for s in dict.fromkeys(stops) if s is not None]
    if not stops:
        raise TokenizerError(f"{config_file} names no eos_token (nor does generation_config.json): "
                             "generation would never stop")
    template = config.get("chat_template")
    if (folder / "chat_template.jinja").is_file():  # where transformers >= 4.5x saves it
        template = (folder / "chat_template.jinja").read_text()
    if isinstance(template, list):  # named templates: transformers' default is the one called "default"
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    return TokenRoles(start_id=_start_id(hf, config, bos, eos, imported), stop_ids=tuple(stops),
                      pad_id=pad if pad is not None else stops[0],
                      chat_template=template if isinstance(template, str) else None,
                      config=config, generation=generation or None)

