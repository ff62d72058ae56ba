"""The chat convention: one Jinja template, used by the server and written into every export.

The model is a plain language model, so chat is a text convention::

    {system messages, joined by blank lines}\\n\\n      (only if there are any)
    User: {content}\\n
    Assistant: {content}\\n                           (earlier turns)
    User: {content}\\n
    Assistant:

:data:`CHAT_TEMPLATE` is the single source of truth. The server renders it here
(:func:`chat_prompt`) with the same sandboxed Jinja settings transformers uses
for ``apply_chat_template``, and :mod:`pure_transformer.checkpoint.export` writes it into
``tokenizer_config.json``, so transformers, vLLM and our server build the same
prompt from the same messages. Generation stops at :data:`CHAT_STOP`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

CHAT_STOP = "\nUser:"
"""A reply ends where the model starts writing the user's next turn."""

CHAT_TEMPLATE = (
    "{%- set system = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') "
    "| map('trim') | join('\\n\\n') -%}"
    "{%- if system %}{{ system + '\\n\\n' }}{% endif -%}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{{ ('User' if message['role'] == 'user' else 'Assistant') + ': ' + message['content'] | trim + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ 'Assistant:' }}{% endif -%}"
)
"""Jinja source of the template above; ``add_generation_prompt`` appends the open ``Assistant:`` turn."""


@functools.lru_cache(maxsize=8)
def _compiled(source: str = CHAT_TEMPLATE) -> Any:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:  # what transformers gives templates to refuse a conversation
        raise TemplateError(message)

    # transformers' own settings for chat templates, so both render byte for byte alike.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def chat_prompt(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
                template: str | None = None, **special_tokens: str) -> str:
    """Render ``[{"role": "system"|"user"|"assistant", "content": str}, ...]`` with :data:`CHAT_TEMPLATE`,
    or with an imported model's own ``template`` (its tokenizer's ``chat_template``), which
    transformers renders with the special tokens (``bos_token``, ``eos_token``) as variables."""
    return _compiled(template or CHAT_TEMPLATE).render(messages=[dict(m) for m in messages],
                                                       add_generation_prompt=add_generation_prompt, **special_tokens)
