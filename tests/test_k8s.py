"""Kubernetes manifests (pure_transformer.deploy, k8s/deploy.sh): schema-valid, preemption-safe,
chained run folders, hostile values refused or carried verbatim, kubectl driven as documented.

Schema checks deserialize each object into the official ``kubernetes`` client models (which
refuse missing required fields) and serialize it back: a misspelt field would be dropped and a
retyped value changed, so the round trip must give the same dict. They skip when the package
is absent; everything else needs only PyYAML.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pure_transformer.commands import deploy as command
from pure_transformer.deploy.manifests import Settings, dump, render
from pure_transformer.errors import ConfigError

try:
    from kubernetes.client import ApiClient
except ImportError:  # the dev extra brings it
    ApiClient = None

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "k8s" / "deploy.sh"
BASH = shutil.which("bash") or "/bin/bash"  # looked up now: some tests run with a PATH without it
needs_kubernetes = pytest.mark.skipif(
    ApiClient is None, reason="the kubernetes package is not installed (pip install -e '.[dev]'): schema checks skipped")
MODELS = {"PersistentVolumeClaim": "V1PersistentVolumeClaim", "Job": "V1Job", "Deployment": "V1Deployment",
          "Service": "V1Service"}


class _Response:  # what ApiClient.deserialize reads: a response with a JSON body
    def __init__(self, obj: Any) -> None:
        self.data = json.dumps(obj)


def check_schema(obj: dict, model: str) -> None:
    client = ApiClient()
    # Clients before v33 read a response object; later ones take its text and content type.
    if "response_text" in inspect.signature(client.deserialize).parameters:
        parsed = client.deserialize(json.dumps(obj), model, "application/json")
    else:
        parsed = client.deserialize(_Response(obj), model)  # raises ValueError on a missing required field
    assert client.sanitize_for_serialization(parsed) == obj, f"{model}: a field is unknown or has the wrong type"


def check_pytorch_job(obj: dict) -> None:
    """The kubeflow.org/v1 PyTorchJob CRD's required fields; each pod template against V1PodTemplateSpec."""
    assert obj["apiVersion"] == "kubeflow.org/v1" and obj["kind"] == "PyTorchJob"
    assert isinstance(obj["spec"]["nprocPerNode"], str)
    replicas = obj["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for spec in replicas.values():
        assert isinstance(spec["replicas"], int) and spec["restartPolicy"] in ("Always", "OnFailure", "Never", "ExitCode")
        check_schema(spec["template"], "V1PodTemplateSpec")
        assert [c["name"] for c in spec["template"]["spec"]["containers"]] == ["pytorch"]  # the operator's name


def objects(**kw: Any) -> dict[str, dict]:
    """The rendered objects of one phase by kind, after a YAML round trip (what kubectl would read)."""
    docs = list(yaml.safe_load_all(dump(render(Settings(**kw)))))
    return {d["kind"]: d for d in docs}


def train_container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


CASES = [dict(phase="pretrain"), dict(phase="pretrain", gpus=8, run="big"), dict(phase="rl", gpus=2),
         dict(phase="eval", gpus=0), dict(phase="serve", api_key_secret="serve-key", replicas=2),
         dict(phase="pretrain", nodes=3, gpus=8, storage_class="cephfs"), dict(phase="rl", nodes=2, gpus=4)]


@pytest.mark.fast
@needs_kubernetes
@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_every_rendered_object_matches_the_kubernetes_schema(kw: dict) -> None:
    rendered = objects(**kw)
    for kind, obj in rendered.items():
        check_pytorch_job(obj) if kind == "PyTorchJob" else check_schema(obj, MODELS[kind])
    assert "PersistentVolumeClaim" in rendered


@pytest.mark.fast
@needs_kubernetes
def test_schema_check_catches_a_missing_field_and_a_misspelt_one() -> None:
    job = objects(phase="pretrain")["Job"]
    del train_container(job)["name"]
    with pytest.raises(ValueError, match="name"):
        check_schema(job, "V1Job")
    job = objects(phase="pretrain")["Job"]
    job["spec"]["template"]["spec"]["terminationGracePeriod"] = 300
    with pytest.raises(AssertionError, match="unknown"):
        check_schema(job, "V1Job")


@pytest.mark.fast
def test_training_job_resumes_and_survives_preemption() -> None:
    job = objects(phase="pretrain", image="registry/pt:1", grace_s=450)["Job"]
    assert job["metadata"]["name"] == "pure-transformer-pretrain"
    pod = job["spec"]["template"]["spec"]
    c = train_container(job)
    assert c["command"] == ["tini", "--", "python", "-m", "pure_transformer.deploy.requeue",
                            "python", "-m", "pure_transformer.run_train", "pretrain"]
    assert "--resume" in c["args"] and flag(c["args"], "--checkpoint-dir") == "/data/runs/pretrain"
    assert c["image"] == "registry/pt:1" and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in c["env"]}
    assert pod["terminationGracePeriodSeconds"] == 450 and env["PURE_TRANSFORMER_GRACE_S"]["value"] == "450"
    assert env["HF_HOME"]["value"].startswith("/data/")
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token", "optional": True}
    # podFailurePolicy is only allowed with restartPolicy Never.
    assert pod["restartPolicy"] == "Never" and job["spec"]["podReplacementPolicy"] == "Failed"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert any(r["action"] == "FailJob" and r["onExitCodes"]["values"] == [2] for r in rules)


