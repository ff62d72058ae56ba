"""Shared fixtures: the bundled offline corpus on disk and a tiny trained tokenizer.

``serving`` runs an app behind a real socket. The data fixtures are session-scoped
because they cost a second or two to build and every data test needs them.
``write_jsonl`` is a helper fixture for tests that need their own small files;
``random_checkpoint`` saves an untrained model with the tiny tokenizer, and
``exported`` is one such checkpoint with its ``pure-transformer export`` folder.
``pretrain_cli`` runs the small deterministic pretraining recipe of the multi-rank tests, and
``ddp_reference`` is its uninterrupted 2-rank DDP run, made once for the three tests that compare
a sharded, a stopped-and-resumed and a signalled run against it. ``run_train_error`` checks a
training command's one-line error in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def bundled():
    """The in-memory bundled corpus (seed 0), as the bundled-* sources see it."""
    from pure_transformer.bundled.synthetic import bundled_corpus

    return bundled_corpus(seed=0)


@pytest.fixture(scope="session")
def bundled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled corpus written as files: general.jsonl, medical.jsonl, medqa_{train,validation,test}.jsonl."""
    from pure_transformer.bundled.synthetic import write_bundled

    out = tmp_path_factory.mktemp("bundled")
    write_bundled(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory, bundled):
    """A 512-token byte-level BPE trained on the bundled text (fast to train, real merges)."""
    from pure_transformer.mcq.answer_format import AnswerFormat
    from pure_transformer.tokenizer.bpe import train_tokenizer

    texts = bundled.general + bundled.medical + [AnswerFormat.LETTER.pretrain_text(m) for m in bundled.mcq["train"]]
    return train_tokenizer(texts, 512, tmp_path_factory.mktemp("tok"), show_progress=False)


@pytest.fixture(scope="session")
def random_checkpoint(tiny_tokenizer) -> Callable[..., Path]:
    """``make(root, cfg, meta=None)``: a seeded random model of ``cfg`` saved as step 7 of an RL run under
    ``root`` (the tiny tokenizer beside it, answer format explain); returns the step folder."""
    import torch

    from pure_transformer.checkpoint.store import save_checkpoint, step_dir
    from pure_transformer.model.transformer import build_model

    def make(root: Path, cfg: Any, meta: dict | None = None) -> Path:
        torch.manual_seed(1)
        return save_checkpoint(step_dir(root / "run", 7), build_model(cfg).eval(),
                               {"kind": "rl", "step": 7, "model_config": cfg.to_dict(), "tokenizer": "tokenizer.json",
                                "answer_format": "explain", **(meta or {})},
                               files={"tokenizer.json": tiny_tokenizer.hf.to_str()})

    return make


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, random_checkpoint) -> tuple[Path, Path]:
    """(checkpoint, export folder): a random 2-layer model (grouped-query attention, 512-token context)
    exported with ``pure-transformer export``, for the tests that read it with transformers and lm-eval."""
    from pure_transformer.cli import main as cli_main
    from pure_transformer.model.config import ModelConfig

    root = tmp_path_factory.mktemp("export")
    cfg = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=512)
    ckpt = random_checkpoint(root, cfg)
    assert cli_main(["export", "--checkpoint", str(ckpt.parent), "--out", str(root / "hf")]) == 0
    return ckpt, root / "hf"


@pytest.fixture
def write_jsonl() -> Callable[[Path, Iterable[dict[str, Any]]], Path]:
    """Write records as JSON lines to a path (parents created); returns the path."""

    def write(path: Path, records: Iterable[dict[str, Any]]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        return path

    return write


@contextmanager
def _serving(app: Any, **config: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port (``config``: more uvicorn.Config
    settings); yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (server.started and server.servers):
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited during startup"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serving() -> Callable[[Any], Any]:
    """``with serving(app) as url:`` runs an ASGI app with uvicorn on a free loopback port."""
    return _serving


@pytest.fixture
def run_train_error(capsys: pytest.CaptureFixture) -> Callable[[list[str]], str]:
    """``run_train_error(argv)``: ``run_train``'s main() in this process must exit 2 with exactly one
    ``error:`` line on stderr; returns that line. (In-process saves ~3 s of imports a case; keep one
    real subprocess per command for the contract a shell sees.)"""
    from pure_transformer.run_train import main

    def run(argv: list[str]) -> str:
        code = main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, lines)
        return lines[0]

    return run


# 10 steps of the debug preset's tiny model (2,048 tokens a step), validation and checkpoints every 5
# (16 MCQs, 8 a rank on two: the 64 of the preset cost a third of a one-process run and are no better
# a check of the answers' gathering), deterministic kernels and one thread per rank: runs on any
# layout or launcher compare loss for loss.
PRETRAIN_SETS = ("total_tokens=20480", "micro_batch=4", "warmup_tokens=2048", "val_every=5", "ckpt_every=5",
                 "log_every=1", "val_tokens=4096", "val_mcq=16", "deterministic=true", "peak_lr=3e-3")


class PretrainCLI:
    """That recipe as a command line: one process for ``ranks=1``, else ``launcher`` with ``ranks`` CPU
    ranks (gloo); one data worker per process in all. Run it with ``env``: one thread per process."""

    def __init__(self, tokenizer: str) -> None:
        self.tokenizer = tokenizer
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def argv(self, run_dir: Path, ranks: int, *extra: str, launcher: str = "torch.distributed.run") -> list[str]:
        sets = [*PRETRAIN_SETS, f"tokenizer={self.tokenizer}", f"num_workers={2 // ranks}"]
        run_train = [sys.executable, "-m", "pure_transformer.run_train", "pretrain"]
        if ranks == 1:
            launch = run_train
        elif launcher == "pure_transformer.launch":  # the project's torchrun wrapper takes the phase name
            launch = [sys.executable, "-m", launcher, "--standalone", "--nproc-per-node", str(ranks), "pretrain"]
        else:
            launch = [sys.executable, "-m", launcher, "--standalone", "--nproc_per_node", str(ranks), *run_train[1:]]
        return [*launch, "--config", "debug", "--no-progress", "--checkpoint-dir", str(run_dir),
                *[a for s in sets for a in ("--set", s)], *extra]

    def run(self, run_dir: Path, ranks: int, *extra: str, launcher: str = "torch.distributed.run") -> None:
        """Run it; it must exit 0."""
        proc = subprocess.run(self.argv(run_dir, ranks, *extra, launcher=launcher), capture_output=True, text=True,
                              timeout=300, env=self.env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.fixture(scope="session")
def pretrain_cli(tiny_tokenizer) -> PretrainCLI:
    return PretrainCLI(tiny_tokenizer.source)


@pytest.fixture(scope="session")
def ddp_reference(tmp_path_factory: pytest.TempPathFactory, pretrain_cli) -> Path:
    """The ``pretrain_cli`` recipe on 2 DDP ranks, uninterrupted: its run folder."""
    run_dir = tmp_path_factory.mktemp("ddp_reference") / "run"
    pretrain_cli.run(run_dir, 2)
    return run_dir
