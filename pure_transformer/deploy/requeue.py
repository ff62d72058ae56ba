"""``python -m pure_transformer.deploy.requeue CMD ...``: run CMD; after a SIGTERM, exit 143.

The trainer (and the torchrun launcher) answer SIGTERM by finishing the step, saving and
exiting 0, which is right for a person pressing Ctrl-C. To Kubernetes, though, a pod whose
container exits 0 has *succeeded*: a preempted training Job would be marked Complete with
the run unfinished, and nothing would resume it. This guard forwards SIGTERM/SIGINT to CMD
and, if one arrived, exits 143 (what a kill by SIGTERM reports) even when CMD exited 0, so the
Job controller (or the training operator) replaces the pod and ``--resume`` continues the run.
A preempted pod carries the DisruptionTarget condition, which the Job's podFailurePolicy
ignores, so preemptions do not use up backoffLimit. Without a signal CMD's status is passed
through unchanged (0 when the run completed or stopped at ``--stop-at-step``).

tini stays PID 1 (it reaps zombies and forwards signals to this process).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType
from typing import Sequence

SIGTERM_STATUS = 128 + signal.SIGTERM


def run(argv: Sequence[str]) -> int:
    """Run ``argv`` with signals forwarded; the exit status described in the module docstring."""
    received: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)  # a second SIGTERM reaches the trainer too: its hard stop

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            child = subprocess.Popen(list(argv))
        except OSError as e:
            print(f"error: cannot start {argv[0]!r}: {e.strerror or e}", file=sys.stderr)
            return 127
        if received:  # a signal that came while the child was being started
            child.send_signal(received[0])
        status = child.wait()  # PEP 475: retried after each handled signal
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if status < 0:  # killed by a signal: report it the way a shell does
        status = 128 - status
    if received and status == 0:
        print(f"stopped by signal {received[0]} before the run finished; exiting {SIGTERM_STATUS} so "
              "Kubernetes starts a new pod that resumes it", file=sys.stderr, flush=True)
        return SIGTERM_STATUS
    return status


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("error: usage: python -m pure_transformer.deploy.requeue COMMAND [ARG ...]", file=sys.stderr)
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
