"""``k8s/deploy.sh`` (= ``python -m pure_transformer.deploy``): render manifests and hand them to kubectl.

::

    deploy.sh pretrain|rl|eval|serve [--run NAME] [--namespace NS] [--image IMG] [--gpus N]
                                     [--nodes M] [--dry-run] ... [-- ARGS for the phase command]
    deploy.sh status [--run NAME] [--namespace NS]
    deploy.sh logs   [PHASE] [--run NAME] [--namespace NS] [--follow] [-- kubectl logs flags]
    deploy.sh delete [PHASE] [--run NAME] [--namespace NS]

Everything after ``--`` reaches the phase command as separate argv elements, unchanged, so
``-- --set 'sources={"a": 1}'`` arrives as ``--set`` and ``sources={"a": 1}``.

Applying is idempotent: ``kubectl apply`` leaves a running Job alone, an existing volume
claim is reused as it is, and a Job that has finished (or failed) is deleted first so the new
one starts and ``--resume`` continues the run from its newest checkpoint. A bad value is one
``error:`` line and status 2; kubectl missing or refusing is one ``error:`` line and status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from typing import NoReturn, Sequence

from ..deploy import manifests as m
from ..deploy import validate
from ..errors import ConfigError, UserError

PROG = "k8s/deploy.sh"


class KubectlError(UserError):
    """kubectl is missing, or the cluster refused or could not be reached."""


class _Parser(argparse.ArgumentParser):
    # argparse prints its usage block before the error; the project's convention is one line.
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see {PROG} --help)")


# ------------------------------------------------------------------ kubectl
def kubectl(args: Sequence[str], stdin: str | None = None, capture: bool = True) -> str:
    """Run kubectl; its stdout (when captured), or :class:`KubectlError` with its stderr on one line."""
    exe = shutil.which("kubectl")
    if exe is None:
        raise KubectlError("kubectl not found on PATH; install it, or use --dry-run to print the manifests")
    proc = subprocess.run([exe, *args], input=stdin, text=True,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        detail = "; ".join(line.strip() for line in proc.stderr.splitlines() if line.strip()) or "no message"
        raise KubectlError(f"kubectl {args[0]} failed (exit {proc.returncode}): {detail}")
    if proc.stderr.strip():  # warnings (deprecated fields, defaulted values) stay visible
        print(proc.stderr.rstrip(), file=sys.stderr)
    return proc.stdout or ""


def has_pytorchjobs(namespace: str) -> bool:
    """Whether the cluster serves the Kubeflow PyTorchJob kind (the training operator is installed)."""
    names = kubectl(["api-resources", "--api-group=kubeflow.org", "-o", "name", "-n", namespace]).split()
    return "pytorchjobs.kubeflow.org" in names


def _existing_volume_modes(s: m.Settings) -> list[str] | None:
    out = kubectl(["get", "pvc", s.pvc, "-n", s.namespace, "--ignore-not-found",
                   "-o", "jsonpath={.spec.accessModes}"]).strip()
    return json.loads(out) if out else None


def _delete_if_finished(kind: str, name: str, namespace: str) -> None:
    # A finished Job's spec is immutable and apply would leave it finished; a new one resumes the run.
    conditions = kubectl(["get", kind, name, "-n", namespace, "--ignore-not-found", "-o",
                          'jsonpath={.status.conditions[?(@.status=="True")].type}']).split()
    done = sorted({"Complete", "Succeeded", "Failed"} & set(conditions))
    if done:
        print(f"{kind} {name} had finished ({done[0]}); deleting it so the new one resumes the run")
        kubectl(["delete", kind, name, "-n", namespace, "--wait=true"])


def apply(s: m.Settings, dry_run: bool) -> None:
    """Print (``dry_run``) or apply the phase's manifests."""
    objects = m.render(s)  # renders and validates before kubectl is looked for
    if dry_run:
        print(m.dump(objects), end="")
        return
    modes = _existing_volume_modes(s)
    if modes is not None:
        # A claim's access modes cannot change; reuse it, and refuse what it cannot carry.
        if s.nodes > 1 and "ReadWriteMany" not in modes:
            raise KubectlError(f"volume claim {s.pvc} is {','.join(modes)}; a multi-node run needs a "
                               "ReadWriteMany volume (use --pvc NEW --storage-class <a shared-filesystem class>)")
        objects = [o for o in objects if o["kind"] != "PersistentVolumeClaim"]
    for o in objects:
        if o["kind"] in ("Job", "PyTorchJob"):
            _delete_if_finished(o["kind"].lower(), o["metadata"]["name"], s.namespace)
    print(kubectl(["apply", "-n", s.namespace, "-f", "-"], stdin=m.dump(objects)), end="")
    run = "" if s.run == m.DEFAULT_RUN else f" --run {s.run}"
    print(f"follow it with: {PROG} logs {s.phase}{run} --namespace {s.namespace} --follow")


def _kinds(namespace: str) -> str:
    return "jobs,deployments,services" + (",pytorchjobs" if has_pytorchjobs(namespace) else "")


def status(namespace: str, run: str | None) -> None:
    kubectl(["get", f"{_kinds(namespace)},pods", "-l", m.selector(run), "-n", namespace, "-o", "wide"],
            capture=False)
    kubectl(["get", "pvc", "-l", m.selector(), "-n", namespace], capture=False)


def logs(namespace: str, run: str, phase: str | None, follow: bool, tail: int, extra: Sequence[str]) -> None:
    kubectl(["logs", "-l", m.selector(run, phase), "-n", namespace, "--all-containers", "--prefix",
             f"--tail={tail}", *(["--follow"] if follow else []), *extra], capture=False)


