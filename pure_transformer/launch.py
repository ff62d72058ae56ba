"""``python -m pure_transformer.launch [torchrun options] pretrain|rl [options]``:
torchrun, with the three things a preemptible job needs from it.

Everything before the phase goes to torchrun unchanged (``--standalone
--nproc-per-node 8``, or ``--nnodes``/``--rdzv-*`` for several nodes); the
phase and its flags are what ``python -m pure_transformer.run_train`` takes.
On top of torchrun (``torch.distributed.run``, run in this process):

- **The grace period.** On SIGTERM torchrun forwards the signal to the
  workers, then SIGKILLs them after ``--shutdown-timeout`` (30 s by
  default), which is shorter than a step plus a save of a large model. When
  ``PURE_TRANSFORMER_GRACE_S`` is set (the Kubernetes manifests set it to the
  pod's ``terminationGracePeriodSeconds``), the timeout defaults to that
  minus a margin, so the workers get the whole grace period to save.
- **A clean stop exits 0.** torchrun exits 1 after any signal, even when
  every worker saved and exited 0; a single process exits 0 in that case,
  and so does this launcher when the run's newest checkpoint was written
  after the signal and says it stopped on one. Otherwise torchrun's own
  failure stands.
- **The entry point** is filled in (``-m pure_transformer.run_train``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

PHASES = ("pretrain", "rl")
GRACE_ENV = "PURE_TRANSFORMER_GRACE_S"
MARGIN_S = 15
"""Left of the grace period for torchrun to reap the workers and exit before the kubelet's SIGKILL."""


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(torchrun's arguments, the phase and its arguments)."""
    for i, arg in enumerate(argv):
        if arg in PHASES:
            return argv[:i], argv[i:]
    fail(f"usage: python -m pure_transformer.launch [torchrun options] {'|'.join(PHASES)} [options]")


def shutdown_timeout(torchrun_args: list[str]) -> list[str]:
    """``--shutdown-timeout`` from the grace period, unless given explicitly."""
    if any(a.split("=")[0] in ("--shutdown-timeout", "--shutdown_timeout") for a in torchrun_args):
        return []
    grace = os.environ.get(GRACE_ENV)
    if not grace:
        return []
    try:
        seconds = int(float(grace))
    except ValueError:
        fail(f"{GRACE_ENV} must be a number of seconds, got {grace!r}")
    return ["--shutdown-timeout", str(max(5, seconds - MARGIN_S))]


def stopped_cleanly(phase_args: list[str], since: float) -> bool:
    """True when the run folder's newest checkpoint was saved after ``since`` (a
    ``time.time()``) by a stop on a signal."""
    from .checkpoint import read_meta, resume_checkpoint
    from .errors import UserError

    if "--checkpoint-dir" not in phase_args:
        return False
    run_dir = Path(phase_args[phase_args.index("--checkpoint-dir") + 1])
    try:
        ckpt = resume_checkpoint(run_dir, "auto")
        if ckpt is None:
            return False
        meta_file = ckpt / "meta.json"
        return meta_file.stat().st_mtime >= since and read_meta(ckpt).get("stopped") == "signal"
    except (OSError, UserError):
        return False


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import record
    from torch.distributed.run import parse_args, run

    torchrun_args, phase_args = split_argv(sys.argv[1:] if argv is None else argv)
    args = parse_args([*torchrun_args, *shutdown_timeout(torchrun_args), "-m", "pure_transformer.run_train",
                       *phase_args])
    started = time.time()
    try:
        record(run)(args)  # as torchrun's own main: a failed worker's error file becomes the launcher's
    except SignalException as e:
        if stopped_cleanly(phase_args, started):
            print(f"launch: stopped on {signal.Signals(e.sigval).name}; the run saved a checkpoint and resumes with "
                  "--resume", file=sys.stderr)
            sys.exit(0)
        print(f"launch: stopped on {signal.Signals(e.sigval).name} before the run could save", file=sys.stderr)
        sys.exit(128 + int(e.sigval))


if __name__ == "__main__":
    main()
