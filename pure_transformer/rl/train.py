"""Phase 2: GRPO fine-tuning on multiple-choice questions, as one importable function.

Each step of ``grpo_train``:

1. **Rollout**: the next ``prompts_per_step`` training questions (a seeded
   permutation per epoch, so the step number alone fixes the data) are
   prefilled once each and sampled ``samples_per_prompt`` times by the engine,
   which records pi_old and the kept token sets. Under torchrun each rank takes
   a contiguous block of whole groups; a question's options and samples are
   seeded by (seed, step, its slot in the step), so 1 rank and N ranks draw
   the same rollouts.
2. **Reward and advantage**: 1 when the extracted letter is the gold one
   (plus an optional format term); A_i = r_i - mean(group).
3. **Reference**: log pi_ref of every completion token from a frozen copy of
   the starting model (optionally refreshed every N steps).
4. **Update**: micro-batches of ``micro_batch`` sequences accumulate the
   token-normalised GRPO loss (:func:`pure_transformer.rl.grpo.grpo_loss`),
   divided by the step's completion tokens summed over all ranks; gradients
   are summed over ranks, then one clipped AdamW step (``updates_per_rollout``
   passes in all). The loss is thus the one-process loss of the whole step.
5. **Log**: metrics are reduced over ranks and only rank 0 logs and saves;
   validation splits its questions over the ranks and gathers the answers.

Left out, on purpose: a value model (GRPO's point is not needing one) and
asynchronous generation. See docs/GRPO.md.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..checkpoint.store import (RunLock, link_checkpoint, load_model, load_optimizer, load_weights, model_tensors,
                                prune_checkpoints, read_meta, recover_run_dir, require_meta, require_model_config,
                                resume_checkpoint, save_checkpoint, step_dir)
from ..config.overrides import apply_overrides
from ..config.rl import GRPOConfig
from ..data.ledger import LEDGER_FILE, Ledger, LedgerEntry, read_ledger
from ..distributed.runtime import (GraceCheck, PhaseTimer, Runtime, StopRequested, all_gather_object, all_reduce_grads,
                                   all_reduce_sum, any_rank, init_runtime, no_phase, rng_state, seed_everything,
                                   set_rng_state)
from ..errors import ConfigError
from ..eval.scoring import MCQScore, encode_prompt, sample_answers, task_source
from ..inference.engine import Engine, SamplingParams, prompt_seed
from ..mcq.answer_format import AnswerFormat, require_answerable
from ..mcq.record import MCQ
from ..plan.planner import run_plan
from ..train.logger import MetricsLogger
from ..train.progress import labelled
from .grpo import GRPOLossConfig, grpo_loss
from .questions import rl_questions
from .rewards import RewardConfig, RewardFn, answer_histogram, make_reward
from .rollout import RolloutBatch, build_batch, completion_logprobs, entropy_sum, sample_groups

REFERENCE_FILE = "reference.safetensors"

def question_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def next_questions(train: list[MCQ], cursor: int, count: int, seed: int) -> list[MCQ]:
    """Questions ``cursor .. cursor+count`` of the endless epoch-by-epoch shuffled stream."""
    out = []
    for i in range(cursor, cursor + count):
        epoch, pos = divmod(i, len(train))
        out.append(train[int(question_order(len(train), seed, epoch)[pos])])
    return out


@dataclass
class RLResult:
    run_dir: Path
    step: int
    val_accuracy: float | None
    elapsed_s: float
    stopped: str | None
    rank: int = 0


def sampling_budget(cfg: GRPOConfig, fmt: AnswerFormat) -> tuple[int, tuple[str, ...]]:
    """(max new tokens, stop strings) of a run: the config's, else the format's; the
    format's stops (a new "Question:", the answer line's end) always apply."""
    return cfg.max_new_tokens or fmt.max_new_tokens(), tuple(dict.fromkeys(cfg.stop_strings + fmt.stop_strings()))


def rollout(engine: Engine, cfg: GRPOConfig, train: list[MCQ], cursor: int, step: int, reward_fn: RewardFn,
            fmt: AnswerFormat, rt: Runtime) -> tuple[RolloutBatch, int]:
    """Sample and score this rank's groups of one step; returns them and the
    advanced (global) question cursor.

    The step's ``prompts_per_step`` questions are slots; rank r takes the r-th
    contiguous block. With ``resample_zero_variance``, uninformative groups are
    replaced by fresh questions for up to two more rounds, numbered across the
    ranks in slot order, so every rank count replaces them with the same ones."""
    budget, stops = sampling_budget(cfg, fmt)
    params = SamplingParams(max_new_tokens=budget, temperature=cfg.temperature, top_k=cfg.top_k,
                            top_p=cfg.top_p, stop_strings=stops)

    def draw(first: int, count: int, round_: int) -> tuple[list[MCQ], list[list[int]], list]:
        """Questions ``cursor + first ...`` as slots ``first ...`` of this round."""
        questions = next_questions(train, cursor + first, count, cfg.seed)
        seeds = [prompt_seed(cfg.seed, step, round_, slot) for slot in range(first, first + count)]
        return sample_groups(engine, questions, params, cfg.samples_per_prompt, seeds, cfg.shuffle_options, fmt)

    share = cfg.prompts_per_step // rt.world_size
    shown, prompts, groups = draw(rt.rank * share, share, 0)
    cursor += cfg.prompts_per_step
    for round_ in range(1, 3 if cfg.resample_zero_variance else 1):
        flat = build_batch(shown, prompts, groups, reward_fn, answer_format=fmt)
        bad = flat.zero_variance.nonzero().squeeze(1).tolist()
        counts = all_gather_object(len(bad), rt)
        if not sum(counts):
            break
        if bad:
            new = draw(sum(counts[:rt.rank]), len(bad), round_)
            for slot, q, p, g in zip(bad, *new):
                shown[slot], prompts[slot], groups[slot] = q, p, g
        cursor += sum(counts)
    return build_batch(shown, prompts, groups, reward_fn, scale_adv_by_std=cfg.scale_adv_by_std,
                       answer_format=fmt), cursor


def micro_batches(batch: RolloutBatch, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, batch.size)) for i in range(0, batch.size, size)]


@torch.no_grad()
def reference_logprobs(ref: torch.nn.Module, batch: RolloutBatch, cfg: GRPOConfig) -> list[torch.Tensor | None]:
    """log pi_ref per micro-batch; Nones when ``kl_coef`` is 0: no KL term, no reference pass."""
    spans = micro_batches(batch, cfg.micro_batch)
    if not cfg.kl_coef:
        return [None] * len(spans)
    return [completion_logprobs(ref, batch, s, e, cfg.temperature)[0] for s, e in spans]


def loss_config(cfg: GRPOConfig) -> GRPOLossConfig:
    return GRPOLossConfig(clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high, kl_coef=cfg.kl_coef,
                          offpolicy_mask_delta=cfg.offpolicy_mask_delta)


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: RolloutBatch, ref_logp: list,
           cfg: GRPOConfig, loss_cfg: GRPOLossConfig, rt: Runtime, timer: PhaseTimer | None = None
           ) -> dict[str, float]:
    """``updates_per_rollout`` optimizer steps on one rollout batch (this rank's
    share of the step); returns the step's statistics, reduced over ranks. A
    ``timer`` gets the phases "policy" (scoring and loss), "backward" (gradients,
    summed over ranks) and "optimizer" (clip and AdamW).

    ``logp_gap`` is the mean |log pi_old - log pi_theta| over completion tokens in
    the first pass, where the two are the same weights: it measures how far the
    trainer's numerics are from the sampler's (0 up to float noise when they match)."""
    device = rt.device
    # The divisor is the whole step's token count, so the summed gradients are the one-process gradient.
    total_tokens = float(all_reduce_sum(torch.tensor(batch.num_completion_tokens, device=device), rt))
    sums = torch.zeros(6, dtype=torch.float64)  # policy_loss, kl, clip_frac, masked_frac, entropy, logp_gap
    grad_norms = 0.0
    phase = timer or no_phase
    for update_ in range(cfg.updates_per_rollout):
        for k, (start, end) in enumerate(micro_batches(batch, cfg.micro_batch)):
            with phase("policy"):
                logp, logits = completion_logprobs(model, batch, start, end, cfg.temperature)
                mask = batch.mask[start:end].to(device)
                old = batch.old_logp[start:end].to(device)
                out = grpo_loss(logp, old, ref_logp[k], batch.advantages[start:end].to(device), mask, loss_cfg,
                                num_tokens=total_tokens)
            with phase("backward"):
                out.loss.backward()
            with phase("policy"):
                entropy = entropy_sum(logits, cfg.temperature)
                gap = float(((logp.detach() - old).abs() * mask).sum()) if update_ == 0 else 0.0
                sums += torch.tensor([out.policy_loss, out.kl, out.clip_frac, out.masked_frac * (end - start),
                                      entropy / total_tokens, gap / total_tokens], dtype=torch.float64)
        with phase("backward"):
            all_reduce_grads(model.parameters(), rt)
        with phase("optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            grad_norms += float(grad_norm)
            if torch.isfinite(grad_norm):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    sums = all_reduce_sum(sums.to(device), rt).cpu()
    sums[3] /= batch.size * rt.world_size  # sequences masked, as a share of the step's sequences
    stats = dict(zip(("policy_loss", "kl", "clip_frac", "masked_frac", "entropy"),
                     (sums[:5] / cfg.updates_per_rollout).tolist()))
    if not cfg.kl_coef:  # no reference pass, so no KL measured
        del stats["kl"]
    return {**stats, "logp_gap": float(sums[5]), "grad_norm": grad_norms / cfg.updates_per_rollout}


def grpo_step(engine: Engine, ref: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: GRPOConfig,
              loss_cfg: GRPOLossConfig, train: list[MCQ], cursor: int, step: int, reward_fn: RewardFn,
              fmt: AnswerFormat, rt: Runtime, timer: PhaseTimer) -> tuple[RolloutBatch, int, dict[str, float]]:
    """One GRPO step of ``engine.model``: rollout, reference log-probs, update. Returns
    the rollout batch, the advanced cursor and :func:`update`'s statistics; ``timer``
    gets the phases "generation", "reference" and :func:`update`'s."""
    with timer("generation"):
        batch, cursor = rollout(engine, cfg, train, cursor, step, reward_fn, fmt, rt)
    engine.model.train()
    with timer("reference"):
        ref_logp = reference_logprobs(ref, batch, cfg)
    return batch, cursor, update(engine.model, optimizer, batch, ref_logp, cfg, loss_cfg, rt, timer)


