"""``python -m pure_transformer.serve``: an OpenAI-compatible HTTP server for one checkpoint.

    python -m pure_transformer.serve --checkpoint runs/rl [--port 8000] [--api-key KEY]

Endpoints:

- ``POST /v1/completions`` and ``POST /v1/chat/completions``: OpenAI request and
  response shapes (``prompt``/``messages``, ``max_tokens``, ``temperature``,
  ``top_p``, ``n``, ``stop``, ``seed``, ``stream``). ``stream: true`` answers with
  server-sent events, ``data: {chunk}`` ... ``data: [DONE]``. Unknown fields
  (``logprobs``, ``echo``, ``user``...) are ignored.
- ``POST /v1/mcq``: ``{question, options: {A..D}}`` -> ``{answer, probabilities}``,
  the softmax over the log-likelihoods of " A".." D" after the
  lm-evaluation-harness prompt (:func:`~pure_transformer.evaluation.harness_prompt`);
  over-long prompts keep their end, as the harness does.
- ``GET /v1/models``, ``GET /health`` and ``GET /`` (a small demo page).

Chat template (the model is a plain LM, so chat is a text convention)::

    {system messages, joined by blank lines}\\n\\n      (only if there are any)
    User: {content}\\n
    Assistant: {content}\\n                           (earlier turns)
    User: {content}\\n
    Assistant:

Generation stops at ``"\\nUser:"`` (plus any ``stop`` strings) and the reply is
stripped of surrounding whitespace.

Limits (:class:`ServerLimits`): ``max_tokens`` cap, ``prompt + max_tokens`` must
fit the model context, ``n`` cap, request body size (413) and concurrent
requests (429 at once, never queued forever). Every error, bad input included,
is an OpenAI-shaped ``{"error": {"message", "type", "param", "code"}}`` with a
4xx status.

With ``--api-key`` every ``/v1/*`` route requires ``Authorization: Bearer KEY``;
``/health`` and ``/`` stay open so load balancers and the page shell work.
The page itself calls ``/v1/*`` and so needs the key (it has a field for it).

Threading: the model runs on one worker thread, so the event loop never blocks
and no two forward passes race. Non-streaming requests wait a few ms in a
queue and those with identical sampling parameters (and no seed, whose result
must not depend on its batch-mates) go through one ``Engine.generate`` call.
Streams advance one text piece per hop to that thread, so they interleave with
batches, and a client that disconnects stops its generation.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hmac
import json
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Literal, Sequence

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .data.mcq import LETTERS, MCQ
from .engine import Engine, Sample, SamplingParams
from .errors import ConfigError, DataError, UserError
from .evaluation import harness_prompt
from .generate import stream_text

CHAT_STOP = "\nUser:"
PAGE = Path(__file__).parent / "web" / "index.html"


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
        for name in ("max_tokens", "default_max_tokens", "max_n", "max_body_bytes", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServerLimits.{name} must be >= 1, got {getattr(self, name)}")


# ------------------------------------------------------------------ errors
class APIError(Exception):
    """A request problem that becomes an OpenAI-shaped error response."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code


