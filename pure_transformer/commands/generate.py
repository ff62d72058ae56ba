"""The ``generate`` command (``python -m pure_transformer.generate``): stream a completion to the terminal.

    python -m pure_transformer.generate --checkpoint runs/rl --prompt "Question: ..." --temperature 0.7

Without ``--prompt`` it reads prompts interactively until end of input. Every
prompt starts with the tokenizer's start ids: our end-of-text, as every training document did
(an imported Llama-3's begin-of-text, nothing for Qwen).
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterator

import torch

from ..checkpoint.store import load_model
from ..inference.engine import Engine, SamplingParams, stream_text


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="step folder or run folder (final, else the newest)")
    p.add_argument("--prompt", default=None, help="text to continue; omitted: interactive prompts from stdin")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="fixes the sample")
    p.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, _, _ = load_model(args.checkpoint, device)
    try:
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, stop_strings=tuple(args.stop), seed=args.seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    engine = Engine(model, tok)
    prompts = [args.prompt] if args.prompt is not None else _interactive()
    context = model.cfg.max_seq_len
    for prompt in prompts:
        size = len(tok.start_ids) + len(tok.encode(prompt))  # after the start ids, as stream_text sends it
        if size >= context:
            raise ConfigError(f"prompt of {size} tokens leaves no room in the model's context of {context} tokens; "
                              "shorten the prompt")
        if size + params.max_new_tokens > context:
            print(f"warning: prompt of {size} tokens leaves room for {context - size} of the {params.max_new_tokens} "
                  f"new tokens asked (context {context})", file=sys.stderr)
        for piece in stream_text(engine, prompt, params):
            print(piece, end="", flush=True)
        print()


def _interactive() -> Iterator[str]:
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "")
        except EOFError:
            return
        if line.strip():
            yield line
