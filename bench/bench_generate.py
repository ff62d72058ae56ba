"""Kept for old commands: the generation benchmark is now ``pure-transformer bench generate``
(pure_transformer/bench/generate.py), which this runs with the same arguments.

    .venv/bin/python bench/bench_generate.py --model tiny --batch 8
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pure_transformer.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "generate", *sys.argv[1:]]))
