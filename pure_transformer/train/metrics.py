"""Metrics: one record per log step to ``metrics.jsonl`` and TensorBoard.

Both sinks survive a resume without duplicates: records past the resumed step
are dropped from the JSONL file, and TensorBoard's ``purge_step`` hides the
events a killed run wrote after its last checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

# Peak dense bf16 tensor-core FLOP/s (no sparsity), for MFU. Matched by substring
# of torch.cuda.get_device_name(); unknown devices report no MFU rather than a guess.
PEAK_BF16_FLOPS = {
    "H200": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
    "A100": 312e12, "A10G": 125e12, "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12,
}


def device_peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of a CUDA device when known, else None (CPU included)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops
    return None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class MetricsLogger:
    """Appends records to ``log_dir/metrics.jsonl`` and TensorBoard event files.

    ``resume_step`` (the step a resumed run restarts after) truncates both logs
    to what that checkpoint had seen.
    """

    def __init__(self, log_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "metrics.jsonl"
        if resume_step is not None:
            kept = [r for r in read_metrics(self.jsonl) if r.get("step", 0) <= resume_step]
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif self.jsonl.exists():
            self.jsonl.unlink()  # a fresh run in an old folder starts a fresh log
        self._file = open(self.jsonl, "a")
        purge = resume_step + 1 if resume_step is not None else None
        self.tb = SummaryWriter(str(self.dir), purge_step=purge) if tensorboard else None

    def log(self, step: int, record: dict[str, Any]) -> None:
        record = {"step": step, **record}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()