def step_record(batch: RolloutBatch, rt: Runtime) -> dict:
    """The step's rollout statistics over every rank's groups."""
    parts = all_gather_object((batch.rewards.tolist(), batch.correct.tolist(), batch.zero_variance.tolist(),
                               batch.answers, batch.num_completion_tokens), rt)
    rewards = torch.tensor([r for part in parts for r in part[0]])
    tokens = sum(part[4] for part in parts)
    return {"accuracy": float(np.mean([c for part in parts for c in part[1]])), "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "zero_variance_frac": float(np.mean([z for part in parts for z in part[2]])),
            "response_len": tokens / len(rewards), "completion_tokens": tokens,
            "letters": answer_histogram([a for part in parts for a in part[3]])}


def grpo_train(cfg: GRPOConfig, init_checkpoint: str | Path, run_dir: str | Path, *, task: str = "synthetic",
               data_path: str | None = None, val_data_path: str | None = None, resume: str | None = None,
               stop_at_step: int | None = None, device: str | None = None, progress: bool = True,
               reward_fn: RewardFn | None = None) -> RLResult:
    """Fine-tune the model in ``init_checkpoint`` with GRPO; see the module docstring.

    ``val_data_path`` is a file of validation questions (default: the task's own
    validation split, or a slice held out of its training questions,
    :func:`~pure_transformer.rl.questions.rl_questions`). ``reward_fn`` replaces the configured reward (correctness plus
    ``format_weight`` times the format reward) with any ``(MCQ, completion) -> float``.
    """
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun's; rank 0 holds the lock for all ranks
    with RunLock(run_dir) if main else contextlib.nullcontext():
        if main:
            recover_run_dir(run_dir)
        return _grpo_train(cfg, init_checkpoint, Path(run_dir), task=task, data_path=data_path,
                           val_data_path=val_data_path, resume=resume, stop_at_step=stop_at_step, device=device,
                           progress=progress, reward_fn=reward_fn)


