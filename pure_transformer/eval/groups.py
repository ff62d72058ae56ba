"""A report broken down by a field of its questions (``evaluate --by FIELD``).

Any field of the question records works: MedQA's ``meta_info`` (step1, step2&3),
MedMCQA's ``subject_name``, the bundled questions' chain type. :func:`label_questions`
puts each question's value in its report row as ``group``; :func:`group_table` gives
one row per value with n, the accuracy and its Wilson CI, and, beside an earlier
report on the same questions, the paired gain and its bootstrap CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import DataError
from ..mcq.record import MCQ
from .scoring import paired_gain, wilson_interval

MISSING = "(none)"
"""The group of a question whose record lacks the field."""


def group_of(mcq: MCQ, field: str) -> str | None:
    """The question's ``field``: a field of its source record (:attr:`MCQ.tags`), else of the record
    itself (``subject``); None when it has neither."""
    value = mcq.tags.get(field)
    if value is None and field in ("subject", "explanation", "context"):
        value = getattr(mcq, field)
    return value if value else None


def label_questions(report: dict, questions: Sequence[MCQ], field: str, where: str) -> None:
    """Write each scored question's group into its report row (rows and ``questions`` in the same order)."""
    labels = [group_of(q, field) for q in questions]
    if questions and all(label is None for label in labels):
        fields = ", ".join(sorted(questions[0].tags)) or "none"
        raise DataError(f"--by {field}: no question of {where} has that field (its records have: {fields})")
    report["by"] = field
    for row, label in zip(report["questions"], labels):
        row["group"] = label if label is not None else MISSING
    report["groups"] = [row.__dict__ for row in group_table(report)]


@dataclass(frozen=True)
class GroupRow:
    """One value of the field: its questions' accuracy and, against a baseline, their paired gain."""

    group: str
    n: int
    accuracy: float
    ci95: tuple[float, float]
    baseline_accuracy: float | None = None
    gain: float | None = None
    gain_ci95: tuple[float, float] | None = None


def group_table(report: dict, baseline: dict | None = None) -> list[GroupRow]:
    """One row per group of a labelled report, largest first (then by name)."""
    by_group: dict[str, list[dict]] = {}
    for row in report["questions"]:
        by_group.setdefault(row["group"], []).append(row)
    before = {row["id"]: row for row in (baseline or {}).get("questions", [])}
    table = []
    for group, rows in sorted(by_group.items(), key=lambda item: (-len(item[1]), item[0])):
        correct = sum(bool(row["correct"]) for row in rows)
        extra: dict = {}
        paired = [before[row["id"]] for row in rows if row["id"] in before]
        if paired:
            gain, ci, _ = paired_gain({"questions": paired}, {"questions": rows})
            extra = {"baseline_accuracy": sum(bool(r["correct"]) for r in paired) / len(paired), "gain": gain,
                     "gain_ci95": ci}
        table.append(GroupRow(group, len(rows), correct / len(rows), wilson_interval(correct, len(rows)), **extra))
    return table
