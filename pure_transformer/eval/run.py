"""Scoring a checkpoint: one report per mode, on the questions its training ledger leaves clean.

:func:`evaluate` is what ``pure-transformer evaluate`` (:mod:`pure_transformer.commands.evaluate`),
the medical suite and ``pure_transformer.evaluate(...)`` in Python run: it loads the checkpoint,
the questions and the ledger, and calls :mod:`.scoring` once per mode.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from ..checkpoint.store import load_model
from ..data.ledger import read_ledger, split_contaminated
from ..data.registry import load_mcqs
from ..errors import DataError
from ..inference.engine import Engine
from ..mcq.answer_format import AnswerFormat, require_answerable
from ..mcq.record import MCQ, rotate_options
from ..model.precision import autocast, uses_bf16
from .conventions import convention_for
from .groups import label_questions
from .scoring import (NO_ROOM, cloze_mcq_accuracy, fit_prompt, greedy_mcq_accuracy, loglikelihood_mcq_accuracy,
                      passk_mcq_accuracy, question_id, skip_cause, task_source)

MODES = ("generate", "passk", "loglikelihood", "cloze")
"""generate and passk answer in the checkpoint's format; loglikelihood scores letters, cloze option texts."""


def evaluate(checkpoint: str, task: str = "synthetic", split: str = "test", *, data_path: str | None = None,
             modes: Sequence[str] = ("generate", "loglikelihood"), answer_format: AnswerFormat | None = None,
             limit: int | None = None, first: bool = False, seed: int = 0, rotate: int = 0,
             max_new_tokens: int | None = None, k: int = 16, batch_size: int = 128,
             include_contaminated: bool = False, strict: bool = False, save_generations: bool = False,
             by: str | None = None, precision: str = "auto", device: str | None = None,
             progress: bool = True) -> list[dict]:
    """Score ``checkpoint`` on one split of a task in each mode; one report dict per mode.
    ``answer_format`` None means the checkpoint's own; ``rotate`` re-letters every
    question's options cyclically (:func:`~pure_transformer.mcq.record.rotate_options`).

    ``limit`` scores a random sample of that many questions, stratified by gold letter and
    drawn with ``seed`` (:func:`sample_questions`); with ``first``, the first ``limit`` instead.
    Questions in the checkpoint's training ledger (:mod:`~pure_transformer.data.ledger`)
    are left out unless ``include_contaminated``; each report's ``contamination`` says
    how many there were and whether they were scored. In generate and passk modes a question
    that cannot be asked in the format (:func:`~.scoring.skip_cause`) is skipped and counted
    per cause in ``skipped``; ``strict`` stops at the first one instead. ``n`` is what was
    scored. ``save_generations`` keeps each question's generated text(s) in the generate and
    passk reports. ``by`` labels each question row with that field of its record and adds a
    per-group table (:mod:`.groups`)."""
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be a positive number of questions, got {limit}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, meta, ckpt = load_model(checkpoint, device)
    model.bf16 = uses_bf16(precision, model.embed_tokens.weight.device)  # the engine follows it, and scoring below
    fmt = answer_format or AnswerFormat.of_checkpoint(meta)
    source = task_source(task, data_path)
    asked = load_mcqs(source, split)  # type: ignore[arg-type]  # all: a sample is drawn from the whole split
    ledger = read_ledger(ckpt)
    clean, contaminated = split_contaminated(asked, ledger)
    if not clean and not include_contaminated:
        raise DataError(f"all {len(asked)} questions of {source} {split} are in the checkpoint's training ledger; "
                        "--include-contaminated scores them anyway")
    # Sampled by the file's own letters, then re-lettered: --rotate asks the same questions.
    chosen, sample = sample_questions(asked if include_contaminated else clean, limit, first=first, seed=seed)
    questions = [rotate_options(q, rotate) for q in chosen]
    contamination = (None if ledger is None else
                     {"count": len(contaminated), "share": len(contaminated) / len(asked), "of": len(asked),
                      "included": include_contaminated, "ledger_questions": len(ledger), "unseen": ledger.unseen})
    convention = convention_for(task)
    if "loglikelihood" in modes and convention.needs_context and (bare := [q for q in questions if not q.context]):
        raise DataError(f"{len(bare)} of the {len(questions)} {task} questions have no abstract to ask them with "
                        f"({bare[0].question[:40]!r}...): give it as the record's context, or in its question as "
                        "'Context: <abstract>' then a 'Question: <question>' line")
    generated = [m for m in modes if m in ("generate", "passk")]
    budget = max_new_tokens or fmt.max_new_tokens()
    causes = ([skip_cause(tok, q, fmt, model.cfg.max_seq_len, budget) for q in questions] if generated
              else [None] * len(questions))
    if strict and any(causes):  # stop as the cause says, naming the first question and its numbers
        require_answerable(questions, fmt, f"{source} {split}")
        fit_prompt(tok, questions[causes.index(NO_ROOM)], fmt, model.cfg.max_seq_len, budget)
    answerable = [q for q, cause in zip(questions, causes) if cause is None]
    if generated and not answerable:
        raise DataError(f"none of the {len(questions)} questions can be asked in the {fmt.value} format "
                        f"({', '.join(sorted(set(filter(None, causes))))}); try --mode loglikelihood")
    engine = Engine(model, tok)
    reports = []
    for mode in modes:
        skipped = [(q, c) for q, c in zip(questions, causes) if c is not None] if mode in generated else []
        scored = answerable if mode in generated else questions
        if mode == "generate":
            score = greedy_mcq_accuracy(engine, scored, fmt, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                        progress=progress)
        elif mode == "passk":
            score = passk_mcq_accuracy(engine, scored, fmt, k=k, max_new_tokens=max_new_tokens,
                                       batch_size=max(batch_size, 256), progress=progress)  # rows per call
        elif mode == "loglikelihood":
            # The task's lm-eval prompt and choices, for a local copy of it too (--task medmcqa --data-path ..).
            with autocast(model.embed_tokens.weight.device, model.bf16):
                score = loglikelihood_mcq_accuracy(model, tok, scored, convention=convention,
                                                   batch_size=max(1, batch_size // 4), progress=progress)
            score.extra["lm_eval_task"] = convention.lm_eval_task
        else:
            with autocast(model.embed_tokens.weight.device, model.bf16):
                score = cloze_mcq_accuracy(model, tok, scored, batch_size=max(1, batch_size // 4),
                                           progress=progress)
        label = f"{mode}/{fmt.value}" if mode in ("generate", "passk") else mode
        reports.append({"task": Path(data_path).name if data_path else task, "source": source, "split": split,
                        "mode": label, "checkpoint": str(ckpt),
                        "checkpoint_kind": meta.get("kind"), "step": meta.get("step"), "answer_format": fmt.value,
                        "rotate": rotate, "sample": sample, "contamination": contamination,
                        "contaminated": len(contaminated),
                        "skipped": dict(sorted(Counter(cause for _, cause in skipped).items())),
                        "skipped_questions": [{"id": question_id(q), "cause": c} for q, c in skipped],
                        **score.report(generations=save_generations)})
        if by:
            label_questions(reports[-1], scored, by, f"{source} {split}")
    return reports


def sample_questions(questions: Sequence[MCQ], limit: int | None, *, first: bool = False,
                     seed: int = 0) -> tuple[list[MCQ], str]:
    """(``limit`` of ``questions``, how they were chosen).

    A file is often sorted (by label, by source, by difficulty), so its first N say little of the
    rest: the sample is random, stratified by gold letter (each letter's share of the sample is its
    share of the file, up to rounding by largest remainder), drawn with ``seed``, and kept in file
    order. ``first`` takes the first ``limit`` instead."""
    total = len(questions)
    if limit is None or limit >= total:
        return list(questions), f"all {total} questions"
    if first:
        return list(questions[:limit]), f"the first {limit} of {total} questions"
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        groups.setdefault(q.answer, []).append(i)
    exact = {a: limit * len(ix) / total for a, ix in sorted(groups.items())}
    quota = {a: math.floor(x) for a, x in exact.items()}
    for a in sorted(exact, key=lambda a: (quota[a] - exact[a], a))[:limit - sum(quota.values())]:
        quota[a] += 1  # largest remainders first
    rng = random.Random(seed)
    chosen = sorted(i for a, ix in sorted(groups.items()) for i in rng.sample(ix, quota[a]))
    return [questions[i] for i in chosen], f"{limit} of {total} questions, random, stratified by answer (seed {seed})"


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
