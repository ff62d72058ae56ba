#!/usr/bin/env bash
# Issue 14's GPU figures in one call, for a lent H200 (not yet run: no GPU has been lent).
#   run(command="bash bench/gpu_checks.sh", timeout_s=600)
# The device image's python3 has torch, transformers, tokenizers, safetensors and tqdm;
# the package runs from the working tree. Full logs go under $OUT; each check prints its table.
set -u -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-checks}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$OUT/gpu.txt"
check() {  # name, seconds, then the bench arguments
  local name=$1 limit=$2; shift 2
  echo "== $name: pure-transformer bench $*"
  timeout "$limit" python3 -m pure_transformer bench "$@" > "$OUT/$name.log" 2>&1
  echo "(exit $?)"; grep -E '^\||x tokens/s|MFU =|loss on|share of the step|steps/s' "$OUT/$name.log"
}
# Limits sum to 10 minutes with the two checks below: with a 2-3 minute start, inside the 15-minute device budget.
check train 110 train --model medium-large --micro-batch 16 --seq-len 2048 --steps 5 --repeats 3
check train-sac 70 train --model medium-large --micro-batch 16 --seq-len 2048 --steps 5 --repeats 2 \
  --activation-checkpointing selective
check train-ac 70 train --model medium-large --micro-batch 16 --seq-len 2048 --steps 5 --repeats 2 \
  --activation-checkpointing full
check generate 110 generate --model medium-large --batch 256 --prompt-len 128 --new-tokens 512 --repeats 2
check rl-step 45 rl-step --config grpo_usmle_2day --model medium-large --steps 2
check rl-step-compiled 55 rl-step --config grpo_usmle_2day --model medium-large --steps 2 --set compile_decode=true
# Issue 34: a GRPO step of the one-GPU-day open-model recipe at Qwen3-0.6B's real shape (QK-norm,
# head_dim 128, 151,936 vocabulary; random weights: the device cannot reach the hub), steps/s and peak memory.
check rl-step-qwen3 75 rl-step --config rl:grpo_medqa_qwen3_0.6b --model qwen3-0.6b --steps 2
# The bf16 sampler against an fp32 and a bf16 (the trainer's) scorer, on CUDA's own kernels.
check logp-gap 30 logp-gap --model medium-large --prompts 16 --samples 16 --max-new-tokens 64
# bf16 against fp32 on CUDA: the CPU tests of precision=bf16, run where autocast is native.
echo "== bf16 parity: tests/test_precision.py on $(python3 -c 'import torch; print(torch.cuda.get_device_name())')"
timeout 30 python3 -m pytest -q -p no:cacheprovider tests/test_precision.py -k "twenty or grpo" > "$OUT/bf16.log" 2>&1
echo "(exit $?)"; tail -n 3 "$OUT/bf16.log"
# The planner against the CUDA peaks measured above (issue 23): the same shape, the lent GPU's
# memory and peak. bench train compiles on CUDA, which saves less than the eager plan counts.
echo "== plan vs measured peak (medium-large, 16 x 2048, bf16 autocast)"
for ckpt in "train false" "train-sac selective" "train-ac true"; do
  set -- $ckpt
  planned=$(python3 -m pure_transformer plan --config a100_2day --gpu h200-141gb --set global_batch_tokens=32768 \
    --set activation_checkpointing="$2" | grep -E '^  peak \(' | grep -oE '[0-9.]+ GB')
  measured=$(grep -E '^\| ours' "$OUT/$1.log" | awk -F'|' '{print $6}' | tr -d ' ')
  echo "$1 (checkpointing $2): planned peak $planned, measured peak_gb ${measured:-n/a}" | tee -a "$OUT/plan.txt"
done
