"""The ``pure-transformer`` command line: a thin layer over importable functions.

Subcommands::

    pure-transformer model info PRESET [PRESET ...]
    pure-transformer tokenizer train [--input ...] [--vocab-size N] --out DIR
    pure-transformer data preview --tokenizer DIR [--mixture NAME:WEIGHT,...]
    pure-transformer data overlap --train SOURCE --eval SOURCE [--n 13]
    pure-transformer data export-bundled --out DIR
    pure-transformer pretrain --config pretrain:debug --checkpoint-dir DIR ...   (= run_train pretrain)
    pure-transformer rl --checkpoint CKPT --config rl:debug --checkpoint-dir DIR ...   (= run_train rl)
    pure-transformer evaluate --checkpoint CKPT --task synthetic --split test   (= python -m pure_transformer.evaluate)
    pure-transformer generate --checkpoint CKPT --prompt TEXT   (= python -m pure_transformer.generate)
    pure-transformer serve --checkpoint CKPT [--port 8000]   (= python -m pure_transformer.serve)
    pure-transformer export --checkpoint CKPT --out DIR
    pure-transformer import SRC --out DIR   (a transformers folder or hub name: Llama-3.x, Qwen2.5, Qwen3)
    pure-transformer plot DIR [--out PNG]
    pure-transformer plan --config pretrain:a100_2day --gpu a100-80gb [--set KEY=VALUE ...]
    pure-transformer bench train|generate|rl-step|logp-gap [--model PRESET ...] | serve --url URL [--baseline URL]

Every handler parses nothing itself and does no work beyond calling the library
and printing. A :class:`~pure_transformer.errors.UserError` becomes one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Sequence

from .errors import UserError


# ---------------------------------------------------------------- model info
def cmd_model_info(args: argparse.Namespace) -> None:
    from .model.config import model_preset
    from .plan.planner import flops_per_token, param_counts

    for preset in args.preset:
        # Counted from the shapes (tests/test_plan.py checks the formulas against the model of every
        # preset): building even a meta-device model would import torch._dynamo, 1.5 s of the command.
        cfg = model_preset(preset)
        counts = param_counts(cfg)
        print(f"preset: {preset}")
        for key, value in cfg.to_dict().items():
            print(f"  {key}: {value}")
        print(f"  head_dim: {cfg.head_dim}")
        print(f"parameters: {counts.total}")
        print(f"parameters_without_embedding: {counts.total - counts.embedding}")
        print(f"flops_per_token: {flops_per_token(cfg, cfg.max_seq_len)} (training, at seq_len {cfg.max_seq_len})")


# ------------------------------------------------------------- tokenizer train
def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from itertools import islice

    from .bundled.synthetic import training_texts
    from .tokenizer.bpe import iter_training_texts, train_tokenizer

    if args.input:
        texts = iter_training_texts(args.input, text_field=args.text_field, max_docs=args.max_docs)
    else:
        texts = islice(training_texts(), args.max_docs)
    # tokenizers' own bar redraws with carriage returns: on a terminal it is a bar, in a log only blank lines.
    tok = train_tokenizer(texts, args.vocab_size, args.out, show_progress=not args.quiet and sys.stderr.isatty())
    print(f"wrote {Path(args.out) / 'tokenizer.json'} (vocab {tok.vocab_size}, eot={tok.eot_id}, pad={tok.pad_id})")


# ----------------------------------------------------------------------- data
def cmd_data_preview(args: argparse.Namespace) -> None:
    from .data.preview import preview
    from .mcq.answer_format import AnswerFormat

    preview(args.tokenizer, args.mixture, seq_len=args.seq_len, num_blocks=args.num_blocks, show=args.show,
            weight_by=args.weight_by, seed=args.seed, answer_format=AnswerFormat(args.answer_format))


def cmd_data_overlap(args: argparse.Namespace) -> None:
    from .data.preview import overlap

    overlap(args.train, args.eval, eval_split=args.eval_split, n=args.n, max_train_docs=args.max_train_docs)


def cmd_data_export(args: argparse.Namespace) -> None:
    from .bundled.synthetic import write_bundled

    for name, path in write_bundled(args.out, seed=args.seed).items():
        print(f"{name}: {path}")


# ----------------------------------------------------------------------- plot
def cmd_plot(args: argparse.Namespace) -> None:
    from .train.plot import plot_run

    print(f"wrote {plot_run(args.run_dir, args.out)}")


# ----------------------------------------------------------------------- plan
def cmd_plan(args: argparse.Namespace) -> None:
    from .config.overrides import parse_set
    from .plan.planner import plan_for

    print(plan_for(args.config, args.gpu, parse_set(args.set), args.model).render())


# --------------------------------------------------------------------- parser
# The stage commands: each is a module of commands/ with add_args() and run().
COMMANDS = {
    "pretrain": "phase 1: pretrain on the FineWeb-Edu/MedQA mixture (= python -m pure_transformer.run_train pretrain)",
    "rl": "phase 2: GRPO fine-tuning on multiple-choice questions (= python -m pure_transformer.run_train rl)",
    "evaluate": "MCQ accuracy of a checkpoint with 95% CIs (= python -m pure_transformer.evaluate)",
    "generate": "stream a completion (= python -m pure_transformer.generate)",
    "serve": "OpenAI-compatible HTTP server with a web page (= python -m pure_transformer.serve)",
    "export": "write a checkpoint as a Hugging Face LlamaForCausalLM folder",
    "import": "read a transformers Llama-3.x/SmolLM2, Qwen2.5 or Qwen3 checkpoint (a folder or hub name) "
              "into a checkpoint",
}
_MODULES = {"import": "import_weights"}
"""Commands whose module is not named after them (``import`` is a Python keyword)."""
BENCHMARKS = {
    "train": (".bench.train", "a pretraining step against transformers: tokens/s, MFU, peak memory, data wait"),
    "generate": (".bench.generate", "batched decoding against transformers generate: tokens/s, time to first token"),
    "rl-step": (".bench.rl_step", "one GRPO step split into generation, reference, policy, backward, optimizer"),
    "logp-gap": (".bench.logp_gap", "a bf16 sampler's log-probs against an fp32 and a bf16 trainer's"),
    "serve": (".bench.serve", "load on running servers (and a --baseline): requests/s, tokens/s, TTFT, latency"),
}


def _command_module(name: str) -> ModuleType:
    # Imported on use: `model info` should not pay for FastAPI, and each stage stays importable alone.
    return importlib.import_module(f".commands.{_MODULES.get(name, name)}", __package__)


USAGE = """\
Train a small language model from scratch and specialise it, with reinforcement
learning (GRPO), for medical multiple-choice questions. Everything runs offline
on the bundled data; --help on any command lists its flags.

