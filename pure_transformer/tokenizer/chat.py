"""A conversation as model input: the model's own chat template, encoded as transformers encodes it.

An imported model's ``tokenizer_config.json`` carries its chat template
(:class:`~pure_transformer.tokenizer.roles.TokenRoles`); transformers renders it with the
special tokens' text as variables and tokenizes the result recognising those tokens.
:func:`chat_ids` does the same, so ``/v1/chat/completions`` feeds the model what
``apply_chat_template`` would. A tokenizer without a template (ours) gets our convention
(:mod:`pure_transformer.mcq.chat`) after its start ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..mcq.chat import chat_prompt
from .bpe import Tokenizer
from .roles import token_text


def special_texts(tok: Tokenizer) -> dict[str, str]:
    """The special tokens a chat template may name (``bos_token``, ``eos_token``, ``pad_token``...), as
    transformers passes them to the template: their text, from the imported tokenizer_config.json."""
    config = tok.roles.config or {}
    out = {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        text = token_text(config.get(name))
        if text is not None:
            out[name] = text
    return out


def encode_with_specials(tok: Tokenizer, text: str) -> list[int]:
    """Ids of ``text`` in which the tokenizer's special tokens (``<|im_start|>``...) are the tokens
    themselves, as transformers tokenizes a rendered chat template. Only a rendered template
    goes through here: ordinary text never turns into special tokens (:meth:`Tokenizer.encode`)."""
    specials = sorted((t.content for t in tok.hf.get_added_tokens_decoder().values() if t.special), key=len,
                      reverse=True)
    if not specials:
        return tok.encode(text)
    ids: list[int] = []
    for i, piece in enumerate(re.split("(" + "|".join(map(re.escape, specials)) + ")", text)):
        if i % 2:  # the split keeps each matched special token at an odd index
            ids.append(tok.hf.token_to_id(piece))
        elif piece:
            ids += tok.encode(piece)
    return ids


def chat_ids(tok: Tokenizer, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
             ) -> list[int]:
    """The model input of a conversation: an imported model's own chat template rendered as
    transformers renders it (its special tokens as tokens, its bos where the template writes
    one), else ours (:mod:`pure_transformer.mcq.chat`) after the start ids."""
    if tok.chat_template is None:
        return tok.start_ids + tok.encode(chat_prompt(messages, add_generation_prompt))
    text = chat_prompt(messages, add_generation_prompt, template=tok.chat_template, **special_texts(tok))
    return encode_with_specials(tok, text)
