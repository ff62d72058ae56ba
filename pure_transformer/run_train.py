"""``python -m pure_transformer.run_train pretrain|rl ...``: the training entry point.

The flags live in :mod:`pure_transformer.commands.pretrain` and :mod:`pure_transformer.commands.rl`;
the same commands run as ``pure-transformer pretrain`` and ``pure-transformer rl``. Under
torchrun, a worker first ties its life to the agent's (:func:`~pure_transformer.distributed.worker.follow_agent`).
"""

from __future__ import annotations

import sys
from typing import Sequence

from .cli import run_train_main
from .distributed.worker import follow_agent, quiet_after_peer_user_error


def main(argv: Sequence[str] | None = None) -> int:
    follow_agent()
    try:
        return run_train_main(argv)
    except Exception as e:  # another rank's user error broke a collective: its one line is the news
        if quiet_after_peer_user_error(e):
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
