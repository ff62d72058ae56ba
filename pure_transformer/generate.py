"""``python -m pure_transformer.generate``: stream a completion (see :mod:`pure_transformer.commands.generate`)."""

from __future__ import annotations

import sys
from typing import Sequence

from .cli import command_main


def main(argv: Sequence[str] | None = None) -> int:
    return command_main("generate", argv)


if __name__ == "__main__":
    sys.exit(main())
