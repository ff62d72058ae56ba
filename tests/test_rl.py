"""GRPO training tests: batch layout against the engine's own log-probs, the data
order, and a stopped-and-resumed run reproducing an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pure_transformer.bundled.synthetic import bundled_corpus
from pure_transformer.checkpoint.store import read_meta, save_checkpoint, step_dir
from pure_transformer.config.overrides import apply_overrides
from pure_transformer.config.rl import debug
from pure_transformer.errors import DataError
from pure_transformer.inference.engine import Engine, SamplingParams
from pure_transformer.model.config import ModelConfig
from pure_transformer.model.transformer import build_model
from pure_transformer.rl.rewards import correctness_reward
from pure_transformer.rl.rollout import build_batch, completion_logprobs, sample_groups
from pure_transformer.rl.train import grpo_train, next_questions
from pure_transformer.train.logger import read_metrics

CFG = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=320)


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    """A 'pretrained' checkpoint: random weights, real tokenizer, real layout."""
    torch.manual_seed(0)
    model = build_model(CFG)
    path = step_dir(tmp_path_factory.mktemp("pretrained"), 1)
    save_checkpoint(path, model, {"kind": "pretrain", "step": 1, "model_config": CFG.to_dict(),
                                  "tokenizer": "tokenizer.json"}, files={"tokenizer.json": tiny_tokenizer.hf.to_str()})
    return path


def small_cfg(**changes: object):
    base = dict(prompts_per_step=4, samples_per_prompt=4, micro_batch=8, max_steps=4, val_every=2, val_questions=8,
                ckpt_every=2, max_new_tokens=4, top_k=20, lr=1e-3, embedding_lr=1e-3)
    base.update(changes)
    return apply_overrides(debug(), base)


@pytest.mark.fast
def test_shared_prefix_logprobs_match_sampler_and_full_forward(tiny_tokenizer) -> None:
    torch.manual_seed(0)
    model = build_model(CFG)
    engine = Engine(model, tiny_tokenizer)
    questions = bundled_corpus().mcq["train"][:3]
    params = SamplingParams(max_new_tokens=5, temperature=0.9, top_k=12, seed=1)
    shown, prompts, groups = sample_groups(engine, questions, params, 4)
    batch = build_batch(shown, prompts, groups, correctness_reward)
    assert batch.size == 12 and batch.rewards.shape == (12,)
    assert torch.allclose(batch.advantages.view(3, 4).sum(1), torch.zeros(3), atol=1e-6)  # relative within groups
    samples = [s for g in groups for s in g]
    assert [batch.completions[i, :len(s.tokens)].tolist() for i, s in enumerate(samples)] == [s.tokens for s in samples]
    # Completions end at different lengths (a sample that stops early): cut two rows short, so the
    # scorer's padding columns and its head-on-real-tokens-only path are both exercised.
    for i, length in ((3, 2), (6, 1)):
        batch.mask[i, length:], batch.completions[i, length:], batch.old_logp[i, length:] = 0, 0, 0
        batch.keep_ids[i, length:] = -1
    on = batch.mask.bool()

    # Rows 2..9 straddle three groups: one prompt pass each, cache rows repeated per sample.
    model.train()
    shared, logits = completion_logprobs(model, batch, 2, 10, params.temperature)
    torch.testing.assert_close(shared[on[2:10]], batch.old_logp[2:10][on[2:10]], atol=1e-4, rtol=1e-4)
    assert torch.all(shared[~on[2:10]] == 0) and logits.shape[0] == int(on[2:10].sum())  # logits: real tokens only
    (shared * batch.mask[2:10]).sum().backward()
    shared_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    # Independent reference: each row's whole sequence through the model, no cache, masked by hand.
    total = 0.0
    for i in range(2, 10):
        prompt, s = prompts[i // 4], samples[i]
        completion = s.tokens[:int(batch.mask[i].sum())]
        _, logits = model(torch.tensor([prompt + completion]))
        step_logits = logits[0, len(prompt) - 1:-1] / params.temperature  # positions predicting the completion
        for t, token in enumerate(completion):
            kept = s.keep_ids[t][s.keep_ids[t] >= 0]
            logp = torch.log_softmax(step_logits[t, kept], dim=-1)[kept.tolist().index(token)]
            assert shared[i - 2, t].item() == pytest.approx(logp.item(), abs=1e-4)
            total = total + logp
    total.backward()
    for a, p in zip(shared_grads, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-4, rtol=1e-3)


@pytest.mark.fast
def test_question_stream_is_a_permutation_per_epoch() -> None:
    train = bundled_corpus().mcq["train"][:10]
    first = next_questions(train, 0, 10, seed=3)
    assert sorted(q.question for q in first) == sorted(q.question for q in train)
    assert next_questions(train, 10, 10, seed=3) != first  # a new order in the next epoch
    assert next_questions(train, 4, 3, seed=3) == first[4:7]


@pytest.mark.fast
def test_resumed_run_repeats_the_same_rollouts(tmp_path: Path, init_ckpt: Path) -> None:
    cfg = small_cfg()
    whole = grpo_train(cfg, init_ckpt, tmp_path / "whole", progress=False)
    part = grpo_train(cfg, init_ckpt, tmp_path / "split", stop_at_step=2, progress=False)
    assert part.stopped == "stop_at_step" and part.step == 2
    rest = grpo_train(cfg, init_ckpt, tmp_path / "split", resume="auto", progress=False)
    assert rest.step == whole.step == 4

    def trace(run: Path) -> list:
        keys = ("accuracy", "reward", "kl", "policy_loss", "response_len", "letters", "val_accuracy")
        return [{k: r[k] for k in keys if k in r} | {"step": r["step"]} for r in read_metrics(run / "logs/metrics.jsonl")]

    assert trace(tmp_path / "whole") == trace(tmp_path / "split")
    meta = read_meta(tmp_path / "split" / "final")
    assert meta["kind"] == "rl" and meta["cursor"] == 16 and (tmp_path / "split/final/reference.safetensors").exists()
    record = [r for r in read_metrics(tmp_path / "whole/logs/metrics.jsonl") if "accuracy" in r][0]
    for key in ("reward_std", "zero_variance_frac", "kl", "policy_loss", "masked_frac", "clip_frac", "entropy",
                "response_len", "rollout_tokens_per_s", "gen_time_s", "train_time_s"):
        assert key in record


@pytest.mark.fast
def test_kl_free_run_logs_no_kl_and_keeps_its_reference(tmp_path: Path, init_ckpt: Path) -> None:
    """kl_coef 0 skips the reference pass: the steps log no KL (none was measured),
    and the checkpoint keeps its reference file, so a resume with a KL term can still load it."""
    def likes_e(mcq, completion: str) -> float:
        return float("e" in completion)

    cfg = small_cfg(max_steps=2, val_every=100, warmup_steps=0, kl_coef=0.0)
    grpo_train(cfg, init_ckpt, tmp_path / "free", progress=False, reward_fn=likes_e)
    steps = [r for r in read_metrics(tmp_path / "free/logs/metrics.jsonl") if "accuracy" in r]
    assert len(steps) == 2 and all("kl" not in r and "policy_loss" in r for r in steps)
    assert (tmp_path / "free/final/reference.safetensors").exists()


@pytest.mark.fast
def test_reference_stays_frozen_unless_refreshed(tmp_path: Path, init_ckpt: Path) -> None:
    from safetensors.torch import load_file

    initial = load_file(str(init_ckpt / "model.safetensors"))

    def likes_e(mcq, completion: str) -> float:  # a random model never names a letter: reward something it does
        return float("e" in completion)

    cfg = small_cfg(max_steps=2, val_every=100, warmup_steps=0)
    grpo_train(cfg, init_ckpt, tmp_path / "frozen", progress=False, reward_fn=likes_e)
    ref = load_file(str(tmp_path / "frozen/final/reference.safetensors"))
    policy = load_file(str(tmp_path / "frozen/final/model.safetensors"))
    assert all(torch.equal(ref[k], initial[k]) for k in initial)
    assert not all(torch.equal(policy[k], initial[k]) for k in initial)  # the policy did move
    grpo_train(apply_overrides(cfg, {"ref_refresh_every": 2}), init_ckpt, tmp_path / "refresh", progress=False,
               reward_fn=likes_e)
    ref = load_file(str(tmp_path / "refresh/final/reference.safetensors"))
    policy = load_file(str(tmp_path / "refresh/final/model.safetensors"))
    assert all(torch.equal(ref[k], policy[k]) for k in policy)


def test_rl_cli_errors_are_one_line(tmp_path: Path, init_ckpt: Path, run_train_error) -> None:
    base = ["rl", "--checkpoint-dir", str(tmp_path / "run")]
    # One real process for the contract a shell sees (status 2, one stderr line); the other
    # mistakes go through the same main() in-process, which saves ~3 s of imports each.
    proc = subprocess.run([sys.executable, "-m", "pure_transformer.run_train", *base], capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "--checkpoint is required" in lines[0], proc.stderr
    cases = [(["--checkpoint", str(init_ckpt), "--task", "usmle-real"], "unknown task 'usmle-real'"),
             (["--checkpoint", str(tmp_path / "nope")], "checkpoint path not found"),
             (["--checkpoint", str(init_ckpt), "--config", "big"], "unknown rl preset 'big'"),
             (["--checkpoint", str(init_ckpt), "--set", "answer_format=vibes"],
              "answer_format must be one of letter, text, explain, got 'vibes'"),
             (["--checkpoint", str(init_ckpt), "--set", "max_new_tokens=0"], "max_new_tokens must be positive")]
    for extra, message in cases:
        assert message in run_train_error([*base, *extra])


def test_grpo_learns_a_toy_reward(tmp_path: Path, init_ckpt: Path) -> None:
    """The loop must learn: a reward the initial policy almost never earns (the
    completion starts with w, y or k: about 2% of random samples) rises above 0.6
    within 30 steps. A sign error or a broken advantage keeps it near 0."""

    def starts_rare(mcq, completion: str) -> float:
        return float(completion[:1] != "" and completion[0] in "wyWYkK")  # ("" is in every string)

    cfg = small_cfg(prompts_per_step=8, samples_per_prompt=8, micro_batch=64, max_steps=30, val_every=1000,
                    ckpt_every=1000, max_new_tokens=2, top_k=None, lr=1e-2, embedding_lr=1e-2, warmup_steps=0)
    grpo_train(cfg, init_ckpt, tmp_path / "toy", progress=False, reward_fn=starts_rare)
    rewards = [r["reward"] for r in read_metrics(tmp_path / "toy/logs/metrics.jsonl") if "reward" in r]
    assert len(rewards) == 30
    assert sum(rewards[:3]) / 3 < 0.1, rewards
    assert sum(rewards[-5:]) / 5 > 0.6, rewards


@pytest.mark.fast
def test_validation_questions_from_a_file_the_source_or_a_held_out_slice(tmp_path: Path, write_jsonl, bundled,
                                                                       capsys) -> None:
    from pure_transformer.rl.questions import rl_questions

    rows = [{"question": q.question, "options": q.options, "answer_idx": q.answer} for q in bundled.mcq["train"]]
    from pure_transformer.data.registry import load_mcqs

    small = write_jsonl(tmp_path / "mine_train.jsonl", rows[:14])
    readable = len(load_mcqs(str(small), "train"))  # a lone train file keeps a hash slice as its validation
    assert 12 <= readable <= 14
    train, val = rl_questions(str(small), None, limit=100)
    assert (len(train), len(val)) == (readable - 8, 8) and not {q.question for q in train} & {q.question for q in val}
    assert f"holding out 8 of its {readable} training questions" in capsys.readouterr().err
    assert rl_questions(str(small), None, limit=100) == (train, val)  # the same slice every time (resume)
    val_file = write_jsonl(tmp_path / "val_validation.jsonl", rows[20:29])
    train, val = rl_questions(str(small), str(val_file), limit=100)
    assert (len(train), len(val)) == (readable, 9)  # a validation file: the train split is all it reads
    tiny = write_jsonl(tmp_path / "tiny_train.jsonl", rows[:6])
    with pytest.raises(DataError, match="too few to hold out 8 for validation; pass a validation file with "
                                        "--val-data-path FILE"):
        rl_questions(str(tiny), None, limit=100)
    train, val = rl_questions("bundled-mcq", None, limit=50)
    assert len(val) == 50 and len(train) == len(bundled.mcq["train"])  # its own validation split



def grpo_ranks(init_ckpt: Path, run_dir: Path, ranks: int, *extra: str) -> None:
    """tests/grpo_worker.py in one process, or under torchrun with ``ranks`` CPU ranks (gloo)."""
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
              if ranks > 1 else [sys.executable])
    cmd = [*launch, str(Path(__file__).with_name("grpo_worker.py")), str(init_ckpt), str(run_dir), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_ranks_match_one_process_and_resume_on_one(tmp_path: Path, init_ckpt: Path) -> None:
    """torchrun with 2 CPU ranks: each rank samples half the groups (and replaces its
    own zero-variance ones), yet rollouts, validation, losses and weights equal one
    process's; a run stopped on 2 ranks resumes on 1 and ends where both did."""
    from safetensors.torch import load_file

    grpo_ranks(init_ckpt, tmp_path / "one", 1)
    grpo_ranks(init_ckpt, tmp_path / "two", 2)
    grpo_ranks(init_ckpt, tmp_path / "split", 2, "2")
    grpo_ranks(init_ckpt, tmp_path / "split", 1, "resume")

    exact = ("accuracy", "reward", "reward_std", "zero_variance_frac", "response_len", "letters", "questions_seen",
             "val_accuracy", "val_invalid_rate")
    close = ("policy_loss", "kl", "entropy", "clip_frac", "masked_frac", "grad_norm", "logp_gap")
    one = read_metrics(tmp_path / "one/logs/metrics.jsonl")
    assert sum("accuracy" in r for r in one) == 4 and sum("val_accuracy" in r for r in one) == 3
    assert max(r.get("reward_std", 0) for r in one) > 0 and max(r.get("kl", 0) for r in one) > 0  # it did learn
    assert max(r.get("questions_seen", 0) for r in one) > 16  # zero-variance groups were replaced
    for run in ("two", "split"):
        other = read_metrics(tmp_path / run / "logs/metrics.jsonl")
        assert [r["step"] for r in other] == [r["step"] for r in one]
        for a, b in zip(one, other):
            assert {k: a[k] for k in exact if k in a} == {k: b[k] for k in exact if k in b}, (run, a, b)
            for k in close:
                if k in a:
                    assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (run, k, a, b)
    assert read_meta(tmp_path / "two/final")["world_size"] == 2
    assert read_meta(tmp_path / "split/final")["world_size"] == 1
    initial = load_file(str(init_ckpt / "model.safetensors"))
    weights = [load_file(str(tmp_path / run / "final/model.safetensors")) for run in ("one", "two", "split")]
    assert not torch.equal(weights[0]["embed_tokens.weight"], initial["embed_tokens.weight"])
    for name, w in weights[0].items():
        for other in weights[1:]:
            assert torch.allclose(other[name], w, atol=1e-6), (name, float((other[name] - w).abs().max()))
