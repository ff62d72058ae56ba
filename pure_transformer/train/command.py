"""``python -m pure_transformer.run_train pretrain|rl ...``: the training entry point.

The same commands run as ``pure-transformer pretrain`` and ``pure-transformer rl``.
This module only parses flags and calls :func:`pure_transformer.train.pretrain.pretrain`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence, TypeVar

T = TypeVar("T")



def add_pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="debug", help="preset: debug | a100_2day | h200_1day (default debug)")
    p.add_argument("--model", default=None, help="model preset, overriding the config's (e.g. tiny, medium-large)")
    p.add_argument("--checkpoint-dir", required=True, help="run folder for checkpoints, logs and the tokenizer")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per rank")
    p.add_argument("--log-every", type=int, default=None, help="optimizer steps between log records")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|PATH",
                   help="resume the newest checkpoint in --checkpoint-dir (auto, the default when the flag is "
                        "bare; a fresh start if there is none) or the given checkpoint")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="save and stop after this step without changing the schedule (simulates preemption)")
    p.add_argument("--config-file", default=None, help="YAML file whose keys override the preset")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="override one config field (repeatable), e.g. --set peak_lr=1e-3")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def effective_config(preset: T, args: argparse.Namespace, flags: dict[str, object] | None = None) -> tuple[T, bool]:
    """The preset, then the config saved in the checkpoint a ``--resume`` would load
    (a resumed run starts from its own settings), then ``--config-file``, the
    dedicated ``flags`` that were given, and ``--set``. Also says whether resuming."""
    from .checkpoint import read_meta, resume_checkpoint
    from .overrides import apply_overrides, load_yaml, parse_set

    ckpt = resume_checkpoint(Path(args.checkpoint_dir), args.resume)
    cfg = apply_overrides(preset, read_meta(ckpt)["config"]) if ckpt is not None else preset
    overrides = load_yaml(args.config_file) if args.config_file else {}
    overrides.update({k: v for k, v in (flags or {}).items() if v is not None})
    overrides.update(parse_set(args.set))
    return apply_overrides(cfg, overrides), ckpt is not None


def run_pretrain(args: argparse.Namespace) -> None:
    from .train.config import pretrain_preset
    from .train.pretrain import pretrain

    cfg, _ = effective_config(pretrain_preset(args.config), args, {"model": args.model, "num_workers": args.num_workers,
                                                                    "log_every": args.log_every})
    result = pretrain(cfg, args.checkpoint_dir, resume=args.resume, stop_at_step=args.stop_at_step,
                      device=args.device, progress=not args.no_progress)
    if result.rank != 0:
        return
    print(f"\n{'stopped early (' + result.stopped + ')' if result.stopped else 'done'}: step {result.step}, "
          f"{result.tokens_seen:,} tokens, {result.elapsed_s:.0f} s")
    for key, value in result.val.items():
        if key.startswith("val_ppl"):
            print(f"  {key:<28} {value:10.2f}")


def add_rl_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="pretrained checkpoint: a step folder or a run folder (final, else the newest)")
    p.add_argument("--config", default="debug", help="preset: debug | grpo_usmle_2day (default debug)")
    p.add_argument("--checkpoint-dir", required=True, help="run folder for RL checkpoints and logs")
    p.add_argument("--task", default="synthetic", help="synthetic (bundled questions) | medqa | medmcqa")
    p.add_argument("--data-path", default=None, help="local MCQ files (jsonl/parquet, any supported schema)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|PATH",
                   help="resume the newest checkpoint in --checkpoint-dir, or the given one")
    p.add_argument("--stop-at-step", type=int, default=None, help="save and stop after this step")
    p.add_argument("--config-file", default=None, help="YAML file whose keys override the preset")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", help="override one config field")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_rl(args: argparse.Namespace) -> None:
    from .errors import ConfigError
    from .rl.config import grpo_preset
    from .rl.train import grpo_train

    cfg, resuming = effective_config(grpo_preset(args.config), args)
    if not resuming and args.checkpoint is None:
        raise ConfigError("--checkpoint is required to start an RL run (the pretrained model to fine-tune)")
    result = grpo_train(cfg, args.checkpoint or "", args.checkpoint_dir, task=args.task, data_path=args.data_path,
                        resume=args.resume, stop_at_step=args.stop_at_step, device=args.device,
                        progress=not args.no_progress)
    status = f"stopped early ({result.stopped})" if result.stopped else "done"
    acc = f"{result.val_accuracy:.3f}" if result.val_accuracy is not None else "n/a"
    print(f"\n{status}: step {result.step}, validation accuracy {acc}, {result.elapsed_s:.0f} s")


def add_phases(sub: argparse._SubParsersAction) -> None:
    """The ``pretrain`` and ``rl`` subcommands (shared with ``pure-transformer``)."""
    p = sub.add_parser("pretrain", help="phase 1: pretrain on the FineWeb-Edu/MedQA mixture")
    add_pretrain_args(p)
    p.set_defaults(func=run_pretrain)
    p = sub.add_parser("rl", help="phase 2: GRPO fine-tuning on multiple-choice questions")
    add_rl_args(p)
    p.set_defaults(func=run_rl)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pure_transformer.run_train", description=__doc__.split("\n")[0])
    add_phases(parser.add_subparsers(dest="phase", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import dispatch

    return dispatch(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
