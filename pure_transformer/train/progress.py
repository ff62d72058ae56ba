"""Time-to-go estimates that leave out the warm-up steps.

The first steps of a run are slow for reasons that do not recur: torch.compile, the CUDA
caching allocator filling up, DataLoader workers starting, the step-0 validation. An
estimate averaged from the start (tqdm's own, or the first log window's tokens/s) is then
too pessimistic for a long while. :class:`SteadyRate` marks the clock once
``ETA_WARMUP_STEPS`` steps of this process are done and measures the rate from that mark
on; :class:`ProgressBar` is a tqdm bar whose rate and ETA come from it (tqdm's own until
the mark). Validation and checkpoint pauses after the mark count: they recur, so the
remaining time includes them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

ETA_WARMUP_STEPS = 5
"""Steps of each process (a resumed one warms up again) left out of the rate."""


def steady_rate(mark: tuple[int, float] | None, done: int, now: float) -> float | None:
    """Steps per second from ``mark`` = (steps done, clock time) to (``done``, ``now``);
    None before the mark or with no step or no time since it."""
    if mark is None or done <= mark[0] or now <= mark[1]:
        return None
    return (done - mark[0]) / (now - mark[1])


def eta_seconds(total: int, done: int, mark: tuple[int, float] | None, now: float) -> float | None:
    """Seconds until step ``total`` at the :func:`steady_rate`; None while it is unknown."""
    rate = steady_rate(mark, done, now)
    return None if rate is None else max(0, total - done) / rate


@dataclass
class SteadyRate:
    """Marks (steps done, time) when this process has run ``warmup`` steps; see the module doc."""

    warmup: int = ETA_WARMUP_STEPS
    mark: tuple[int, float] | None = None
    steps: int = 0

    def observe(self, done: int, now: float | None = None) -> None:
        """Call after every step with the run's step count (``now`` defaults to ``time.perf_counter()``)."""
        self.steps += 1
        if self.steps == self.warmup:
            self.mark = (done, time.perf_counter() if now is None else now)

    def rate(self, done: int, now: float | None = None) -> float | None:
        return steady_rate(self.mark, done, time.perf_counter() if now is None else now)


class ProgressBar(tqdm):  # type: ignore[misc]
    """A tqdm bar whose rate (and so ETA) is ``clock``'s once warmed up."""

    def __init__(self, *args: Any, clock: SteadyRate, **kwargs: Any) -> None:
        self.clock = clock
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        rate = self.clock.rate(d["n"])
        if rate is not None:  # tqdm's format_meter derives the ETA from the rate it is given
            d["rate"] = rate
        return d


@contextlib.contextmanager
def labelled(bar: tqdm, label: str) -> Iterator[None]:
    """Name a pause on the bar while it lasts (``validating``): a bar that stands still says why."""
    bar.set_description_str(label, refresh=True)
    try:
        yield
    finally:
        bar.set_description_str("", refresh=True)
