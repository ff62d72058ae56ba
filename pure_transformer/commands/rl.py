"""The ``rl`` command (``python -m pure_transformer.run_train rl`` and
``pure-transformer rl``): flags, the effective config, and a call to
:func:`pure_transformer.rl.train.grpo_train`.
"""

from __future__ import annotations

import argparse

from .pretrain import config_yaml, effective_config


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="pretrained checkpoint: a step folder or a run folder (final, else the newest)")
    p.add_argument("--config", default="rl:debug",
                   help="preset: rl:debug | rl:demo | rl:grpo_usmle_2day, or the name after the colon "
                        "(default rl:debug)")
    p.add_argument("--checkpoint-dir", required=True, help="run folder for RL checkpoints and logs")
    p.add_argument("--task", default="synthetic", help="synthetic (bundled questions) | medqa | medmcqa")
    p.add_argument("--data-path", default=None, help="local MCQ files (jsonl/parquet, any supported schema)")
    p.add_argument("--val-data-path", default=None,
                   help="validation questions (default: the task's validation split, else a slice held out of its "
                        "training questions)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|PATH",
                   help="resume the newest checkpoint in --checkpoint-dir, or the given one")
    p.add_argument("--stop-at-step", type=int, default=None, help="save and stop after this step")
    p.add_argument("--config-file", default=None, help="YAML file whose keys override the preset")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", help="override one config field")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective config as YAML (which --config-file takes back) and exit")


def run(args: argparse.Namespace) -> None:
    from ..config.rl import grpo_preset
    from ..distributed.runtime import close_runtime
    from ..errors import ConfigError
    from ..rl.train import grpo_train

    cfg, resuming = effective_config(grpo_preset(args.config), args)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return
    if not resuming and args.checkpoint is None:
        raise ConfigError("--checkpoint is required to start an RL run (the pretrained model to fine-tune)")
    try:
        result = grpo_train(cfg, args.checkpoint or "", args.checkpoint_dir, task=args.task, data_path=args.data_path,
                            val_data_path=args.val_data_path, resume=args.resume, stop_at_step=args.stop_at_step,
                            device=args.device, progress=not args.no_progress)
    finally:
        close_runtime()  # the command owns the process, so it leaves the process group torchrun made
    if result.rank != 0:
        return
    status = f"stopped early ({result.stopped})" if result.stopped else "done"
    acc = f"{result.val_accuracy:.3f}" if result.val_accuracy is not None else "n/a"
    print(f"\n{status}: step {result.step}, validation accuracy {acc}, {result.elapsed_s:.0f} s")
