#!/usr/bin/env bash
# The README's main job: the whole pipeline on the bundled offline data, CPU only.
# Usage: make demo   (or RUN_DIR=... PY=... bash scripts/demo.sh)
set -euo pipefail
RUN_DIR=${RUN_DIR:-runs/demo}
PY=${PY:-.venv/bin/python}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::UserWarning}
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
start=$(date +%s)

echo "== 1. model presets"
for preset in tiny medium-large; do
  $PY -m pure_transformer model info "$preset" | grep -E '^(preset|parameters|flops_per_token):'
done

echo; echo "== 2. tokenizer: byte-level BPE (4,096 tokens for the tiny model) on the bundled corpus"
$PY -m pure_transformer tokenizer train --vocab-size 4096 --out "$RUN_DIR/tokenizer" --quiet

echo; echo "== 3. data preview: packed 256-token blocks of the debug mixture"
$PY -m pure_transformer data preview --tokenizer "$RUN_DIR/tokenizer" --show 1 --num-blocks 400

echo; echo "== 4. contamination: exact test questions are kept out of training; 13-gram overlap still shows the shared"
echo "   clinical phrasing (test vignettes are new questions about facts the corpus teaches)"
$PY -m pure_transformer data overlap --train bundled-mcq --eval bundled-mcq --eval-split test

echo; echo "== 5. debug pretraining: tiny model, ~0.6M tokens"
$PY -m pure_transformer.run_train pretrain --config debug --model tiny --checkpoint-dir "$RUN_DIR/pretrain" \
  --set tokenizer="$RUN_DIR/tokenizer" --no-progress
$PY -m pure_transformer plot "$RUN_DIR/pretrain" --out "$RUN_DIR/pretrain/curves.png"

echo; echo "== 6. GRPO debug: 60 steps of 16 questions x 16 samples on the bundled training questions"
$PY -m pure_transformer.run_train rl --checkpoint "$RUN_DIR/pretrain" --config debug \
  --checkpoint-dir "$RUN_DIR/rl" --no-progress

echo; echo "== 7. held-out test accuracy (400 bundled test questions), before and after GRPO"
for stage in pretrain rl; do
  echo "-- $stage"
  $PY -m pure_transformer.evaluate --checkpoint "$RUN_DIR/$stage" --task synthetic --split test --mode both \
    --output "$RUN_DIR/eval-$stage.json" --no-progress | tail -n 4
done

echo "-- does the pretrained model read the options? After \"Answer: C.\" it should continue with option C's text"
$PY scripts/probe_option_reading.py copy --checkpoint "$RUN_DIR/pretrain"

echo; echo "== 8. one generated answer"
$PY -c "from pure_transformer.bundled.synthetic import bundled_corpus; from pure_transformer.mcq import format_prompt; print(format_prompt(bundled_corpus().mcq['test'][0]).rstrip())" > "$RUN_DIR/question.txt"
cat "$RUN_DIR/question.txt"
$PY -m pure_transformer.generate --checkpoint "$RUN_DIR/rl" --prompt "$(cat "$RUN_DIR/question.txt")" \
  --temperature 0 --max-new-tokens 24 --stop $'\n'

echo; echo "demo finished in $(( $(date +%s) - start )) s; outputs in $RUN_DIR"
