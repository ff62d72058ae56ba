"""``python -m pure_transformer.evaluate``: MCQ accuracy of a checkpoint
(see :mod:`pure_transformer.commands.evaluate`)."""

from __future__ import annotations

import sys
from typing import Sequence

from .cli import command_main


def main(argv: Sequence[str] | None = None) -> int:
    return command_main("evaluate", argv)


if __name__ == "__main__":
    sys.exit(main())
