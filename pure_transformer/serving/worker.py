"""The model side of :mod:`pure_transformer.serving.app`: one worker thread that owns
the engine, a queue that batches compatible non-streaming requests, and the
MCQ scorer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..answer_format import AnswerFormat
from ..engine import Engine, Sample, SamplingParams
from ..mcq import MCQ
from ..eval.scoring import continuation_logprobs, fit_prompt, letter_scores


# ------------------------------------------------------------------ worker
@dataclass
class _Job:
    prompt: list[int]
    params: SamplingParams
    n: int
    future: asyncio.Future


class ModelWorker:
    """Owns the engine and its one worker thread; batches compatible requests."""

    def __init__(self, engine: Engine, window_s: float):
        self.engine, self.window_s = engine, window_s
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0  # generate calls so far, for tests and /health
        self._task: asyncio.Task | None = None
        self._calls = 0  # on the model thread or waiting for it

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._batch_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the model thread."""
        self._calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self._calls -= 1

    def busy(self) -> bool:
        """Whether a call is queued or running on the model thread."""
        return self._calls > 0

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


class TokenTap:
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
def mcq_answer(engine: Engine, mcq: MCQ, answer_format: AnswerFormat) -> dict[str, Any]:
    """The model's answer to one question, asked the way it was trained.

    ``letter``: the softmax over the log-likelihoods of its letters " A", " B".. after the harness
    prompt. ``text``: the softmax over each option's text as the continuation of the
    format's prompt. ``explain``: a greedy explanation first (returned), then the
    softmax over each ``"\nAnswer: {option}"`` after it.
    """
    if answer_format is AnswerFormat.LETTER:
        probs = dict(zip(mcq.letters, torch.softmax(letter_scores(engine.model, engine.tok, [mcq])[0], dim=0).tolist()))
        return {"answer": max(probs, key=probs.__getitem__), "probabilities": probs}
    context, explanation = answer_format.prompt(mcq), None
    if answer_format is AnswerFormat.EXPLAIN:
        params = SamplingParams(max_new_tokens=answer_format.max_new_tokens(), temperature=0.0,
                                stop_strings=("\nAnswer:", *answer_format.stop_strings()))
        ids, _ = fit_prompt(engine.tok, mcq, answer_format, engine.model.cfg.max_seq_len, params.max_new_tokens)
        explanation = engine.generate([ids], params)[0][0].text
        context += explanation + "\nAnswer:"
    scores = continuation_logprobs(engine.model, engine.tok, [(context, f" {text}") for text in mcq.options.values()])
    probs = dict(zip(mcq.letters, torch.softmax(scores, dim=0).tolist()))
    out: dict[str, Any] = {"answer": max(probs, key=probs.__getitem__), "probabilities": probs}
    return out if explanation is None else {**out, "explanation": explanation.strip()}
