"""``evaluate --suite medical``: the Open Medical-LLM Leaderboard's nine tasks in one table.

Each task is scored by the log-likelihood of each choice (the leaderboard's metric) after
the prompt of lm-eval's own task (:mod:`.conventions`), on its test split: the hub dataset
by name, or a local copy found in ``--data-dir`` or a folder below it. The table gives, per
task, the question count, the accuracy with its 95% Wilson interval, the mean chance level
(1/k per question), the majority-answer baseline (the share of the most common gold letter),
how many of the task's questions the checkpoint was trained on (its ledger: those are left
out of n), how many prompts were longer than the context (scored on their end, as lm-eval
does) and the lm-eval task followed. It is printed, and written as JSON and Markdown for a
model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DataError, UserError
from .scoring import MEDICAL_SUITE

SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".parquet", ".csv")


def file_names(task: str) -> list[str]:
    """The file names a local copy of ``task`` may have: ``<task>_test.<ext>`` or ``<task>.<ext>``, with the
    task name as written (``mmlu-anatomy``), with underscores, or as MMLU's release names it
    (``anatomy_test.csv``)."""
    stems = [task, task.replace("-", "_")]
    if task.startswith("mmlu-"):
        stems.append(task.removeprefix("mmlu-").replace("-", "_"))
    return [f"{name}{suffix}" for stem in dict.fromkeys(stems) for name in (f"{stem}_test", stem)
            for suffix in SUFFIXES]


def local_files(data_dir: Path, tasks: tuple[str, ...]) -> dict[str, Path]:
    """Each task's test file in ``data_dir`` or any folder below it (people keep MMLU in ``mmlu/``), the
    shallowest first. A task with no file is one error naming the names looked for, before any scoring."""
    if not data_dir.is_dir():
        raise DataError(f"--data-dir '{data_dir}' is not a folder")
    by_name: dict[str, Path] = {}
    for path in sorted(data_dir.rglob("*"), key=lambda p: (len(p.parts), str(p))):
        if path.is_file():
            by_name.setdefault(path.name, path)
    found, missing = {}, []
    for task in tasks:
        names = file_names(task)
        hit = next((by_name[n] for n in names if n in by_name), None)
        if hit is None:
            missing.append(f"{task} ({', '.join(n for n in names if n.endswith(('.jsonl', '.csv')))} ...)")
        else:
            found[task] = hit
    if missing:
        raise DataError(f"{data_dir} (and its subfolders) has no file for {len(missing)} of the {len(tasks)} tasks: "
                        f"{'; '.join(missing)}")
    return found


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
    truncated: int = 0  # prompts longer than the context, scored on their end (as lm-eval does)


def run_suite(score: Callable[[str, str | None], dict], data_dir: str | None,
              tasks: tuple[str, ...] = MEDICAL_SUITE) -> tuple[list[SuiteRow], dict[str, str]]:
    """(a row per task scored, the error of each task that failed). Each task is scored with
    ``score(task, data_path) -> loglikelihood report``: its file found in ``data_dir`` (all of them
    found before any is scored), or with no ``data_dir`` the hub dataset by name. One task's failure
    (a malformed file) does not stop the others: what was scored is kept. From the hub, a first task
    that fails stops the suite at once: offline, the other eight would only wait to fail too."""
    files = local_files(Path(data_dir), tasks) if data_dir is not None else {}
    rows, failed = [], {}
    for task in tasks:
        path = str(files[task]) if task in files else None
        try:
            report = score(task, path)
        except UserError as e:
            if not files and not rows:  # the hub's first task failed: the network, most likely, for all nine
                raise
            failed[task] = str(e)
            continue
        contamination = report.get("contamination")
        rows.append(SuiteRow(task, path or task, report["n"], report["accuracy"], tuple(report["ci95"]),  # type: ignore[arg-type]
                             report["chance"], report["majority"], contamination and contamination["count"],
                             bool(contamination and contamination["included"]), report.get("lm_eval_task"),
                             int(report.get("truncated", 0))))
    return rows, failed


def contaminated_cell(row: SuiteRow) -> str:
    """``0``, ``3 (excluded)``, ``3 (scored)``, or ``unchecked`` for a checkpoint with no ledger."""
    if row.contaminated is None:
        return "unchecked"
    if not row.contaminated:
        return "0"
    return f"{row.contaminated} ({'scored' if row.contaminated_scored else 'excluded'})"


def markdown(rows: list[SuiteRow]) -> str:
    """The table as Markdown, ready for a model card."""
    lines = ["| task | n | accuracy | 95% CI | chance | majority answer | contaminated | truncated | as lm-eval task |",
             "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r.task} | {r.n} | {r.accuracy:.3f} | [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}] | {r.chance:.3f} | "
              f"{r.majority:.3f} | {contaminated_cell(r)} | {r.truncated} | {r.lm_eval_task or '-'} |" for r in rows]
    return "\n".join(lines) + "\n"


def print_suite(rows: list[SuiteRow]) -> None:
    print(f"{'task':<28}{'n':>6}{'accuracy':>10}{'95% CI':>18}{'chance':>8}{'majority':>10}  {'contaminated':<14}"
          f"{'truncated':>9}  as lm-eval task")
    for r in rows:
        print(f"{r.task:<28}{r.n:>6}{r.accuracy:>10.3f}   [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}]{r.chance:>8.3f}"
              f"{r.majority:>10.3f}  {contaminated_cell(r):<14}{r.truncated:>9}  {r.lm_eval_task or '-'}")
