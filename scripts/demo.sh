#!/usr/bin/env bash
# The README's main job: the whole pipeline on the bundled offline data, CPU only.
# Usage: make demo        (about 8 minutes on 2 cores)
#        make demo-long   (longer pretraining and GRPO)
#        RUN_DIR=... PY=... PRETRAIN_TOKENS=... RL_STEPS=... bash scripts/demo.sh
set -euo pipefail
RUN_DIR=${RUN_DIR:-runs/demo}
PY=${PY:-.venv/bin/python}
PRETRAIN_TOKENS=${PRETRAIN_TOKENS:-}   # empty: the demo preset's
RL_STEPS=${RL_STEPS:-}                 # empty: the demo preset's
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::UserWarning}
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
start=$(date +%s)
last=$start
TIMES=()
took() {  # took NAME: the seconds since the previous stage ended, for the table at the end
  local now
  now=$(date +%s)
  TIMES+=("$(printf '%-34s %4d s' "$1" $(( now - last )))")
  last=$now
}
EVAL=("$PY" -m pure_transformer.evaluate --task synthetic --split test --no-progress)
COMPOSE=("$PY" -m pure_transformer.evaluate --task synthetic --split compositional --mode generate --by meta_info
         --no-progress)

echo "== 1. model presets"
$PY -m pure_transformer model info tiny medium-large | grep -E '^(preset|parameters|flops_per_token):'

took "presets"
echo; echo "== 2. tokenizer: byte-level BPE (4,096 tokens for the tiny model) on the bundled corpus"
$PY -m pure_transformer tokenizer train --vocab-size 4096 --out "$RUN_DIR/tokenizer" --quiet

took "tokenizer"
echo; echo "== 3. data preview: packed 256-token blocks of the demo mixture (MCQs in the explanation-first format)"
$PY -m pure_transformer data preview --tokenizer "$RUN_DIR/tokenizer" --show 1 --num-blocks 400 \
  --mixture bundled-general:0.1,bundled-medical:0.4,bundled-mcq:0.5 --answer-format explain

took "data preview"
echo; echo "== 4. contamination: exact test questions are kept out of training; 13-gram overlap still shows the shared"
echo "   clinical phrasing (test vignettes are new questions about facts the corpus teaches)"
$PY -m pure_transformer data overlap --train bundled-mcq --eval bundled-mcq --eval-split test

took "contamination overlap"
echo; echo "== 5. pretraining: tiny model, ${PRETRAIN_TOKENS:-2000000} tokens, MCQs written explanation first; stopped while GRPO has headroom"
$PY -m pure_transformer.run_train pretrain --config pretrain:demo --checkpoint-dir "$RUN_DIR/pretrain" \
  --set tokenizer="$RUN_DIR/tokenizer" ${PRETRAIN_TOKENS:+--set total_tokens=$PRETRAIN_TOKENS} --no-progress
$PY -m pure_transformer plot "$RUN_DIR/pretrain" --out "$RUN_DIR/pretrain/curves.png"

took "pretraining (and its plot)"
echo; echo "== 6. before GRPO: 400 held-out test questions, in-distribution (other vignettes of the chains training"
echo "   asks), in two formulations (generate: explanation first, then the answer line; loglikelihood: the letter)"
"${EVAL[@]}" --checkpoint "$RUN_DIR/pretrain" --mode generate,loglikelihood \
  --output "$RUN_DIR/eval-pretrain.json" | tail -n +2
echo "-- the compositional split: chain types no training question asks, each of whose hops training teaches"
"${COMPOSE[@]}" --checkpoint "$RUN_DIR/pretrain" --output "$RUN_DIR/eval-pretrain-compositional.json" | tail -n +2
took "evaluation before GRPO"
echo; echo "== 7. GRPO: 16 training questions x 4 samples per step, reward = the option named on the final Answer: line"
$PY -m pure_transformer.run_train rl --checkpoint "$RUN_DIR/pretrain" --config rl:demo \
  --checkpoint-dir "$RUN_DIR/rl" ${RL_STEPS:+--set max_steps=$RL_STEPS} --no-progress
$PY -m pure_transformer plot "$RUN_DIR/rl" --out "$RUN_DIR/rl/curves.png"

took "GRPO (and its plot)"
echo; echo "== 8. after GRPO, on the same 400 held-out questions: the gain is paired per question (bootstrap 95% CI)"
"${EVAL[@]}" --checkpoint "$RUN_DIR/rl" --mode generate,loglikelihood \
  --baseline "$RUN_DIR/eval-pretrain.json" --output "$RUN_DIR/eval-rl.json" | tail -n +2
echo "-- the compositional split: has GRPO taught the model to chain facts it knows one at a time?"
"${COMPOSE[@]}" --checkpoint "$RUN_DIR/rl" --baseline "$RUN_DIR/eval-pretrain-compositional.json" \
  --output "$RUN_DIR/eval-rl-compositional.json" | tail -n +2

took "evaluation after GRPO"
echo; echo "== 9. the same questions with every option re-lettered (A->B, B->C, ...): a letter prior would not survive"
"${EVAL[@]}" --checkpoint "$RUN_DIR/pretrain" --mode generate --rotate 1 --output "$RUN_DIR/eval-pretrain-rot.json" \
  > /dev/null
"${EVAL[@]}" --checkpoint "$RUN_DIR/rl" --mode generate --rotate 1 --baseline "$RUN_DIR/eval-pretrain-rot.json" \
  | tail -n +2

took "re-lettered evaluations"
echo; echo "== 10. one generated answer (a held-out question, greedy)"
$PY -c "from pure_transformer.mcq.answer_format import AnswerFormat; from pure_transformer.bundled.synthetic import bundled_corpus
q = bundled_corpus().mcq['test'][0]; open('$RUN_DIR/gold.txt', 'w').write(q.answer_text); print(AnswerFormat.EXPLAIN.prompt(q))" \
  > "$RUN_DIR/question.txt"
cat "$RUN_DIR/question.txt"
$PY -m pure_transformer.generate --checkpoint "$RUN_DIR/rl" --prompt "$(cat "$RUN_DIR/question.txt")" \
  --temperature 0 --max-new-tokens 96 --stop $'\n\nQuestion:'
echo "(gold: $(cat "$RUN_DIR/gold.txt"))"

took "one generated answer"
echo; echo "time per stage:"
printf '  %s\n' "${TIMES[@]}"
echo "demo finished in $(( $(date +%s) - start )) s; outputs in $RUN_DIR (curves: pretrain/curves.png, rl/curves.png)"
echo "These are synthetic questions generated from the bundled fact base, not USMLE: the figures show that the"
echo "pipeline learns, not how a model would score on MedQA."
