"""What the server accepts: request bodies (OpenAI shapes), the chat template,
and the limits every request is checked against.

Chat template (the model is a plain LM, so chat is a text convention)::

    {system messages, joined by blank lines}\\n\\n      (only if there are any)
    User: {content}\\n
    Assistant: {content}\\n                           (earlier turns)
    User: {content}\\n
    Assistant:

Generation stops at :data:`CHAT_STOP` (plus any ``stop`` strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from ..engine import SamplingParams
from ..overrides import require_positive
from .http import APIError

CHAT_STOP = "\nUser:"


@dataclass(frozen=True)
class ServerLimits:
    max_tokens: int = 512
    """Largest ``max_tokens`` a request may ask for."""
    default_max_tokens: int = 128
    """Used when a request gives none (lowered to what the context leaves)."""
    max_n: int = 16
    max_stop: int = 4
    max_body_bytes: int = 64 * 1024
    max_concurrency: int = 8
    """Requests being served at once (streams count until they end); more get 429."""
    batch_window_s: float = 0.005
    """How long a non-streaming request waits for batch-mates."""

    def __post_init__(self) -> None:
        require_positive(self, ("max_tokens", "default_max_tokens", "max_n", "max_body_bytes", "max_concurrency"),
                         "ServerLimits.")


# ---------------------------------------------------------------- requests
class SamplingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None


class CompletionRequest(SamplingRequest):
    prompt: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)


class MCQRequest(BaseModel):
    question: str
    options: dict[str, str]


def chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """Render messages with the template in the module docstring."""
    system = "\n\n".join(m.content.strip() for m in messages if m.role == "system")
    turns = "".join(f"{'User' if m.role == 'user' else 'Assistant'}: {m.content.strip()}\n"
                    for m in messages if m.role != "system")
    return (f"{system}\n\n" if system else "") + turns + "Assistant:"


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
