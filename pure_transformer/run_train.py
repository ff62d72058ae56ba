"""``python -m pure_transformer.run_train pretrain|rl ...``: the training entry point.

The flags live in :mod:`pure_transformer.train.command` and :mod:`pure_transformer.rl.command`;
the same commands run as ``pure-transformer pretrain`` and ``pure-transformer rl``.
"""

from __future__ import annotations

import sys
from typing import Sequence

from .cli import run_train_main


def main(argv: Sequence[str] | None = None) -> int:
    return run_train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