@pytest.mark.fast
def test_gpu_count_picks_run_train_or_the_torchrun_launcher() -> None:
    one = train_container(objects(phase="rl")["Job"])["command"]
    assert one[-4:] == ["python", "-m", "pure_transformer.run_train", "rl"]
    many = train_container(objects(phase="rl", gpus=4)["Job"])
    assert many["command"][5:] == ["python", "-m", "pure_transformer.launch", "--standalone",
                                   "--nproc-per-node", "4", "rl"]
    assert many["resources"]["requests"]["nvidia.com/gpu"] == "4"


@pytest.mark.fast
def test_default_run_folders_chain_pretrain_grpo_eval_serve() -> None:
    for run, root, suffix in (("default", "/data/runs", ""), ("exp1", "/data/runs/exp1", "-exp1")):
        pre = train_container(objects(phase="pretrain", run=run)["Job"])["args"]
        rl_job = objects(phase="rl", run=run)["Job"]
        rl = train_container(rl_job)["args"]
        ev_job = objects(phase="eval", run=run)["Job"]
        serve = objects(phase="serve", run=run)["Deployment"]
        assert flag(pre, "--checkpoint-dir") == f"{root}/pretrain" == flag(rl, "--checkpoint")
        assert flag(rl, "--checkpoint-dir") == f"{root}/grpo" == flag(train_container(ev_job)["args"], "--checkpoint")
        assert flag(train_container(serve)["args"], "--checkpoint") == f"{root}/grpo"
        assert flag(train_container(ev_job)["args"], "--output") == f"{root}/eval/medqa-test.json"
        assert rl_job["metadata"]["name"] == f"pure-transformer-grpo{suffix}"
        assert ev_job["metadata"]["name"] == f"pure-transformer-eval{suffix}"


@pytest.mark.fast
def test_multi_node_is_a_pytorchjob_on_a_shared_volume() -> None:
    rendered = objects(phase="pretrain", nodes=3, gpus=8)
    assert "Job" not in rendered and rendered["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    pj = rendered["PyTorchJob"]
    assert pj["spec"]["nprocPerNode"] == "8" and pj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    c = pj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert c["name"] == "pytorch" and c["ports"][0]["name"] == "pytorchjob-port"
    assert c["command"][5:] == ["python", "-m", "pure_transformer.launch", "--master-addr", "$(MASTER_ADDR)",
                                "--master-port", "$(MASTER_PORT)", "pretrain"]
    assert "--resume" in c["args"]
    with pytest.raises(ConfigError, match="ReadWriteMany"):
        Settings(phase="pretrain", nodes=2, access_mode="ReadWriteOnce")


@pytest.mark.fast
def test_serve_listens_on_all_interfaces_with_health_probes() -> None:
    rendered = objects(phase="serve", api_key_secret="serve-key")
    dep, svc = rendered["Deployment"], rendered["Service"]
    c = train_container(dep)
    assert c["command"] == ["tini", "--", "python", "-m", "pure_transformer.serve"]
    assert flag(c["args"], "--host") == "0.0.0.0" and flag(c["args"], "--port") == "8000"
    assert flag(c["args"], "--api-key") == "$(PURE_TRANSFORMER_API_KEY)"  # substituted by the kubelet
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8000}]
    assert svc["spec"]["ports"][0]["port"] == 8000 and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.fast
