"""A small GRPO run for tests/test_rl.py, launched plainly or under torchrun:

    grpo_worker.py INIT_CHECKPOINT RUN_DIR [STOP_AT_STEP | resume]

The reward likes completions containing "e", which a random model writes about
half the time, so groups have variance and the weights move from step 1.

The learning rate is small on purpose. Within a group the advantages sum to
zero, so the gradient on the logits the group's samples share (the first
completion position) is zero up to float noise, and Adam, which divides each
entry by its own scale, turns that noise into steps of up to lr: at lr 1e-3 one
step left 60 lm_head entries 2.5e-5 apart between 1 and 2 ranks (all other
weights within 5e-7), enough to flip a sampled token by step 3.
"""

import sys

from pure_transformer.config.overrides import apply_overrides
from pure_transformer.config.rl import debug
from pure_transformer.distributed.runtime import close_runtime
from pure_transformer.rl.train import grpo_train


def likes_e(mcq, completion: str) -> float:
    return float("e" in completion)


if __name__ == "__main__":
    init, run_dir, *rest = sys.argv[1:]
    cfg = apply_overrides(debug(), {
        "prompts_per_step": 4, "samples_per_prompt": 4, "micro_batch": 8, "max_steps": 4, "val_every": 2,
        "val_questions": 8, "ckpt_every": 2, "max_new_tokens": 4, "top_k": 20, "lr": 1e-5, "embedding_lr": 1e-5,
        "shuffle_options": True, "resample_zero_variance": True, "warmup_steps": 0})
    try:
        grpo_train(cfg, init, run_dir, progress=False, reward_fn=likes_e, resume="auto" if rest == ["resume"] else None,
                   stop_at_step=int(rest[0]) if rest and rest[0] != "resume" else None)
    finally:
        close_runtime()
