"""Benchmark: how often SIGTERM to the launcher after a save-able step exits 0, over N tries.

The scenario of ``tests/test_launch.py::test_sigterm_to_torchrun_saves_exits_0_and_resumes_exactly``
without the resume: ``python -m pure_transformer.launch --standalone --nproc-per-node 2 pretrain``
on the debug preset (CPU, gloo), SIGTERM to the launcher once two steps are logged, then the
launcher must save, print ``launch: stopped on SIGTERM`` and exit 0. A run that exits otherwise
is printed with the tail of its stderr (``terminate called without an active exception`` and
134 was the failure this counts: torchrun's rendezvous keep-alive thread still running while the
interpreter shut down). Not a test, as it takes minutes; run it by hand:

    .venv/bin/python bench/bench_launcher_sigterm.py --tries 30
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pure_transformer.train.logger import read_metrics

# tests/conftest.py's PRETRAIN_SETS: 5 tokens-steps of a tiny debug model, a checkpoint every 5 steps.
SETS = ("total_tokens=20480", "micro_batch=4", "warmup_tokens=2048", "val_every=5", "ckpt_every=5", "log_every=1",
        "val_tokens=4096", "val_mcq=16", "deterministic=true", "peak_lr=3e-3")


def logged_steps(run_dir: Path) -> int:
    """The newest training step in the run's metrics (0 before the first)."""
    metrics = run_dir / "logs" / "metrics.jsonl"
    if not metrics.exists():
        return 0
    return max((r["step"] for r in read_metrics(metrics) if "loss" in r), default=0)


def one_try(run_dir: Path, tokenizer: Path, ranks: int, after_steps: int, jitter_s: float) -> tuple[int, str]:
    """One launch, SIGTERM once ``after_steps`` steps are logged (plus up to ``jitter_s`` of random
    delay, so the signal lands at different moments); (exit status, stderr)."""
    argv = [sys.executable, "-m", "pure_transformer.launch", "--standalone", "--nproc-per-node", str(ranks),
            "pretrain", "--config", "debug", "--no-progress", "--checkpoint-dir", str(run_dir),
            *[a for s in (*SETS, f"tokenizer={tokenizer}", f"num_workers={max(1, 2 // ranks)}") for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PURE_TRANSFORMER_GRACE_S": "60"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while logged_steps(run_dir) < after_steps:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            return -1, "the run ended (or hung) before it could be signalled:\n" + (proc.communicate()[1] or "")
        time.sleep(0.05)
    time.sleep(random.uniform(0, jitter_s))
    proc.send_signal(signal.SIGTERM)  # to the launcher only, as Kubernetes signals PID 1
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=30)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--after-steps", type=int, default=2, help="signal once this many steps are logged")
    parser.add_argument("--jitter-s", type=float, default=1.0, help="up to this much more random delay")
    args = parser.parse_args()

    from itertools import islice

    from pure_transformer.bundled.synthetic import training_texts
    from pure_transformer.tokenizer.bpe import train_tokenizer

    with tempfile.TemporaryDirectory(prefix="bench_sigterm_") as tmp:
        tokenizer = Path(tmp) / "tok"
        train_tokenizer(islice(training_texts(), 2000), 512, tokenizer, show_progress=False)
        clean = 0
        for i in range(args.tries):
            start = time.perf_counter()
            code, err = one_try(Path(tmp) / f"run{i}", tokenizer, args.ranks, args.after_steps, args.jitter_s)
            ok = code == 0 and "stopped on SIGTERM; the run saved a checkpoint" in err
            clean += ok
            print(f"try {i + 1:>3}: exit {code} ({time.perf_counter() - start:.1f} s){'' if ok else ' FAILED'}",
                  flush=True)
            if not ok:
                print("  " + "\n  ".join(err.strip().splitlines()[-8:]), flush=True)
        print(f"{clean} of {args.tries} exited 0 after saving on SIGTERM ({args.ranks} ranks)")
        sys.exit(0 if clean == args.tries else 1)


if __name__ == "__main__":
    main()
