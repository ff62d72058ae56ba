"""Prometheus metrics of the server (``GET /metrics``, the text exposition format).

Each app has its own registry (tests build several apps in one process). Names:

- gauges ``pure_transformer_requests_waiting``, ``pure_transformer_requests_running``,
  ``pure_transformer_running_rows`` (read from the scheduler at scrape time);
- counters ``pure_transformer_prompt_tokens_total``, ``pure_transformer_generation_tokens_total``,
  ``pure_transformer_requests_total{status}`` (HTTP status of every ``/v1/*`` response),
  ``pure_transformer_queue_timeouts_total``, ``pure_transformer_disconnects_total`` (per request,
  not per prompt);
- histograms ``pure_transformer_time_to_first_token_seconds``,
  ``pure_transformer_time_per_output_token_seconds``, ``pure_transformer_e2e_request_latency_seconds``
  (per prompt of a request: from its arrival to its first / last token) and
  ``pure_transformer_batch_rows`` (rows sampled per decode step);
- counter ``pure_transformer_model_thread_seconds_total{phase}``: the model thread's time by
  phase (:data:`~pure_transformer.inference.scheduler.PHASES`), which ``bench serve --profile`` reads;
  ``pure_transformer_prefix_reused_tokens_total``: prompt tokens whose prefill prefix reuse saved.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

PREFIX = "pure_transformer"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_PER_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's metrics; the scheduler calls the hooks below on the model thread."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.waiting = Gauge(f"{PREFIX}_requests_waiting", "requests in the queue, not yet admitted", registry=r)
        self.running = Gauge(f"{PREFIX}_requests_running", "requests with rows in the running batch", registry=r)
        self.rows = Gauge(f"{PREFIX}_running_rows", "rows in the running batch", registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "prompt tokens prefilled", registry=r)
        self.generation_tokens = Counter(f"{PREFIX}_generation_tokens", "tokens generated", registry=r)
        self.requests = Counter(f"{PREFIX}_requests", "/v1/* responses by HTTP status", ["status"], registry=r)
        self.timeouts = Counter(f"{PREFIX}_queue_timeouts", "requests that waited past --queue-timeout", registry=r)
        self.disconnects = Counter(f"{PREFIX}_disconnects", "requests whose client left before the end", registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "arrival to first token", buckets=_LATENCY,
                              registry=r)
        self.tpot = Histogram(f"{PREFIX}_time_per_output_token_seconds", "first to last token, per later token",
                              buckets=_PER_TOKEN, registry=r)
        self.e2e = Histogram(f"{PREFIX}_e2e_request_latency_seconds", "arrival to last token", buckets=_LATENCY,
                             registry=r)
        self.batch = Histogram(f"{PREFIX}_batch_rows", "rows sampled per decode step", buckets=_ROWS, registry=r)

    def bind(self, scheduler: Any) -> None:
        """Read the gauges from ``scheduler`` whenever they are scraped."""
        self.waiting.set_function(lambda: scheduler.waiting_requests)
        self.running.set_function(lambda: scheduler.running_requests)
        self.rows.set_function(lambda: scheduler.running_rows)
        self.registry.register(_Phases(scheduler))

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # ---------------------------------------------------------- scheduler hooks
    def step(self, rows: int) -> None:
        self.batch.observe(rows)

    def admitted(self, entry: Any) -> None:
        self.prompt_tokens.inc(len(entry.prompt))

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def tokens(self, count: int) -> None:
        self.generation_tokens.inc(count)

    def timed_out(self) -> None:
        self.timeouts.inc()

    def finished(self, entry: Any, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.e2e.observe(now - entry.submitted)
        if entry.first_token_at is not None and entry.longest > 1:
            self.tpot.observe((now - entry.first_token_at) / (entry.longest - 1))


class _Phases:
    """Collects the scheduler's cumulative seconds per phase at scrape time (nothing per step)."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler

    def collect(self) -> Any:
        family = CounterMetricFamily(f"{PREFIX}_model_thread_seconds", "model thread time by phase", labels=["phase"])
        for phase, seconds in dict(self.scheduler.phase_seconds).items():
            family.add_metric([phase], seconds)
        yield family
        yield CounterMetricFamily(f"{PREFIX}_prefix_reused_tokens", "prompt tokens a held prefix saved prefilling",
                                  value=self.scheduler.prefix_reused_tokens)


class StatusMiddleware:
    """Counts every ``/v1/*`` response by its HTTP status (plain ASGI: streams pass untouched)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)

        async def counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(status=str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)
