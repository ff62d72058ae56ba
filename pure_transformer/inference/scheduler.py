"""Continuous batching on the model thread: every request the server is generating for
is a set of rows in one running batch, whatever its sampling parameters.

One loop iteration (:meth:`Scheduler._step`):

1. Rows of requests whose client left (``Entry.cancelled``) are freed; a request none
   of whose entries has joined yet and that sat longer than the queue timeout gets
   :class:`QueueTimeout` (once, for all its entries). A request is queued until its first
   entry joins: its later entries waiting for room behind its earlier ones are its own
   work in progress, not queueing, and never time out.
2. Waiting entries are admitted in arrival order while the batch stays within
   ``max_rows`` rows and ``kv_tokens`` cache slots (rows x slots each will have
   reached when its longest-running row ends). An entry larger than both is admitted
   alone into an empty batch.
3. The admitted prompts take free rows of the :class:`~pure_transformer.inference.row_pool.RowPool`
   and only the part of each that no row already holds is prefilled (prefix reuse); the running
   rows are not touched.
4. Every live row samples one token in one :func:`~pure_transformer.inference.row_sampler.sample_rows`
   call, with its own request's temperature, top-k and top-p and its own request's noise generator,
   drawn (n, W) per step exactly as ``Engine.generate`` draws it for that request alone: a seeded
   request gives the same tokens alone or in any crowd, and greedy rows the same as ``Engine.generate``.
5. Finished rows are delivered and freed at once; then one decode step advances the rest.

Calls (MCQ scoring, legacy logprobs) queued with :meth:`Scheduler.call` run between
two iterations, so nothing else ever touches the model concurrently.

Entries talk to the event loop through ``Entry.deliver`` (called on the model
thread; the worker makes it thread-safe) with events ``("admitted",)``,
``("token", sample, id, scored)`` (streams only; ``scored`` is None, or, for an entry with
``logprobs``, the token's log-probability under the model's own distribution and the
likeliest ``(id, log-probability)`` pairs there), ``("done", sample, Sample)`` and
``("error", exception)``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .engine import (Engine, Row, SamplingParams, candidate_width, decode_step, finish_row, row_stopped,
                     sampler_precision)
from .row_pool import RowPool
from .row_sampler import noise_width, sample_rows


PHASES = ("join", "sampling", "rows", "forward")
"""Where the model thread's time goes (:attr:`Scheduler.phase_seconds`): admitting, prefilling and
merging joining rows; the sampling math (noise included); the per-row work after it (appending,
stop strings, detokenising finished rows, delivering events); the decode step's forward."""


class QueueTimeout(Exception):
    """An entry waited longer than the queue timeout without being admitted."""


@dataclass(eq=False)
class Entry:
    """One prompt of a request with its ``n`` samples: ``n`` rows once admitted."""

    prompt: list[int]
    params: SamplingParams
    n: int
    seed: int
    """Seeds the entry's noise generator (unused when greedy)."""
    stream: bool
    deliver: Callable[[tuple], None]
    job: Any = None
    """What the entry belongs to (one HTTP request), for the waiting/running request counts."""
    logprobs: int | None = None
    """A stream's legacy ``logprobs``: each token event carries this many likeliest tokens (None: no scores)."""
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    first_token_at: float | None = None
    open_rows: int = 0
    longest: int = 0
    generator: torch.Generator | None = None


@dataclass(eq=False)
class _Slot:
    entry: Entry
    sample: int
    row: Row
    index: int
    """Its row of the pool (and of the pool's logits)."""
    live: bool = True


