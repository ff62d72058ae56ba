"""Does a model read multiple-choice options? (the evidence behind docs/GRPO.md's findings)

    # a checkpoint, on bundled test questions: after "Answer: C." does it copy option C's text?
    python scripts/probe_option_reading.py copy --checkpoint runs/demo/pretrain
    # a fresh model trained only on the text -> letter lookup, with random values
    python scripts/probe_option_reading.py drill --model tiny --steps 1500 --lr 3e-3
    # the same model and loop on a copy by position (a positive control)
    python scripts/probe_option_reading.py drill --model tiny --steps 500 --positional-control
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from pure_transformer.checkpoint.store import load_model
from pure_transformer.cli import dispatch
from pure_transformer.data.registry import load_mcqs
from pure_transformer.eval.probes import lookup_drill, option_copy_accuracy
from pure_transformer.eval.scoring import wilson_interval
from pure_transformer.model.config import model_preset


def run_copy(args: argparse.Namespace) -> None:
    model, tok, _, folder = load_model(args.checkpoint)
    questions = load_mcqs(args.data, args.split, args.limit)
    accuracy = option_copy_accuracy(model, tok, questions)
    low, high = wilson_interval(round(accuracy * len(questions)), len(questions))
    print(f"{folder}: option copy accuracy {accuracy:.3f} [{low:.3f}, {high:.3f}] on {len(questions)} "
          f"{args.split} questions (1/4 = copies some option, not the asked one)")


def run_drill(args: argparse.Namespace) -> None:
    cfg = model_preset(args.model)
    if args.init_std is not None:
        cfg = dataclasses.replace(cfg, init_std=args.init_std)
    start = time.time()
    for step, loss, accuracy in lookup_drill(cfg, args.steps, args.batch, args.lr,
                                             positional_control=args.positional_control):
        print(f"step {step:5d}  loss {loss:.3f}  held-out accuracy {accuracy:.3f}  ({time.time() - start:.0f} s)",
              flush=True)
    print("chance: loss 1.386, accuracy 0.250")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sub = parser.add_subparsers(dest="probe", required=True)
    copy = sub.add_parser("copy", help="letter -> text copying of a checkpoint on an MCQ split")
    copy.add_argument("--checkpoint", required=True)
    copy.add_argument("--data", default="bundled-mcq", help="MCQ dataset name or local path")
    copy.add_argument("--split", default="test")
    copy.add_argument("--limit", type=int, default=400)
    copy.set_defaults(func=run_copy)
    drill = sub.add_parser("drill", help="train a fresh model on the text -> letter lookup alone")
    drill.add_argument("--model", default="tiny")
    drill.add_argument("--steps", type=int, default=1500)
    drill.add_argument("--batch", type=int, default=32)
    drill.add_argument("--lr", type=float, default=3e-3)
    drill.add_argument("--init-std", type=float, default=None, help="override the preset's init_std")
    drill.add_argument("--positional-control", action="store_true",
                       help="ask for the first pair's value instead: a copy by position, no matching")
    drill.set_defaults(func=run_drill)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return dispatch(args)  # user mistakes (a wrong path, an unknown preset) print one line


if __name__ == "__main__":
    sys.exit(main())
