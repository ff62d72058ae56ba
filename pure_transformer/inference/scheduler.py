"""Continuous batching on the model thread: every request the server is generating for
is a set of rows in one running batch, whatever its sampling parameters.

One loop iteration (:meth:`Scheduler._step`):

1. Rows of requests whose client left (``Entry.cancelled``) are finished; a request none
   of whose entries has joined yet and that sat longer than the queue timeout gets
   :class:`QueueTimeout` (once, for all its entries). A request is queued until its first
   entry joins: its later entries waiting for room behind its earlier ones are its own
   work in progress, not queueing, and never time out.
2. Waiting entries are admitted in arrival order while the batch stays within
   ``max_rows`` rows and ``kv_tokens`` cache slots (rows x slots each will have
   reached when its longest-running row ends, so the cache can never outgrow the
   budget). An entry larger than both is admitted alone into an empty batch.
3. The admitted prompts are prefilled together into their own cache, and merged
   with the running rows by right alignment (:func:`~pure_transformer.model.kv_cache.right_aligned`),
   which also drops finished rows and trims the common left padding.
4. Every live row samples one token with its own request's temperature, top-k and
   top-p (rows with equal parameters share one :func:`~pure_transformer.inference.engine.sample_next`
   call) and its own request's noise generator, drawn (n, W) per step exactly as
   ``Engine.generate`` draws it for that request alone: a seeded request gives the
   same tokens alone or in any crowd, and greedy rows the same as ``Engine.generate``.
5. Finished rows are delivered at once; then one decode step advances the rest.

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

from ..model.kv_cache import KVCache, right_aligned
from .engine import (Engine, Row, SamplingParams, candidate_width, decode_step, finish_row, prefill, row_stopped,
                     sample_next, sampler_precision)

COMPACT_FRACTION = 0.25
"""Finished rows stay in the batch (a wasted row per step) until this share is finished or
someone joins; dropping them copies the whole cache."""


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
        self._slots: list[_Slot] = []  # slot j is row j of the cache and of the logits
        self._cache: KVCache | None = None
        self._logits: torch.Tensor | None = None  # (R, V): each slot's next-token logits
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
    def running_rows(self) -> int:
        return sum(s.live for s in list(self._slots))

    def busy(self) -> bool:
        """Whether rows are running, or a call runs or waits, on the model thread."""
        return self._in_call or bool(self._calls) or self.running_rows > 0 or bool(self._joining)

    # ------------------------------------------------------------ model thread
    def _loop(self) -> None:
        self.model.eval()  # serving never trains; dropout (if any) stays off
        while True:
            with self._cond:
                while not (self._stopping or self._calls or self._waiting or self._slots):
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
        entries = {s.entry for s in self._slots if s.live} | set(self._joining)
        for e in entries:
            e.deliver(("error", error))
            self._running_jobs.pop(e.job, None)
        self._slots, self._cache, self._logits, self._joining = [], None, None, []

    def _clock(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.phase_seconds[phase] += now - since
        return now

    @torch.no_grad()
    def _step(self) -> None:
        t = time.perf_counter()
        for s in self._slots:
            if s.live and s.entry.cancelled:
                self._end_row(s, None)
        self._joining = self._admit(time.monotonic())
        dead = sum(not s.live for s in self._slots)
        if self._joining or (self._slots and dead >= max(1, COMPACT_FRACTION * len(self._slots))):
            self._rebuild()
        t = self._clock("join", t)
        if not self._slots:
            return
        dtype, autocast = sampler_precision(self.model)
        with autocast:
            tokens = self._sample()
            self._joining = []
            t = time.perf_counter()
            if any(s.live for s in self._slots):
                self._logits = decode_step(self.model, tokens, self._cache)
            else:
                self._slots, self._cache, self._logits = [], None, None
            self._clock("forward", t)

    def _admit(self, now: float) -> list[Entry]:
        live = [s for s in self._slots if s.live]
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

    def _rebuild(self) -> None:
        """Drop finished rows and merge the joining entries' prefill into the batch."""
        keep = [j for j, s in enumerate(self._slots) if s.live]
        parts: list[tuple[KVCache, torch.Tensor]] = []
        logits: list[torch.Tensor] = []
        slots = [self._slots[j] for j in keep]
        if keep:
            index = torch.tensor(keep, device=self.engine.device)
            parts.append((self._cache, index))  # type: ignore[arg-type]
            logits.append(self._logits[index])  # type: ignore[index]
        if self._joining:
            dtype, autocast = sampler_precision(self.model)
            prompts = [e.prompt for e in self._joining]
            with autocast:
                cache, last = prefill(self.model, prompts, max(map(len, prompts)), dtype, self.tok.pad_id)
            # Each prompt's prefill is shared by its n samples: its cache row is repeated.
            index = torch.arange(len(prompts), device=self.engine.device).repeat_interleave(
                torch.tensor([e.n for e in self._joining], device=self.engine.device))
            parts.append((cache, index))
            logits.append(last[:, -1][index])
            slots += [_Slot(e, s, Row(prompt=0)) for e in self._joining for s in range(e.n)]
        self._slots = slots
        if not parts:
            self._cache, self._logits = None, None
            return
        ahead = max(s.entry.params.max_new_tokens - len(s.row.tokens) for s in slots)
        self._cache, self._logits = right_aligned(parts, ahead), torch.cat(logits)

    def _noise(self) -> dict[Entry, torch.Tensor]:
        """(n, W) Exp(1) draws per sampling entry with a live row: one draw per step, as
        ``Engine.generate`` draws for the prompt alone."""
        width = {}
        for s in self._slots:
            if s.live and s.entry.generator is not None and s.entry not in width:
                width[s.entry] = candidate_width(s.entry.params, self.model.cfg.vocab_size)
        return {e: torch.empty(e.n, w, device=self.engine.device).exponential_(generator=e.generator)
                for e, w in width.items()}

    def _sample(self) -> torch.Tensor:
        """One token for every live row; returns the (R,) ids to decode (pad for finished rows)."""
        t0 = time.perf_counter()
        math = 0.0
        noise = self._noise()
        math += time.perf_counter() - t0
        groups: dict[tuple, list[int]] = {}
        for j, s in enumerate(self._slots):
            if s.live:
                p = s.entry.params
                key = (0.0, None, 1.0) if p.temperature == 0 else (p.temperature, p.top_k, p.top_p)
                groups.setdefault(key, []).append(j)
        tokens = torch.full((len(self._slots),), self.tok.pad_id, dtype=torch.long, device=self.engine.device)
        now = time.monotonic()
        sampled = 0
        for js in groups.values():
            params = self._slots[js[0]].entry.params
            rows = [self._slots[j] for j in js]
            q = torch.stack([noise[s.entry][s.sample] for s in rows]) if params.temperature > 0 else None
            index = torch.tensor(js, device=self.engine.device)
            t = time.perf_counter()
            picked, logps, _ = sample_next(self._logits[index], params, q)  # type: ignore[index]
            tokens[index] = picked
            math += time.perf_counter() - t
            scored = self._scored(js, picked)
            for j, s, t, lp in zip(js, rows, picked.tolist(), logps.tolist()):
                s.row.tokens.append(t)
                s.row.logprobs.append(lp)
                sampled += 1
                e = s.entry
                if e.first_token_at is None:
                    e.first_token_at = now
                    self.metrics.first_token(now - e.submitted)
                if e.stream:
                    e.deliver(("token", s.sample, t, scored.get(j)))
                if row_stopped(self.tok, s.row, e.params):
                    self._end_row(s, "stop")
                elif len(s.row.tokens) >= e.params.max_new_tokens:
                    self._end_row(s, "length")
        self.phase_seconds["sampling"] += math
        self.phase_seconds["rows"] += time.perf_counter() - t0 - math
        self.steps += 1
        self.metrics.step(sampled)
        self.metrics.tokens(sampled)
        return tokens

    def _scored(self, js: list[int], picked: torch.Tensor) -> dict[int, tuple[float, list[tuple[int, float]]]]:
        """Slot -> (its ``picked`` token's log-probability, the likeliest ``(id, log-probability)``
        pairs) for the slots among ``js`` whose entry asks ``logprobs``, under the model's own
        distribution (the raw logits, not the sampling one), as the non-streamed ``logprobs`` score a
        completion: a stream's scores come with its tokens, without a second forward pass."""
        want = [(k, j, max(self._slots[j].entry.logprobs, 1)) for k, j in enumerate(js)
                if self._slots[j].entry.logprobs is not None]
        if not want:
            return {}
        slots, rows = (torch.tensor(list(x), device=self.engine.device) for x in zip(*[(j, k) for k, j, _ in want]))
        logp = torch.log_softmax(self._logits[slots].float(), dim=-1)  # type: ignore[index]
        chosen = logp.gather(1, picked[rows][:, None])[:, 0].tolist()
        best_v, best_i = logp.topk(max(top for _, _, top in want), dim=-1)
        values, ids = best_v.tolist(), best_i.tolist()
        return {j: (chosen[r], list(zip(ids[r][:top], values[r][:top]))) for r, (_, j, top) in enumerate(want)}

    def _end_row(self, s: _Slot, reason: str | None) -> None:
        """Finish a row: delivered with ``reason``, or dropped (None: its client left)."""
        s.live = False
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
