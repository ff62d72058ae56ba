"""What the server accepts: request bodies (OpenAI shapes) and the limits every
request is checked against. Chats are rendered by :mod:`pure_transformer.mcq.chat`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal, Sequence

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ..config.overrides import require_positive
from ..inference.engine import SamplingParams
from ..mcq.chat import CHAT_STOP
from ..mcq.chat import chat_prompt as render_chat
from .http import APIError

__all__ = ["CHAT_STOP", "ChatMessage", "ChatRequest", "CompletionRequest", "MCQRequest", "SamplingRequest",
           "ServerLimits", "StreamOptions", "chat_prompt", "check_work", "clean_text", "sampling_params"]


@dataclass(frozen=True)
class ServerLimits:
    max_tokens: int = 512
    """Largest ``max_tokens`` a request may ask for."""
    default_max_tokens: int = 128
    """Used when a request gives none (lowered to what the context leaves)."""
    max_n: int = 16
    max_stop: int = 4
    max_body_bytes: int = 64 * 1024
    max_running_rows: int = 64
    """Rows (prompt x sample) in the running batch; a request larger than this runs alone."""
    kv_cache_tokens: int | None = None
    """KV-cache slots (rows x slots) the running batch may hold; None: max_running_rows x the model context."""
    max_queue: int = 256
    """Requests waiting to join the batch; past it a request gets 429."""
    queue_timeout_s: float = 60.0
    """A request that waited this long without joining the batch gets 503."""
    retry_after_s: int = 1
    """The ``Retry-After`` header of a 429 or 503."""
    max_prompts: int = 256
    """Prompts in one completions request (lm-eval's local-completions sends its batch as one)."""
    max_request_tokens: int = 262_144
    """A request's whole work: its prompt tokens plus ``n x max_tokens`` for each prompt."""
    shutdown_timeout_s: float = 10.0
    """On SIGTERM, how long running requests may finish before the server exits regardless."""

    def __post_init__(self) -> None:
        require_positive(self, ("max_tokens", "default_max_tokens", "max_n", "max_body_bytes", "max_running_rows",
                                "max_queue", "queue_timeout_s", "retry_after_s", "max_prompts", "max_request_tokens"),
                         "ServerLimits.")
        if self.kv_cache_tokens is not None:
            require_positive(self, ("kv_cache_tokens",), "ServerLimits.")


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (valid in a JSON string, not in UTF-8) replaced by U+FFFD,
    so whatever is echoed back can be encoded."""
    return _SURROGATE.sub("\ufffd", text)


Text = Annotated[str, AfterValidator(clean_text)]


# ---------------------------------------------------------------- requests
class SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: Text | list[Text] | None = None
    stream: bool = False
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    """torch's generators take 64-bit seeds; past that is a 400 naming ``seed``, not an overflow."""


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(SamplingRequest):
    prompt: Text | list[Text] | list[int] | list[list[int]] = Field(min_length=1)
    """One text, several, one prompt as token ids, or several (OpenAI's four shapes)."""
    logprobs: int | None = Field(None, ge=0, le=5)
    """Return this many most likely tokens per position beside each token's log-probability."""
    echo: bool = False
    """Prepend the prompt to the text (and to ``logprobs``, as the prompt's own tokens)."""
    stream_options: StreamOptions | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Text

    @field_validator("content", mode="before")
    @classmethod
    def _join_parts(cls, content: object) -> object:
        # Newer clients send [{"type": "text", "text": ...}, ...]; the parts join with newlines, as vLLM does.
        if isinstance(content, list):
            return "\n".join(TextPart.model_validate(part).text for part in content)
        return content


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    stream_options: StreamOptions | None = None


class MCQRequest(BaseModel):
    question: Text
    options: dict[str, Text]  # 2-10 options lettered A.. in order
    context: Text | None = None  # shown before the question (e.g. PubMedQA's abstract)


def chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """The prompt of a chat request (the template in :mod:`pure_transformer.mcq.chat`)."""
    return render_chat([m.model_dump() for m in messages])


def check_work(prompt_tokens: Sequence[int], params: Sequence[SamplingParams], n: int, limits: ServerLimits) -> None:
    """400 naming the limit when a request's total work (prompt tokens and every sample's
    ``max_tokens``) exceeds what one request may hold the model for."""
    work = sum(prompt_tokens) + n * sum(p.max_new_tokens for p in params)
    if work > limits.max_request_tokens:
        raise APIError(400, f"this request asks for {work:,} tokens of work ({sum(prompt_tokens):,} prompt tokens + "
                            f"n={n} x max_tokens over {len(params)} prompts), over the server limit of "
                            f"{limits.max_request_tokens:,}; split it into smaller requests", param="prompt")


def sampling_params(req: SamplingRequest, prompt_tokens: int, context: int, limits: ServerLimits,
                    extra_stop: tuple[str, ...] = ()) -> SamplingParams:
    """Check the request against the limits and the context; 400 naming the numbers."""
    if req.n > limits.max_n:
        raise APIError(400, f"n={req.n} exceeds the server limit of {limits.max_n}", param="n")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > limits.max_stop or any(not s for s in stops):
        raise APIError(400, f"stop takes at most {limits.max_stop} non-empty strings", param="stop")
    room = context - prompt_tokens
    if req.max_tokens is None:
        max_tokens = min(limits.default_max_tokens, limits.max_tokens, room)
    elif req.max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens={req.max_tokens} exceeds the server limit of {limits.max_tokens}",
                       param="max_tokens")
    else:
        max_tokens = req.max_tokens
    if prompt_tokens + max(max_tokens, 1) > context:
        raise APIError(400, f"prompt of {prompt_tokens} tokens + max_tokens={max(max_tokens, 1)} exceeds the model "
                            f"context of {context} tokens", param="max_tokens", code="context_length_exceeded")
    return SamplingParams(max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                          stop_strings=tuple(stops) + extra_stop, seed=req.seed)
