"""The model side of :mod:`pure_transformer.serving.app`: the worker that owns the
:class:`~pure_transformer.inference.scheduler.Scheduler` (and so the model thread),
the :class:`Job` through which one HTTP request waits for its rows, and ``/v1/mcq``'s answers
(asked and read as ``evaluate`` asks and reads them).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import torch

from ..eval.scoring import answer_params, fit_prompt, letter_scores
from ..inference.engine import Engine, Sample, SamplingParams, prompt_seed
from ..inference.scheduler import Entry, QueueTimeout, Scheduler
from ..mcq.answer_format import AnswerFormat, cut_at_stop
from ..mcq.record import MCQ
from .http import APIError
from .schemas import ServerLimits

DISCONNECT_POLL_S = 0.1
"""How often a waiting request checks that its client is still there."""


class ClientGone(Exception):
    """The client disconnected while its request waited or ran."""


# ------------------------------------------------------------------ worker
class ModelWorker:
    """Owns the scheduler; admits requests into its queue (429 once it is full)."""

    def __init__(self, engine: Engine, limits: ServerLimits, metrics: Any):
        self.engine, self.limits, self.metrics = engine, limits, metrics
        kv_tokens = limits.kv_cache_tokens or limits.max_running_rows * engine.model.cfg.max_seq_len
        self.scheduler = Scheduler(engine, max_rows=limits.max_running_rows, kv_tokens=kv_tokens,
                                   queue_timeout_s=limits.queue_timeout_s, metrics=metrics)
        metrics.bind(self.scheduler)
        self.active = 0  # requests between open() and Job.close(), streams until they end

    def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        self.scheduler.stop()

    def busy(self) -> bool:
        """Whether rows run or a call runs or waits on the model thread."""
        return self.scheduler.busy()

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the model thread, between two decode steps."""
        return await asyncio.wrap_future(self.scheduler.call(fn, *args))

    def open(self, prompts: list[list[int]], params: list[SamplingParams], n: int, *, stream: bool,
             logprobs: int | None = None) -> "Job":
        """Queue one request's prompts (``n`` samples each); 429 when the queue is full. A stream with
        ``logprobs`` gets each token's scores with its token event."""
        if self.scheduler.waiting_requests >= self.limits.max_queue:
            raise APIError(429, f"server busy: {self.limits.max_queue} requests already waiting, retry shortly",
                           type="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": str(self.limits.retry_after_s)})
        return Job(self, prompts, params, n, stream, logprobs)

    async def generate(self, prompt: list[int], params: SamplingParams, n: int = 1) -> list[Sample]:
        """The ``n`` samples of one prompt through the scheduler (no client to watch)."""
        job = self.open([prompt], [params], n, stream=False)
        try:
            return (await job.results(None))[0]
        finally:
            job.close()


