"""The ``evaluate`` command (``python -m pure_transformer.evaluate``): MCQ accuracy of a checkpoint, with 95% CIs.

    python -m pure_transformer.evaluate --checkpoint runs/rl --task synthetic --split test --mode both \\
        --output report.json

``--checkpoint`` takes a step folder or a run folder (final, else the newest),
pretrain and RL checkpoints alike. ``--data-path`` evaluates local files in any
supported schema (MedQA hub jsonl, MedMCQA parquet/jsonl, the normalised record);
with ``--task``, they are scored by log-likelihood as that task's lm-eval definition
scores them (:mod:`pure_transformer.eval.conventions`).
The JSON report is a list with one record per scoring mode.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DataError, writing
from ..eval.groups import group_table
from ..eval.run import MODES, check_pairing, evaluate
from ..eval.scoring import TASKS, paired_gain
from ..mcq.answer_format import AnswerFormat
from ..model.precision import PRECISIONS


def print_table(reports: list[dict], baseline: list[dict] | None = None, *, allow_partial: bool = False) -> None:
    """One row per mode: n scored, the questions skipped and left out as trained on beside it, the
    accuracy with its CI, chance and the majority-answer baseline; with ``baseline`` (an earlier
    report on the same questions), the paired gain and the number of questions it pairs
    (:func:`check_pairing` first)."""
    check_pairing(reports, baseline, allow_partial)
    before = {r["mode"]: r for r in baseline or []}
    print(f"{'mode':<18}{'n':>5}{'skipped':>8}{'trained':>8}{'accuracy':>10}{'95% CI':>17}{'no answer':>11}   extra"
          + ("   gain vs baseline [95% paired CI]" if baseline else ""))
    for r in reports:
        extra = "  ".join(f"{key} {r[key]:.3f}" for key in r
                          if key in ("chance", "majority", "ece", "acc_norm")
                          or (key.startswith("pass@") and not key.endswith("_ci95")))
        skipped = sum(r.get("skipped", {}).values())
        trained = r.get("contaminated", 0) if not (r.get("contamination") or {}).get("included") else 0
        line = (f"{r['mode']:<18}{r['n']:>5}{skipped:>8}{trained:>8}{r['accuracy']:>10.3f}   "
                f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]{r['invalid_rate']:>11.3f}   {extra:<44}")
        if r["mode"] in before:
            gain, (low, high), paired = paired_gain(before[r["mode"]], r)
            line += f"   {gain:+.3f} [{low:+.3f}, {high:+.3f}] on {paired} paired"
        print(line)


SKIP_WORDS = {"no_room": "leave no room for the {budget}-token answer in the model's context",
              "unanswerable": "have options the {fmt} format cannot tell apart or name"}
"""How the console says each skip cause of :func:`pure_transformer.eval.scoring.skip_cause`."""


def print_warnings(reports: list[dict], budget: int) -> None:
    """One ``warning:`` line per mode that skipped questions or cut prompts to fit."""
    for r in reports:
        if r.get("skipped"):
            said = "; ".join(f"{count} {SKIP_WORDS[cause].format(budget=budget, fmt=r['answer_format'])}"
                             for cause, count in r["skipped"].items())
            print(f"warning: {r['mode']}: skipped {sum(r['skipped'].values())} of "
                  f"{r['n'] + sum(r['skipped'].values())} questions ({said}); --strict stops at the first",
                  file=sys.stderr)
        if r.get("truncated"):
            # generate and passk cut the stem and keep the options and cue; the scoring modes keep the end of
            # the whole sequence, as lm-evaluation-harness does.
            lost = "the start of their question stem" if r["mode"].startswith(("generate", "passk")) else \
                "their start (the end is scored, as lm-eval does)"
            print(f"warning: {r['mode']}: {int(r['truncated'])} of {r['n']} prompts ({r['truncated_share']:.1%}) were "
                  f"longer than the context and lost {lost}", file=sys.stderr)


def print_groups(reports: list[dict], baseline: list[dict] | None = None) -> None:
    """Per mode of a report labelled with ``--by``: one row per value of the field, the paired gain beside
    a baseline (questions the baseline lacks are left out of that column)."""
    before = {r["mode"]: r for r in baseline or []}
    for r in reports:
        if "by" not in r:
            continue
        rows = group_table(r, before.get(r["mode"]))
        width = max(len(r["by"]), *(len(row.group) for row in rows)) + 2
        print(f"\n{r['mode']} by {r['by']}:")
        print(f"{r['by']:<{width}}{'n':>5}" + (f"{'before':>9}" if before else "") + f"{'accuracy':>10}{'95% CI':>17}"
              + ("   gain [95% paired CI]" if before else ""))
        for row in rows:
            line = f"{row.group:<{width}}{row.n:>5}"
            if before:
                line += f"{row.baseline_accuracy:>9.3f}" if row.baseline_accuracy is not None else f"{'-':>9}"
            line += f"{row.accuracy:>10.3f}   [{row.ci95[0]:.3f}, {row.ci95[1]:.3f}]"
            if row.gain is not None:
                line += f"   {row.gain:+.3f} [{row.gain_ci95[0]:+.3f}, {row.gain_ci95[1]:+.3f}]"
            print(line)


def print_contamination(c: dict | None) -> None:
    """What the checkpoint's training ledger says of the questions asked: one line, and one more for a
    model that descends from an imported one, whose own pretraining the ledger cannot see."""
    if c is None:
        print("note: the checkpoint has no training ledger (it predates them); contamination was not checked",
              file=sys.stderr)
    elif not c["count"]:
        print(f"contamination: none of the {c['of']} questions is among the {c['ledger_questions']:,} "
              "the checkpoint was trained on")
    elif c["included"]:
        print(f"warning: contamination: {c['count']} of {c['of']} questions ({c['share']:.1%}) were trained on, and "
              "are scored (--include-contaminated): the accuracy overstates", file=sys.stderr)
    else:
        print(f"warning: contamination: {c['count']} of {c['of']} questions ({c['share']:.1%}) were trained on; "
              f"scoring the {c['of'] - c['count']} clean ones (--include-contaminated scores all)", file=sys.stderr)
    if c is not None and c.get("unseen"):
        print(f"note: the model descends from {', '.join(c['unseen'])}, whose own pretraining data no ledger "
              "records: a clean count cannot rule out that it read these questions before", file=sys.stderr)


def parse_modes(spec: str) -> tuple[str, ...]:
    """``both`` (generate and loglikelihood), ``all``, or a comma-separated list of modes."""
    named = {"both": ("generate", "loglikelihood"), "all": MODES}
    modes = named.get(spec) or tuple(m.strip() for m in spec.split(","))
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise DataError(f"unknown mode '{unknown[0]}'; choose from {', '.join(MODES)}, both or all")
    return modes


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="step folder or run folder (final, else the newest)")
    p.add_argument("--task", default="synthetic", help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--split", default="test", help="test | validation | train (MedMCQA: validation)")
    p.add_argument("--data-path", default=None, help="local MCQ files instead of the task's dataset")
    p.add_argument("--mode", default="both", metavar="MODE[,MODE]",
                   help=f"{', '.join(MODES)}; both = generate,loglikelihood; all (default both)")
    p.add_argument("--format", default=None, choices=[f.value for f in AnswerFormat],
                   help="answer format of generate/passk (default: the checkpoint's)")
    p.add_argument("--k", type=int, default=16, help="samples per question in passk mode (default 16)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="score a random sample of N questions, stratified by answer letter (--seed)")
    p.add_argument("--first", type=int, default=None, metavar="N", help="score the first N questions of the file")
    p.add_argument("--seed", type=int, default=0, help="the --limit sample's seed (default 0)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first question that cannot be asked in the format, instead of skipping it")
    p.add_argument("--rotate", type=int, default=0, metavar="K",
                   help="re-letter every question's options cyclically by K (a letter prior does not survive it)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation budget per answer (default: the format's, 24 or 96 for explain)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="questions decoded together (default 128: a decode step's cost is mostly per step, not per "
                        "row, on a small model; 400 demo questions took 8.2 s at 32, 5.9 s at 128)")
    p.add_argument("--output", default=None, help="write the JSON report here")
    p.add_argument("--baseline", default=None, metavar="REPORT.json",
                   help="an earlier report on the same questions: print the paired gain with a bootstrap CI")
    p.add_argument("--allow-partial-baseline", action="store_true",
                   help="accept a --baseline that pairs only some of the scored questions")
    p.add_argument("--by", default=None, metavar="FIELD",
                   help="also break each mode down by this field of the question records (meta_info, subject_name, "
                        "the bundled set's chain type as meta_info ...): n, accuracy and CI per value, and the "
                        "paired gain per value with --baseline")
    p.add_argument("--save-generations", action="store_true",
                   help="keep every generated answer text in the report (generate, passk)")
    p.add_argument("--include-contaminated", action="store_true",
                   help="also score questions in the checkpoint's training ledger (the report says so)")
    p.add_argument("--suite", default=None, choices=["medical"],
                   help="medical: the Open Medical-LLM Leaderboard's nine tasks, by log-likelihood as lm-eval scores "
                        "each, one table")
    p.add_argument("--data-dir", default=None,
                   help="with --suite: local test files (<task>_test.jsonl, <task>.parquet, anatomy_test.csv ...)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 autocast on CUDA, fp32 elsewhere; bf16: the CUDA code path on any device")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def _read_report(path: str) -> list[dict]:
    try:
        reports = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read baseline report '{path}': {type(err).__name__}") from None
    if not isinstance(reports, list) or not all(isinstance(r, dict) and "questions" in r for r in reports):
        raise DataError(f"'{path}' is not an evaluate report with per-question results")
    return reports


def run_medical_suite(args: argparse.Namespace) -> None:
    """``--suite medical``: one row per leaderboard task; ``--output`` gets the JSON and a Markdown twin."""
    from dataclasses import asdict

    from ..eval.suite import markdown, print_suite, run_suite

    def score(task: str, path: str | None) -> dict:
        return evaluate(args.checkpoint, task, "test", data_path=path, modes=("loglikelihood",), **sample_flags(args),
                        batch_size=args.batch_size, include_contaminated=args.include_contaminated,
                        device=args.device, progress=not args.no_progress)[0]

    rows, failed = run_suite(score, args.data_dir)
    if rows:
        print_suite(rows)
    if args.output and rows:
        with writing(args.output):
            Path(args.output).write_text(json.dumps([asdict(r) for r in rows], indent=1))
        with writing(Path(args.output).with_suffix(".md")):
            Path(args.output).with_suffix(".md").write_text(markdown(rows))
        print(f"wrote {args.output} and {Path(args.output).with_suffix('.md')}")
    if failed:
        raise DataError(f"{len(failed)} of the {len(rows) + len(failed)} tasks failed, the others are above: "
                        + "; ".join(f"{task}: {why}" for task, why in failed.items()))


def sample_flags(args: argparse.Namespace) -> dict:
    """``--limit N`` (a stratified random sample) or ``--first N``, as :func:`evaluate` takes them."""
    if args.limit is not None and args.first is not None:
        raise DataError("give --limit (a random sample) or --first (the first N), not both")
    return {"limit": args.first if args.first is not None else args.limit, "first": args.first is not None,
            "seed": args.seed}


def run(args: argparse.Namespace) -> None:
    if args.suite:
        return run_medical_suite(args)
    baseline = _read_report(args.baseline) if args.baseline else None
    if args.k < 1:
        raise DataError(f"--k must be >= 1, got {args.k}")
    reports = evaluate(args.checkpoint, args.task, args.split, data_path=args.data_path, modes=parse_modes(args.mode),
                       answer_format=AnswerFormat(args.format) if args.format else None, **sample_flags(args),
                       rotate=args.rotate, include_contaminated=args.include_contaminated, strict=args.strict,
                       save_generations=args.save_generations, by=args.by, precision=args.precision,
                       max_new_tokens=args.max_new_tokens, k=args.k, batch_size=args.batch_size, device=args.device,
                       progress=not args.no_progress)
    check_pairing(reports, baseline, args.allow_partial_baseline)
    print(f"{reports[0]['source']} {args.split}, checkpoint {reports[0]['checkpoint']}: {reports[0]['sample']}")
    print_contamination(reports[0]["contamination"])
    print_warnings(reports, args.max_new_tokens or AnswerFormat(reports[0]["answer_format"]).max_new_tokens())
    print_table(reports, baseline, allow_partial=args.allow_partial_baseline)
    print_groups(reports, baseline)
    if args.output:
        with writing(args.output):  # a full disk or a bad path: one line naming it, not a traceback
            Path(args.output).write_text(json.dumps(reports, indent=1))
        print(f"wrote {args.output}")