class Scheduler:
    """Owns the model thread and the running batch (see the module docstring).

    ``metrics`` receives ``step(rows)``, ``admitted(entry)``, ``first_token(seconds)``,
    ``tokens(count)``, ``finished(entry, now)`` and ``timed_out()`` (see
    :class:`~pure_transformer.serving.prometheus.Metrics`)."""

    def __init__(self, engine: Engine, *, max_rows: int, kv_tokens: int, queue_timeout_s: float, metrics: Any):
        self.engine, self.model, self.tok = engine, engine.model, engine.tok
        self.max_rows, self.kv_tokens, self.queue_timeout_s = max_rows, kv_tokens, queue_timeout_s
        self.metrics = metrics
        self._cond = threading.Condition()
        self._waiting: collections.deque[Entry] = collections.deque()
        self._calls: collections.deque[tuple[Callable, tuple, concurrent.futures.Future]] = collections.deque()
        self._waiting_jobs: collections.Counter = collections.Counter()  # job -> its entries still waiting
        self._running_jobs: collections.Counter = collections.Counter()  # job -> its entries admitted, not done
        self._started_jobs: set = set()  # jobs with an entry admitted and entries still waiting: running, not queued
        self._slots: dict[int, _Slot] = {}  # pool row -> its live slot
        self._pool = RowPool(self.model, max_rows, self.tok.pad_id, sampler_precision(self.model)[0])
        self._joining: list[Entry] = []
        self._in_call = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)  # cumulative, read by /metrics and bench serve --profile

    # ------------------------------------------------------------ event-loop side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def submit(self, entries: list[Entry]) -> None:
        with self._cond:
            for e in entries:
                self._waiting.append(e)
                self._waiting_jobs[e.job] += 1
            self._cond.notify()

    def cancel(self, entries: list[Entry]) -> None:
        """Free the entries' rows (or queue places) at the next step."""
        with self._cond:
            for e in entries:
                e.cancelled = True
            self._cond.notify()

    def call(self, fn: Callable, *args: Any) -> concurrent.futures.Future:
        """Run ``fn(*args)`` on the model thread between two steps."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            self._calls.append((fn, args, future))
            self._cond.notify()
        return future

    @property
    def waiting_requests(self) -> int:
        """Requests none of whose entries has joined the batch yet (a partly admitted one is running)."""
        with self._cond:
            return len(self._waiting_jobs.keys() - self._started_jobs)

    @property
    def running_requests(self) -> int:
        """Requests with an entry in the batch, or admitted with entries still waiting for room."""
        with self._cond:
            return len(self._running_jobs.keys() | self._started_jobs)

    @property
    def prefix_reused_tokens(self) -> int:
        """Prompt tokens whose prefill a prefix already held in the pool saved (cumulative)."""
        return self._pool.reused_tokens

    @property
    def running_rows(self) -> int:
        return len(self._slots)

    def busy(self) -> bool:
        """Whether rows are running, or a call runs or waits, on the model thread."""
        return self._in_call or bool(self._calls) or self.running_rows > 0 or bool(self._joining)


    # ------------------------------------------------------------ model thread
    def _loop(self) -> None:
        self.model.eval()  # serving never trains; dropout (if any) stays off
        while True:
            with self._cond:
                while not (self._stopping or self._calls or self._waiting or self._slots):  # idle: wait
                    self._cond.wait()
                if self._stopping:
                    return
                calls = list(self._calls)
                self._calls.clear()
                self._in_call = bool(calls)
            for fn, args, future in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as e:  # noqa: BLE001 - the caller gets it
                        future.set_exception(e)
            self._in_call = False
            try:
                self._step()
            except Exception as e:  # noqa: BLE001 - delivered to each request in the batch, the loop lives on
                self._fail_all(e)

    def _fail_all(self, error: Exception) -> None:
        entries = {s.entry for s in self._slots.values()} | set(self._joining)
        for e in entries:
            e.deliver(("error", error))
            self._running_jobs.pop(e.job, None)
        self._slots, self._joining = {}, []
        self._pool.reset()

    def _clock(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.phase_seconds[phase] += now - since
        return now

    @torch.no_grad()
    def _step(self) -> None:
        t = time.perf_counter()
        for s in list(self._slots.values()):
            if s.entry.cancelled:
                self._end_row(s, None)
        self._joining = self._admit(time.monotonic())
        dtype, autocast = sampler_precision(self.model)
        with autocast:
            if self._joining:
                self._join(self._joining)
            t = self._clock("join", t)
            if not self._slots:
                self._joining = []
                return
            tokens = self._sample()
            self._joining = []
            t = time.perf_counter()
            if tokens:
                self._pool.decode(tokens, decode_step)
            self._clock("forward", t)

    def _admit(self, now: float) -> list[Entry]:
        live = list(self._slots.values())
        rows = len(live)
        held = max((len(s.entry.prompt) + len(s.row.tokens) for s in live), default=0)
        ahead = max((s.entry.params.max_new_tokens - len(s.row.tokens) for s in live), default=0)
        admitted: list[Entry] = []
        with self._cond:
            # Only a request that never started can time out, and all of its entries go together:
            # one 503, one count, whichever of its entries the clock caught first.
            late: dict[Any, Entry] = {}  # job -> its first entry, which carries the error
            for e in self._waiting:
                if not e.cancelled and e.job not in self._started_jobs and now - e.submitted > self.queue_timeout_s:
                    late.setdefault(e.job, e)
            for e in [e for e in self._waiting if e.cancelled or e.job in late]:
                self._waiting.remove(e)
                self._unwait(e)
            for e in late.values():
                self.metrics.timed_out()
                e.deliver(("error", QueueTimeout(f"waited over {self.queue_timeout_s:g} s in the queue")))
            while self._waiting:
                e = self._waiting[0]
                r, h, a = rows + e.n, max(held, len(e.prompt)), max(ahead, e.params.max_new_tokens)
                # First come, first served: a large head-of-line entry is not overtaken by small ones.
                if (r > self.max_rows or r * (h + a) > self.kv_tokens) and (rows or admitted):
                    break
                self._waiting.popleft()
                self._running_jobs[e.job] += 1
                self._started_jobs.add(e.job)
                self._unwait(e)
                admitted.append(e)
                rows, held, ahead = r, h, a
        for e in admitted:
            e.open_rows = e.n
            if e.params.temperature > 0:
                e.generator = torch.Generator(device=self.engine.device).manual_seed(e.seed)
            self.metrics.admitted(e)
            e.deliver(("admitted",))
        return admitted

    def _unwait(self, e: Entry) -> None:
        self._waiting_jobs[e.job] -= 1
        if self._waiting_jobs[e.job] <= 0:
            del self._waiting_jobs[e.job]
            self._started_jobs.discard(e.job)  # nothing of it waits: _running_jobs alone counts it now

    def _join(self, entries: list[Entry]) -> None:
        """The joining entries' rows: prefilled past what the pool already holds of them."""
        room = max(len(e.prompt) + e.params.max_new_tokens for e in entries)
        rows = self._pool.join([e.prompt for e in entries], [e.n for e in entries], room)
        for e, mine in zip(entries, rows):
            for sample, r in enumerate(mine):
                self._slots[r] = _Slot(e, sample, Row(prompt=0), r)

    def _noise(self, live: list[_Slot], width: int) -> torch.Tensor:
        """(L, width) Exp(1) noise for the live rows: each sampling entry with a live row draws
        (n, its candidate width) from its own generator, once per step, as ``Engine.generate`` draws
        for the prompt alone; the columns past a row's width are never read (ones)."""
        device = self.engine.device
        at: dict[Entry, int] = {}
        offset = 1  # buffer row 0: greedy rows' (unread) noise
        for s in live:
            if s.entry.generator is not None and s.entry not in at:
                at[s.entry], offset = offset, offset + s.entry.n
        if len(at) == 1 and len(live) == offset - 1:
            # One sampling entry and nothing else live (one client): its own draw, no buffer (its width is `width`).
            (e,) = at
            q = torch.empty(e.n, width, device=device).exponential_(generator=e.generator)
            order = [s.sample for s in live]
            return q if order == list(range(e.n)) else q[torch.tensor(order, device=device)]
        return self._buffered(live, at, offset, width)

    def _buffered(self, live: list[_Slot], at: dict[Entry, int], offset: int, width: int) -> torch.Tensor:
        """:meth:`_noise` for several entries: each one's draw in its rows of one (offset, width) buffer."""
        device = self.engine.device
        buffer = torch.ones(offset, width, device=device)
        for e, row in at.items():
            w = candidate_width(e.params, self.model.cfg.vocab_size)
            # Drawn into a fresh contiguous tensor, exactly as Engine.generate draws (in place into the
            # strided buffer would match on CPU, but a device generator need not fill a view in that order).
            buffer[row:row + e.n, :w] = torch.empty(e.n, w, device=device).exponential_(generator=e.generator)
        index = [at[s.entry] + s.sample if s.entry in at else 0 for s in live]
        return buffer[torch.tensor(index, device=device)]

    def _sample(self) -> dict[int, int]:
        """One token for every live row, in one sampling call; returns pool row -> token for the rows
        still running (the next decode step's input)."""
        t0 = time.perf_counter()
        live = sorted(self._slots.values(), key=lambda s: s.index)
        params = [s.entry.params for s in live]
        noise = self._noise(live, noise_width(params, self.model.cfg.vocab_size))
        rows = [s.index for s in live]
        logits = self._pool.logits[:len(rows)] if rows == list(range(len(rows))) else \
            self._pool.logits[torch.tensor(rows, device=self.engine.device)]  # type: ignore[index]  # (L, V)
        picked, logps = sample_rows(logits, params, noise)
        picked_list, logps_list = picked.tolist(), logps.tolist()
        t1 = time.perf_counter()
        self.phase_seconds["sampling"] += t1 - t0
        scored = self._scored(live, logits, picked)
        now = time.monotonic()
        running: dict[int, int] = {}
        for k, (s, t, lp) in enumerate(zip(live, picked_list, logps_list)):
            s.row.tokens.append(t)
            s.row.logprobs.append(lp)
            e = s.entry
            if e.first_token_at is None:
                e.first_token_at = now
                self.metrics.first_token(now - e.submitted)
            if e.stream:
                e.deliver(("token", s.sample, t, scored.get(k)))
            if row_stopped(self.tok, s.row, e.params):
                self._end_row(s, "stop")
            elif len(s.row.tokens) >= e.params.max_new_tokens:
                self._end_row(s, "length")
            else:
                running[s.index] = t
        self.steps += 1
        self.metrics.step(len(live))
        self.metrics.tokens(len(live))
        self.phase_seconds["rows"] += time.perf_counter() - t1
        return running

    def _scored(self, live: list[_Slot], logits: torch.Tensor, picked: torch.Tensor
                ) -> dict[int, tuple[float, list[tuple[int, float]]]]:
        """Live index -> (its ``picked`` token's log-probability, the likeliest ``(id, log-probability)``
        pairs) for the rows whose entry asks ``logprobs``, under the model's own distribution (the raw
        logits, not the sampling one), as the non-streamed ``logprobs`` score a completion: a stream's
        scores come with its tokens, without a second forward pass."""
        want = [(k, max(s.entry.logprobs, 1)) for k, s in enumerate(live) if s.entry.logprobs is not None]
        if not want:
            return {}
        rows = torch.tensor([k for k, _ in want], device=logits.device)
        logp = torch.log_softmax(logits[rows].float(), dim=-1)  # (W, V)
        chosen = logp.gather(1, picked[rows][:, None])[:, 0].tolist()
        best_v, best_i = logp.topk(max(top for _, top in want), dim=-1)
        values, ids = best_v.tolist(), best_i.tolist()
        return {k: (chosen[r], list(zip(ids[r][:top], values[r][:top]))) for r, (k, top) in enumerate(want)}

    def _end_row(self, s: _Slot, reason: str | None) -> None:
        """Finish a row and free it at once: delivered with ``reason``, or dropped (None: its client left)."""
        s.live = False
        del self._slots[s.index]
        self._pool.free(s.index)
        e = s.entry
        e.longest = max(e.longest, len(s.row.tokens))
        if reason is not None and not e.cancelled:
            e.deliver(("done", s.sample, finish_row(self.tok, s.row, reason, e.params)))  # type: ignore[arg-type]
        e.open_rows -= 1
        if e.open_rows == 0:
            with self._cond:
                self._running_jobs[e.job] -= 1
                if self._running_jobs[e.job] <= 0:
                    del self._running_jobs[e.job]
            if not e.cancelled:
                self.metrics.finished(e, time.monotonic())
