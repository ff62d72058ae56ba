"""Resuming pretraining on another world size (gloo, tiny model): the stream continues exactly.

The training documents carry their id in every token (``world_size_run``), and what the model was given
is recorded by a hook on the model, so the checks count documents rather than trusting the loader's own
bookkeeping: every row of every step is the uninterrupted one-rank run's, so no document is repeated or
skipped; the loss curve continues; validation is the same set, and metric, on one rank and on two.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pure_transformer.checkpoint.store import read_meta, step_dir
from pure_transformer.errors import ConfigError
from pure_transformer.train.logger import read_metrics

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import world_size_run as wsr  # noqa: E402  (a helper next to this file, also run by torchrun)

STOP = 3


def torchrun(data: Path, run_dir: Path, out: Path, how: str, *sets: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "world_size_run.py"), str(data), str(run_dir), str(out), how, *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def steps(out: Path, world_size: int, first_step: int) -> dict[int, Counter]:
    """Rows per optimizer step: each rank gives ``accum`` micro-batches of 4 rows a step."""
    accum = 2 // world_size
    per_step: dict[int, Counter] = {}
    for rank in range(world_size):
        rows = json.loads((out / f"rows_{rank}.json").read_text())
        for i in range(0, len(rows), 4 * accum):
            per_step.setdefault(first_step + i // (4 * accum) + 1, Counter()).update(map(tuple, rows[i:i + 4 * accum]))
    return per_step


def metrics(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir / "logs" / "metrics.jsonl")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, Counter], list[dict]]:
    """The data, and the uninterrupted one-rank run: rows per step and metrics."""
    root = tmp_path_factory.mktemp("world")
    data = wsr.write_data(root / "data")
    wsr.run(wsr.config(data), root / "whole", root / "whole_rows")
    return data, steps(root / "whole_rows", 1, 0), metrics(root / "whole")


def check_continuation(reference: tuple[Path, dict[int, Counter], list[dict]], split: Path,
                       rows: dict[int, Counter]) -> None:
    _, want, want_metrics = reference
    assert sorted(rows) == list(range(1, 9)) == sorted(want)
    for step in want:  # the same rows in every step: the same documents, in the same steps
        assert rows[step] == want[step], step
    # Document accounting, from the tokens themselves: no document beyond its length (seen at most
    # once; the source has ~6,000 tokens, the run takes 2,048, so nothing wraps) ...
    seen = Counter(t for step in rows.values() for row in step.elements() for t in row if t != 0)
    lengths = wsr.doc_lengths()
    assert all(n <= lengths[doc] for doc, n in seen.items())
    # ... and exactly the documents, piece for piece, the uninterrupted stream gave.
    assert seen == Counter(t for step in want.values() for row in step.elements() for t in row if t != 0)
    assert sum(seen.values()) > 0.8 * 8 * 8 * (wsr.SEQ + 1)  # EOTs aside, the rows are documents
    got = {r["step"]: r["loss"] for r in metrics(split) if "loss" in r}
    ref = {r["step"]: r["loss"] for r in want_metrics if "loss" in r}
    assert sorted(got) == list(range(1, 9)) and all(math.isfinite(v) for v in got.values())
    for step in ref:  # the same data and weights: only the order of float sums differs
        assert got[step] == pytest.approx(ref[step], rel=1e-4), step
    got_val = {r["step"]: r["val_loss"] for r in metrics(split) if "val_loss" in r}
    ref_val = {r["step"]: r["val_loss"] for r in want_metrics if "val_loss" in r}
    assert got_val.keys() == ref_val.keys() == {0, 4, 8}
    # Step 0 is the same initial model on 2 ranks (11 validation rows: shares of 6 and 5) and on 1.
    assert got_val[0] == pytest.approx(ref_val[0], rel=1e-6)
    assert got_val[8] == pytest.approx(ref_val[8], rel=1e-4)


@pytest.mark.slow
def test_two_ranks_resume_on_one(tmp_path: Path, reference) -> None:
    data = reference[0]
    torchrun(data, tmp_path / "split", tmp_path / "a", str(STOP))  # 2 ranks, no workers, stopped after step 3
    meta = read_meta(step_dir(tmp_path / "split", STOP))
    assert meta["world_size"] == 2 and meta["data"]["num_shards"] == 4 and meta["data"]["owned"] == [0, 1, 2, 3]
    # On one rank with 2 DataLoader workers: num_workers may change on resume too.
    wsr.run(wsr.config(data, num_workers=2), tmp_path / "split", tmp_path / "b", resume="auto")
    rows = {**steps(tmp_path / "a", 2, 0), **steps(tmp_path / "b", 1, STOP)}
    check_continuation(reference, tmp_path / "split", rows)


@pytest.mark.slow
def test_one_rank_resumes_on_two(tmp_path: Path, reference) -> None:
    data = reference[0]
    wsr.run(wsr.config(data), tmp_path / "split", tmp_path / "a", stop_at_step=STOP)
    torchrun(data, tmp_path / "split", tmp_path / "b", "resume")
    rows = {**steps(tmp_path / "a", 1, 0), **steps(tmp_path / "b", 2, STOP)}
    check_continuation(reference, tmp_path / "split", rows)


@pytest.mark.fast
def test_a_layout_the_data_shards_cannot_split_fails_first(tmp_path: Path, reference) -> None:
    # 3 workers cannot share 4 logical shards evenly: one line, before the tokenizer or model is touched.
    with pytest.raises(ConfigError, match=r"data_shards \(4\) must be a multiple of .* \(1 x 3 = 3\)"):
        wsr.run(wsr.config(reference[0], num_workers=3), tmp_path / "run", tmp_path / "rows")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]
