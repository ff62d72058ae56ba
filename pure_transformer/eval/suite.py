"""``evaluate --suite medical``: the Open Medical-LLM Leaderboard's nine tasks in one table.

Each task is scored by the log-likelihood of each choice (the leaderboard's metric) after
the prompt of lm-eval's own task (:mod:`.conventions`), on its test split: the hub dataset
by name, or a local copy found in ``--data-dir``. The table gives, per task, the question
count, the accuracy with its 95% Wilson interval, the mean chance level (1/k per question),
the majority-answer baseline (the share of the most common gold letter), how many of the
task's questions the checkpoint was trained on (its ledger: those are left out of n) and the
lm-eval task followed. It is printed, and written as JSON and Markdown for a model card.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DataError
from .scoring import MEDICAL_SUITE

SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".parquet", ".csv")


def local_file(data_dir: Path, task: str) -> Path | None:
    """The test file of ``task`` in ``data_dir``: ``<task>_test.<ext>`` or ``<task>.<ext>``, with the task
    name as written (``mmlu-anatomy``) or as MMLU's release names it (``anatomy_test.csv``)."""
    stems = [task, task.replace("-", "_")]
    if task.startswith("mmlu-"):
        stems.append(task.removeprefix("mmlu-").replace("-", "_"))
    for stem in stems:
        for name in (f"{stem}_test", stem):
            for suffix in SUFFIXES:
                if (data_dir / f"{name}{suffix}").is_file():
                    return data_dir / f"{name}{suffix}"
    return None


@dataclass(frozen=True)
class SuiteRow:
    task: str
    source: str
    n: int
    accuracy: float
    ci95: tuple[float, float]
    chance: float
    majority: float
    contaminated: int | None  # questions in the checkpoint's training ledger (None: no ledger to check)
    contaminated_scored: bool = False  # --include-contaminated: they are in n and the accuracy
    lm_eval_task: str | None = None


def majority_baseline(golds: list[str]) -> float:
    """The accuracy of always answering the most common gold letter."""
    return Counter(golds).most_common(1)[0][1] / len(golds) if golds else 0.0


def run_suite(score: Callable[[str, str | None], dict], data_dir: str | None,
              paths: dict[str, str] | None = None, tasks: tuple[str, ...] = MEDICAL_SUITE) -> list[SuiteRow]:
    """Score each task with ``score(task, data_path) -> loglikelihood report``. A task's file is
    ``paths[task]``, else found in ``data_dir``; with neither, the hub dataset by name."""
    rows = []
    for task in tasks:
        path = (paths or {}).get(task)
        if path is None and data_dir is not None:
            found = local_file(Path(data_dir), task)
            path = str(found) if found else None
        report = score(task, path)
        contamination = report.get("contamination")
        rows.append(SuiteRow(task, path or task, report["n"], report["accuracy"], tuple(report["ci95"]),  # type: ignore[arg-type]
                             report["chance"], majority_baseline([q["gold"] for q in report["questions"]]),
                             contamination and contamination["count"],
                             bool(contamination and contamination["included"]), report.get("lm_eval_task")))
    if not rows:
        raise DataError("the suite has no tasks")
    return rows


def contaminated_cell(row: SuiteRow) -> str:
    """``0``, ``3 (excluded)``, ``3 (scored)``, or ``unchecked`` for a checkpoint with no ledger."""
    if row.contaminated is None:
        return "unchecked"
    if not row.contaminated:
        return "0"
    return f"{row.contaminated} ({'scored' if row.contaminated_scored else 'excluded'})"


def markdown(rows: list[SuiteRow]) -> str:
    """The table as Markdown, ready for a model card."""
    lines = ["| task | n | accuracy | 95% CI | chance | majority answer | contaminated | as lm-eval task |",
             "|---|---:|---:|---|---:|---:|---:|---|"]
    lines += [f"| {r.task} | {r.n} | {r.accuracy:.3f} | [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}] | {r.chance:.3f} | "
              f"{r.majority:.3f} | {contaminated_cell(r)} | {r.lm_eval_task or '-'} |" for r in rows]
    return "\n".join(lines) + "\n"


def print_suite(rows: list[SuiteRow]) -> None:
    print(f"{'task':<28}{'n':>6}{'accuracy':>10}{'95% CI':>18}{'chance':>8}{'majority':>10}  {'contaminated':<14}"
          "as lm-eval task")
    for r in rows:
        print(f"{r.task:<28}{r.n:>6}{r.accuracy:>10.3f}   [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}]{r.chance:>8.3f}"
              f"{r.majority:>10.3f}  {contaminated_cell(r):<14}{r.lm_eval_task or '-'}")
