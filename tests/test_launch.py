"""``python -m pure_transformer.launch``: torchrun with the grace period as its
shutdown timeout, exit 0 when SIGTERM to torchrun itself made the run save or came
after it finished, one ``error:`` line and exit 2 for a user error on any rank, and
no worker outliving its agent."""

from __future__ import annotations

import argparse
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pure_transformer.checkpoint.store import RunLock, read_meta, resume_checkpoint
from pure_transformer.launch import shutdown_timeout, split_argv
from pure_transformer.train.logger import read_metrics


@pytest.mark.fast
def test_arguments_split_at_the_phase_and_the_timeout_follows_the_grace_period(monkeypatch) -> None:
    assert split_argv(["--standalone", "--nproc-per-node", "2", "rl", "--config", "debug"]) == (
        ["--standalone", "--nproc-per-node", "2"], ["rl", "--config", "debug"])
    # A phase's name as an option's value stays torchrun's; so do abbreviations and --opt=value.
    assert split_argv(["--rdzv-id", "rl", "--log-dir", "pretrain", "--rdzv_conf", "pretrain", "-r", "rl", "--nnod",
                       "1", "--standalone", "--role=rl", "pretrain", "--config", "debug"]) == (
        ["--rdzv-id", "rl", "--log-dir", "pretrain", "--rdzv_conf", "pretrain", "-r", "rl", "--nnod", "1",
         "--standalone", "--role=rl"], ["pretrain", "--config", "debug"])
    monkeypatch.delenv("PURE_TRANSFORMER_GRACE_S", raising=False)
    assert shutdown_timeout([]) == []  # torchrun's default
    monkeypatch.setenv("PURE_TRANSFORMER_GRACE_S", "300")
    assert shutdown_timeout(["--standalone"]) == ["--shutdown-timeout", "285"]
    assert shutdown_timeout(["--shutdown-timeout=60"]) == []  # an explicit choice wins
    monkeypatch.setenv("PURE_TRANSFORMER_GRACE_S", "10")
    assert shutdown_timeout([]) == ["--shutdown-timeout", "5"]