def _grpo_train(cfg: GRPOConfig, init_checkpoint: str | Path, run_dir: Path, *, task: str, data_path: str | None,
                val_data_path: str | None, resume: str | None, stop_at_step: int | None, device: str | None,
                progress: bool, reward_fn: RewardFn | None) -> RLResult:
    rt = init_runtime(device, cfg.precision)
    if cfg.prompts_per_step % rt.world_size:
        raise ConfigError(f"prompts_per_step={cfg.prompts_per_step} must be a multiple of the {rt.world_size} ranks "
                          "(each rank samples whole groups)")
    ckpt = resume_checkpoint(run_dir, resume)
    meta = read_meta(ckpt) if ckpt is not None else None
    if meta is not None:
        require_meta(meta, ckpt, {"config": dict, "rng": dict, "cursor": int, "source": str,  # type: ignore[arg-type]
                                  "init_checkpoint": str})
        saved = apply_overrides(GRPOConfig(), meta["config"])
        # reset_optimizer is a resume-time choice, budget_hours a planning figure: neither changes the run.
        if dataclasses.replace(saved, reset_optimizer=cfg.reset_optimizer, budget_hours=cfg.budget_hours) != cfg:
            changed = next(k for k in cfg.to_dict() if getattr(saved, k) != getattr(cfg, k))
            raise ConfigError(f"cannot change {changed} when resuming an RL run")
        init_checkpoint = meta["init_checkpoint"]
    seed_everything(cfg.seed)
    source = task_source(task, data_path)
    if meta is not None and meta["source"] != source:
        raise ConfigError(f"this run trained on {meta['source']}; resume it with the same task or --data-path")
    if meta is not None and meta.get("val_source") != val_data_path:
        raise ConfigError(f"this run validated on {meta.get('val_source') or 'its task'}; resume it with the same "
                          "--val-data-path")
    train, val = rl_questions(source, val_data_path, cfg.val_questions)

    model, tok, init_meta, init_dir = load_model(init_checkpoint, rt.device)
    model.bf16 = rt.bf16  # sampler, scorer and reference in one precision; master weights stay fp32
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = model.setup_optimizers(cfg.lr, embedding_lr=cfg.embedding_lr, weight_decay=cfg.weight_decay,
                                       betas=cfg.betas)
    step, cursor, best = 0, 0, -math.inf
    if meta is not None:
        require_model_config(meta, ckpt, model.cfg)  # type: ignore[arg-type]
        load_weights(ckpt, model)
        load_optimizer(ckpt, optimizer, meta, reset=cfg.reset_optimizer)
        load_weights(ckpt, ref, REFERENCE_FILE)
        set_rng_state(meta["rng"])
        step, cursor, best = meta["step"], meta["cursor"], meta.get("best_val_accuracy", -math.inf)
    fmt = AnswerFormat(cfg.answer_format) if cfg.answer_format else AnswerFormat.of_checkpoint(init_meta)
    budget, _ = sampling_budget(cfg, fmt)
    require_answerable(train, fmt, "training")
    require_answerable(val, fmt, "validation")
    train = fitting(train, tok, fmt, budget, model.cfg.max_seq_len, "train", rt.is_main)
    val = fitting(val, tok, fmt, budget, model.cfg.max_seq_len, "validation", rt.is_main)
    # The questions this run trains on, after its parents' (a resume keeps the ledger it saved).
    ledger = read_ledger(ckpt) if ckpt is not None else None
    if ledger is None:
        parents = read_ledger(init_dir)  # None for a checkpoint made before ledgers
        ledger = (parents if parents is not None else Ledger()).extended([LedgerEntry.of("rl", source, train)])
    engine = Engine(model, tok, compile_backend="inductor" if cfg.compile_decode else None)
    reward_fn = reward_fn or make_reward(RewardConfig(format_weight=cfg.format_weight, answer_format=fmt))
    loss_cfg = loss_config(cfg)
    total_steps = math.ceil(cfg.epochs * len(train) / cfg.prompts_per_step)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    info = {"config": cfg.to_dict(), "task": task, "source": source, "init_checkpoint": str(init_dir),
            "train_questions": len(train), "val_questions": len(val), "total_steps": total_steps,
            "parameters": model.num_params(), "device": str(rt.device), "world_size": rt.world_size}
    say = print if rt.is_main else (lambda *a, **k: None)
    if rt.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(info, indent=1))
    say(f"GRPO on {source}: {len(train)} train / {len(val)} validation questions, {total_steps} steps of "
        f"{cfg.prompts_per_step} prompts x {cfg.samples_per_prompt} samples in the {fmt.value} format, "
        f"from {init_dir}" + (f" on {rt.world_size} ranks" if rt.distributed else "")
        + (f", resuming at step {step}" if meta else ""))
    say(f"training ledger: {ledger.summary()}")
    say(run_plan(cfg, model.cfg, rt.device, grpo_new_tokens=budget, questions=len(train), world_size=rt.world_size))
    logger = (MetricsLogger(run_dir / "logs", resume_step=step if meta else None, group="rl", config=info)
              if rt.is_main else None)

    def save(complete: bool = False, stopping: str | None = None) -> Path:
        """Rank 0 writes the step (every rank has the same weights); all ranks call."""
        path, began = step_dir(run_dir, step), time.perf_counter()
        if not rt.is_main:
            dist.barrier()
            return path
        meta_out = {"kind": "rl", "step": step, "cursor": cursor, "config": cfg.to_dict(), "task": task,
                    "answer_format": fmt.value,
                    "source": source, "val_source": val_data_path, "init_checkpoint": str(init_dir),
                    "model_config": model.cfg.to_dict(),
                    "rng": rng_state(), "best_val_accuracy": best, "complete": complete,
                    "tokenizer": "tokenizer.json", "pretrain": {"step": init_meta.get("step")},
                    "world_size": rt.world_size, "stopped": stopping}
        save_checkpoint(path, model, meta_out, optimizer,
                        files={**tok.files(), LEDGER_FILE: ledger.to_json()},  # an imported model's roles too
                        extra_tensors={REFERENCE_FILE: model_tensors(ref)})
        prune_checkpoints(run_dir, cfg.keep_last)
        if rt.distributed:
            dist.barrier()
        grace.observe(save_s=time.perf_counter() - began)
        return path

    def log(record: dict) -> None:
        if logger is not None:
            logger.log(step, record)

    def validate() -> float:
        # Question i is answered on rank i % world_size; greedy answers do not depend on the batch.
        mine = sample_answers(engine, val[rt.rank::rt.world_size], fmt, max_new_tokens=budget)
        answers: list[str | None] = [None] * len(val)
        for r, part in enumerate(all_gather_object([a[0] for a in mine.answers], rt)):
            answers[r::rt.world_size] = part
        result = MCQScore.of(answers, val)
        log({"val_accuracy": result.accuracy, "val_ci_low": result.ci95[0], "val_ci_high": result.ci95[1],
             "val_invalid_rate": result.invalid_rate})
        return result.accuracy

    stop, grace = StopRequested(), GraceCheck()
    stopped, val_acc = None, None
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and rt.is_main), unit="step",
               dynamic_ncols=True)
    write = bar.write if rt.is_main else (lambda msg: None)
    start = time.perf_counter()
    try:
        if rt.is_main and meta is not None and meta.get("complete") and not os.path.lexists(run_dir / "final"):
            link_checkpoint(ckpt, "final")  # a kill after the last save, before final/ was linked
        if step == 0:
            with labelled(bar, "validating"):
                val_acc = validate()
            write(f"step 0: greedy validation accuracy {val_acc:.3f}")
        with stop.installed():
            while step < total_steps:
                lr_scale = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
                for group in optimizer.param_groups:
                    group["lr"] = group["peak_lr"] * lr_scale
                timer = PhaseTimer()  # no device: wall time only, no synchronisation in the loop
                batch, cursor, stats = grpo_step(engine, ref, optimizer, cfg, loss_cfg, train, cursor, step,
                                                 reward_fn, fmt, rt, timer)
                gen_s, step_s = timer.seconds["generation"], sum(timer.seconds.values())
                step += 1
                if cfg.ref_refresh_every and step % cfg.ref_refresh_every == 0:
                    ref.load_state_dict(model.state_dict())
                record = {**step_record(batch, rt), **stats, "gen_time_s": gen_s, "train_time_s": step_s - gen_s,
                          "lr": cfg.lr * lr_scale, "questions_seen": cursor}
                record["rollout_tokens_per_s"] = record.pop("completion_tokens") / gen_s
                if step % cfg.log_every == 0:
                    log(record)
                bar.update(1)
                kl = {"kl": f"{stats['kl']:.4f}"} if "kl" in stats else {}
                bar.set_postfix(acc=f"{record['accuracy']:.2f}", **kl)
                saved = None  # one save per step: a new best on a checkpoint step is the same folder
                signalled = any_rank(bool(stop), rt)
                stopping = None if step == total_steps else "stop_at_step" if step == stop_at_step else (
                    "signal" if signalled else None)
                if step % cfg.val_every == 0 or step == total_steps:
                    with labelled(bar, "validating"):
                        val_acc = validate()
                    kl_text = f", kl {stats['kl']:.4f}" if "kl" in stats else ""  # no KL without a KL term
                    write(f"step {step}: greedy validation accuracy {val_acc:.3f} (train sample accuracy "
                          f"{record['accuracy']:.3f}{kl_text})")
                    if val_acc > best:
                        best = val_acc
                        saved = save(complete=step == total_steps, stopping=stopping)
                        if rt.is_main:
                            link_checkpoint(saved, "best")
                if step % cfg.ckpt_every == 0 or step == total_steps or stopping:
                    path = saved or save(complete=step == total_steps, stopping=stopping)
                    if step == total_steps and rt.is_main:
                        link_checkpoint(path, "final")
                    elif stopping:
                        stopped = stopping
                        write(f"stopped after step {step} ({stopped}); resume with --resume")
                        break
                if warning := grace.observe(step_s=step_s):
                    write(warning)
    finally:
        bar.close()
        if logger is not None:
            logger.close()
    return RLResult(run_dir, step, val_acc, time.perf_counter() - start, stopped, rt.rank)


def fitting(questions: list[MCQ], tok, fmt: AnswerFormat, max_new_tokens: int, context: int, split: str,
            verbose: bool = True) -> list[MCQ]:
    """The questions whose prompt leaves room for ``max_new_tokens`` in the context;
    the rest are dropped with a note rather than truncated mid-question."""
    kept = [q for q in questions if len(encode_prompt(tok, q, fmt)) + max_new_tokens <= context]
    if not kept:
        raise ConfigError(f"no {split} question fits the {context}-token context with {max_new_tokens} new tokens")
    if len(kept) < len(questions) and verbose:
        print(f"note: {len(questions) - len(kept)} of {len(questions)} {split} questions are too long for the "
              f"{context}-token context and are skipped")
    return kept
