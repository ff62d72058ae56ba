"""``python -m pure_transformer.serve``: the OpenAI-compatible server (see :mod:`pure_transformer.serving.app`)."""

from __future__ import annotations

import sys
from typing import Sequence

from .cli import command_main


def main(argv: Sequence[str] | None = None) -> int:
    return command_main("serve", argv)


if __name__ == "__main__":
    sys.exit(main())
