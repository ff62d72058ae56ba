"""Kubernetes manifests for the four phases, built as dicts and dumped with ``yaml.safe_dump``.

One function per object kind: :func:`volume_claim`, :func:`training_job` (batch/v1 Job),
:func:`pytorch_job` (Kubeflow ``PyTorchJob`` for more than one node), :func:`eval_job`,
:func:`deployment` and :func:`service`. :func:`render` picks the objects of a phase.

Every value comes from a validated :class:`Settings`, so nothing a user types can change the
YAML's structure or type (``--run 123`` stays the string ``'123'``), and extra command-line
arguments travel as list items, one argv element each.

Run folders chain: with the default run, pretraining writes ``/data/runs/pretrain``, GRPO
reads that folder (the package's ``--checkpoint`` takes a run folder's ``final/``, else its
newest checkpoint) and writes ``/data/runs/grpo``, which evaluation and serving read. A named
run ``--run NAME`` uses ``/data/runs/NAME/{pretrain,grpo,eval}`` the same way.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import yaml

from ..errors import ConfigError
from . import validate as v

APP = "pure-transformer"
DATA = "/data"
HF_HOME = f"{DATA}/hf-cache"
SERVE_PORT = 8000
# The training operator finds the rendezvous port by this name (kubeflow.org/v1 PyTorchJob).
PYTORCHJOB_PORT = {"name": "pytorchjob-port", "containerPort": 23456}
# The Dockerfile's user; fsGroup makes the kubelet give a fresh volume to this group, which a
# non-root process could not otherwise write.
UID = 1000
RUN_LABEL = f"{APP}/run"
# CLI phase -> the component name used in object names, labels and run folders.
COMPONENT = {"pretrain": "pretrain", "rl": "grpo", "eval": "eval", "serve": "serve"}
PHASES = tuple(COMPONENT)
DEFAULT_RUN = "default"
_TASK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

Manifest = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a manifest depends on; validated on construction."""

    phase: str
    namespace: str = "default"
    image: str = "pure-transformer:latest"
    run: str = DEFAULT_RUN
    gpus: int = 1
    nodes: int = 1
    cpus: str = "8"
    memory: str = "64Gi"
    shm: str = "16Gi"
    pvc: str = "pure-transformer-data"
    storage: str = "500Gi"
    storage_class: str | None = None
    access_mode: str | None = None  # default: ReadWriteMany for more than one node, else ReadWriteOnce
    hf_secret: str = "hf-token"
    grace_s: int = 300
    backoff_limit: int = 20
    config: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    task: str | None = None
    split: str = "test"
    replicas: int = 1
    api_key_secret: str | None = None
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.phase not in COMPONENT:
            raise ConfigError(f"unknown phase {self.phase!r}; choose one of: {', '.join(PHASES)}")
        v.dns_label(self.namespace, "--namespace")
        v.run_name(self.run)
        if not self.image or any(c.isspace() for c in self.image):
            raise ConfigError(f"--image {self.image!r} is not an image reference")
        # Training needs a GPU; evaluation and serving may run on CPU with --gpus 0.
        v.positive_int(self.gpus, "--gpus", 1 if self.phase in ("pretrain", "rl") else 0)
        v.positive_int(self.nodes, "--nodes")
        if self.nodes > 1 and self.phase not in ("pretrain", "rl"):
            raise ConfigError(f"--nodes applies to pretrain and rl only, not {self.phase}")
        for flag in ("cpus", "memory", "shm", "storage"):
            v.quantity(getattr(self, flag), f"--{flag}")
        v.dns_subdomain(self.pvc, "--pvc")
        v.dns_subdomain(self.hf_secret, "--hf-secret")
        if self.storage_class is not None:
            v.dns_subdomain(self.storage_class, "--storage-class")
        if self.api_key_secret is not None:
            v.dns_subdomain(self.api_key_secret, "--api-key-secret")
        if self.access_mode not in (None, "ReadWriteOnce", "ReadWriteMany"):
            raise ConfigError(f"--access-mode must be ReadWriteOnce or ReadWriteMany, got {self.access_mode!r}")
        if self.nodes > 1 and self.access_mode == "ReadWriteOnce":
            raise ConfigError("a multi-node run needs --access-mode ReadWriteMany: every node writes the run folder")
        v.positive_int(self.grace_s, "--grace-period")
        v.positive_int(self.backoff_limit, "--backoff-limit", 0)
        v.positive_int(self.replicas, "--replicas")
        if self.task is not None and not _TASK.fullmatch(self.task):
            raise ConfigError(f"--task {self.task!r} is not a task name")
        if not _TASK.fullmatch(self.split):
            raise ConfigError(f"--split {self.split!r} is not a split name")
        for arg in (self.config, self.model, self.checkpoint, *self.extra):
            if arg is not None and "\0" in arg:
                raise ConfigError(f"argument {arg!r} contains a NUL byte")

    @property
    def component(self) -> str:
        return COMPONENT[self.phase]

    @property
    def volume_access_mode(self) -> str:
        return self.access_mode or ("ReadWriteMany" if self.nodes > 1 else "ReadWriteOnce")


