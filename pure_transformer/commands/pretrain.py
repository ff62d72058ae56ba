"""The ``pretrain`` command (``python -m pure_transformer.run_train pretrain`` and
``pure-transformer pretrain``): flags, the effective config, and a call to
:func:`pure_transformer.train.pretrain.pretrain`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="pretrain:debug",
                   help="preset: pretrain:debug | pretrain:demo | pretrain:a100_2day | pretrain:h200_1day, or the name "
                        "after the colon (default pretrain:debug)")
    p.add_argument("--model", default=None, help="model preset, overriding the config's (e.g. tiny, medium-large)")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="continued pretraining: start from this checkpoint's weights, shape and tokenizer (an "
                        "imported open model too), with a fresh optimizer and schedule")
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
    p.add_argument("--print-config", action="store_true",
                   help="print the effective config as YAML (which --config-file takes back) and exit")


def config_yaml(cfg: object) -> str:
    """The config as YAML that ``--config-file`` reads back into the same config."""
    import json

    import yaml

    # Through JSON: tuples become lists (YAML's safe dumper has no tuples), as in a checkpoint's meta.json.
    return yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False)  # type: ignore[attr-defined]


def effective_config(preset: T, args: argparse.Namespace, flags: dict[str, object] | None = None) -> tuple[T, bool]:
    """The preset, then the config saved in the checkpoint a ``--resume`` would load
    (a resumed run starts from its own settings), then ``--config-file``, the
    dedicated ``flags`` that were given, and ``--set``. Also says whether resuming."""
    from ..checkpoint.store import read_meta, resume_checkpoint
    from ..config.overrides import apply_overrides, load_yaml, parse_set

    ckpt = resume_checkpoint(Path(args.checkpoint_dir), args.resume)
    cfg = apply_overrides(preset, read_meta(ckpt)["config"]) if ckpt is not None else preset
    overrides = load_yaml(args.config_file) if args.config_file else {}
    overrides.update({k: v for k, v in (flags or {}).items() if v is not None})
    overrides.update(parse_set(args.set))
    return apply_overrides(cfg, overrides), ckpt is not None


def run(args: argparse.Namespace) -> None:
    from ..config.pretrain import pretrain_preset
    from ..distributed.runtime import close_runtime
    from ..train.pretrain import pretrain

    cfg, _ = effective_config(pretrain_preset(args.config), args, {"model": args.model, "num_workers": args.num_workers,
                                                                    "log_every": args.log_every,
                                                                    "init_from": args.init_from})
    if args.print_config:
        print(config_yaml(cfg), end="")
        return
    try:
        result = pretrain(cfg, args.checkpoint_dir, resume=args.resume, stop_at_step=args.stop_at_step,
                          device=args.device, progress=not args.no_progress)
    finally:
        close_runtime()  # the command owns the process, so it leaves the process group torchrun made
    if result.rank != 0:
        return
    print(f"\n{'stopped early (' + result.stopped + ')' if result.stopped else 'done'}: step {result.step}, "
          f"{result.tokens_seen:,} tokens, {result.elapsed_s:.0f} s")
    for key, value in result.val.items():
        if key.startswith("val_ppl"):
            print(f"  {key:<28} {value:10.2f}")