class Job:
    """One HTTP request's entries, seen from the event loop: its events arrive in a queue."""

    def __init__(self, worker: ModelWorker, prompts: list[list[int]], params: list[SamplingParams], n: int,
                 stream: bool, logprobs: int | None = None):
        self.worker, self.n = worker, n
        self.events: asyncio.Queue[tuple] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def sink(i: int) -> Any:
            def deliver(event: tuple) -> None:
                try:
                    loop.call_soon_threadsafe(self.events.put_nowait, (i, *event))
                except RuntimeError:  # the loop is closed: the server is going away
                    pass
            return deliver

        # A seeded prompt draws as Engine.generate([prompt], params, n) draws it: prompt_seed(seed, 0).
        self.entries = [Entry(ids, p, n, prompt_seed(p.seed, 0) if p.seed is not None
                              else int(torch.randint(2**62, ()).item()), stream, sink(i), job=self,
                              logprobs=logprobs if stream else None)
                        for i, (ids, p) in enumerate(zip(prompts, params))]
        self.samples: list[list[Sample | None]] = [[None] * n for _ in prompts]
        self.open_rows = len(prompts) * n
        self.started = False  # its first prompt joined the batch: the request is admitted, no longer queued
        self.closed = self.failed = False
        self._held: list[tuple] = []  # events read while waiting for admission, replayed first
        worker.active += 1
        worker.scheduler.submit(self.entries)

    async def next_event(self, request: Any) -> tuple:
        """(prompt index, kind, ...) of the next event; raises ClientGone when ``request``'s
        client left, 503 on a queue timeout, and an entry's error as itself."""
        while True:
            if self._held and self.started:
                return self._held.pop(0)
            try:
                event = self.events.get_nowait() if not self.events.empty() else \
                    await asyncio.wait_for(self.events.get(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    raise ClientGone() from None
                continue
            kind = event[1]
            if kind == "admitted":
                self.started = True
            elif kind == "done":
                self.samples[event[0]][event[2]] = event[3]
                self.open_rows -= 1
            elif kind == "error":
                self.failed = True  # its rows are gone already; closing it is no disconnect
                error = event[2]
                if isinstance(error, QueueTimeout):
                    raise APIError(503, f"server overloaded: this request {error}; retry later", type="server_error",
                                   code="queue_timeout", headers={"Retry-After": str(self.worker.limits.retry_after_s)})
                raise error
            return event

    async def admitted(self, request: Any) -> None:
        """Wait until the request is admitted: its first prompt has joined the running batch (its later
        prompts may still wait for room; they cannot time out any more). Its events stay queued."""
        while not self.started:
            event = await self.next_event(request)
            if event[1] != "admitted":
                self._held.append(event)

    async def results(self, request: Any) -> list[list[Sample]]:
        """Every prompt's samples, once all rows are done."""
        while self.open_rows:
            await self.next_event(request)
        return self.samples  # type: ignore[return-value]

    def close(self) -> None:
        """Free the rows still running or waiting (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.worker.active -= 1
        if self.open_rows and not self.failed:
            self.worker.metrics.disconnects.inc()
        if self.open_rows:
            self.worker.scheduler.cancel(self.entries)


# --------------------------------------------------------------------- mcq
def answer_request(engine: Engine, mcq: MCQ, answer_format: AnswerFormat) -> tuple[list[int], SamplingParams]:
    """(prompt ids, params) of the answer ``evaluate --mode generate`` writes to ``mcq`` in a text format
    (:func:`~pure_transformer.eval.scoring.sample_answers` with its defaults): the prompt made to fit by
    :func:`~pure_transformer.eval.scoring.fit_prompt` with the format's budget left, greedy, as
    :func:`~pure_transformer.eval.scoring.answer_params` says. Raises :class:`DataError` when the
    options and cue leave no room for the budget."""
    params = answer_params(answer_format)
    ids, _ = fit_prompt(engine.tok, mcq, answer_format, engine.model.cfg.max_seq_len, params.max_new_tokens)
    return ids, params


_ANSWER_LINE_START = re.compile(r"^[ \t]*Answer:", re.MULTILINE)


def read_answer(mcq: MCQ, answer_format: AnswerFormat, completion: str) -> dict[str, Any]:
    """The ``/v1/mcq`` fields of a generated ``completion`` (from :func:`answer_request`), read by
    :meth:`AnswerFormat.read` as ``evaluate`` reads it: ``answer`` (the letter its answer line names, or
    None), ``cause`` (why None: one of ``NO_ANSWER_CAUSES``), ``completion`` (the generated text) and, for
    ``explain``, ``explanation`` (what the model wrote before its final ``Answer:`` line)."""
    letter, cause = answer_format.read(mcq, completion)
    out: dict[str, Any] = {"answer": letter, "cause": cause, "completion": completion}
    if answer_format is AnswerFormat.EXPLAIN:
        text = cut_at_stop(completion)
        lines = list(_ANSWER_LINE_START.finditer(text))
        out["explanation"] = (text[:lines[-1].start()] if lines else text).strip()
    return out


def letter_answer(engine: Engine, mcq: MCQ) -> dict[str, Any]:
    """The ``letter`` format's answer: the softmax over the log-likelihoods of the question's letters
    " A", " B".. after the harness prompt (``evaluate``'s loglikelihood mode); the likeliest is the answer."""
    probs = dict(zip(mcq.letters, torch.softmax(letter_scores(engine.model, engine.tok, [mcq])[0], dim=0).tolist()))
    return {"answer": max(probs, key=probs.__getitem__), "probabilities": probs}