# ------------------------------------------------------------------ names and folders
def run_root(run: str) -> str:
    """Where a run's phase folders live: ``/data/runs`` for the default run, else ``/data/runs/RUN``."""
    return f"{DATA}/runs" if run == DEFAULT_RUN else f"{DATA}/runs/{run}"


def run_dir(run: str, component: str) -> str:
    """The folder a phase writes (``pretrain``, ``grpo``) or reads from."""
    return f"{run_root(run)}/{component}"


def name(s: Settings, max_len: int = v.MAX_NAME) -> str:
    """``pure-transformer-COMPONENT`` plus ``-RUN`` for a named run, at most ``max_len`` characters."""
    return v.object_name(f"{APP}-{s.component}", None if s.run == DEFAULT_RUN else s.run, max_len)


def labels(s: Settings) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": s.component,
            RUN_LABEL: v.label_value(s.run, "--run")}


def selector(run: str | None = None, phase: str | None = None) -> str:
    """The kubectl label selector for a run's objects (all runs when ``run`` is None)."""
    parts = [f"app.kubernetes.io/name={APP}"]
    if phase is not None:
        parts.append(f"app.kubernetes.io/component={COMPONENT[phase]}")
    if run is not None:
        parts.append(f"{RUN_LABEL}={v.run_name(run)}")
    return ",".join(parts)


def _meta(s: Settings, object_name: str | None = None) -> dict[str, Any]:
    return {"name": object_name or name(s), "namespace": s.namespace, "labels": labels(s)}


def literal(arg: str) -> str:
    """``arg`` escaped so the kubelet passes it verbatim: it expands ``$(VAR)`` in command and
    args, and ``$$`` is its escape for ``$``."""
    return arg.replace("$", "$$")


# ------------------------------------------------------------------ containers
def phase_args(s: Settings) -> list[str]:
    """The phase command's own flags, the user's extra arguments last (argparse: last one wins)."""
    if s.phase == "pretrain":
        args = ["--config", s.config or "pretrain:a100_2day", "--model", s.model or "medium-large"]
    elif s.phase == "rl":
        args = ["--config", s.config or "rl:grpo_usmle_2day", "--task", s.task or "medqa",
                "--checkpoint", s.checkpoint or run_dir(s.run, "pretrain")]
    elif s.phase == "eval":
        task = s.task or "medqa"
        return [*map(literal, ["--checkpoint", s.checkpoint or run_dir(s.run, "grpo"), "--task", task,
                               "--split", s.split, "--output", f"{run_dir(s.run, 'eval')}/{task}-{s.split}.json",
                               "--no-progress", *s.extra])]
    else:
        args = ["--checkpoint", s.checkpoint or run_dir(s.run, "grpo"),
                # The server binds 127.0.0.1 unless told otherwise; in a pod that is unreachable.
                "--host", "0.0.0.0", "--port", str(SERVE_PORT)]
        # The key comes from a Secret through the environment; the kubelet substitutes it here.
        secret = ["--api-key", "$(PURE_TRANSFORMER_API_KEY)"] if s.api_key_secret else []
        return [*map(literal, args), *secret, *map(literal, s.extra)]
    # --resume: a restarted or re-deployed pod continues from the newest valid checkpoint.
    args += ["--checkpoint-dir", run_dir(s.run, s.component), "--resume", "--no-progress"]
    return [literal(a) for a in [*args, *s.extra]]


