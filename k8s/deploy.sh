#!/usr/bin/env bash
# Launch a training phase on Kubernetes:  k8s/deploy.sh pretrain|rl [--dry-run]
#
# Settings come from the environment (defaults in brackets):
#   IMAGE      container image with this package installed (see k8s/Dockerfile) [pure-transformer:latest]
#   RUN        run name; checkpoints go to /data/runs/$RUN on the volume [$PHASE-<date>]
#   PVC        persistent volume claim mounted at /data [pure-transformer-data]
#   NAMESPACE  [default]     GPUS [1]     CPUS [8]     MEMORY [64Gi]
#   CONFIG     preset [a100_2day for pretrain, grpo_usmle_2day for rl]
#   MODEL      model preset for pretrain [medium-large]
#   CHECKPOINT pretrained checkpoint for rl, a path on the volume [/data/runs/pretrain/final]
#   TASK       rl task [medqa]
#   EXTRA_ARGS more flags, e.g. "--set micro_batch=8"
# --dry-run prints the manifest instead of applying it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
phase="${1:-}"
dry_run=false
[[ "${2:-}" == "--dry-run" ]] && dry_run=true
case "$phase" in
  pretrain)
    CONFIG="${CONFIG:-a100_2day}"
    flags=(--config "$CONFIG" --model "${MODEL:-medium-large}") ;;
  rl)
    CONFIG="${CONFIG:-grpo_usmle_2day}"
    flags=(--config "$CONFIG" --checkpoint "${CHECKPOINT:-/data/runs/pretrain/final}" --task "${TASK:-medqa}") ;;
  *)
    echo "error: usage: k8s/deploy.sh pretrain|rl [--dry-run] (got '${phase}')" >&2
    exit 2 ;;
esac
RUN="${RUN:-$phase-$(date +%Y%m%d-%H%M%S)}"
flags+=(--checkpoint-dir "/data/runs/$RUN" --resume --no-progress)
read -r -a extra <<< "${EXTRA_ARGS:-}"
flags+=("${extra[@]}")

GPUS="${GPUS:-1}"
command=(python -m pure_transformer.run_train "$phase")
if (( GPUS > 1 )); then
  [[ "$phase" == pretrain ]] || { echo "error: rl runs in one process; set GPUS=1 (got $GPUS)" >&2; exit 2; }
  command=(torchrun --standalone --nproc_per_node "$GPUS" -m pure_transformer.run_train pretrain)
fi

flow_list() {  # YAML flow list of quoted strings
  local out="" item
  for item in "$@"; do out+="${out:+, }\"${item//\"/\\\"}\""; done
  printf '%s' "$out"
}

export PHASE="$phase" RUN ARGS="$(flow_list "${flags[@]}")" COMMAND="$(flow_list "${command[@]}")"
export JOB_NAME="pure-transformer-${RUN//[^a-z0-9-]/-}"
export IMAGE="${IMAGE:-pure-transformer:latest}" NAMESPACE="${NAMESPACE:-default}" PVC="${PVC:-pure-transformer-data}"
export GPUS CPUS="${CPUS:-8}" MEMORY="${MEMORY:-64Gi}" BACKOFF_LIMIT="${BACKOFF_LIMIT:-20}"
export GRACE_SECONDS="${GRACE_SECONDS:-300}"
manifest="$(python3 - "$here/job.yaml" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
print(re.sub(r"\$\{([A-Z_]+)\}", lambda m: os.environ[m.group(1)], text), end="")
PY
)"
if $dry_run; then
  printf '%s\n' "$manifest"
else
  command -v kubectl >/dev/null || { echo "error: kubectl not found; use --dry-run to print the manifest" >&2; exit 2; }
  printf '%s\n' "$manifest" | kubectl apply -f -
  echo "submitted $JOB_NAME; follow it with: kubectl logs -f job/$JOB_NAME -n $NAMESPACE"
fi