def error_response(status: int, message: str, *, param: str | None = None, type: str = "invalid_request_error",
                   code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One line naming the first bad field, without pydantic's multi-line dump."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}", None
    param = ".".join(loc) or None
    return f"{param or 'body'}: {first.get('msg', 'invalid value')}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, param=exc.param, type=exc.type, code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, param=param)

    @app.exception_handler(json.JSONDecodeError)
    async def _json(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return error_response(400, f"request body is not valid JSON: {exc.msg}")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(exc.status_code, str(exc.detail), type=kind)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        # A bug must cost one request, not the server; the traceback still goes to the log.
        import traceback

        traceback.print_exception(exc)
        return error_response(500, f"internal error: {type(exc).__name__}", type="server_error")


# -------------------------------------------------------------- middleware
class BodyLimitMiddleware:
    """413 for bodies over ``limit`` bytes, checked before any parsing.

    The body is buffered (it is small by construction) and replayed to the app,
    so chunked uploads without Content-Length are bounded too."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_big = error_response(413, f"request body exceeds {self.limit} bytes", code="request_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await too_big(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_big(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices, for streaming

        await self.app(scope, replay, send)


class ApiKeyMiddleware:
    """401 on ``/v1/*`` unless ``Authorization: Bearer KEY`` matches (constant-time)."""

    def __init__(self, app: Any, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = error_response(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                                          type="authentication_error", code="invalid_api_key")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class ConcurrencyGate:
    """Counts requests in flight; past the limit a request is refused, not queued.

    Only the event loop touches the counter, so no lock is needed."""

    def __init__(self, limit: int):
        self.limit, self.active = limit, 0

    def acquire(self) -> "_Lease":
        if self.active >= self.limit:
            raise APIError(429, f"server busy: {self.limit} requests already in flight, retry shortly",
                           type="rate_limit_error", code="rate_limit_exceeded")
        self.active += 1
        return _Lease(self)


class _Lease:
    def __init__(self, gate: ConcurrencyGate):
        self.gate, self.held = gate, True

    def release(self) -> None:
        if self.held:  # idempotent: streams release from several exit paths
            self.held = False
            self.gate.active -= 1


# ---------------------------------------------------------------- requests
class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None


class CompletionRequest(_Sampling):
    prompt: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
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


def sampling_params(req: _Sampling, prompt_tokens: int, context: int, limits: ServerLimits,
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


# ------------------------------------------------------------------ worker
@dataclass
class _Job:
    prompt: list[int]
    params: SamplingParams
    n: int
    future: asyncio.Future


class Generator:
    """Owns the engine and its one worker thread; batches compatible requests."""

    def __init__(self, engine: Engine, window_s: float):
        self.engine, self.window_s = engine, window_s
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0  # generate calls so far, for tests and /health
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._batch_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def generate(self, prompt: list[int], params: SamplingParams, n: int) -> list[Sample]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(prompt, params, n, future))
        return await future

    async def _batch_loop(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            await asyncio.sleep(self.window_s)  # let concurrent requests join this batch
            while not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            groups: dict[Any, list[_Job]] = {}
            for job in jobs:
                # A seeded request runs alone: its samples must not depend on its batch-mates.
                key = (job.params, job.n) if job.params.seed is None else id(job)
                groups.setdefault(key, []).append(job)
            for group in groups.values():
                await self._run_group(group)

    async def _run_group(self, group: list[_Job]) -> None:
        self.batches += 1
        try:
            results = await self.call(self.engine.generate, [j.prompt for j in group], group[0].params, group[0].n)
        except Exception as e:  # noqa: BLE001 - delivered to each waiting request instead of killing the loop
            for job in group:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        for job, samples in zip(group, results):
            if not job.future.done():  # a cancelled waiter (client gone) just drops its result
                job.future.set_result(samples)


class _TokenTap:
    """Stands in for an Engine in :func:`stream_text` and records the tokens, so a
    stream can report its finish reason and token count."""

    def __init__(self, engine: Engine):
        self.engine, self.tok, self.tokens = engine, engine.tok, []

    def stream(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        for token in self.engine.stream(prompt, params):
            self.tokens.append(token)
            yield token

    def finish_reason(self, params: SamplingParams) -> str:
        if self.tokens and self.tokens[-1] == self.tok.eot_id:
            return "stop"
        text = self.tok.decode(self.tokens)
        return "stop" if any(s in text for s in params.stop_strings) else "length"


# --------------------------------------------------------------------- mcq
@torch.no_grad()
def mcq_probabilities(model: torch.nn.Module, tok: Any, mcq: MCQ) -> dict[str, float]:
    """Softmax over the log-likelihoods of " A".." D" after the harness prompt."""
    model.eval()
    device = next(model.parameters()).device
    context = model.cfg.max_seq_len
    head = [tok.eot_id] + tok.encode(harness_prompt(mcq))
    seqs = [(head + tok.encode(f" {letter}"))[-context:] for letter in LETTERS]
    conts = [len(tok.encode(f" {letter}")) for letter in LETTERS]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long)
    for i, seq in enumerate(seqs):  # right-padded: the scored positions never see the padding
        ids[i, :len(seq)] = torch.tensor(seq)
    _, logits = model(ids.to(device))
    logp = torch.log_softmax(logits.float(), dim=-1)
    scores = torch.stack([logp[i, torch.arange(len(s) - n - 1, len(s) - 1), torch.tensor(s[-n:])].sum()
                          for i, (s, n) in enumerate(zip(seqs, conts))])
    return dict(zip(LETTERS, torch.softmax(scores, dim=0).tolist()))


# --------------------------------------------------------------------- app
def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def create_app(model: Any, tokenizer: Any, *, model_name: str, api_key: str | None = None,
               limits: ServerLimits = ServerLimits()) -> FastAPI:
    """The HTTP app around an already-loaded model (tests pass a tiny random one)."""
    engine = Engine(model, tokenizer)
    worker = Generator(engine, limits.batch_window_s)
    gate = ConcurrencyGate(limits.max_concurrency)
    context = model.cfg.max_seq_len
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        await worker.stop()

    app = FastAPI(title="pure_transformer", lifespan=lifespan)
    app.state.worker, app.state.gate = worker, gate
    install_error_handlers(app)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(BodyLimitMiddleware, limit=limits.max_body_bytes)  # outermost: before auth reads anything

    def encode(prompt: str) -> list[int]:
        return [tokenizer.eot_id] + tokenizer.encode(prompt)  # as every training document starts

    async def run(request: Request, req: _Sampling, prompt: str, chat: bool) -> Any:
        ids = encode(prompt)
        params = sampling_params(req, len(ids), context, limits, (CHAT_STOP,) if chat else ())
        lease = gate.acquire()
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        head = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": model_name}
        if req.stream:
            head["object"] = "chat.completion.chunk" if chat else "text_completion"
            return StreamingResponse(stream(request, prompt, params, req.n, chat, head, lease),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            groups = await worker.generate(ids, params, req.n)
        except ValueError as e:  # the engine's own input checks
            raise APIError(400, str(e)) from None
        finally:
            lease.release()
        choices = []
        for i, s in enumerate(groups):
            text = s.text.strip() if chat else s.text
            body = {"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None}
            choices.append({"index": i, **body, "finish_reason": s.finish_reason})
        used = sum(len(s.tokens) for s in groups)
        return {**head, "choices": choices,
                "usage": {"prompt_tokens": len(ids), "completion_tokens": used, "total_tokens": len(ids) + used}}

    async def stream(request: Request, prompt: str, params: SamplingParams, n: int, chat: bool, head: dict,
                     lease: _Lease) -> AsyncIterator[str]:
        # n streams advance round-robin, one piece per hop to the model thread.
        seeds = [params.seed + i if params.seed is not None else None for i in range(n)]
        taps = [_TokenTap(engine) for _ in range(n)]
        pieces = [stream_text(tap, prompt, SamplingParams(**{**params.__dict__, "seed": s}))  # type: ignore[arg-type]
                  for tap, s in zip(taps, seeds)]
        live, started = set(range(n)), [False] * n
        done = object()

        def chunk(i: int, text: str | None, finish: str | None) -> dict:
            if chat:
                delta = {} if text is None else {"content": text}
                if not started[i]:
                    delta["role"] = "assistant"
                choice = {"index": i, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
            started[i] = True
            return {**head, "choices": [choice]}

        try:
            while live:
                for i in sorted(live):
                    if await request.is_disconnected():
                        return  # finally closes the generators, ending their generation
                    piece = await worker.call(next, pieces[i], done)
                    if piece is done:
                        live.discard(i)
                        yield _sse(chunk(i, None, taps[i].finish_reason(params)))
                        continue
                    if chat and not started[i]:
                        piece = piece.lstrip()  # the template leaves the reply's leading space to the model
                        if not piece:
                            continue
                    yield _sse(chunk(i, piece, None))
            yield "data: [DONE]\n\n"
        except ValueError as e:  # headers are sent already, so the error travels as an event
            yield _sse({"error": {"message": str(e), "type": "invalid_request_error", "param": None, "code": None}})
        finally:
            for gen in pieces:
                worker.pool.submit(gen.close)  # queued behind any step still running on the model thread
            lease.release()

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest) -> Any:
        return await run(request, req, req.prompt, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatRequest) -> Any:
        return await run(request, req, chat_prompt(req.messages), chat=True)

    @app.post("/v1/mcq")
    async def mcq(req: MCQRequest) -> dict:
        try:
            # MCQ validates "exactly A-D, none empty"; the gold letter is unknown here, any valid one will do.
            question = MCQ(question=req.question, options=req.options, answer="A")
        except DataError as e:
            raise APIError(400, str(e), param="options" if "option" in str(e) else "question") from None
        lease = gate.acquire()
        try:
            probs = await worker.call(mcq_probabilities, model, tokenizer, question)
        finally:
            lease.release()
        return {"object": "mcq.answer", "model": model_name, "answer": max(probs, key=probs.get),
                "probabilities": probs}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "pure_transformer", "context_length": context}]}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "active_requests": gate.active}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        if not PAGE.is_file():
            raise APIError(404, f"demo page not installed ({PAGE})")
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


# --------------------------------------------------------------------- CLI
def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="step folder or run folder (final, else the newest)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--max-concurrency", type=int, default=ServerLimits.max_concurrency,
                   help="requests served at once; more get 429")
    p.add_argument("--max-tokens", type=int, default=ServerLimits.max_tokens, help="cap on a request's max_tokens")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--name", default=None, help="model id reported by the API (default: the checkpoint folder)")


def run(args: argparse.Namespace) -> None:
    import uvicorn

    from .checkpoint import load_model

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    limits = ServerLimits(max_concurrency=args.max_concurrency, max_tokens=args.max_tokens)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, _, folder = load_model(args.checkpoint, device)
    app = create_app(model, tok, model_name=args.name or folder.name, api_key=args.api_key, limits=limits)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    except OSError as e:  # e.g. the port is taken
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import dispatch

    parser = argparse.ArgumentParser(prog="python -m pure_transformer.serve", description=__doc__.split("\n")[0])
    add_args(parser)
    parser.set_defaults(func=run)
    return dispatch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
