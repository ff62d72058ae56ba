"""The command line: model info, tokenizer train, data preview/overlap, and one
clear line (exit 2, no traceback) for every user mistake."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pure_transformer.cli import main
from pure_transformer.model.config import MODEL_PRESETS, model_preset
from pure_transformer.model.transformer import Transformer


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]


@pytest.mark.fast
@pytest.mark.parametrize("preset", list(MODEL_PRESETS))
def test_model_info_prints_exact_count(capsys: pytest.CaptureFixture, preset: str) -> None:
    code, out, _ = run_cli(capsys, "model", "info", preset)
    assert code == 0
    count = int(re.search(r"^parameters: (\d+)$", out, re.M).group(1))
    with torch.device("meta"):
        assert count == Transformer(model_preset(preset)).num_params()
    assert re.search(r"^flops_per_token: \d+", out, re.M)
    if preset == "medium-large":
        assert 350_000_000 <= count <= 450_000_000


def test_tokenizer_train_default_corpus_and_preview(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    # Without --quiet, and not on a terminal (pytest's capture): no progress bar's blank lines, and the path
    # said once, however --out was written.
    code, out, err = run_cli(capsys, "tokenizer", "train", "--vocab-size", "600", "--out", f"{tmp_path / 'tok'}/")
    assert code == 0 and (tmp_path / "tok" / "tokenizer.json").exists()
    assert out == f"wrote {tmp_path / 'tok' / 'tokenizer.json'} (vocab 600, eot=0, pad=1)\n" and err == ""
    code, out, _ = run_cli(capsys, "data", "preview", "--tokenizer", str(tmp_path / "tok"), "--seq-len", "64",
                           "--num-blocks", "1600", "--show", "1")  # 100 rows in each of the 16 logical shards
    assert code == 0
    assert "=== block 0 (64 tokens) ===" in out and "<|endoftext|>" in out
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^(bundled-\w+)\s+([\d.]+)\s+([\d.]+)", out, re.M)}
    assert set(rows) == {"bundled-general", "bundled-medical", "bundled-mcq"}
    for target, achieved in rows.values():
        assert abs(target - achieved) < 0.02


@pytest.mark.fast
def test_data_overlap_reports(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(capsys, "data", "overlap", "--train", "bundled-general", "--eval", "bundled-mcq",
                           "--eval-split", "test", "--n", "13")
    assert code == 0 and "13-gram overlap" in out and "400 eval items" in out


@pytest.mark.fast
def test_user_mistakes_are_one_line(capsys: pytest.CaptureFixture, tmp_path: Path, tiny_tokenizer) -> None:
    tok = tiny_tokenizer.source
    assert_one_line_error(*run_cli(capsys, "model", "info", "huge")[::2], "unknown model preset 'huge'")
    assert_one_line_error(*run_cli(capsys, "tokenizer", "train", "--input", str(tmp_path / "nope.jsonl"),
                                   "--out", str(tmp_path / "t"))[::2], "nope.jsonl")
    bad_tok = tmp_path / "bad" / "tokenizer.json"
    bad_tok.parent.mkdir()
    bad_tok.write_bytes(b"\x00garbage{")
    assert_one_line_error(*run_cli(capsys, "data", "preview", "--tokenizer", str(bad_tok.parent))[::2],
                          "not a valid tokenizer.json")
    assert_one_line_error(*run_cli(capsys, "data", "preview", "--tokenizer", tok, "--mixture", "wikipedia:1")[::2],
                          "unknown dataset 'wikipedia'")
    assert_one_line_error(*run_cli(capsys, "pretrain", "--checkpoint-dir", str(tmp_path / "pt"), "--set",
                                   "answer_format=vibes")[::2],
                          "answer_format must be one of letter, text, explain, got 'vibes'")

    def mcq_file(name: str, record: dict) -> str:
        path = tmp_path / name
        path.write_text(json.dumps(record) + "\n")
        return str(path)

    eleven = mcq_file("eleven_train.jsonl", {"question": "Q?", "options": {k: k.lower() for k in "ABCDEFGHIJK"},
                                       "answer_idx": "A", "answer": "a"})
    assert_one_line_error(*run_cli(capsys, "data", "preview", "--tokenizer", tok, "--mixture", f"{eleven}:1")[::2],
                          "11 option(s)")
    gap = mcq_file("gap_train.jsonl", {"question": "Q?", "options": {"A": "a", "B": "b", "D": "d"}, "answer_idx": "A",
                                 "answer": "a"})
    assert_one_line_error(*run_cli(capsys, "data", "preview", "--tokenizer", tok, "--mixture", f"{gap}:1")[::2],
                          "lettered from A in order")
    missing = mcq_file("missing.jsonl", {"options": {k: k for k in "ABCD"}, "answer_idx": "A", "answer": "A"})
    assert_one_line_error(*run_cli(capsys, "data", "preview", "--tokenizer", tok, "--mixture", f"{missing}:1")[::2],
                          "question")


def test_console_script_entry_points() -> None:
    for argv in (["-m", "pure_transformer", "model", "info", "nope"], ["-m", "pure_transformer.run_train", "--help"]):
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pure_transformer", "model", "info", "nope"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: unknown model preset 'nope'; choose one of: tiny, small, medium, medium-large, smollm2-360m, "
        "qwen2.5-0.5b, qwen3-0.6b, llama3.2-1b")


# Every command and flag of the public interface. A new flag is a deliberate decision: add it here.
FROZEN_FLAGS = {
    "bench generate": "--batch --compile --device --model --new-tokens --no-compile --prompt-len --repeats "
                      "--samples-per-prompt --threads",
    "bench rl-step": "--checkpoint --config --device --model --set --steps --threads",
    "bench logp-gap": "--checkpoint --device --max-new-tokens --model --prompts --samples --threads",
    "bench serve": "--api-key --baseline --clients --max-tokens --profile --requests-per-client --seed "
                   "--sequential --shared-prefix --stream-share --url",
    "bench train": "--activation-checkpointing --compile --device --micro-batch --model --no-compile --num-workers "
                   "--peak-tflops --repeats --seq-len --steps --threads",
    "data export-bundled": "--out --seed",
    "data overlap": "--eval --eval-split --max-train-docs --n --train",
    "data preview": "--answer-format --mixture --num-blocks --seed --seq-len --show --tokenizer --weight-by",
    "evaluate": "--allow-partial-baseline --baseline --batch-size --by --checkpoint --data-dir --data-path --device --first "
                "--format --include-contaminated --k --limit --max-new-tokens --mode --no-progress --output "
                "--precision --rotate --save-generations --seed --split --strict --suite --task",
    "export": "--checkpoint --out --report",
    "import": "--out",
    "generate": "--checkpoint --device --max-new-tokens --prompt --seed --stop --temperature --top-k --top-p",
    "model info": "",
    "plan": "--config --gpu --model --set",
    "plot": "--out",
    "pretrain": "--checkpoint-dir --config --config-file --device --init-from --log-every --model --no-progress "
                "--num-workers --print-config --resume --set --stop-at-step",
    "rl": "--checkpoint --checkpoint-dir --config --config-file --data-path --device --no-progress --print-config "
          "--resume --set --stop-at-step --task --val-data-path",
    "serve": "--api-key --checkpoint --device --host --kv-cache-tokens --max-queue --max-running-rows --max-tokens "
             "--name --port --queue-timeout --shutdown-timeout",
    "tokenizer train": "--input --max-docs --out --quiet --text-field --vocab-size",
}


@pytest.mark.fast
def test_cli_surface_is_frozen() -> None:
    import argparse

    from pure_transformer.cli import build_parser

    def leaves(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, str]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return {prefix: " ".join(sorted(o for a in parser._actions for o in a.option_strings
                                            if o.startswith("--") and o != "--help"))}
        return {k: v for name, sub in subs[0].choices.items() for k, v in leaves(sub, f"{prefix} {name}".strip()).items()}

    assert leaves(build_parser()) == FROZEN_FLAGS


def test_commands_import_only_what_they_run() -> None:
    # `--help` answers without torch, and `model info` without FastAPI or datasets: the CLI builds
    # only the stage it runs (each import costs seconds on a CPU machine).
    probe = ("import sys\nfrom pure_transformer.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('loaded:', *(m for m in ('torch', 'datasets', 'fastapi') if m in sys.modules))")
    for argv, loaded in ((["--help"], "loaded:"), (["model", "info", "tiny"], "loaded: torch")):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == loaded


@pytest.mark.fast
@pytest.mark.parametrize("command", ["pretrain", "rl"])
def test_print_config_round_trips_through_config_file(command: str, tmp_path, capsys) -> None:
    import yaml

    from pure_transformer.cli import main as cli_main

    run = ["--checkpoint-dir", str(tmp_path / "run")]
    assert cli_main([command, "--config", "demo", "--set", "seed=7", *run, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["seed"] == 7 and not (tmp_path / "run").exists()
    (tmp_path / "cfg.yaml").write_text(printed)
    # from the other preset: the file alone gives back every value
    assert cli_main([command, "--config-file", str(tmp_path / "cfg.yaml"), *run, "--print-config"]) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.fast
def test_own_warnings_are_one_line(capsys) -> None:
    import warnings

    from pure_transformer.cli import dispatch
    from pure_transformer.data.mixing import DataRepeatWarning

    def handler(_args) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("bundled-mcq would repeat ~40x over 2M tokens", DataRepeatWarning, stacklevel=1)

    assert dispatch(argparse.Namespace(func=handler)) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and err.count("\n") == 1 and ".py:" not in err


@pytest.mark.fast
def test_sigterm_during_set_up_is_one_line() -> None:
    import signal
    import time

    # The tokenizer load and model build take seconds: a preemption there exits cleanly.
    code = ("import os, signal, sys, threading\nfrom pure_transformer.cli import main\n"
            "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
            "sys.exit(main(['pretrain', '--config', 'debug', '--checkpoint-dir', sys.argv[1], '--no-progress']))")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", code, tmp + "/run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("terminated (SIGTERM)")
    assert time.monotonic() - start < 60 and signal.SIGTERM == 15


def readme_commands() -> list[str]:
    """Every ``pure-transformer`` and ``python -m pure_transformer.X`` line of the README's shell blocks
    (continuations joined, comments dropped)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("pure-transformer ", "python -m pure_transformer")):
                lines.append(line)
    return lines


@pytest.mark.fast
def test_every_readme_command_parses() -> None:
    """The README walk: each command a newcomer copies has flags its command takes (parsed by the real
    parsers, not run)."""
    import argparse
    import shlex

    from pure_transformer.cli import COMMANDS, _command_module, build_parser, run_train_parser

    commands = readme_commands()
    assert len(commands) >= 25 and any(c.startswith("pure-transformer plan ") for c in commands)
    for line in commands:
        argv = shlex.split(line)
        if argv[0] == "pure-transformer":
            stage = argv[1] if argv[1] in COMMANDS or argv[1] == "bench" else None
            build_parser(stages=(stage,) if stage else ()).parse_args(argv[1:])
        elif argv[2] == "pure_transformer.run_train":
            run_train_parser(argv[3:]).parse_args(argv[3:])
        elif argv[2] == "pure_transformer.launch":
            from pure_transformer.launch import split_argv

            _, phase_argv = split_argv(argv[3:])
            run_train_parser(phase_argv).parse_args(phase_argv)
        else:
            name = argv[2].removeprefix("pure_transformer.")
            parser = argparse.ArgumentParser()
            _command_module(name).add_args(parser)
            parser.parse_args(argv[3:])
