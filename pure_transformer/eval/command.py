"""The ``evaluate`` command (``python -m pure_transformer.evaluate``): MCQ accuracy of a checkpoint, with 95% CIs.

    python -m pure_transformer.evaluate --checkpoint runs/rl --task synthetic --split test --mode both \\
        --output report.json

``--checkpoint`` takes a step folder or a run folder (final, else the newest),
pretrain and RL checkpoints alike. ``--data-path`` evaluates local files in any
supported schema (MedQA hub jsonl, MedMCQA parquet/jsonl, the normalised record).
The JSON report is a list with one record per scoring mode.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import torch

from ..checkpoint import load_model
from ..data.registry import load_mcqs
from ..engine import Engine
from .scoring import TASKS, greedy_mcq_accuracy, loglikelihood_mcq_accuracy, task_source

MODES = ("generate", "loglikelihood")


def evaluate(checkpoint: str, task: str = "synthetic", split: str = "test", *, data_path: str | None = None,
             modes: Sequence[str] = MODES, limit: int | None = None, max_new_tokens: int = 8,
             batch_size: int = 32, device: str | None = None, progress: bool = True) -> list[dict]:
    """Score ``checkpoint`` on one split of a task in each mode; one report dict per mode."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, meta, ckpt = load_model(checkpoint, device)
    source = task_source(task, data_path)
    questions = load_mcqs(source, split, limit=limit)  # type: ignore[arg-type]
    reports = []
    for mode in modes:
        if mode == "generate":
            score = greedy_mcq_accuracy(Engine(model, tok), questions, max_new_tokens=max_new_tokens,
                                        batch_size=batch_size, progress=progress)
        else:
            score = loglikelihood_mcq_accuracy(model, tok, questions, batch_size=max(1, batch_size // 4),
                                               progress=progress)
        reports.append({"task": task, "source": source, "split": split, "mode": mode, "checkpoint": str(ckpt),
                        "checkpoint_kind": meta.get("kind"), "step": meta.get("step"), **score.report()})
    return reports


def print_table(reports: list[dict]) -> None:
    print(f"{'mode':<15}{'n':>6}{'accuracy':>10}{'95% CI':>17}{'invalid':>9}{'ECE':>7}   letters A/B/C/D")
    for r in reports:
        letters = "/".join(f"{r['letters'][k]:.2f}" for k in "ABCD")
        ece = f"{r['ece']:.3f}" if "ece" in r else "-"
        print(f"{r['mode']:<15}{r['n']:>6}{r['accuracy']:>10.3f}   [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
              f"{r['invalid_rate']:>9.3f}{ece:>7}   {letters}")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="step folder or run folder (final, else the newest)")
    p.add_argument("--task", default="synthetic", help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--split", default="test", help="test | validation | train (MedMCQA: validation)")
    p.add_argument("--data-path", default=None, help="local MCQ files instead of the task's dataset")
    p.add_argument("--mode", choices=[*MODES, "both"], default="both")
    p.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    p.add_argument("--max-new-tokens", type=int, default=8, help="generation budget per answer (generate mode)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", default=None, help="write the JSON report here")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> None:
    modes = MODES if args.mode == "both" else (args.mode,)
    reports = evaluate(args.checkpoint, args.task, args.split, data_path=args.data_path, modes=modes,
                       limit=args.limit, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       device=args.device, progress=not args.no_progress)
    print(f"{reports[0]['source']} {args.split}, checkpoint {reports[0]['checkpoint']}")
    print_table(reports)
    if args.output:
        Path(args.output).write_text(json.dumps(reports, indent=1))
        print(f"wrote {args.output}")
