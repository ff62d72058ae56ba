"""Phase 1: pretraining, as one importable function.

``pretrain(cfg, run_dir)`` reads as setup -> fit -> validate -> checkpoint:

- setup: runtime (device, torchrun ranks), tokenizer, model, AdamW, the packed
  training stream and the fixed per-source validation batches, and, when
  resuming, every piece of state from the checkpoint;
- each optimizer step accumulates ``accum_steps`` micro-batches under bf16
  autocast (CUDA) or fp32 (CPU), clips the gradient norm, and skips the update
  when the loss or gradient is not finite;
- the LR is a function of tokens seen (warmup, cosine, floor);
- every ``val_every`` steps: loss and perplexity per source and overall and, when
  the mixture holds MCQs, greedy accuracy on fixed validation questions in the
  checkpoint's answer format (:mod:`.validation`); a new best (by that accuracy,
  else by loss) is saved to ``DIR/best``;
- every ``ckpt_every`` steps, on ``stop_at_step``, on SIGTERM/SIGINT and at
  the end: an atomic checkpoint holding weights, optimizer, RNG and the
  data-stream position, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from ..checkpoint.store import (RunLock, link_checkpoint, load_optimizer, load_weights, prune_checkpoints, read_meta,
                                recover_run_dir, require_meta, require_model_config, resolve_checkpoint,
                                resume_checkpoint, save_checkpoint, step_dir)
from ..config.overrides import apply_overrides
from ..config.pretrain import PretrainConfig
from ..data.ledger import LEDGER_FILE, Ledger, read_ledger, sources_ledger
from ..data.loader import TrainLoader, build_train_loader, build_validation_batches, merge_states
from ..data.mixing import MixtureConfig, SourceWeight
from ..distributed.parallel import full_state, full_tensor, grad_sync, is_sharded, parallelize, shard_like
from ..distributed.runtime import (GraceCheck, Runtime, StopRequested, all_gather_object, all_reduce_mean, any_rank,
                                   init_runtime, max_over_ranks, peak_memory_gb, rng_state, seed_everything,
                                   set_rng_state)
from ..errors import ConfigError, UserError
from ..mcq.answer_format import AnswerFormat
from ..model.config import ModelConfig, model_preset
from ..model.transformer import Transformer, build_model
from ..plan.hardware import device_peak_flops
from ..plan.planner import run_plan
from ..tokenizer.bpe import Tokenizer
from .logger import MetricsLogger
from .progress import ProgressBar, SteadyRate, labelled
from .schedule import lr_at, set_lr
from .tokenizer_setup import prepare_tokenizer
from .validation import (MCQValidation, best_metric, best_record, mcq_validate, new_best, restored_best,
                         validation_questions)


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss stays non-finite)."""


@dataclass
class PretrainResult:
    run_dir: Path
    rank: int
    step: int
    tokens_seen: int
    val: dict[str, float]
    elapsed_s: float
    stopped: str | None
    """None when the run completed; else why it stopped early ("stop_at_step", "signal")."""


def doc_ids_of(batch: dict) -> torch.Tensor:
    """Document index of every token, from the loader's per-document positions."""
    return (batch["position_ids"] == 0).cumsum(dim=1)


def train_loader(cfg: PretrainConfig, tok: Tokenizer, rt: Runtime) -> TrainLoader:
    """This rank's stream of packed (micro_batch, seq_len) training batches."""
    mixture = MixtureConfig(tuple(SourceWeight(n, w) for n, w in cfg.sources.items()), weight_by=cfg.weight_by,
                            shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed,
                            answer_format=AnswerFormat(cfg.answer_format), whole_mcqs=cfg.whole_mcqs)
    return build_train_loader(mixture, tok, seq_len=cfg.seq_len, batch_size=cfg.micro_batch,
                              num_workers=cfg.num_workers, rank=rt.rank, world_size=rt.world_size,
                              num_shards=cfg.data_shards, token_budget=cfg.total_tokens,
                              pin_memory=rt.device.type == "cuda")


