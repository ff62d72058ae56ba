"""The ``export`` command: a checkpoint as a Hugging Face ``LlamaForCausalLM`` folder
(:func:`pure_transformer.checkpoint.export.export_hf`).

    pure-transformer export --checkpoint runs/rl --out hf/ [--report report.json ...]
"""

from __future__ import annotations

import argparse

from ..checkpoint.export import export_hf


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="step folder or run folder (final, else the newest)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--report", action="append", default=[], metavar="REPORT.json",
                   help="an evaluate --output report for the model card (repeatable)")


def run(args: argparse.Namespace) -> None:
    print(f"wrote {export_hf(args.checkpoint, args.out, args.report)} (LlamaForCausalLM, tokenizer, model card)")