def test_bad_usage_is_one_line(tmp_path: Path) -> None:
    for argv, message in [(["--standalone"], "usage: python -m pure_transformer.launch"),
                          (["pretrain", "--checkpoint-dir", str(tmp_path)], "must be a number of seconds")]:
        env = {**os.environ, "PURE_TRANSFORMER_GRACE_S": "soon"}
        proc = subprocess.run([sys.executable, "-m", "pure_transformer.launch", *argv], capture_output=True,
                              text=True, timeout=60, env=env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def launch(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PURE_TRANSFORMER_GRACE_S", None)
    return subprocess.run([sys.executable, "-m", "pure_transformer.launch", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_one_error_line(proc: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2 (Kubernetes fails the Job at once), and stderr holds one ``error:`` line and no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("flag,value", [("--nproc-per-node", "0"), ("--nproc-per-node", "abc"), ("--nnodes", "2:1")])
def test_a_bad_node_or_process_count_is_one_line_and_exit_2(tmp_path: Path, flag: str, value: str) -> None:
    # torchrun itself: an AssertionError (0, 2:1) or a ValueError (abc) traceback, exit 1
    proc = launch("--standalone", "--nproc-per-node", "1", flag, value, "pretrain", "--config", "debug",
                  "--checkpoint-dir", str(tmp_path))
    assert_one_error_line(proc, f"{flag} must be")
    assert repr(value) in proc.stderr and not (tmp_path / "logs").exists()


@pytest.mark.fast
def test_torchrun_counts_it_accepts_pass_the_check() -> None:
    from torch.distributed.run import parse_args

    from pure_transformer.launch import check_torchrun_args

    for argv in (["--nproc-per-node", "2"], ["--nproc-per-node", "cpu"], ["--nproc-per-node", "auto"],
                 ["--nnodes", "1:4", "--nproc-per-node", "8"]):
        check_torchrun_args(parse_args([*argv, "-m", "pure_transformer.run_train", "pretrain"]))  # no SystemExit


def test_a_user_error_on_every_rank_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Both ranks reject the config: the launcher says so once and passes the 2 on."""
    proc = launch("--standalone", "--nproc-per-node", "2", "pretrain", "--config", "nope",
                  "--checkpoint-dir", str(tmp_path))
    assert_one_error_line(proc, "unknown pretrain preset 'nope'")
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: unknown pretrain preset")  # the last word
    # A bad flag of the phase is caught by the launcher before any worker starts.
    proc = launch("--standalone", "--nproc-per-node", "2", "pretrain", "--checkpoint-dir", str(tmp_path), "--bogus")
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "--bogus" in proc.stderr
    assert "Traceback" not in proc.stderr and "closing signal" not in proc.stderr


def test_a_full_disk_under_rank_0_is_one_line_without_rank_1s_traceback(tmp_path: Path, pretrain_cli) -> None:
    """Rank 0's first save fails (a file-size limit stands in for a full disk): its CheckpointError is the
    one line, and rank 1, whose barrier lost rank 0, keeps its gloo traceback out of stderr."""
    import resource

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # the logs fit, the weights do not

    env = {**pretrain_cli.env}
    env.pop("PURE_TRANSFORMER_GRACE_S", None)
    proc = subprocess.run(pretrain_cli.argv(tmp_path / "run", 2, launcher="pure_transformer.launch"),
                          capture_output=True, text=True, timeout=240, env=env, preexec_fn=limit_file_size)
    assert_one_error_line(proc, "could not write checkpoint to")
    assert "File too large" in proc.stderr and "[rank1]" not in proc.stderr, proc.stderr[-3000:]
    assert "closing signal" not in proc.stderr and "exitcode" not in proc.stderr  # torchrun's teardown lines


@pytest.mark.fast
def test_the_user_error_of_any_rank_is_the_one_printed(tmp_path: Path, monkeypatch, capsys) -> None:
    """A worker of the launcher (its parent's pid in PURE_TRANSFORMER_AGENT_PID) writes its error to
    torchrun's error file, not stderr; the launcher picks the rank that exited 2, not the one torchrun
    then stopped with SIGTERM, nor one that failed otherwise."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from pure_transformer.cli import dispatch
    from pure_transformer.errors import DataError
    from pure_transformer.launch import user_error

    def fails(args: object) -> None:
        raise DataError("no such file: corpus.jsonl")

    error_file = tmp_path / "1" / "error.json"
    error_file.parent.mkdir()
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    monkeypatch.setenv("PURE_TRANSFORMER_AGENT_PID", str(os.getppid()))
    assert dispatch(argparse.Namespace(func=fails)) == 2
    assert capsys.readouterr().err == ""  # left to the launcher
    failures = {0: ProcessFailure(0, 100, -15, str(tmp_path / "0" / "error.json")),
                1: ProcessFailure(1, 101, 2, str(error_file))}
    assert user_error(failures) == (True, "no such file: corpus.jsonl")
    assert user_error({0: failures[0]}) == (False, None)
    assert user_error({0: ProcessFailure(0, 100, 2, str(tmp_path / "none"))}) == (True, None)  # it printed itself

    monkeypatch.setenv("PURE_TRANSFORMER_AGENT_PID", "1")  # not our parent: plain torchrun, or a grandchild
    error_file.unlink()
    assert dispatch(argparse.Namespace(func=fails)) == 2
    assert capsys.readouterr().err == "error: no such file: corpus.jsonl\n" and not error_file.exists()


def children(pid: int) -> list[int]:
    return [int(c) for task in glob.glob(f"/proc/{pid}/task/*/children") for c in Path(task).read_text().split()]


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds processes through /proc (Linux)")


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie (an orphan's new parent may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.mark.slow
@needs_proc
def test_kill_9_of_the_launcher_takes_its_workers_with_it(tmp_path: Path, tiny_tokenizer) -> None:
    """A preempted node's agent dies by SIGKILL: its workers get SIGTERM from the kernel, save as on a
    preemption and exit within seconds, so the run lock is free for the replacement."""
    run_dir = tmp_path / "run"
    log = (tmp_path / "launch.log").open("w")  # a file: a pipe nobody reads would block the orphans' prints
    proc = subprocess.Popen(
        [sys.executable, "-m", "pure_transformer.launch", "--standalone", "--nproc-per-node", "2", "pretrain",
         "--config", "debug", "--no-progress", "--set", f"tokenizer={tiny_tokenizer.source}",
         "--set", "total_tokens=100000000", "--set", "micro_batch=4", "--set", "val_every=100000",
         "--set", "ckpt_every=100000", "--set", "log_every=1", "--set", "val_tokens=4096",
         "--checkpoint-dir", str(run_dir)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while not (run_dir / "logs/metrics.jsonl").exists() or max(losses(run_dir), default=0) < 2:
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "launch.log").read_text()[-3000:]
            time.sleep(0.1)
        workers = children(proc.pid)
        assert len(workers) == 2 and all(map(alive, workers))
        proc.kill()
        proc.wait(timeout=10)
        killed = time.time()
        while any(map(alive, workers)) and time.time() < killed + 10:
            time.sleep(0.1)
        assert not any(map(alive, workers)), "workers outlived their agent by 10 s"
        with RunLock(run_dir):  # free: the orphans held it until they exited
            pass
        saved = resume_checkpoint(run_dir, "auto")
        assert saved is not None, (tmp_path / "launch.log").read_text()[-3000:]
        meta = read_meta(saved)
        assert meta["stopped"] == "signal" and meta["step"] >= 2  # they saved, as on a preemption
    finally:
        for pid in filter(alive, workers):  # before the fix: stop the orphans this test made
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        log.close()


ORPHAN = """
import os, signal, sys, time
from pure_transformer.distributed import worker as launch_worker
if sys.argv[1] == "watchdog-only":  # what a system without PR_SET_PDEATHSIG gets
    launch_worker._set_parent_death_signal = lambda signum: False
launch_worker.follow_agent(poll_s=100 if sys.argv[1] == "pdeathsig" else 0.1)  # 100: only the kernel is in time
def on_term(signum, frame):
    print("SIGTERM", flush=True)
    if sys.argv[1] != "stuck":  # a run that saves and exits; "stuck" never gets there
        os._exit(0)
signal.signal(signal.SIGTERM, on_term)
print(os.getpid(), flush=True)
time.sleep(60)
"""
AGENT = """
import subprocess, sys, time
out = open(sys.argv[2], "w")
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[3]], stdout=out, stderr=subprocess.STDOUT)
while not open(sys.argv[2]).read().strip():
    time.sleep(0.05)
"""  # exits as soon as the worker runs: to the worker, its agent died


@pytest.mark.fast
@needs_proc
@pytest.mark.parametrize("mode", ["pdeathsig", "watchdog-only", "stuck"])
def test_an_orphaned_worker_is_signalled_then_killed(tmp_path: Path, mode: str) -> None:
    """The kernel's SIGTERM, or the watchdog's where there is none; a worker that does not stop
    is killed after the shutdown timeout the launcher passed down (1 s here)."""
    out = tmp_path / "worker.out"
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test", "PURE_TRANSFORMER_SHUTDOWN_S": "1"}
    for name in ("PURE_TRANSFORMER_AGENT_PID", "PURE_TRANSFORMER_FOLLOWS_AGENT"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-c", AGENT, ORPHAN, str(out), mode], env=env, timeout=60, check=True)
    worker = int(out.read_text().split()[0])
    deadline = time.time() + 10
    while alive(worker) and time.time() < deadline:
        time.sleep(0.05)
    if alive(worker):
        os.kill(worker, signal.SIGKILL)
    lines = out.read_text().split("\n")
    assert not alive(worker) and lines[1] == "SIGTERM", lines  # one SIGTERM, not a second "stop now"
    assert ("did not stop within 1 s; killing it" in out.read_text()) == (mode == "stuck")


REPEATED_DEATH = """
import os, signal, time
from pure_transformer.distributed import worker as launch_worker
launch_worker.follow_agent(poll_s=100)
terms = []
signal.signal(signal.SIGTERM, lambda *_: terms.append(1))
for _ in range(3):  # the kernel repeats the signal as the worker passes through the dying agent's threads
    os.kill(os.getpid(), launch_worker.AGENT_DEATH_SIGNAL)
    time.sleep(0.05)
time.sleep(0.2)
print(len(terms))
"""


@pytest.mark.fast
def test_the_agent_death_signal_repeated_is_one_sigterm(tmp_path: Path) -> None:
    # Two SIGTERMs would be "stop now" to the trainer, which then dies without saving (seen under kill -9).
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test"}
    for name in ("PURE_TRANSFORMER_AGENT_PID", "PURE_TRANSFORMER_FOLLOWS_AGENT"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", REPEATED_DEATH], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["1"], out.stdout + out.stderr


@pytest.mark.fast
def test_sigterm_after_the_run_finished_exits_0_and_says_so(tmp_path: Path, tiny_tokenizer, monkeypatch,
                                                             capsys) -> None:
    """The signal lands after the last save (the workers were exiting): nothing was lost, exit 0.
    torchrun itself runs here in-process, so a stand-in for it writes a real run and is signalled."""
    import torch
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from pure_transformer.config.overrides import apply_overrides
    from pure_transformer.config.pretrain import debug
    from pure_transformer.launch import main
    from pure_transformer.model.config import ModelConfig
    from pure_transformer.model.transformer import build_model
    from pure_transformer.train.pretrain import pretrain

    run_dir = tmp_path / "run"
    cfg = apply_overrides(debug(), dict(tokenizer=tiny_tokenizer.source, seq_len=64, micro_batch=4,
                                        global_batch_tokens=256, total_tokens=256 * 3, warmup_tokens=256,
                                        val_every=3, val_tokens=256, ckpt_every=3, shuffle_buffer=64))
    model = ModelConfig(vocab_size=512, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=64)

    def finish_then_signal(args: object) -> None:
        torch.manual_seed(0)
        assert pretrain(cfg, run_dir, model=build_model(model), progress=False).stopped is None
        raise SignalException("Process got signal: 15", signal.SIGTERM)

    def signal_only(args: object) -> None:
        raise SignalException("Process got signal: 15", signal.SIGTERM)

    for name in ("PURE_TRANSFORMER_AGENT_PID", "PURE_TRANSFORMER_SHUTDOWN_S"):
        monkeypatch.setenv(name, "")  # main() sets them for its workers; undone after the test
    argv = ["--standalone", "--nproc-per-node", "1", "pretrain", "--config", "debug", "--checkpoint-dir",
            str(run_dir), "--resume"]
    monkeypatch.setattr(torchrun, "run", finish_then_signal)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 0, err
    assert "launch: SIGTERM arrived after the run had finished (step 3)" in err and "before the run" not in err

    monkeypatch.setattr(torchrun, "run", signal_only)  # a later launch, signalled before it saved anything
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 143 and "before the run could save" in capsys.readouterr().err


FAKE_TORCHRUN = """
import signal, sys
from datetime import timedelta
import torch.distributed as dist
import torch.distributed.run
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.rendezvous.utils import _PeriodicTimer
from pure_transformer.launch import main

def run(args):  # torchrun, signalled: its rendezvous keep-alive timer is left calling the store
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=5))
    store.set("k", "v")
    timer = _PeriodicTimer(timedelta(0), store.get, "k")  # every instant, where torchrun's waits 5 s
    timer.start()
    run.alive = store, timer
    raise SignalException("SIGTERM", sigval=signal.SIGTERM)

torch.distributed.run.run = run
main(["--standalone", "--nproc-per-node", "1", "pretrain", "--checkpoint-dir", sys.argv[1]])
"""


def test_the_launcher_exits_cleanly_with_torchruns_keep_alive_thread_left_running(tmp_path: Path) -> None:
    """After a signal torchrun leaves its rendezvous keep-alive thread running; one inside a store call
    when the interpreter finalized made the launcher abort ("terminate called without an active
    exception", 134 instead of 0, about 1 stop in 17). Here the thread is always in a store call, so
    the abort is certain unless the launcher stops it first."""
    script = tmp_path / "fake_torchrun.py"
    script.write_text(FAKE_TORCHRUN)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]  # nothing saved: 143, not 134
    assert proc.stderr.strip().splitlines()[-1] == "launch: stopped on SIGTERM before the run could save"
    assert "terminate called" not in proc.stderr


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "logs" / "metrics.jsonl") if "loss" in r}


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_exits_0_and_resumes_exactly(tmp_path: Path, pretrain_cli, ddp_reference) -> None:
    """Kubernetes signals PID 1, which is torchrun, not the workers: the workers
    finish their step and save, and the launcher exits 0 (plain torchrun exits 1).
    The resumed run logs the same losses as the shared uninterrupted 2-rank run."""
    total = max(losses(ddp_reference))
    env = {**pretrain_cli.env, "PURE_TRANSFORMER_GRACE_S": "60"}
    split = tmp_path / "split"
    # One data worker a rank, as the reference: torchrun's SIGTERM reaches the workers' process group
    # too, and a data worker that died of it took its rank down (exit 143, nothing saved).
    launch = []
    proc = subprocess.Popen(pretrain_cli.argv(split, 2, *launch, launcher="pure_transformer.launch"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (split / "logs/metrics.jsonl").exists() or max(losses(split), default=0) < 2:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be signalled"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the launcher, i.e. torchrun's agent, only
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert "stopped on SIGTERM; the run saved a checkpoint" in err
    ckpt = resume_checkpoint(split, "auto")
    meta = read_meta(ckpt)
    assert meta["stopped"] == "signal" and 2 <= meta["step"] < total and not meta["complete"]

    resumed = subprocess.run(pretrain_cli.argv(split, 2, *launch, "--resume", launcher="pure_transformer.launch"),
                             capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(split) == losses(ddp_reference) and len(losses(split)) == total


@pytest.mark.fast
def test_a_step_plus_a_save_longer_than_the_grace_period_is_said_once(monkeypatch) -> None:
    from pure_transformer.distributed.runtime import GraceCheck

    monkeypatch.delenv("PURE_TRANSFORMER_GRACE_S", raising=False)
    assert GraceCheck().observe(step_s=1e6, save_s=1e6) is None  # no grace period known: nothing to say
    monkeypatch.setenv("PURE_TRANSFORMER_GRACE_S", "300")
    check = GraceCheck()
    assert check.observe(step_s=200) is None  # no save seen yet
    assert check.observe(save_s=50) is None and check.observe(step_s=240) is None  # 240 + 50 fits in 300
    warning = check.observe(step_s=280)
    assert warning is not None and warning.startswith("warning: a step (280 s) plus a checkpoint (50 s)")
    assert "300 s grace period" in warning and check.observe(step_s=400) is None  # said once