def delete(namespace: str, run: str, phase: str | None) -> None:
    print(kubectl(["delete", _kinds(namespace), "-l", m.selector(run, phase), "-n", namespace]), end="")
    print("the volume claim and the run folders on it are kept (kubectl delete pvc NAME removes them)")


# ------------------------------------------------------------------ parser
def _common(p: argparse.ArgumentParser, run_default: str | None) -> None:
    p.add_argument("--namespace", "-n", default="default", help="Kubernetes namespace (default: default)")
    p.add_argument("--run", default=run_default,
                   help="run name: folders /data/runs/NAME/<phase>, objects suffixed -NAME "
                        f"(default: {run_default or 'every run'}; 'default' means /data/runs/<phase>)")


def _phase_parser(sub: argparse._SubParsersAction, phase: str, text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(phase, help=text, description=text)
    _common(p, m.DEFAULT_RUN)
    p.add_argument("--image", default="pure-transformer:latest", help="image built from k8s/Dockerfile")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1; eval/serve accept 0)")
    p.add_argument("--cpus", default="8", help="CPU request (default 8)")
    p.add_argument("--memory", default="64Gi", help="memory request and limit (default 64Gi)")
    p.add_argument("--pvc", default="pure-transformer-data", help="volume claim mounted at /data")
    p.add_argument("--storage", default="500Gi", help="size of a new volume claim (default 500Gi)")
    p.add_argument("--storage-class", default=None, help="storage class of a new volume claim")
    p.add_argument("--access-mode", default=None, choices=["ReadWriteOnce", "ReadWriteMany"],
                   help="of a new volume claim (default ReadWriteOnce; ReadWriteMany with --nodes > 1)")
    p.add_argument("--hf-secret", default="hf-token", help="Secret whose key 'token' becomes HF_TOKEN, if it exists")
    p.add_argument("--dry-run", action="store_true", help="print the manifests; do not call kubectl")
    if phase in ("pretrain", "rl", "eval"):
        p.add_argument("--grace-period", type=int, default=300,
                       help="seconds between SIGTERM and SIGKILL, time to save a checkpoint (default 300)")
        limit = 3 if phase == "eval" else 20  # an evaluation has no checkpoint to resume from
        p.add_argument("--backoff-limit", type=int, default=limit, help=f"failed pods before the Job gives up ({limit})")
        p.add_argument("--shm", default="16Gi", help="size of /dev/shm (default 16Gi)")
    if phase in ("pretrain", "rl"):
        p.add_argument("--nodes", type=int, default=1, help="more than 1: a Kubeflow PyTorchJob")
        p.add_argument("--config", default=None, help="preset (default pretrain:a100_2day / rl:grpo_usmle_2day)")
    if phase == "pretrain":
        p.add_argument("--model", default=None, help="model preset (default medium-large)")
    if phase in ("rl", "eval"):
        p.add_argument("--task", default=None, help="question set (default medqa)")
    if phase == "eval":
        p.add_argument("--split", default="test", help="split to score (default test)")
    if phase != "pretrain":
        source = "/data/runs[/RUN]/pretrain" if phase == "rl" else "/data/runs[/RUN]/grpo"
        p.add_argument("--checkpoint", default=None, help=f"run or step folder on the volume (default {source})")
    if phase == "serve":
        p.add_argument("--replicas", type=int, default=1)
        p.add_argument("--api-key-secret", default=None, help="Secret whose key 'api-key' the server requires")
    p.set_defaults(phase=phase)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     epilog="ARGS after -- go to the phase command (or to kubectl logs) unchanged.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _phase_parser(sub, "pretrain", "pretraining Job (python -m pure_transformer.run_train pretrain)")
    _phase_parser(sub, "rl", "GRPO Job reading the pretraining run (run_train rl)")
    _phase_parser(sub, "eval", "evaluation Job reading the GRPO run (python -m pure_transformer.evaluate)")
    _phase_parser(sub, "serve", "Deployment + Service for the OpenAI-compatible server")
    p = sub.add_parser("status", help="the run's Jobs, pods, Deployment, Service and the volume")
    _common(p, None)
    for name, text in (("logs", "logs of the run's pods"), ("delete", "delete the run's objects (not the volume)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("phase", nargs="?", choices=m.PHASES, help="one phase (default: all of the run)")
        _common(p, m.DEFAULT_RUN)
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true")
            p.add_argument("--tail", type=int, default=100, help="lines per pod (default 100; -1: all)")
    return parser


def settings(args: argparse.Namespace, extra: Sequence[str]) -> m.Settings:
    """The validated settings of a phase command."""
    fields = {f.name for f in dataclasses.fields(m.Settings)}
    given = {k: v for k, v in vars(args).items() if k in fields}
    if "grace_period" in vars(args):
        given["grace_s"] = args.grace_period
    return m.Settings(**given, extra=tuple(extra))


def split_extra(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(own arguments, the arguments after the first ``--``), kept as separate elements."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def run(argv: Sequence[str]) -> None:
    own, extra = split_extra(argv)
    args = build_parser().parse_args(own)
    if args.command in m.PHASES:
        apply(settings(args, extra), args.dry_run)
        return
    if args.run is not None:
        m.selector(args.run)  # validates the name before kubectl sees it
    validate.dns_label(args.namespace, "--namespace")
    if extra and args.command != "logs":
        raise ConfigError(f"{args.command} takes no arguments after --")
    if args.command == "status":
        status(args.namespace, args.run)
    elif args.command == "logs":
        logs(args.namespace, args.run, args.phase, args.follow, args.tail, extra)
    else:
        delete(args.namespace, args.run, args.phase)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except KubectlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