def training_command(s: Settings) -> list[str]:
    """tini as PID 1 (a manifest ``command`` replaces the image's ENTRYPOINT, so it is named here);
    it forwards SIGTERM to the requeue guard, which forwards it to the trainer."""
    phase = "rl" if s.phase == "rl" else "pretrain"
    guard = ["tini", "--", "python", "-m", "pure_transformer.deploy.requeue"]
    if s.nodes > 1:
        # The operator sets PET_NNODES, PET_NPROC_PER_NODE and PET_NODE_RANK, which torchrun reads as
        # defaults, and MASTER_ADDR/MASTER_PORT without the PET_ prefix, hence the two flags; the
        # kubelet substitutes $(VAR) from the container's environment.
        launch = ["--master-addr", "$(MASTER_ADDR)", "--master-port", "$(MASTER_PORT)"]
    elif s.gpus > 1:
        launch = ["--standalone", "--nproc-per-node", str(s.gpus)]
    else:
        return [*guard, "python", "-m", "pure_transformer.run_train", phase]
    return [*guard, "python", "-m", "pure_transformer.launch", *launch, phase]


def _env(s: Settings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HF_HOME", "value": HF_HOME},  # datasets and tokenizers cached on the volume, once
        # A hub token for gated datasets, if the Secret exists; runs on public data need none.
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": s.hf_secret, "key": "token",
                                                            "optional": True}}},
    ]
    if s.phase != "serve":
        # The launcher's torchrun --shutdown-timeout comes from this, so ranks get the same budget.
        env.append({"name": "PURE_TRANSFORMER_GRACE_S", "value": str(s.grace_s)})
    if s.phase == "serve" and s.api_key_secret:
        env.append({"name": "PURE_TRANSFORMER_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": s.api_key_secret, "key": "api-key"}}})
    return env


def _resources(s: Settings) -> dict[str, Any]:
    requests = {"cpu": s.cpus, "memory": s.memory}
    limits: dict[str, str] = {"memory": s.memory}
    if s.gpus:
        # Extended resources are requested through limits; requests, if given, must equal them.
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(s.gpus)
    return {"requests": requests, "limits": limits}


def container(s: Settings, container_name: str, command: Sequence[str]) -> dict[str, Any]:
    read_only = s.phase == "serve"  # the server only reads its checkpoint
    mounts = [{"name": "data", "mountPath": DATA, "readOnly": read_only}]
    if s.phase != "serve":
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})  # DataLoader workers pass batches here
    return {"name": container_name, "image": s.image, "command": list(command), "args": phase_args(s),
            "env": _env(s), "resources": _resources(s), "volumeMounts": mounts}


def pod_spec(s: Settings, containers: list[dict[str, Any]], restart_policy: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "data", "persistentVolumeClaim": {"claimName": s.pvc}}]
    if s.phase != "serve":
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm}})
    return {
        "restartPolicy": restart_policy,
        # SIGTERM -> the trainer finishes its step, saves and stops; this is how long it may take.
        "terminationGracePeriodSeconds": s.grace_s,
        # OnRootMismatch: chown a fresh volume once, not a full one on every start.
        "securityContext": {"runAsUser": UID, "runAsGroup": UID, "runAsNonRoot": True, "fsGroup": UID,
                            "fsGroupChangePolicy": "OnRootMismatch"},
        "containers": containers,
        "volumes": volumes,
    }


def _job_spec(s: Settings, container_name: str, command: Sequence[str], backoff_limit: int) -> dict[str, Any]:
    # podFailurePolicy needs restartPolicy Never: the Job controller, not the kubelet, then decides
    # about each failed pod. A preempted or evicted pod carries DisruptionTarget and is replaced
    # without counting against backoffLimit; exit 2 is the package's "error:" (a bad flag or
    # config), which no retry fixes. podReplacementPolicy Failed starts the new pod only once the
    # old one has stopped, so two pods never write one run folder during the grace period.
    return {
        "backoffLimit": backoff_limit,
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": container_name, "operator": "In",
                                                  "values": [2]}},
        ]},
        "template": {"metadata": {"labels": labels(s)},
                     "spec": pod_spec(s, [container(s, container_name, command)], "Never")},
    }


