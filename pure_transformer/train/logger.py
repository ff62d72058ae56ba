"""Metrics: one record per log step to ``metrics.jsonl`` and TensorBoard.

Both sinks survive a resume without duplicates: records past the resumed step
are dropped from the JSONL file, and TensorBoard's ``purge_step`` hides the
events a killed run wrote after its last checkpoint.

TensorBoard tags are grouped: validation figures under ``val/`` (``val_loss`` ->
``val/loss``, ``val_ppl/medqa`` -> ``val/ppl/medqa``), everything else under the
run's group (``train/`` or ``rl/``); a dict of numbers (an RL step's answer
shares) becomes one tag per entry. The run's config is written once, as text.

Every JSONL record carries ``time``, the wall clock when it was written (Unix seconds,
UTC, a float), so a curve can be put against elapsed time and the gap of a resume seen;
TensorBoard has its own wall time per event, so ``time`` is not a scalar there.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import DataError


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file. A torn last line (a power loss mid-write)
    is skipped with one warning; a bad line before it is an error naming the line."""
    p = Path(path)
    if not p.exists():
        return []
    lines = [(i, line) for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if line.strip()]
    records = []
    for k, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if k < len(lines) - 1:
                raise DataError(f"{p} line {number} is not JSON ({e.msg})") from None
            warnings.warn(f"skipping the torn last line ({number}) of {p}", stacklevel=2)
    return records


def tensorboard_tag(key: str, group: str) -> str:
    """Where a metrics key goes in TensorBoard (see the module docstring)."""
    return f"val/{key[len('val_'):]}" if key.startswith("val_") else f"{group}/{key}"


class MetricsLogger:
    """Appends records to ``log_dir/metrics.jsonl`` and TensorBoard event files.

    ``resume_step`` (the step a resumed run restarts after) truncates both logs
    to what that checkpoint had seen. ``group`` prefixes the TensorBoard tags;
    ``config``, on a fresh run, is written to TensorBoard once as JSON text.
    """

    def __init__(self, log_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True,
                 group: str = "train", config: dict[str, Any] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(log_dir)
        self.group = group
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "metrics.jsonl"
        if resume_step is not None:
            # Rewritten through a temporary file and a rename: a kill now cannot tear the log.
            kept = [r for r in read_metrics(self.jsonl) if r.get("step", 0) <= resume_step]
            tmp = self.jsonl.with_name(f".{self.jsonl.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.jsonl)
        elif self.jsonl.exists():
            self.jsonl.unlink()  # a fresh run in an old folder starts a fresh log
        self._file = open(self.jsonl, "a")
        purge = resume_step + 1 if resume_step is not None else None
        self.tb = SummaryWriter(str(self.dir), purge_step=purge) if tensorboard else None
        if self.tb is not None and config is not None and resume_step is None:
            # Four leading spaces: TensorBoard renders text as Markdown, so this keeps it a code block.
            text = "\n".join("    " + line for line in json.dumps(config, indent=1).splitlines())
            self.tb.add_text(f"{group}/config", text, 0)

    def log(self, step: int, record: dict[str, Any]) -> None:
        record = {"step": step, "time": time.time(), **record}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self.tb is None:
            return
        for key, value in record.items():
            if key in ("step", "time"):
                continue
            values = value if isinstance(value, dict) else {None: value}
            for sub, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    tag = tensorboard_tag(key, self.group)
                    self.tb.add_scalar(tag if sub is None else f"{tag}/{sub}", v, step)

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()