@pytest.mark.parametrize("run", ["123", "true", "null", "1e3"])
def test_run_names_that_look_like_other_yaml_types_stay_strings(run: str) -> None:
    job = objects(phase="pretrain", run=run)["Job"]
    assert job["metadata"]["labels"]["pure-transformer/run"] == run
    assert job["metadata"]["name"] == f"pure-transformer-pretrain-{run}"


@pytest.mark.fast
def test_long_run_names_are_shortened_with_a_hash_and_too_long_ones_refused() -> None:
    a, b = "a" * 39 + "1", "a" * 39 + "2"
    names = {objects(phase="pretrain", run=r)["Job"]["metadata"]["name"] for r in (a, b)}
    assert len(names) == 2 and all(len(n) <= 63 for n in names)
    pj = objects(phase="pretrain", run=a, nodes=12)["PyTorchJob"]["metadata"]["name"]
    assert len(pj + "-worker-10") <= 63  # the operator's pod and Service names stay DNS labels
    with pytest.raises(ConfigError, match="--run"):
        Settings(phase="pretrain", run="r" * 100)


@pytest.mark.fast
def test_extra_arguments_arrive_verbatim_one_element_each() -> None:
    extra = ("--set", 'sources={"a": 1}', "--set", "note=it's \"quoted\"\nand two lines", "--set", "k=$(HF_TOKEN)")
    args = train_container(objects(phase="pretrain", extra=extra)["Job"])["args"]
    assert args[-6:-1] == list(extra[:5])
    assert args[-1] == "k=$$(HF_TOKEN)"  # $$ is the kubelet's escape: the trainer receives $(HF_TOKEN)


@pytest.mark.parametrize("argv", [
    ["pretrain", "--gpus", "0"], ["rl", "--gpus", "-1"], ["finetune"], ["pretrain", "--run", "x: y"],
    ["pretrain", "--memory", "lots"], ["serve", "--nodes", "2"], ["eval", "--namespace", "Bad_NS"],
    ["pretrain", "--gpus", "two"], ["logs", "--run", "UPPER"], ["status", "--", "-x"]])
