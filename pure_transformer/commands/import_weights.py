"""The ``import`` command: an open transformers checkpoint as a project checkpoint
(:func:`pure_transformer.checkpoint.open_weights.import_checkpoint`).

    pure-transformer import HuggingFaceTB/SmolLM2-135M --out runs/smol
    pure-transformer import ~/models/Qwen3-0.6B --out runs/qwen3
"""

from __future__ import annotations

import argparse

from ..checkpoint.open_weights import import_checkpoint


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC",
                   help="a local transformers folder (config.json, safetensors, tokenizer.json) or a hub name")
    p.add_argument("--out", required=True, help="the checkpoint folder to write (new or empty)")


def run(args: argparse.Namespace) -> None:
    out = import_checkpoint(args.src, args.out)
    print(f"wrote {out} (imported from {args.src}); evaluate, generate, serve, export and rl take it as --checkpoint")