# ------------------------------------------------------------------ objects
def volume_claim(s: Settings) -> Manifest:
    """The volume for run folders and the Hugging Face cache, shared by every phase and run."""
    spec: dict[str, Any] = {"accessModes": [s.volume_access_mode],
                            "resources": {"requests": {"storage": s.storage}}}
    if s.storage_class:
        spec["storageClassName"] = s.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": s.pvc, "namespace": s.namespace, "labels": {"app.kubernetes.io/name": APP}},
            "spec": spec}


def training_job(s: Settings) -> Manifest:
    """A batch/v1 Job for pretraining or GRPO on one node (one or more GPUs)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(s),
            "spec": _job_spec(s, "train", training_command(s), s.backoff_limit)}


def pytorch_job(s: Settings) -> Manifest:
    """A Kubeflow PyTorchJob for pretraining or GRPO on ``s.nodes`` nodes.

    Every node writes checkpoints to the same run folder, so the volume must be ReadWriteMany
    (NFS, CephFS, a cloud file store); :func:`volume_claim` asks for that when nodes > 1.
    """
    # The operator names pods and Services NAME-worker-K, which must stay DNS labels.
    object_name = name(s, v.MAX_NAME - len(f"-worker-{s.nodes - 2}"))
    pod = pod_spec(s, [{**container(s, "pytorch", training_command(s)), "ports": [PYTORCHJOB_PORT]}],
                   "OnFailure")

    def replica(count: int) -> dict[str, Any]:
        # OnFailure: a failed container restarts in place and torchrun re-forms the group; a
        # preempted pod is recreated by the operator. (The operator's ExitCode policy would treat
        # torchrun's exit 1 after a lost peer as permanent.) backoffLimit below bounds the retries.
        return {"replicas": count, "restartPolicy": "OnFailure",
                "template": {"metadata": {"labels": labels(s)}, "spec": {**pod, "restartPolicy": "OnFailure"}}}

    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": _meta(s, object_name),
            "spec": {"nprocPerNode": str(s.gpus),
                     "runPolicy": {"backoffLimit": s.backoff_limit},
                     "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(s.nodes - 1)}}}


def eval_job(s: Settings) -> Manifest:
    """A batch/v1 Job that scores a checkpoint and writes its JSON report to the run's ``eval/``."""
    command = ["tini", "--", "python", "-m", "pure_transformer.evaluate"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(s),
            "spec": _job_spec(s, "eval", command, s.backoff_limit)}


def deployment(s: Settings) -> Manifest:
    """The OpenAI-compatible server; ready once the model is loaded and ``/health`` answers."""
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    c = container(s, "serve", ["tini", "--", "python", "-m", "pure_transformer.serve"])
    c.update({
        "ports": [{"name": "http", "containerPort": SERVE_PORT}],
        # /health answers only after the model is loaded; allow ten minutes for that before liveness.
        "startupProbe": {**probe, "failureThreshold": 60},
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {**probe, "failureThreshold": 6},
    })
    pod = pod_spec(s, [c], "Always")
    pod["terminationGracePeriodSeconds"] = 30  # in-flight requests, not a checkpoint save
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(s),
            "spec": {"replicas": s.replicas,
                     # Recreate: a rolling update would need a second GPU (and a ReadWriteOnce volume
                     # on the same node) while the old pod still runs.
                     "strategy": {"type": "Recreate"},
                     "selector": {"matchLabels": labels(s)},
                     "template": {"metadata": {"labels": labels(s)}, "spec": pod}}}


def service(s: Settings) -> Manifest:
    """A ClusterIP Service in front of :func:`deployment` (``kubectl port-forward`` or an Ingress)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(s),
            "spec": {"type": "ClusterIP", "selector": labels(s),
                     "ports": [{"name": "http", "port": SERVE_PORT, "targetPort": "http"}]}}


def render(s: Settings) -> list[Manifest]:
    """The objects of ``s.phase``, the volume claim first (pods need it to start)."""
    if s.phase == "serve":
        return [volume_claim(s), deployment(s), service(s)]
    if s.phase == "eval":
        return [volume_claim(s), eval_job(s)]
    return [volume_claim(s), pytorch_job(s) if s.nodes > 1 else training_job(s)]


def dump(manifests: Sequence[Manifest]) -> str:
    """YAML documents; safe_dump quotes every string that would otherwise read as another type."""
    return yaml.safe_dump_all(manifests, sort_keys=False, default_flow_style=False, width=1 << 16)