def train_step(model: torch.nn.Module, micro_batches: list[dict], rt: Runtime, cfg: PretrainConfig
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward/backward over the micro-batches of one optimizer step; returns
    (mean loss, gradient norm before clipping). Gradients are left in ``.grad``."""
    accum = len(micro_batches)
    loss_sum = torch.zeros((), device=rt.device)
    for i, batch in enumerate(micro_batches):
        x = batch["input_ids"].to(rt.device, non_blocking=True)  # (B, T)
        y = batch["labels"].to(rt.device, non_blocking=True)  # (B, T)
        doc_ids = doc_ids_of(batch).to(rt.device) if cfg.document_masking else None
        # DDP and FSDP reduce gradients on every backward unless told not to; only the last micro-batch does.
        with grad_sync(model, i == accum - 1), rt.autocast():
            loss, _ = model(x, y, doc_ids=doc_ids)
        (loss / accum).backward()
        loss_sum += loss.detach()
    grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))  # FSDP: a DTensor
    return all_reduce_mean(loss_sum / accum, rt), grad_norm


@torch.no_grad()
def validate(model: Transformer, val_batches: dict[str, list[dict]], rt: Runtime, document_masking: bool,
             lockstep: bool = False) -> dict[str, float]:
    """Token-weighted loss and perplexity per source and overall on fixed held-out batches.

    Ranks may hold a batch more or less of a source. ``lockstep`` (FSDP, whose every
    forward gathers weights from all ranks) makes each rank run as many forwards as the
    busiest one, the extra ones on a row of padding whose loss counts for nothing."""
    model.eval()
    out: dict[str, float] = {}
    totals = torch.zeros(2, device=rt.device, dtype=torch.float64)
    for name, batches in val_batches.items():
        sums = torch.zeros(2, device=rt.device, dtype=torch.float64)  # (loss * tokens, tokens)
        runs = max_over_ranks(len(batches), rt) if lockstep else len(batches)
        for i in range(runs):
            batch = batches[i] if i < len(batches) else None
            x = batch["input_ids"] if batch else torch.zeros(1, 1, dtype=torch.long)
            y = batch["labels"].to(rt.device) if batch else torch.zeros(1, 1, dtype=torch.long, device=rt.device)
            doc_ids = doc_ids_of(batch).to(rt.device) if batch and document_masking else None
            with rt.autocast():
                loss, _ = model(x.to(rt.device), y, doc_ids=doc_ids)
            if batch:
                sums += torch.stack([loss.double() * y.numel(), torch.tensor(float(y.numel()), device=rt.device)])
        if rt.distributed:
            dist.all_reduce(sums)
        out[f"val_loss/{name}"] = (sums[0] / sums[1]).item()
        out[f"val_ppl/{name}"] = math.exp(min(out[f"val_loss/{name}"], 50.0))
        totals += sums
    out["val_loss"] = (totals[0] / totals[1]).item()
    out["val_ppl"] = math.exp(min(out["val_loss"], 50.0))
    model.train()
    return out


# Fields that define what a run computes: changing one mid-run would silently make the
# "resumed" run a different experiment (or break the saved data-stream state).
PLAN_FIELDS = ("model", "tokenizer", "sources", "weight_by", "shuffle_buffer", "whole_mcqs", "document_masking",
               "seq_len", "global_batch_tokens", "total_tokens", "peak_lr", "min_lr", "embedding_lr", "warmup_tokens",
               "betas", "weight_decay", "grad_clip", "seed", "data_shards")


def check_resumable(saved: PretrainConfig, wanted: PretrainConfig) -> None:
    """Resuming may change how a run executes (micro_batch, compile, activation
    checkpointing, cadences) but not what it computes."""
    changed = [f for f in PLAN_FIELDS if getattr(saved, f) != getattr(wanted, f)]
    if changed:
        f = changed[0]
        raise ConfigError(f"cannot change {f} when resuming (checkpoint has {getattr(saved, f)!r}, asked for "
                          f"{getattr(wanted, f)!r}); start a new --checkpoint-dir to change it")


def describe(cfg: PretrainConfig, model: Transformer, rt: Runtime, tok: Tokenizer) -> dict:
    """The effective run settings, printed at start and saved as DIR/config.json."""
    accum = cfg.accum_steps(rt.world_size)
    info = {
        "config": cfg.to_dict(), "model_config": model.cfg.to_dict(), "parameters": model.num_params(),
        "tokenizer": tok.source, "tokenizer_vocab": tok.vocab_size, "device": str(rt.device),
        "world_size": rt.world_size, "accum_steps": accum, "tokens_per_step": cfg.global_batch_tokens,
        "total_steps": cfg.total_steps, "flops_per_token": model.flops_per_token(cfg.seq_len),
    }
    peak = device_peak_flops(rt.device)
    if peak:  # a planning figure only: the progress bar's ETA is measured
        est = cfg.total_tokens * info["flops_per_token"] / (0.4 * peak * rt.world_size)
        info["estimated_hours_at_40pct_mfu"] = round(est / 3600, 2)
    return info


@dataclass
class Run:
    """What a pretraining run holds between steps; counters go into every checkpoint."""

    cfg: PretrainConfig
    rt: Runtime
    run_dir: Path
    tok: Tokenizer
    model: Transformer
    train_model: torch.nn.Module  # ``model``, or its DDP wrapper; under FSDP ``model`` itself, sharded
    optimizer: torch.optim.Optimizer
    loader: TrainLoader
    val_batches: dict[str, list[dict]]
    logger: MetricsLogger | None  # rank 0 only
    ledger: Ledger | None  # rank 0 only: the training questions every checkpoint records
    step: int = 0
    tokens_seen: int = 0
    mcq_val: MCQValidation | None = None  # None: no MCQ source (or val_mcq=0), best/ tracks val_loss
    best_val: float = math.inf  # the lowest val_loss so far, whatever best/ tracks
    best: dict | None = None  # the validation best/ holds (validation.best_record), None before the first
    last_val: dict = field(default_factory=dict)
    nonfinite: dict = field(default_factory=lambda: {"in_row": 0, "total": 0})

    @property
    def best_metric(self) -> str:
        return best_metric(self.mcq_val is not None)

    def validate(self, lockstep: bool) -> dict[str, float]:
        """Loss, then MCQ accuracy when there are questions (every rank must call); logged."""
        val = validate(self.model, self.val_batches, self.rt, self.cfg.document_masking, lockstep)
        if self.mcq_val is not None:
            val.update(mcq_validate(self.model, self.tok, self.mcq_val, self.rt))
        self.log(val)
        return val

    def summary(self) -> str:
        """The printed line of the last validation."""
        v = self.last_val
        acc = f" mcq_acc {v['val_mcq_acc']:.3f} (no answer {v['val_mcq_no_answer']:.2f})" if "val_mcq_acc" in v else ""
        return f"step {self.step}: val_loss {v['val_loss']:.4f}{acc} " + " ".join(
            f"ppl/{k.split('/', 1)[1]} {x:.2f}" for k, x in v.items() if k.startswith("val_ppl/"))

    def log(self, record: dict, step: int | None = None) -> None:
        if self.logger:
            self.logger.log(self.step if step is None else step, {"tokens_seen": self.tokens_seen, **record})

    def save(self, loss: float, complete: bool = False, stopped: str | None = None) -> Path:
        """Checkpoint the current step (every rank must call: data states are gathered).
        ``stopped`` records why the run stops here, if it does ("signal", "stop_at_step")."""
        states = merge_states(all_gather_object(self.loader.state_dict(), self.rt))  # one state, any layout resumes it
        path = step_dir(self.run_dir, self.step)
        # FSDP's shards are gathered by every rank; rank 0 writes the same full tensors DDP would.
        weights, optim = (full_state(self.model, self.optimizer) if is_sharded(self.train_model)
                          else (self.model, self.optimizer))
        if self.rt.is_main:
            meta = {"kind": "pretrain", "step": self.step, "tokens_seen": self.tokens_seen, "loss": loss,
                    "val": self.last_val, "best_val_loss": self.best_val, "best": self.best, "config": self.cfg.to_dict(),
                    "model_config": self.model.cfg.to_dict(), "world_size": self.rt.world_size,
                    "rng": rng_state(), "data": states, "nonfinite": self.nonfinite, "complete": complete,
                    "stopped": stopped, "tokenizer": "tokenizer.json"}
            # tok.files(): tokenizer.json, and an imported model's tokenizer roles and chat template
            files = {**self.tok.files(), LEDGER_FILE: self.ledger.to_json()}  # type: ignore[union-attr]
            save_checkpoint(path, weights, meta, optim, files=files)
            prune_checkpoints(self.run_dir, self.cfg.keep_last)
        if self.rt.distributed:
            dist.barrier()
        return path


def setup(cfg: PretrainConfig, run_dir: Path, resume: str | None, model: Transformer | None,
          device: str | None) -> Run:
    """Build (or restore) every piece of a run; prints the effective settings."""
    rt = init_runtime(device, cfg.precision)
    cfg.accum_steps(rt.world_size)  # a batch that does not divide fails now, not after the tokenizer is trained
    cfg.check_data_shards(rt.world_size)  # likewise a layout the logical data shards cannot be split over
    ckpt = resume_checkpoint(run_dir, resume)
    meta = read_meta(ckpt) if ckpt is not None else None
    if meta is not None:
        # "data" is one state per logical shard, so any world size resumes it (a list: the old per-rank format,
        # which the loader refuses in one line).
        require_meta(meta, ckpt, {"config": dict, "rng": dict, "data": (dict, list), "tokens_seen": int})  # type: ignore[arg-type]
        check_resumable(apply_overrides(PretrainConfig(), meta["config"]), cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    run_dir.mkdir(parents=True, exist_ok=True)

    # Continued pretraining starts from a checkpoint's weights, shape and tokenizer (a resume of such a run
    # reads the same shape and tokenizer again, and its own weights).
    init = resolve_checkpoint(cfg.init_from) if cfg.init_from is not None else None
    init_meta = read_meta(init) if init is not None else None
    model_cfg = model.cfg if model is not None else \
        ModelConfig.from_dict(init_meta["model_config"]) if init_meta is not None else model_preset(cfg.model)
    if meta is not None:
        require_model_config(meta, ckpt, model_cfg)  # type: ignore[arg-type]
    if init is not None:
        tok = Tokenizer.load(init / init_meta.get("tokenizer", "tokenizer.json"))  # type: ignore[union-attr]
    else:
        tok = prepare_tokenizer(cfg.tokenizer, run_dir, model_cfg.vocab_size, cfg.sources, rt.is_main)
    if tok.vocab_size > model_cfg.vocab_size:
        raise ConfigError(f"tokenizer has {tok.vocab_size} tokens but the model only "
                          f"{model_cfg.vocab_size} embeddings")
    model = model if model is not None else build_model(model_cfg, rt.device)
    if rt.rank:  # after the model, which every rank initialises alike: FSDP, unlike DDP, broadcasts none
        seed_everything(cfg.seed + rt.rank)
    model.activation_checkpointing = cfg.activation_checkpointing
    model.bf16 = rt.bf16  # the engine (MCQ validation) and fused AdamW follow it
    if meta is not None or init is not None:
        load_weights(ckpt or init, model)  # into the whole model, before FSDP would shard it
    train_model = parallelize(model, rt, cfg.parallel, cfg.compile)
    # After parallelize: under FSDP the optimizer must see the sharded parameters.
    optimizer = model.setup_optimizers(cfg.peak_lr, embedding_lr=cfg.embedding_lr, weight_decay=cfg.weight_decay,
                                       betas=cfg.betas)
    loader = train_loader(cfg, tok, rt)
    val_batches = build_validation_batches(list(cfg.sources), tok, seq_len=cfg.seq_len, batch_size=cfg.micro_batch,
                                           tokens_per_source=cfg.val_tokens, rank=rt.rank, world_size=rt.world_size,
                                           answer_format=AnswerFormat(cfg.answer_format))
    if meta is not None:
        load_optimizer(ckpt, optimizer, meta, reset=cfg.reset_optimizer,
                       shard=functools.partial(shard_like, optimizer) if is_sharded(train_model) else None)
        loader.load_state_dict(meta["data"])
        set_rng_state(meta["rng"])
    ledger = None
    if rt.is_main:  # a resumed run keeps the ledger it started with, whatever its files say now
        ledger = read_ledger(ckpt) if ckpt is not None else None
        if ledger is None:  # a new run: what its starting checkpoint trained on, then its own sources
            parents = read_ledger(init) if init is not None else None
            ledger = (parents or Ledger()).extended(sources_ledger("pretrain", cfg.sources).entries)
    # The same questions on every rank and every resume: the first that fit of each MCQ source's validation split.
    mcq_val = validation_questions(cfg.sources, cfg.val_mcq, tok, model.cfg.max_seq_len,
                                   AnswerFormat(cfg.answer_format), verbose=rt.is_main)
    run = Run(cfg, rt, run_dir, tok, model, train_model, optimizer, loader, val_batches,
              MetricsLogger(run_dir / "logs", resume_step=meta["step"] if meta else None, group="train",
                            config=cfg.to_dict()) if rt.is_main else None, ledger, mcq_val=mcq_val)
    if meta is not None:
        run.step, run.tokens_seen, run.last_val = meta["step"], meta["tokens_seen"], meta.get("val", {})
        run.best_val, run.nonfinite = meta.get("best_val_loss", math.inf), meta.get("nonfinite", run.nonfinite)
        run.best = restored_best(meta, run.best_metric)
        if run.best is None and isinstance(meta.get("best"), dict) and rt.is_main:
            print(f"note: best/ was chosen by {meta['best'].get('metric')}, now by {run.best_metric}: the next "
                  f"validation starts the choice afresh", file=sys.stderr, flush=True)

    info = describe(cfg, model, rt, tok)
    info.update(best_metric=run.best_metric, val_mcq_questions=len(mcq_val.questions) if mcq_val else 0)
    if rt.is_main:
        (run_dir / "config.json").write_text(json.dumps(info, indent=1))
        est = info.get("estimated_hours_at_40pct_mfu")
        what = cfg.model if init is None else f"from {init}"
        print(f"pretraining {what}: {info['parameters']:,} parameters, {cfg.global_batch_tokens:,} tokens/step "
              f"({cfg.micro_batch}x{cfg.seq_len} x {info['accum_steps']} accum x {rt.world_size} ranks), "
              f"{cfg.total_steps} steps, device {rt.device}" + (f", ~{est} h at 40% MFU" if est else "")
              + (f", resuming from {ckpt} at step {run.step}" if ckpt else ""))
        print("effective config: " + json.dumps(cfg.to_dict()))
        print(run_plan(cfg, model.cfg, rt.device, world_size=rt.world_size))  # memory and time, before the hours
        print(f"training ledger: {ledger.summary()}")  # type: ignore[union-attr]
        if meta is not None and meta.get("complete"):
            print(f"run in {run_dir} is already complete ({run.step} steps)")
            if not os.path.lexists(run_dir / "final"):  # killed after the last save, before final/ was linked
                link_checkpoint(ckpt, "final")
    return run


def pretrain(cfg: PretrainConfig, run_dir: str | Path, *, resume: str | None = None,
             stop_at_step: int | None = None, model: Transformer | None = None, device: str | None = None,
             progress: bool = True) -> PretrainResult:
    """Run (or resume) pretraining into ``run_dir``; see the module docstring.

    Args:
        resume: None for a fresh run, "auto" for the newest checkpoint in
            ``run_dir`` if there is one, or a checkpoint path. ``cfg`` must
            then agree with the saved config on every ``PLAN_FIELDS`` entry.
        stop_at_step: save and stop after this optimizer step, leaving the LR
            schedule and data plan untouched (a stand-in for preemption).
        model: a pre-built model to train instead of ``cfg.model``'s preset.
    """
    run_dir = Path(run_dir)
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun's; rank 0 holds the lock for all ranks
    with RunLock(run_dir) if main else contextlib.nullcontext():
        if main:
            recover_run_dir(run_dir)
        return _pretrain(cfg, run_dir, resume, stop_at_step, model, device, progress)


def _pretrain(cfg: PretrainConfig, run_dir: Path, resume: str | None, stop_at_step: int | None,
              model: Transformer | None, device: str | None, progress: bool) -> PretrainResult:
    run = setup(cfg, run_dir, resume, model, device)
    rt, accum = run.rt, cfg.accum_steps(run.rt.world_size)
    peak_flops, flops_per_token = device_peak_flops(rt.device), run.model.flops_per_token(cfg.seq_len)
    stop, stopped, saved_step, estimated = StopRequested(), None, run.step, False
    lockstep = is_sharded(run.train_model)  # FSDP: every rank runs every validation forward
    grace = GraceCheck()
    batches = iter(run.loader)
    clock = SteadyRate()  # the ETA and the planning estimate leave out this process's warm-up steps
    bar = ProgressBar(total=cfg.total_steps, initial=run.step, disable=not (progress and rt.is_main), unit="step",
                      dynamic_ncols=True, clock=clock)
    say = bar.write if rt.is_main else (lambda msg: None)
    start = t_log = time.perf_counter()
    tokens_at_log, data_wait = run.tokens_seen, 0.0  # seconds blocked on next(batches) since the last log
    try:
        if run.step == 0:  # the starting point of every validation curve
            with labelled(bar, "validating"):
                run.last_val = run.validate(lockstep)
            say(run.summary())
            t_log = time.perf_counter()  # the first window's tokens/s is training, not this validation
        with stop.installed():
            while run.step < cfg.total_steps:
                step_start = time.perf_counter()
                lr = lr_schedule(cfg, run.tokens_seen + cfg.global_batch_tokens)  # step 1 must not run at lr 0
                set_lr(run.optimizer, lr, cfg.peak_lr)
                fetch_start = time.perf_counter()
                micro = [next(batches) for _ in range(accum)]
                data_wait += time.perf_counter() - fetch_start  # the loader did not keep up
                loss, grad_norm = train_step(run.train_model, micro, rt, cfg)
                finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
                if finite:
                    run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)
                run.nonfinite["in_row"] = 0 if finite else run.nonfinite["in_row"] + 1
                run.nonfinite["total"] += 0 if finite else 1
                run.step += 1
                run.tokens_seen += cfg.global_batch_tokens
                loss_value = loss.item()
                bar.update(1)
                clock.observe(run.step)
                if not finite:  # a bad batch or a spike: the weights were left as they were
                    run.log({"loss": loss_value, "grad_norm": grad_norm.item(),
                             "nonfinite_skipped": run.nonfinite["total"]})
                    say(f"step {run.step}: non-finite loss/gradient, update skipped "
                        f"({run.nonfinite['in_row']} in a row, {run.nonfinite['total']} in all)")
                    if run.nonfinite["in_row"] >= cfg.max_nonfinite:
                        raise TrainingError(
                            f"loss or gradient was non-finite for {run.nonfinite['in_row']} steps in a row (step "
                            f"{run.step}); lower peak_lr or check the data; last good checkpoint is in {run.run_dir}")
                elif run.step % cfg.log_every == 0:
                    now = time.perf_counter()
                    tok_s = (run.tokens_seen - tokens_at_log) / (now - t_log)
                    record = {"loss": loss_value, "lr": lr, "grad_norm": grad_norm.item(), "tokens_per_s": tok_s,
                              "peak_mem_gb": peak_memory_gb(rt.device), "nonfinite_skipped": run.nonfinite["total"],
                              "data_wait_frac": data_wait / (now - t_log)}
                    if peak_flops:
                        record["mfu"] = flops_per_token * tok_s / (peak_flops * rt.world_size)
                    run.log(record)
                    rate = clock.rate(run.step, now)
                    if not estimated and rate:  # the planning figure, measured after the warm-up steps
                        hours = (cfg.total_steps - run.step) / rate / 3600
                        say(f"measured {rate * cfg.global_batch_tokens:,.0f} tokens/s: about {hours:.2f} h to go "
                            f"(~{hours + (now - start) / 3600:.2f} h in all)")
                        estimated = True
                    t_log, tokens_at_log, data_wait = now, run.tokens_seen, 0.0
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}")

                is_last = run.step == cfg.total_steps
                pause_start = time.perf_counter()  # validation and saving are not training throughput
                step_s, save_s = pause_start - step_start, 0.0
                signalled = any_rank(bool(stop), rt)
                stopping = None if is_last else "stop_at_step" if run.step == stop_at_step else (
                    "signal" if signalled else None)
                if run.step % cfg.val_every == 0 or is_last:
                    with labelled(bar, "validating"):
                        run.last_val = run.validate(lockstep)
                    say(run.summary())
                    run.best_val = min(run.best_val, run.last_val["val_loss"])
                    if new_best(run.last_val, run.best, run.best_metric):
                        run.best = best_record(run.last_val, run.best_metric, run.step,
                                               len(run.mcq_val.questions) if run.mcq_val else 0)
                        save_start = time.perf_counter()
                        path, saved_step = run.save(loss_value, stopped=stopping), run.step
                        save_s = time.perf_counter() - save_start
                        if rt.is_main:
                            link_checkpoint(path, "best")
                if run.step % cfg.ckpt_every == 0 or is_last or stopping:
                    if saved_step != run.step or is_last:
                        save_start = time.perf_counter()
                        run.save(loss_value, complete=is_last, stopped=stopping)
                        saved_step, save_s = run.step, time.perf_counter() - save_start
                    if is_last and rt.is_main:
                        link_checkpoint(step_dir(run.run_dir, run.step), "final")
                    if stopping:
                        stopped = stopping
                        say(f"stopped after step {run.step} ({stopped}); checkpoint saved, resume with --resume")
                        break
                if warning := grace.observe(step_s=step_s, save_s=save_s):
                    say(warning)
                t_log += time.perf_counter() - pause_start
    except torch.cuda.OutOfMemoryError:
        raise TrainingError(
            f"out of memory at micro_batch={cfg.micro_batch}, seq_len={cfg.seq_len}; try --set "
            f"micro_batch={max(1, cfg.micro_batch // 2)} (accumulation grows to keep the global batch), "
            f"--set activation_checkpointing=selective (or activation_checkpointing=true, the least memory), or a "
            f"shorter --set seq_len") from None
    finally:
        bar.close()
        if run.logger:
            run.logger.close()
    return PretrainResult(run.run_dir, rt.rank, run.step, run.tokens_seen, run.last_val,
                          time.perf_counter() - start, stopped)


def lr_schedule(cfg: PretrainConfig, tokens_seen: int) -> float:
    return lr_at(tokens_seen, peak_lr=cfg.peak_lr, min_lr=cfg.min_lr, warmup_tokens=cfg.warmup_tokens,
                 total_tokens=cfg.total_tokens)