typical run:
  pure-transformer tokenizer train --vocab-size 4096 --out runs/tok
  pure-transformer pretrain --config pretrain:demo --checkpoint-dir runs/pretrain --set tokenizer=runs/tok
  pure-transformer rl --checkpoint runs/pretrain --config rl:demo --checkpoint-dir runs/rl
  pure-transformer evaluate --checkpoint runs/rl --mode generate,cloze
  pure-transformer serve --checkpoint runs/rl          (http://127.0.0.1:8000)
  pure-transformer export --checkpoint runs/rl --out hf/
"""


def _add_parser(sub: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    # help= is %-formatted by argparse (so "95%" must be escaped there), description= is not.
    return sub.add_parser(name, help=text.replace("%", "%%"), description=text)


def _add(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], None],
         help: str) -> argparse.ArgumentParser:
    p = _add_parser(sub, name, help)
    p.set_defaults(func=func)
    return p


def build_parser(stages: Iterable[str] = (*COMMANDS, "bench")) -> argparse.ArgumentParser:
    """The whole command tree; only the stage commands in ``stages`` get their flags.

    A stage's flags live in its module, and importing one costs seconds (torch, FastAPI);
    :func:`main` therefore builds only the stage it is about to run. The others are listed
    in ``--help`` all the same.
    """
    parser = argparse.ArgumentParser(prog="pure-transformer", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    model = groups.add_parser("model", help="inspect model presets").add_subparsers(dest="cmd", required=True)
    p = _add(model, "info", cmd_model_info, "print a preset's config, exact parameter count and FLOPs/token")
    p.add_argument("preset", nargs="+", help="tiny | small | medium | medium-large (one or more)")

    tok = groups.add_parser("tokenizer", help="train a byte-level BPE").add_subparsers(dest="cmd", required=True)
    p = _add(tok, "train", cmd_tokenizer_train, "train a byte-level BPE and write DIR/tokenizer.json")
    p.add_argument("--input", nargs="*", default=None,
                   help="local files, folders, globs or hf:owner/name[:config]; default: the bundled corpus")
    p.add_argument("--vocab-size", type=int, default=50304, help="vocabulary size (default 50304; use 4096 for tiny)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--text-field", default="text", help="record field holding the text (jsonl/parquet/hub)")
    p.add_argument("--max-docs", type=int, default=None, help="stop reading after this many documents")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    data = groups.add_parser("data", help="inspect the data pipeline").add_subparsers(dest="cmd", required=True)
    p = _add(data, "preview", cmd_data_preview,
             "show decoded packed samples, tokens per source and the achieved mixture")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder, tokenizer.json or hub name")
    p.add_argument("--mixture", default=None, metavar="NAME:WEIGHT,...",
                   help="sources and weights (default: the debug mixture "
                        "bundled-general:0.5,bundled-medical:0.35,bundled-mcq:0.15); names: fineweb-edu, medqa, "
                        "medmcqa, bundled-general, bundled-medical, bundled-mcq, or a local path")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per packed block (default 256)")
    p.add_argument("--num-blocks", type=int, default=200, help="blocks to measure the mixture over")
    p.add_argument("--show", type=int, default=2, help="decoded blocks to print")
    p.add_argument("--weight-by", choices=["tokens", "documents"], default="tokens",
                   help="what the weights count (default tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--answer-format", choices=["letter", "text", "explain"], default="letter",
                   help="how MCQ records are written (the pretraining config's answer_format; default letter)")
    p = _add(data, "overlap", cmd_data_overlap, "n-gram overlap between a training stream and an eval split")
    p.add_argument("--train", required=True, help="training source name or path")
    p.add_argument("--eval", required=True, help="eval source name or path (an MCQ set)")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--n", type=int, default=13, help="n-gram length in words (default 13)")
    p.add_argument("--max-train-docs", type=int, default=100_000)
    p = _add(data, "export-bundled", cmd_data_export, "write the bundled offline corpus as jsonl files")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    # Commands that are also ``python -m pure_transformer.X``: each module has add_args() and run().
    for name, help in COMMANDS.items():
        p = _add_parser(groups, name, help)
        if name in stages:
            module = _command_module(name)
            module.add_args(p)
            p.set_defaults(func=module.run)

    bench = groups.add_parser("bench", help="benchmarks side by side with transformers").add_subparsers(
        dest="cmd", required=True)
    for name, (module_name, text) in BENCHMARKS.items():
        p = _add_parser(bench, name, text)
        if "bench" in stages:
            module = importlib.import_module(module_name, __package__)
            module.add_args(p)
            p.set_defaults(func=module.run)

    p = _add(groups, "plan", cmd_plan, "will a preset fit in a GPU's memory and finish in its hours? memory per "
             "component, FLOPs/token, the tokens/s and MFU its budget needs")
    p.add_argument("--config", default="a100_2day",
                   help="a pretraining preset (pretrain:a100_2day | pretrain:h200_1day | pretrain:debug | "
                        "pretrain:demo) or a GRPO one (rl:grpo_usmle_2day | rl:debug | rl:demo); a bare name is the "
                        "pretraining preset where both phases have it")
    p.add_argument("--gpu", default="a100-80gb", help="a100-80gb | h100-80gb | h200-141gb (default a100-80gb)")
    p.add_argument("--model", default=None, help="model preset (default: the config's; medium-large for GRPO)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="override one config field (repeatable), e.g. --set activation_checkpointing=selective")

    p = groups.add_parser("plot", help="plot a run's training curves to PNG")
    p.add_argument("run_dir", help="run folder (holding logs/metrics.jsonl)")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    # Our own warnings (a source that will repeat, a corrupt checkpoint skipped) are messages for the
    # user: one "warning:" line, not Python's file:line report with the source line under it.
    ours = category.__module__.startswith(__package__) or \
        Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent)
    if ours:
        print(f"warning: {message}", file=sys.stderr if file is None else file)
    else:
        _PYTHON_SHOW_WARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOW_WARNING = warnings.showwarning


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM before the command installed its own handler (a preemption during set-up).
    # Exit at once, as a kill would: raising here could land inside any library's bare
    # except (an import half done, a swallowed stop), and every write is atomic anyway.
    print("terminated (SIGTERM) before the command's own shutdown began; nothing was saved", file=sys.stderr,
          flush=True)
    os._exit(143)


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen handler; user mistakes become one ``error:`` line and status 2.

    SIGTERM is handled from the first instant: training replaces this handler with its
    save-and-stop one once its loop runs, the server with uvicorn's; before that a
    preemption exits at once, with one line and nothing half-written."""
    warnings.showwarning = _show_warning
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        args.func(args)
    except UserError as e:
        from .distributed.worker import hand_to_launcher

        if not hand_to_launcher(str(e)):  # under the launcher, it prints the first rank's line once
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = argv[0] if argv and (argv[0] in COMMANDS or argv[0] == "bench") else None
    return dispatch(build_parser(stages=(stage,) if stage else ()).parse_args(argv))


def command_main(name: str, argv: Sequence[str] | None = None) -> int:
    """The ``main()`` of ``python -m pure_transformer.{evaluate,generate,serve}``."""
    module = _command_module(name)
    parser = argparse.ArgumentParser(prog=f"python -m pure_transformer.{name}", description=COMMANDS[name])
    module.add_args(parser)
    parser.set_defaults(func=module.run)
    return dispatch(parser.parse_args(argv))


def run_train_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """``python -m pure_transformer.run_train``'s parser, with the flags of the phase ``argv`` runs
    (the launcher parses with it too, so a bad flag is one line from it, not one per rank)."""
    parser = argparse.ArgumentParser(prog="python -m pure_transformer.run_train",
                                     description="pretraining (phase 1) and GRPO (phase 2)")
    phases = parser.add_subparsers(dest="phase", required=True)
    for name in ("pretrain", "rl"):
        p = phases.add_parser(name, help=COMMANDS[name].split(" (=")[0])  # as before the move
        if not argv or argv[0] == name or argv[0].startswith("-"):  # build the phase that runs
            module = _command_module(name)
            module.add_args(p)
            p.set_defaults(func=module.run)
    return parser


def run_train_main(argv: Sequence[str] | None = None) -> int:
    """The ``main()`` of ``python -m pure_transformer.run_train pretrain|rl``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(run_train_parser(argv).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