@pytest.mark.fast
def test_bad_values_are_one_error_line_and_status_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert command.main([*argv, "--dry-run"] if argv[0] in ("pretrain", "rl", "eval", "serve") else argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def _env_with_path(path: Path) -> dict[str, str]:
    return {**os.environ, "PATH": str(path), "PYTHON": sys.executable}


@pytest.mark.fast
def test_deploy_sh_dry_run_passes_arguments_after_double_dash_unchanged(tmp_path: Path) -> None:
    proc = subprocess.run([BASH, str(DEPLOY), "rl", "--run", "123", "--namespace", "ucsdfutures", "--dry-run",
                           "--", "--set", 'sources={"a": 1}'], capture_output=True, text=True, timeout=60,
                          env=_env_with_path(tmp_path))  # no kubectl on PATH: --dry-run must not need it
    assert proc.returncode == 0, proc.stderr
    job = {d["kind"]: d for d in yaml.safe_load_all(proc.stdout)}["Job"]
    assert job["metadata"]["namespace"] == "ucsdfutures"
    assert train_container(job)["args"][-2:] == ["--set", 'sources={"a": 1}']


def _fake_kubectl(bin_dir: Path, script: str) -> Path:
    """A kubectl that logs each call (argv and stdin) to calls.jsonl and then runs ``script``."""
    log = bin_dir / "calls.jsonl"
    exe = bin_dir / "kubectl"
    exe.write_text(f"#!{sys.executable}\nimport json, sys\nargv = sys.argv[1:]\n"
                   "stdin = sys.stdin.read() if '-f' in argv else ''\n"
                   f"open({str(log)!r}, 'a').write(json.dumps([argv, stdin]) + '\\n')\n{script}\n")
    exe.chmod(0o755)
    return log


@pytest.mark.fast
def test_deploy_sh_without_kubectl_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run([BASH, str(DEPLOY), "pretrain"], capture_output=True, text=True, timeout=60,
                          env=_env_with_path(tmp_path))
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: kubectl not found on PATH; install it, or use --dry-run to print the manifests"]


@pytest.mark.fast
def test_a_refusing_cluster_is_one_line_and_status_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    _fake_kubectl(tmp_path, "print('error: You must be logged in to the server (Unauthorized)', file=sys.stderr)\n"
                            "sys.exit(1)")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert command.main(["pretrain", "--namespace", "ucsdfutures"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: kubectl get failed (exit 1): error: You must be logged in to the server (Unauthorized)"]


@pytest.mark.fast
def test_apply_reuses_the_volume_and_replaces_a_finished_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    log = _fake_kubectl(tmp_path, (
        "if argv[:2] == ['get', 'pvc']: print('[\"ReadWriteOnce\"]', end='')\n"
        "elif argv[:2] == ['get', 'job']: print('SuccessCriteriaMet Complete', end='')\n"
        "elif argv[0] == 'apply': print('job.batch/pure-transformer-grpo-exp1 created')"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert command.main(["rl", "--run", "exp1", "--namespace", "ucsdfutures", "--", "--set", "a=b c"]) == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    verbs = [argv[:3] for argv, _ in calls]
    assert verbs == [["get", "pvc", "pure-transformer-data"], ["get", "job", "pure-transformer-grpo-exp1"],
                     ["delete", "job", "pure-transformer-grpo-exp1"], ["apply", "-n", "ucsdfutures"]]
    applied = list(yaml.safe_load_all(calls[-1][1]))
    assert [d["kind"] for d in applied] == ["Job"]  # the existing claim is not re-applied
    assert train_container(applied[0])["args"][-2:] == ["--set", "a=b c"]
    assert "created" in capsys.readouterr().out
    # A multi-node run on that ReadWriteOnce claim is refused before anything is applied.
    assert command.main(["pretrain", "--nodes", "2"]) == 1
    assert "ReadWriteMany" in capsys.readouterr().err


@pytest.mark.fast
def test_delete_selects_the_runs_objects_and_keeps_the_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    log = _fake_kubectl(tmp_path, "if argv[0] == 'api-resources': print('pytorchjobs.kubeflow.org')")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert command.main(["delete", "rl", "--run", "exp1", "-n", "ucsdfutures"]) == 0
    argv = [json.loads(line)[0] for line in log.read_text().splitlines()][-1]
    assert argv == ["delete", "jobs,deployments,services,pytorchjobs", "-l",
                    "app.kubernetes.io/name=pure-transformer,app.kubernetes.io/component=grpo,"
                    "pure-transformer/run=exp1", "-n", "ucsdfutures"]


CHILD = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (print("saved", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(float(sys.argv[1]))
sys.exit(int(sys.argv[2]))
"""


def _requeue(*child_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pure_transformer.deploy.requeue", sys.executable, "-c", CHILD,
                             *child_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.fast
def test_requeue_turns_a_clean_stop_after_sigterm_into_143_and_passes_other_statuses() -> None:
    proc = _requeue("60", "0")
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and out.strip() == "saved" and "resumes" in err
    for status in ("0", "3"):  # no signal: the run's own status, a completed run stays a success
        proc = _requeue("0", status)
        proc.communicate(timeout=30)
        assert proc.returncode == int(status)
