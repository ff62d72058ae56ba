"""An OpenAI-compatible HTTP app for one model (:func:`create_app`); ``pure-transformer serve``
(:mod:`pure_transformer.commands.serve`) runs it under uvicorn.

    python -m pure_transformer.serve --checkpoint runs/rl [--port 8000] [--api-key KEY]

Endpoints:

- ``POST /v1/completions`` and ``POST /v1/chat/completions``: OpenAI request and
  response shapes (``prompt``/``messages``, ``max_tokens``, ``temperature``,
  ``top_p``, ``n``, ``stop``, ``seed``, ``stream``, ``stream_options.include_usage``).
  ``stream: true`` answers with server-sent events, ``data: {chunk}`` ...
  ``data: [DONE]``. Completions take a prompt as text or token ids, or a list of
  either (choice ``i * n + j`` is sample ``j`` of prompt ``i``), and ``logprobs`` /
  ``echo`` in the legacy shape (:mod:`.logprobs`), which is what lm-evaluation-harness's
  ``local-completions`` model needs. All of these stream too, as OpenAI streams them: each
  chunk's ``choices[0].index`` names its prompt x sample, ``echo`` sends the prompt as each
  choice's first chunk, and a chunk's ``logprobs`` score the tokens it consumed (scored as they
  are drawn), its offsets continuing the choice's. Chat ``content`` may be a list of text parts.
  Other unknown fields (``user``...) are ignored.
- ``POST /v1/mcq``: ``{question, options: {A..}, context?}`` (2-10 options), answered in the
  checkpoint's answer format. ``letter``: ``{answer, probabilities}``, the softmax over the
  log-likelihoods of " A".." D" after the lm-evaluation-harness prompt (over-long prompts keep
  their end, as the harness does; :func:`~pure_transformer.serving.worker.letter_answer`).
  ``text``/``explain``: the greedy answer ``evaluate --mode generate`` writes (same prompt fitting,
  stop strings, budget and parser; :func:`~pure_transformer.serving.worker.answer_request`), as
  ``{answer, cause, completion, explanation?}``: ``answer`` is the letter its answer line names, or
  null with the no-answer ``cause``. Options the format cannot tell apart, and options and cue that
  leave no room for the answer, are a 400 naming the cause.
- ``GET /v1/models``, ``GET /health`` (with queue depth and running rows), ``GET /metrics``
  (Prometheus, :mod:`.metrics`) and ``GET /`` (a small demo page).

Chats are rendered with the text template in :mod:`.schemas` and stop at
``"\\nUser:"`` (plus any ``stop`` strings); the reply is stripped of
surrounding whitespace.

Limits (:class:`ServerLimits`): ``max_tokens`` cap, ``prompt + max_tokens`` must
fit the model context, ``n`` cap, prompts per request, a request's whole work
(prompt tokens plus ``n x max_tokens`` per prompt) and request body size (413).
Under load a request waits in a bounded queue (``--max-queue``, 429 with ``Retry-After``
only once it is full) and gets 503 if it waited longer than ``--queue-timeout`` before its first prompt
joined the batch (its later prompts waiting for room are not queueing). Every error, bad input
included, is an OpenAI-shaped ``{"error": {"message", "type", "param", "code"}}``
with a 4xx status. Lone UTF-16 surrogates in request text (valid JSON, not
encodable) become U+FFFD, so echoing them back cannot fail. On SIGTERM running
requests get ``--shutdown-timeout`` seconds, then the server exits regardless.

With ``--api-key`` every ``/v1/*`` route requires ``Authorization: Bearer KEY``;
``/health``, ``/metrics`` and ``/`` stay open so load balancers, scrapers and the page shell work.
The page itself calls ``/v1/*`` and so needs the key (it has a field for it).

Threading: the model runs on one thread, owned by the continuous-batching
:class:`~.scheduler.Scheduler`: every request being generated for, streamed or not,
whatever its sampling parameters, is a set of rows in one running batch; each step
advances every row, finished rows leave at once and waiting requests join between
steps. A client that disconnects frees its rows at the next step. The event loop
never blocks on the model; scoring calls (MCQ, ``logprobs``) run between two steps.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from ..errors import DataError
from ..inference.engine import Engine, SamplingParams, TextStream
from ..mcq.answer_format import AnswerFormat, check_answerable
from ..mcq.record import MCQ
from ..tokenizer.chat import chat_ids
from .http import APIError, ApiKeyMiddleware, BodyLimitMiddleware, install_error_handlers
from .logprobs import legacy_logprobs, sequence_logprobs
from .prometheus import Metrics, StatusMiddleware
from .schemas import (CHAT_STOP, ChatRequest, CompletionRequest, MCQRequest, SamplingRequest, ServerLimits, chat_prompt,
                      check_work, sampling_params)
from .worker import ClientGone, Job, ModelWorker, answer_request, letter_answer, read_answer

PAGE = Path(__file__).parent / "web" / "index.html"


# --------------------------------------------------------------------- app
def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


class JobStream(StreamingResponse):
    """Closes its job (freeing the rows still running) however the response ends, including a
    client that leaves before the body generator has even started (its own ``finally`` would never run)."""

    def __init__(self, content: AsyncIterator[str], job: Job, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.job = job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.close()


def create_app(model: Any, tokenizer: Any, *, model_name: str, api_key: str | None = None,
               limits: ServerLimits = ServerLimits(), answer_format: AnswerFormat = AnswerFormat.LETTER) -> FastAPI:
    """The HTTP app around an already-loaded model (tests pass a tiny random one);
    ``/v1/mcq`` asks questions in ``answer_format`` (the checkpoint's)."""
    engine = Engine(model, tokenizer)
    metrics = Metrics()
    worker = ModelWorker(engine, limits, metrics)
    context = model.cfg.max_seq_len
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        await worker.stop()

    app = FastAPI(title="pure_transformer", lifespan=lifespan)
    app.state.worker, app.state.metrics = worker, metrics
    install_error_handlers(app)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(BodyLimitMiddleware, limit=limits.max_body_bytes)  # before auth reads anything
    app.add_middleware(StatusMiddleware, metrics=metrics)  # outermost: every answer is counted

    def encode(prompt: str | list[int]) -> list[int]:
        """The model's input: after the start ids (our end-of-text, as every training document starts)."""
        start = tokenizer.start_ids
        if isinstance(prompt, str):
            return start + tokenizer.encode(prompt)
        if any(not 0 <= t < tokenizer.vocab_size for t in prompt):
            raise APIError(400, f"prompt token ids must be in 0..{tokenizer.vocab_size - 1}", param="prompt")
        return prompt if prompt[:len(start)] == start else start + prompt

    def score(prompt: list[int], shown: int, completion: list[int], top: int) -> dict:
        # shown: how many of the prompt's own tokens the client sees (echo), hidden end-of-text excluded
        values, tops = sequence_logprobs(model, prompt + completion, tokenizer.start_ids, top)
        first = len(prompt) - shown
        return legacy_logprobs(tokenizer, (prompt + completion)[first:], values[first:], tops[first:], top)

    def echoed(prompt: list[int], given: str | list[int]) -> tuple[str, int]:
        """(the text ``echo`` prepends, how many of ``prompt``'s ids it shows): encode()'s end-of-text stays hidden."""
        start = tokenizer.start_ids
        hidden = 0 if isinstance(given, list) and given[:len(start)] == start else len(start)
        return (given if isinstance(given, str) else tokenizer.decode(given)), len(prompt) - hidden

    async def run(request: Request, req: SamplingRequest, prompts: list[str] | list[list[int]], chat: bool) -> Any:
        if len(prompts) > limits.max_prompts:
            raise APIError(400, f"{len(prompts)} prompts in one request, over the server limit of "
                                f"{limits.max_prompts}", param="prompt")
        ids = [encode(p) for p in prompts]
        # Our chat convention stops at the next "User:" turn; a model's own template at its stop ids.
        chat_stop = (CHAT_STOP,) if chat and tokenizer.chat_template is None else ()
        params = [sampling_params(req, len(i), context, limits, chat_stop) for i in ids]
        check_work([len(i) for i in ids], params, req.n, limits)
        top, echo = getattr(req, "logprobs", None), getattr(req, "echo", False)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        head = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": model_name}
        job = worker.open(ids, params, req.n, stream=req.stream, logprobs=top)
        handed = False  # to a JobStream, which closes the job when the response ends
        try:
            if req.stream:
                await job.admitted(request)  # a queue timeout is still a 503, before any header is sent
                head["object"] = "chat.completion.chunk" if chat else "text_completion"
                usage = req.stream_options is not None and req.stream_options.include_usage  # type: ignore[attr-defined]
                body = stream(request, job, ids, prompts, params, chat, head, usage, top, echo)
                response = JobStream(body, job, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
                handed = True
                return response
            groups = await job.results(request)
            choices = []
            for prompt, text, group in zip(ids, prompts, groups):
                prefix, shown = echoed(prompt, text) if echo else ("", 0)
                for s in group:
                    body: dict[str, Any]
                    if chat:
                        body = {"message": {"role": "assistant", "content": s.text.strip()}}
                    else:
                        lp = None if top is None else await worker.call(score, prompt, shown, s.tokens, top)
                        body = {"text": prefix + s.text, "logprobs": lp}
                    choices.append({"index": len(choices), **body, "finish_reason": s.finish_reason})
        except ClientGone:
            raise APIError(499, "client closed the request", code="client_closed_request") from None
        except ValueError as e:  # the engine's own input checks
            raise APIError(400, str(e)) from None
        finally:
            if not handed:
                job.close()
        used = sum(len(s.tokens) for g in groups for s in g)
        prompt_tokens = sum(map(len, ids))
        return {**head, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": used,
                          "total_tokens": prompt_tokens + used}}

    async def stream(request: Request, job: Job, ids: list[list[int]], prompts: list[str] | list[list[int]],
                     params: list[SamplingParams], chat: bool, head: dict, usage: bool, top: int | None, echo: bool
                     ) -> AsyncIterator[str]:
        # Choice i * n + j is sample j of prompt i, as in a non-streamed answer; the tokens of every
        # choice arrive as the scheduler draws them, interleaved. With logprobs a chunk carries the
        # scores of the tokens it consumed (the scheduler scored each as it was drawn), and the last
        # chunk of a choice those of the tokens that wrote no text (end-of-text, a held stop string).
        n = job.n
        texts = [TextStream(tokenizer, p.stop_strings) for p in params for _ in range(n)]
        started = [False] * len(texts)
        offsets = [0] * len(texts)  # each choice's next text_offset, as a non-streamed answer counts them
        pending: list[list[tuple[int, float, list[tuple[int, float]]]]] = [[] for _ in texts]

        def scores(c: int) -> dict | None:
            if top is None:
                return None
            tokens, values, tops = zip(*pending[c]) if pending[c] else ((), (), ())
            pending[c].clear()
            lp = legacy_logprobs(tokenizer, list(tokens), list(values), list(tops), top, start=offsets[c])
            offsets[c] += sum(map(len, lp["tokens"]))
            return lp

        def chunk(c: int, text: str | None, finish: str | None, lp: dict | None = None) -> dict:
            if chat:
                delta = {} if text is None else {"content": text}
                if not started[c]:
                    delta["role"] = "assistant"
                choice = {"index": c, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": c, "text": text or "", "logprobs": lp, "finish_reason": finish}
            started[c] = True
            return {**head, "choices": [choice]}

        try:
            if echo:  # each choice opens with its prompt (and the prompt's own scores), as OpenAI streams it
                for i, (prompt, given) in enumerate(zip(ids, prompts)):
                    prefix, shown = echoed(prompt, given)
                    lp = None if top is None else await worker.call(score, prompt, shown, [], top)
                    for c in range(i * n, (i + 1) * n):
                        if lp is not None:
                            offsets[c] = sum(map(len, lp["tokens"]))
                        yield _sse(chunk(c, prefix, None, lp))
            while job.open_rows:
                event = await job.next_event(request)
                if event[1] == "admitted":  # a later prompt of this request found room
                    continue
                i, kind, j = event[0], event[1], event[2]
                c = i * n + j
                if kind == "done":
                    yield _sse(chunk(c, None, event[3].finish_reason, scores(c)))
                    continue
                if event[4] is not None:
                    pending[c].append((event[3], *event[4]))
                piece = texts[c].feed(event[3])
                if chat and not started[c]:
                    piece = piece.lstrip()  # the template leaves the reply's leading space to the model
                if piece:
                    yield _sse(chunk(c, piece, None, scores(c)))
            if usage:  # stream_options.include_usage: one last chunk with no choices
                used = sum(len(s.tokens) for group in job.samples for s in group)  # type: ignore[union-attr]
                prompt_tokens = sum(map(len, ids))
                yield _sse({**head, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": used,
                                                             "total_tokens": prompt_tokens + used}})
            yield "data: [DONE]\n\n"
        except ClientGone:
            return  # JobStream closes the job, freeing its rows at the next step
        except Exception as e:  # noqa: BLE001 - headers are sent already, so the error travels as an event
            yield _sse({"error": {"message": str(e), "type": "invalid_request_error", "param": None, "code": None}})
            yield "data: [DONE]\n\n"  # and the stream still ends the way clients wait for
        finally:
            job.close()

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest) -> Any:
        prompts = req.prompt if isinstance(req.prompt, list) and not isinstance(req.prompt[0], int) else [req.prompt]
        return await run(request, req, prompts, chat=False)  # type: ignore[arg-type]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatRequest) -> Any:
        if tokenizer.chat_template is None:
            return await run(request, req, [chat_prompt(req.messages)], chat=True)
        # An imported model's own template, its special tokens encoded as tokens (as transformers does).
        return await run(request, req, [chat_ids(tokenizer, [m.model_dump() for m in req.messages])], chat=True)

    @app.post("/v1/mcq")
    async def mcq(req: MCQRequest) -> dict:
        try:
            # MCQ validates "2-10 options lettered A.., none empty"; the gold letter is unknown here, A will do.
            question = MCQ(question=req.question, options=req.options, answer="A", context=req.context)
        except DataError as e:
            raise APIError(400, str(e), param="options" if "option" in str(e) else "question") from None
        if answer_format is AnswerFormat.LETTER:
            # The letter probabilities are the answer: forward passes between two decode steps, not decoding.
            result = await worker.call(letter_answer, engine, question)
        else:
            # Asked and read as `evaluate --mode generate` asks and reads, so the two never disagree; a
            # question it could not score is refused, never answered some other way.
            why = check_answerable(question)
            if why is not None:
                raise APIError(400, f"the {answer_format.value} format cannot name an answer to this question: "
                                    f"{why}", param="options")
            try:
                ids, params = answer_request(engine, question, answer_format)
            except DataError as e:  # options and cue leave no room for the answer: the request's fault
                raise APIError(400, str(e), param="options", code="context_length_exceeded") from None
            sample = (await worker.generate(ids, params))[0]
            result = read_answer(question, answer_format, sample.text)
        return {"object": "mcq.answer", "model": model_name, "answer_format": answer_format.value, **result}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "pure_transformer", "context_length": context}]}

    @app.get("/health")
    async def health() -> dict:
        scheduler = worker.scheduler
        return {"status": "ok", "model": model_name, "active_requests": worker.active,
                "waiting_requests": scheduler.waiting_requests, "running_requests": scheduler.running_requests,
                "running_rows": scheduler.running_rows}

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        if not PAGE.is_file():
            raise APIError(404, f"demo page not installed ({PAGE})")
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app
