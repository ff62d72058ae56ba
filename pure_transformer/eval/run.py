"""Scoring a checkpoint: one report per mode, on the questions its training ledger leaves clean.

:func:`evaluate` is what ``pure-transformer evaluate`` (:mod:`pure_transformer.commands.evaluate`),
the medical suite and ``pure_transformer.evaluate(...)`` in Python run: it loads the checkpoint,
the questions and the ledger, and calls :mod:`.scoring` once per mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..checkpoint.store import load_model
from ..data.ledger import read_ledger, split_contaminated
from ..data.registry import load_mcqs
from ..errors import DataError
from ..inference.engine import Engine
from ..mcq.answer_format import AnswerFormat, require_answerable
from ..mcq.record import rotate_options
from ..model.precision import autocast, uses_bf16
from .conventions import convention_for
from .scoring import (cloze_mcq_accuracy, greedy_mcq_accuracy, loglikelihood_mcq_accuracy, passk_mcq_accuracy,
                      task_source)

MODES = ("generate", "passk", "loglikelihood", "cloze")
"""generate and passk answer in the checkpoint's format; loglikelihood scores letters, cloze option texts."""


def evaluate(checkpoint: str, task: str = "synthetic", split: str = "test", *, data_path: str | None = None,
             modes: Sequence[str] = ("generate", "loglikelihood"), answer_format: AnswerFormat | None = None,
             limit: int | None = None, rotate: int = 0, max_new_tokens: int | None = None, k: int = 16,
             batch_size: int = 32, include_contaminated: bool = False, save_generations: bool = False,
             precision: str = "auto", device: str | None = None, progress: bool = True) -> list[dict]:
    """Score ``checkpoint`` on one split of a task in each mode; one report dict per mode.
    ``answer_format`` None means the checkpoint's own; ``rotate`` re-letters every
    question's options cyclically (:func:`~pure_transformer.mcq.record.rotate_options`).

    Questions in the checkpoint's training ledger (:mod:`~pure_transformer.data.ledger`)
    are left out unless ``include_contaminated``; each report's ``contamination`` says
    how many there were and whether they were scored. ``save_generations`` keeps each
    question's generated text(s) in the generate and passk reports."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, meta, ckpt = load_model(checkpoint, device)
    model.bf16 = uses_bf16(precision, model.embed_tokens.weight.device)  # the engine follows it, and scoring below
    fmt = answer_format or AnswerFormat.of_checkpoint(meta)
    source = task_source(task, data_path)
    asked = [rotate_options(q, rotate) for q in load_mcqs(source, split, limit=limit)]  # type: ignore[arg-type]
    ledger = read_ledger(ckpt)
    clean, contaminated = split_contaminated(asked, ledger)
    if not clean and not include_contaminated:
        raise DataError(f"all {len(asked)} questions of {source} {split} are in the checkpoint's training ledger; "
                        "--include-contaminated scores them anyway")
    questions = asked if include_contaminated else clean
    if {"generate", "passk"} & set(modes):
        require_answerable(questions, fmt, f"{source} {split}")
    contamination = (None if ledger is None else
                     {"count": len(contaminated), "share": len(contaminated) / len(asked), "of": len(asked),
                      "included": include_contaminated, "ledger_questions": len(ledger)})
    engine = Engine(model, tok)
    reports = []
    for mode in modes:
        if mode == "generate":
            score = greedy_mcq_accuracy(engine, questions, fmt, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                        progress=progress)
        elif mode == "passk":
            score = passk_mcq_accuracy(engine, questions, fmt, k=k, max_new_tokens=max_new_tokens,
                                       batch_size=max(batch_size, 256), progress=progress)  # rows per call
        elif mode == "loglikelihood":
            # The task's lm-eval prompt and choices, for a local copy of it too (--task medmcqa --data-path ..).
            convention = convention_for(task)
            with autocast(model.embed_tokens.weight.device, model.bf16):
                score = loglikelihood_mcq_accuracy(model, tok, questions, convention=convention,
                                                   batch_size=max(1, batch_size // 4), progress=progress)
            score.extra["lm_eval_task"] = convention.lm_eval_task
        else:
            with autocast(model.embed_tokens.weight.device, model.bf16):
                score = cloze_mcq_accuracy(model, tok, questions, batch_size=max(1, batch_size // 4),
                                           progress=progress)
        label = f"{mode}/{fmt.value}" if mode in ("generate", "passk") else mode
        reports.append({"task": Path(data_path).name if data_path else task, "source": source, "split": split,
                        "mode": label, "checkpoint": str(ckpt),
                        "checkpoint_kind": meta.get("kind"), "step": meta.get("step"), "answer_format": fmt.value,
                        "rotate": rotate, "contamination": contamination,
                        **score.report(generations=save_generations)})
    return reports


def check_pairing(reports: list[dict], baseline: list[dict] | None, allow_partial: bool = False) -> None:
    """Refuse a baseline that pairs fewer questions than were scored, unless ``allow_partial``:
    the gain would describe another set than the accuracy beside it."""
    before = {r["mode"]: r for r in baseline or []}
    if baseline and not before.keys() & {r["mode"] for r in reports}:
        raise DataError(f"the baseline has no mode of this run (it has {', '.join(sorted(before))}); "
                        "score the same --mode")
    for r in reports:
        if r["mode"] in before:
            paired = len({q["id"] for q in before[r["mode"]]["questions"]} & {q["id"] for q in r["questions"]})
            if paired == 0:
                raise DataError(f"the baseline shares none of the {r['n']} questions scored in {r['mode']}: "
                                "it was scored on other questions (another task, split or --rotate)")
            if paired < r["n"] and not allow_partial:
                raise DataError(f"the baseline pairs {paired} of the {r['n']} questions scored in {r['mode']}; "
                                "score the same questions (same --limit), or pass --allow-partial-baseline")
