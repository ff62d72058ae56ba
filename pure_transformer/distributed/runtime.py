"""Process-level plumbing shared by the training loops.

Distributed setup (torchrun's environment variables), device and precision
choice, seeding and RNG snapshots for exact resume, and a guard that turns
SIGTERM/SIGINT into a "stop after this step" flag.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Iterator, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ..model.precision import autocast, uses_bf16

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: rank, world size and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    bf16: bool = False
    """Whether the run computes under bf16 autocast (:mod:`pure_transformer.model.precision`)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when the run is bf16 (no GradScaler needed: bf16 has fp32's range)."""
        return autocast(self.device, self.bf16)


def init_runtime(device: str | None = None, precision: str = "auto") -> Runtime:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK (absent: one process) and join
    the process group: NCCL on GPUs, Gloo on CPU. ``precision`` as in
    :func:`pure_transformer.model.precision.uses_bf16`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls that remain (outside autocast) use TF32
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        # Explicit, and long: the other ranks wait in a barrier while rank 0 trains the tokenizer,
        # and torch's default (10 minutes for NCCL) would kill a run that is only starting.
        minutes = float(os.environ.get("PURE_TRANSFORMER_DIST_TIMEOUT_MIN", "60"))
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(minutes=minutes))
    return Runtime(rank, world, local, dev, uses_bf16(precision, dev))


def close_runtime() -> None:
    """Leave the process group (torch warns about a group never destroyed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """All RNG states as JSON-safe values (tensors as base64)."""
    def b64(t: torch.Tensor) -> str:
        return base64.b64encode(t.numpy().tobytes()).decode()

    np_state = np.random.get_state()
    state = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    def tensor(s: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA device (nothing to wait for elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Wall seconds per named phase, summed over a step's calls: ``with timer("backward"): ...``.

    With a CUDA ``device`` it synchronises at each boundary, so the GPU work a phase
    queued is charged to it; benchmarks want that, a training loop would pay for it."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device is not None:
            synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def no_phase(name: str) -> contextlib.AbstractContextManager:
    """A :class:`PhaseTimer` stand-in that times nothing."""
    return contextlib.nullcontext()


def peak_memory_gb(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / (1e9 if sys.platform == "darwin" else 1e6)


GRACE_ENV = "PURE_TRANSFORMER_GRACE_S"
"""The seconds between SIGTERM and SIGKILL (Kubernetes: the pod's terminationGracePeriodSeconds)."""


class GraceCheck:
    """Warns once when a step plus a checkpoint take longer than the grace period
    in ``PURE_TRANSFORMER_GRACE_S``: a preempted run would then be killed before its
    save, losing the work since the last checkpoint. Silent when the variable is unset."""

    def __init__(self, grace_s: float | None = None) -> None:
        env = os.environ.get(GRACE_ENV)
        self.grace_s = grace_s if grace_s is not None else (float(env) if env else None)
        self.step_s = self.save_s = 0.0
        self.warned = False

    def observe(self, *, step_s: float | None = None, save_s: float | None = None) -> str | None:
        """Record the longest step and save seen; the warning, the first time the two exceed the grace."""
        self.step_s = max(self.step_s, step_s or 0.0)
        self.save_s = max(self.save_s, save_s or 0.0)
        if self.warned or self.grace_s is None or not (self.step_s and self.save_s):
            return None
        if self.step_s + self.save_s <= self.grace_s:
            return None
        self.warned = True
        return (f"warning: a step ({self.step_s:.0f} s) plus a checkpoint ({self.save_s:.0f} s) take longer than the "
                f"{self.grace_s:.0f} s grace period ({GRACE_ENV}); a preemption would be killed before it saves. "
                "Raise the grace period (terminationGracePeriodSeconds) or shorten the step")


class StopRequested:
    """Flag set by SIGTERM/SIGINT: the loop finishes its step, saves and exits 0.

    A second signal restores the default handler, so a stuck run can still be
    interrupted.
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum
        signal.signal(signum, signal.SIG_DFL)

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequested"]:
        if not _main_thread():  # signal handlers can only be set from the main thread
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def all_reduce_sum(values: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Sum over ranks (identity in one process)."""
    if rt.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_object(obj: T, rt: Runtime) -> list[T]:
    """Every rank's ``obj`` (JSON-like, small), in rank order."""
    if not rt.distributed:
        return [obj]
    out: list = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out


def max_over_ranks(value: int, rt: Runtime) -> int:
    """The largest ``value`` any rank holds (itself in one process)."""
    if not rt.distributed:
        return value
    t = torch.tensor(float(value), device=rt.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def any_rank(flag: bool, rt: Runtime) -> bool:
    """True on every rank if any rank says so: a signal that reached one rank
    stops all of them at the same step, so their collectives stay matched."""
    return bool(max_over_ranks(int(flag), rt))


def all_reduce_grads(params: Iterable[torch.nn.Parameter], rt: Runtime, bucket_bytes: int = 2**27) -> None:
    """Sum every parameter's gradient over ranks, in flat buckets, as DDP does after
    its last backward; for loops that run the model in ways DDP's one-forward,
    one-backward reducer does not model (the GRPO scorer runs a prompt pass and a
    completion pass on its cache per micro-batch). A missing gradient counts as 0."""
    if not rt.distributed:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: list[list[torch.Tensor]] = [[]]
    size = 0
    for p in params:
        if size >= bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(p.grad)
        size += p.grad.numel() * p.grad.element_size()
    for bucket in filter(None, buckets):
        flat = torch._utils._flatten_dense_tensors(bucket)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for g, reduced in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
            g.copy_(reduced)


def all_reduce_mean(values: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Mean over ranks (identity in one process)."""
    return all_reduce_sum(values, rt) / rt.world_size if rt.distributed else values
