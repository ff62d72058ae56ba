"""lm-evaluation-harness task definitions (see :mod:`.tasks`); ``TASKS_DIR`` is the ``--include_path``."""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
