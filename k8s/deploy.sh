#!/usr/bin/env bash
# Deploy a phase to Kubernetes; a thin wrapper over `python -m pure_transformer.deploy`.
#
#   k8s/deploy.sh pretrain|rl|eval|serve [--run NAME] [--namespace NS] [--image IMG] [--gpus N]
#                                        [--nodes M] [--dry-run] ... [-- ARGS for the phase command]
#   k8s/deploy.sh status|logs|delete [PHASE] [--run NAME] [--namespace NS]
#
# e.g. k8s/deploy.sh pretrain --namespace ucsdfutures --image registry/pure-transformer:1 --gpus 8 \
#          -- --set 'sources={"fineweb-edu": 0.8, "medqa": 0.2}'
# `k8s/deploy.sh --help` (or `<command> --help`) lists every flag; docs/KUBERNETES.md explains them.
# The manifests are rendered by Python (only PyYAML is needed, not torch), so arguments are passed
# on as argv, never re-split or pasted into YAML. PYTHON picks the interpreter [python3].
set -euo pipefail
here="${BASH_SOURCE[0]%/*}"; [[ "$here" == "${BASH_SOURCE[0]}" ]] && here=.  # no dirname: PATH may be bare
repo="$(cd "$here/.." && pwd)"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || { echo "error: $python not found; set PYTHON to a Python 3.10+ with PyYAML" >&2; exit 2; }
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m pure_transformer.deploy "$@"
