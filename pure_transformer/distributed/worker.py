"""The workers' side of :mod:`pure_transformer.launch`: die with the agent, and leave
the one ``error:`` line to it.

torchrun's agent (the launcher's own process) spawns one worker per local rank.

- **No orphans.** When the agent is killed outright (kill -9, the OOM killer, a
  preempted node), nobody forwards a signal: the workers would train on unsupervised,
  holding the run lock and the GPUs. So each worker asks the kernel for a signal when its
  parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux), turned into one SIGTERM, and a watchdog
  thread polls the parent pid (the only mechanism elsewhere). SIGTERM takes the trainer's usual path: every rank
  gets it at once, so they finish the same step, save and exit, and the lock is free.
  A worker still alive the agent's shutdown timeout later is killed, as the agent
  would have killed it.
- **One error line.** Every rank usually raises the same
  :class:`~pure_transformer.errors.UserError`. Under the launcher a worker writes the
  message to torchrun's per-worker error file (``TORCHELASTIC_ERROR_FILE``) instead of
  stderr; the launcher prints the first one once and exits 2. When only one rank has it
  (a full disk under rank 0's save), the others fail in a collective that lost it: they
  find its error file and keep their traceback in their own, not on stderr.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

AGENT_PID_ENV = "PURE_TRANSFORMER_AGENT_PID"
"""Set by the launcher to its pid: the workers' parent, known before any of them could lose it."""
SHUTDOWN_ENV = "PURE_TRANSFORMER_SHUTDOWN_S"
"""Set by the launcher to torchrun's ``--shutdown-timeout``: how long an orphan may take to save."""
DEFAULT_SHUTDOWN_S = 30.0
"""torchrun's own default ``--shutdown-timeout``, for workers started by plain torchrun."""
FOLLOWER_ENV = "PURE_TRANSFORMER_FOLLOWS_AGENT"
"""Set by a worker that follows its agent, so that processes it starts do not take themselves for workers."""
USER_ERROR = "user_error"
"""The ``pure_transformer`` field of an error file a worker wrote for a UserError."""
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _agent_pid() -> int | None:
    """The launcher's pid when this process is one of its workers (its direct child), else None."""
    try:
        pid = int(os.environ.get(AGENT_PID_ENV, ""))
    except ValueError:
        return None
    return pid if os.getppid() == pid else None


def hand_to_launcher(message: str) -> bool:
    """Write a user error's one line to this worker's torchrun error file for the launcher
    to print; False (print it yourself) when not a launcher's worker or torchrun gave no file."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE", "")
    if _agent_pid() is None or not error_file:
        return False
    try:
        tmp = f"{error_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:  # the format torch's ProcessFailure reads
            json.dump({"message": message, "timestamp": int(time.time()), "pure_transformer": USER_ERROR}, f)
        os.replace(tmp, error_file)
    except OSError:
        return False
    return True


def peer_user_error(wait_s: float = 3.0, poll_s: float = 0.1) -> str | None:
    """The message of a user error another rank of this node handed to the launcher, waiting up
    to ``wait_s`` for it (that rank leaves the process group, which fails this one's collective,
    a moment before it writes its file); None when not a launcher's worker or none came."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE", "")
    if _agent_pid() is None or not error_file:
        return None
    # torchrun's layout: <log_dir>/<run_id>/attempt_<n>/<local_rank>/error.json
    ours = os.path.abspath(error_file)
    attempt = os.path.dirname(os.path.dirname(ours))
    deadline = time.monotonic() + wait_s
    while True:
        for rank in sorted(os.listdir(attempt)) if os.path.isdir(attempt) else []:
            path = os.path.join(attempt, rank, "error.json")
            if path == ours:
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("pure_transformer") == USER_ERROR:
                return str(data.get("message"))
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


def quiet_after_peer_user_error(error: BaseException) -> bool:
    """When ``error`` follows another rank's user error (usually a collective that lost that rank),
    record it in this worker's torchrun error file instead of printing its traceback: the launcher
    prints the other rank's one line and exits 2, and the traceback adds nothing but noise. True
    when so (exit quietly, status 1); False: raise it as usual."""
    if peer_user_error() is None:
        return False
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    get_error_handler().record_exception(error)  # kept for whoever reads the error files
    return True


def _set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` when the parent dies (Linux); whether it took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


AGENT_DEATH_SIGNAL = signal.SIGUSR2
"""What the kernel sends a worker whose agent died (converted to a single SIGTERM)."""
_stopping = threading.Event()


def _stop_once() -> None:
    """SIGTERM to this process, the first time only: the trainer saves and exits on it."""
    if not _stopping.is_set():
        _stopping.set()
        os.kill(os.getpid(), signal.SIGTERM)


def follow_agent(poll_s: float = 1.0) -> None:
    """Under torchrun, make this worker stop when its agent dies (see the module docstring).

    Call it first thing in the worker. The signal is delivered when the thread that spawned
    the worker ends; torchrun's agent spawns from its main thread, so that is when the
    agent process ends."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:  # not a torchrun worker: no agent to follow
        return
    try:
        agent = int(os.environ.get(AGENT_PID_ENV) or os.getppid())
    except ValueError:
        agent = os.getppid()
    try:
        shutdown_s = float(os.environ.get(SHUTDOWN_ENV) or DEFAULT_SHUTDOWN_S)
    except ValueError:
        shutdown_s = DEFAULT_SHUTDOWN_S
    if os.environ.get(FOLLOWER_ENV):  # started by a worker (and inherited its env): not a worker itself
        return
    os.environ[FOLLOWER_ENV] = str(os.getpid())
    # The kernel sends the parent-death signal each time the worker is handed to another thread of
    # the dying agent (torchrun's agent has several), and a second SIGTERM means "stop now, unsaved"
    # to the trainer. So the kernel sends SIGUSR2, and its handler turns the first into one SIGTERM.
    signal.signal(AGENT_DEATH_SIGNAL, lambda *_: _stop_once())
    armed = _set_parent_death_signal(AGENT_DEATH_SIGNAL)
    if os.getppid() != agent:  # gone before the kernel was asked: no signal will come, and nothing ran yet
        print("the launcher's agent is gone; this worker exits before starting", file=sys.stderr, flush=True)
        os._exit(143)
    threading.Thread(target=_watch, args=(agent, armed, poll_s, shutdown_s), name="agent-watchdog",
                     daemon=True).start()


def _watch(agent: int, armed: bool, poll_s: float, shutdown_s: float) -> None:
    while os.getppid() == agent:
        time.sleep(poll_s)
    if not armed:  # with PDEATHSIG the kernel already said it
        _stop_once()
    time.sleep(shutdown_s)
    print(f"the launcher's agent died and this worker did not stop within {shutdown_s:.0f} s; killing it",
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
