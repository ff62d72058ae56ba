"""``python -m pure_transformer.launch [torchrun options] pretrain|rl [options]``:
torchrun, with what a preemptible job needs from it, as a CLI like the others.

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
  during this launch and either says it stopped on the signal or is the
  run's complete last one (the signal came after the run had finished).
  Otherwise: 128 + the signal. The rendezvous keep-alive thread torchrun
  leaves running after a signal is stopped first (:func:`stop_rendezvous_heartbeats`):
  inside a store call at interpreter exit it aborted the launcher with 134.
- **User errors are one line and exit 2.** ``--nproc-per-node``, ``--nnodes``
  and the phase's flags are checked here, before any worker starts (torchrun answers
  ``0`` or ``abc`` with a traceback). A :class:`~pure_transformer.errors.UserError`
  in the workers, usually raised by every rank alike, is written to torchrun's
  per-worker error file instead of stderr; the launcher prints the first one
  once and exits 2 whenever a worker exited 2, without ChildFailedError's
  traceback. Kubernetes Jobs fail at once on exit 2 instead of retrying a typo
  up to the backoff limit. Other worker failures print torchrun's summary and
  exit 1.
- **No orphans.** The workers die with the agent, even when it is killed with
  SIGKILL: a parent-death signal and a watchdog (:mod:`pure_transformer.distributed.worker`)
  make them save as on a preemption and exit, releasing the run lock.
- **The entry point** is filled in (``-m pure_transformer.run_train``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

PHASES = ("pretrain", "rl")
GRACE_ENV = "PURE_TRANSFORMER_GRACE_S"
MARGIN_S = 15
"""Left of the grace period for torchrun to reap the workers and exit before the kubelet's SIGKILL."""


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _takes_value(option: str) -> bool:
    """Whether the torchrun option ``option`` (a word on its own, no ``=value``) takes the next
    word as its value, as torchrun's own parser reads it (abbreviations included)."""
    from torch.distributed.run import get_args_parser

    actions = get_args_parser()._option_string_actions
    if option.startswith("-") and not option.startswith("--") and len(option) > 2:
        return False  # ``-r3``: a short option with its value attached
    action = actions.get(option)
    if action is None and option.startswith("--"):  # argparse accepts any unique prefix of a long option
        matches = {a for name, a in actions.items() if name.startswith(option)}
        action = matches.pop() if len(matches) == 1 else None
    return action is not None and action.nargs != 0


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(torchrun's arguments, the phase and its arguments): the phase is the first word that
    is neither an option nor an option's value (``--rdzv-id rl`` and ``--log-dir pretrain``
    stay torchrun's)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in PHASES:
            return argv[:i], argv[i:]
        i += 2 if arg.startswith("-") and "=" not in arg and _takes_value(arg) else 1
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


def check_torchrun_args(args: argparse.Namespace) -> None:
    """``--nproc-per-node`` (a positive count, or ``cpu``, ``gpu``, ``auto`` ...) and ``--nnodes``
    (N or MIN:MAX) as torchrun takes them, checked here: torchrun itself answers ``0`` with an
    AssertionError and ``abc`` with a ValueError, each a traceback and exit 1."""
    from torch.distributed.run import determine_local_world_size, parse_min_max_nnodes

    try:
        count = determine_local_world_size(args.nproc_per_node)
    except ValueError as e:
        reason = str(e) if "not available" in str(e) else "not a number"
        fail(f"--nproc-per-node must be a positive number or one of cpu, gpu, auto; got {args.nproc_per_node!r} "
             f"({reason})")
    if count < 1:
        fail(f"--nproc-per-node must be at least 1, got {args.nproc_per_node!r}")
    try:
        low, high = parse_min_max_nnodes(args.nnodes)
    except (ValueError, RuntimeError):
        low = high = 0
    if not 0 < low <= high:
        fail(f"--nnodes must be a positive number of nodes or MIN:MAX with 0 < MIN <= MAX, got {args.nnodes!r}")


def phase_namespace(phase_args: list[str]) -> argparse.Namespace:
    """The phase's flags parsed once, here: a bad flag is one ``error:`` line (exit 2) before any
    worker starts, instead of one per rank."""
    from .cli import run_train_parser

    return run_train_parser(phase_args).parse_args(phase_args)


def run_outcome(run_dir: str | Path, since: float) -> tuple[str, dict] | None:
    """How the run in ``run_dir`` ended, judged by its newest checkpoint if that was saved
    after ``since`` (a ``time.time()``, the launch): ("finished", meta) for a complete run,
    ("saved", meta) for a stop on a signal; None otherwise (no such checkpoint)."""
    from .checkpoint.store import read_meta, resume_checkpoint
    from .errors import UserError

    try:
        ckpt = resume_checkpoint(Path(run_dir), "auto")
        if ckpt is None or (ckpt / "meta.json").stat().st_mtime < since:
            return None
        meta = read_meta(ckpt)
    except (OSError, UserError):
        return None
    if meta.get("complete"):  # also a signal during the last step: that step completed the run
        return "finished", meta
    if meta.get("stopped") == "signal":
        return "saved", meta
    return None


def user_error(failures: dict[int, ProcessFailure]) -> tuple[bool, str | None]:
    """Whether any worker exited 2 (a user error, which no retry fixes), and the earliest such
    message a worker handed over in its error file (None: the worker printed it itself)."""
    from .distributed.worker import USER_ERROR

    exited_2 = sorted((f for f in failures.values() if f.exitcode == 2), key=lambda f: f.timestamp)
    for failure in exited_2:
        data = failure.error_file_data
        if isinstance(data, dict) and data.get("pure_transformer") == USER_ERROR:
            return True, str(data["message"])
    return bool(exited_2), None


TEARDOWN_LOGGER = "torch.distributed.elastic.multiprocessing.api"
"""torchrun's logger of a worker's failure ("failed (exitcode: 2) local_rank: 0 ...") and of the
SIGTERM it then sends the others ("Sending process N closing signal SIGTERM")."""


class HeldLogs(logging.Filter):
    """Holds back the records of :data:`TEARDOWN_LOGGER` while torchrun runs: when a worker
    exited 2, the launcher's one ``error:`` line is all a user needs; otherwise :meth:`release`
    prints them (they come as torchrun stops the workers, so only the order changes)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        logging.getLogger(TEARDOWN_LOGGER).addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def release(self, show: bool = True) -> None:
        """Stop holding; print what was held unless ``show`` is False."""
        logger = logging.getLogger(TEARDOWN_LOGGER)
        logger.removeFilter(self)
        for record in self.records if show else []:
            logger.handle(record)
        self.records.clear()


def stop_rendezvous_heartbeats() -> None:
    """Stop the keep-alive threads of torchrun's rendezvous before this process exits.

    After a signal torchrun's ``launch_agent`` leaves the rendezvous open on purpose (a restarted
    agent may rejoin it), and with it its keep-alive timer: a daemon thread that calls the C10d
    store every 5 s. A daemon thread inside such a C++ call when the interpreter finalizes is
    ended by ``pthread_exit``, whose unwinding through pybind11's ``noexcept`` GIL guard calls
    ``std::terminate``: "terminate called without an active exception" and exit 134 instead of 0,
    about one clean stop in 17 (bench/bench_launcher_sigterm.py). Cancelling a timer, its public
    way to stop, sets its event and joins its thread; the rendezvous itself stays open."""
    import gc

    from torch.distributed.elastic.rendezvous.utils import _PeriodicTimer

    for timer in [o for o in gc.get_objects() if isinstance(o, _PeriodicTimer)]:
        timer.cancel()


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from .distributed.worker import AGENT_PID_ENV, SHUTDOWN_ENV

    torchrun_args, phase_args = split_argv(sys.argv[1:] if argv is None else argv)
    args = parse_args([*torchrun_args, *shutdown_timeout(torchrun_args), "-m", "pure_transformer.run_train",
                       *phase_args])
    check_torchrun_args(args)
    run_dir = phase_namespace(phase_args).checkpoint_dir
    # For the workers (inherited): who their agent is, and how long they may take to stop without it.
    os.environ[AGENT_PID_ENV] = str(os.getpid())
    os.environ[SHUTDOWN_ENV] = str(args.shutdown_timeout)
    started = time.time()
    held = HeldLogs()
    try:
        # Not wrapped in torchrun's ``record``, as its main is: that copies a worker's error file to
        # the agent's own, which only an agent under another agent has, and logs three lines about it.
        run(args)
    except ChildFailedError as e:
        is_user_error, message = user_error(e.failures)
        held.release(show=not is_user_error)
        if is_user_error:  # the run's own "error:" line, once, and the status that says "don't retry"
            if message is not None:
                print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        print(e, file=sys.stderr)  # torchrun's summary of the failures; the launcher's traceback says nothing
        sys.exit(1)
    except SignalException as e:
        held.release()
        stop_rendezvous_heartbeats()  # before any exit below: see its docstring
        name = signal.Signals(e.sigval).name
        outcome = run_outcome(run_dir, started)
        if outcome is not None and outcome[0] == "finished":
            print(f"launch: {name} arrived after the run had finished (step {outcome[1]['step']}); nothing is left "
                  "to do", file=sys.stderr)
            sys.exit(0)
        if outcome is not None:
            print(f"launch: stopped on {name}; the run saved a checkpoint and resumes with --resume", file=sys.stderr)
            sys.exit(0)
        print(f"launch: stopped on {name} before the run could save", file=sys.stderr)
        sys.exit(128 + int(e.sigval))
    finally:
        held.release()  # a run that finished, or failed some other way: torchrun's lines as they were


if __name__ == "__main__":
    main()
