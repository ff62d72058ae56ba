"""k8s/deploy.sh renders valid, preemption-safe Job manifests (checked with --dry-run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "k8s" / "deploy.sh"


def render(phase: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DEPLOY), phase, "--dry-run"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_pretrain_job_resumes_and_saves_on_sigterm() -> None:
    proc = render("pretrain", RUN="run-1", IMAGE="registry/pt:1", EXTRA_ARGS="--set micro_batch=8")
    assert proc.returncode == 0, proc.stderr
    job = yaml.safe_load(proc.stdout)
    assert job["kind"] == "Job" and job["metadata"]["name"] == "pure-transformer-run-1"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "pure_transformer.run_train", "pretrain"]
    args = container["args"]
    assert args[args.index("--checkpoint-dir") + 1] == "/data/runs/run-1" and "--resume" in args
    assert args[-2:] == ["--set", "micro_batch=8"] and args[args.index("--config") + 1] == "a100_2day"
    assert container["image"] == "registry/pt:1" and container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["terminationGracePeriodSeconds"] >= 60 and pod["restartPolicy"] == "OnFailure"


def test_multi_gpu_pretrain_uses_torchrun_and_rl_refuses() -> None:
    job = yaml.safe_load(render("pretrain", RUN="big", GPUS="8").stdout)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:4] == [
        "torchrun", "--standalone", "--nproc_per_node", "8"]
    rl = yaml.safe_load(render("rl", RUN="rl-1").stdout)["spec"]["template"]["spec"]["containers"][0]
    assert rl["command"][-1] == "rl" and "--checkpoint" in rl["args"] and "--task" in rl["args"]
    proc = render("rl", GPUS="2")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: rl runs in one process; set GPUS=1 (got 2)"
    proc = render("finetune")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "usage" in proc.stderr
