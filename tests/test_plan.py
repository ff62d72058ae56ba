"""The planner (pure_transformer/plan/planner.py): its formulas by hand, its per-layer activation count
against autograd's saved tensors, its CPU peak against measured peaks, and the ``plan`` command.

The measured peaks come from fresh processes (this file run as a script), as
bench/bench_memory.py measures: peak anonymous resident memory (sampled on a thread, library
pages left out) over a baseline taken after a warm-up step of a throw-away model (kernels
loaded, threads started). The child sets
MALLOC_MMAP_THRESHOLD_ so freed tensors go back to the OS at once: glibc otherwise raises its
mmap threshold after the first large free and keeps freed blocks resident, which measures the
allocator's retention rather than the tensors a step holds (what CUDA's max_memory_allocated
counts on a GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pure_transformer.model.config import MODEL_PRESETS, ModelConfig, model_preset
from pure_transformer.model.losses import CPU_LOSS_CHUNK
from pure_transformer.model.transformer import Transformer, build_model
from pure_transformer.plan import planner as plan

TINY = model_preset("tiny")


# The open-checkpoint knobs on every preset: Qwen2's q/k/v biases, Qwen3's QK-norm with a head
# width other than dim // n_heads, Llama-3's RoPE scaling (no parameters, but it must not add any).
KNOBS = {"plain": {}, "qkv_bias": {"qkv_bias": True}, "qk_norm+head_size": {"qk_norm": True, "head_size": 48},
         "llama3": {"rope_scaling": "llama3"}}


@pytest.mark.fast
@pytest.mark.parametrize("knobs", list(KNOBS))
def test_param_counts_and_flops_match_the_model(knobs: str) -> None:
    for name in MODEL_PRESETS:
        cfg = model_preset(name).replace(**KNOBS[knobs])
        with torch.device("meta"):
            model = Transformer(cfg)
        assert plan.param_counts(cfg).total == model.num_params(), name
        assert plan.flops_per_token(cfg, 1000) == model.flops_per_token(1000), name


@pytest.mark.fast
def test_tiny_components_by_hand() -> None:
    p = 1_377_408  # tiny: 4096 x 128 tied embedding + 4 x (4 x 128^2 + 3 x 128 x 384 + 2 x 128) + 128
    parts = {x.name: x for x in plan.pretrain_memory(TINY, 16, 256, False, 2, plan.FP32)}
    assert parts["weights (fp32)"].bytes == 4 * p
    assert parts["AdamW moments (fp32)"].bytes == 2 * 4 * p
    assert parts["gradients (fp32, accumulating)"].bytes == 4 * p  # accumulation 2: held during forward
    assert parts["gradients (fp32)"].bytes == 4 * p
    assert parts["AdamW temporaries (CPU, per tensor)"].bytes == 2 * 4 * 4096 * 128
    n = 16 * 256  # per layer, fp32: 8 x dim + 2 x kv + 4 x ffn + 2 rstd + 4 heads of lse, x 4 bytes
    assert parts["activations, checkpointing off"].bytes == 4 * n * 4 * (8 * 128 + 2 * 128 + 4 * 384 + 2 + 4) + 8 * n
    # two 2048-row chunks: the previous chunk's logits, this one's and logsumexp's temporary
    assert parts["chunked loss: 2048-row logits"].bytes == 3 * 2048 * 4096 * 4
    assert parts["chunked loss: saved gradients"].bytes == n * 128 * 4 + 4096 * 128 * 4
    assert "bf16 weight copies (autocast cache)" not in parts
    peak, phase = plan.peak_bytes(list(parts.values()))
    forward = sum(x.bytes for x in parts.values() if "forward" in x.phase)
    assert (peak, phase) == (12 * p + forward, "forward")


@pytest.mark.fast
def test_full_checkpointing_keeps_only_block_inputs() -> None:
    n = 1000
    assert plan.layer_saved_bytes(TINY, n, True, plan.FP32) == n * 128 * 4
    assert plan.layer_saved_bytes(TINY, n, True, plan.BF16_AUTOCAST) == n * 128 * 4  # the stream stays fp32
    off, sel = (plan.layer_saved_bytes(TINY, n, m, plan.BF16_AUTOCAST) for m in (False, "selective"))
    assert n * 128 * 4 < sel < off


def _saved_per_layer(autocast: bool, cfg: ModelConfig = TINY) -> int:
    """Bytes autograd saves for one more block (2 layers minus 1), unique storages, weights excluded."""
    totals = []
    for layers in (1, 2):
        model = build_model(cfg.replace(n_layers=layers))
        own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in own:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(0, TINY.vocab_size, (4, 64))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(ids, ids)
        totals.append(sum(seen.values()))
    return totals[1] - totals[0]


@pytest.mark.fast
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("head_size", [None, 48], ids=["dim/heads", "head_size=48"])
def test_layer_formula_equals_autograds_saved_tensors(autocast: bool, head_size: int | None) -> None:
    # CPU autocast casts like CUDA's (matmul and SDPA inputs to bf16, norms in fp32), so the bf16
    # count is checked here too; under autocast each block also saves its bf16 weight copies.
    # A head width other than dim / n_heads (Qwen3) widens q and the attention output.
    cfg = TINY.replace(head_size=head_size)
    prec = plan.BF16_AUTOCAST if autocast else plan.FP32
    copies = 2 * plan.param_counts(cfg).block_matmul // cfg.n_layers if autocast else 0
    assert _saved_per_layer(autocast, cfg) == plan.layer_saved_bytes(cfg, 4 * 64, False, prec) + copies


def _rss() -> int:
    """Anonymous resident bytes (resident minus file-backed): the tensors, not library code pages,
    whose first touch depends on which kernels earlier processes left cached."""
    with open("/proc/self/statm") as f:
        resident, shared = f.read().split()[1:3]
    return (int(resident) - int(shared)) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """The largest :func:`_rss` seen while running, sampled every 0.2 ms on a thread."""

    def __enter__(self) -> "PeakSampler":
        import threading

        self.peak, self._done = _rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        import time

        while not self._done.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.0002)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def measure(model: str, micro_batch: int, seq_len: int, checkpointing: bool | str) -> int:
    """Peak resident bytes one pretraining step adds (run in a fresh process: see the module docstring)."""
    import dataclasses

    from pure_transformer.config.pretrain import debug
    from pure_transformer.distributed.runtime import Runtime
    from pure_transformer.train.pretrain import train_step

    torch.manual_seed(0)
    warm = build_model(TINY.replace(vocab_size=64, dim=16, n_heads=2, ffn_dim=32, n_layers=1, max_seq_len=64))
    warm.activation_checkpointing = checkpointing
    opt = warm.setup_optimizers(1e-3)
    ids = torch.randint(0, 64, (4, 64))
    warm(ids, ids)[0].backward()
    opt.step()
    del warm, opt, ids
    base = _rss()
    sampler = PeakSampler().__enter__()
    cfg = model_preset(model)
    net = build_model(cfg)
    net.activation_checkpointing = checkpointing
    opt = net.setup_optimizers(1e-3)
    for p in net.parameters():  # AdamW's moments exist from step 2 on: make them now, as a run has them
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    step_cfg = dataclasses.replace(debug(), seq_len=seq_len, micro_batch=micro_batch,
                                   global_batch_tokens=micro_batch * seq_len)
    batch = {k: torch.randint(0, cfg.vocab_size, (micro_batch, seq_len)) for k in ("input_ids", "labels")}
    train_step(net, [batch], Runtime(0, 1, 0, torch.device("cpu")), step_cfg)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sampler.__exit__()
    return sampler.peak - base


# (model, micro-batch, seq_len, checkpointing): the chunked loss (CPU_LOSS_CHUNK rows a chunk) at two
# modes, and the plain logits path (B x T <= CPU_LOSS_CHUNK) on small's 50K vocabulary.
SHAPES = [("tiny", 16, 256, False), ("tiny", 16, 256, True),
          pytest.param(("small", 1, 512, False), marks=pytest.mark.slow)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("shape", SHAPES, ids=["tiny-16x256-off", "tiny-16x256-full", "small-1x512-off"])
def test_planned_cpu_peak_within_15_percent_of_measured(shape: tuple) -> None:
    # Measures: peak RSS growth of one fp32 training step (forward, chunked or plain loss, backward,
    # AdamW) in a fresh process; plans: weights + AdamW + the larger of forward/backward and the step.
    model, micro_batch, seq_len, checkpointing = shape
    # A clean environment: variables earlier tests leave in this process (torch's, torchrun's) must not
    # change what the fresh process allocates.
    env = {**{k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH") if k in os.environ},
           "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, json.dumps(shape)], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    planned, _ = plan.peak_bytes(plan.pretrain_memory(model_preset(model), micro_batch, seq_len, checkpointing, 1,
                                                      plan.FP32, loss_chunk=CPU_LOSS_CHUNK))
    assert abs(planned - measured) <= 0.15 * measured, (planned, measured)


@pytest.mark.fast
def test_plan_command_for_every_preset_and_gpu(capsys) -> None:
    from pure_transformer.cli import main
    from pure_transformer.config.pretrain import PRETRAIN_PRESETS
    from pure_transformer.config.rl import GRPO_PRESETS
    from pure_transformer.plan.hardware import GPU_SPECS

    for config, title in [*((c, f"pretrain:{c}") for c in PRETRAIN_PRESETS), ("grpo_usmle_2day", "rl:grpo_usmle_2day"),
                          *((f"rl:{c}", f"rl:{c}") for c in GRPO_PRESETS)]:
        for gpu in GPU_SPECS:
            assert main(["plan", "--config", config, "--gpu", gpu]) == 0
            out = capsys.readouterr().out
            assert out.startswith(f"plan: {title}: ") and f" on {gpu} " in out
            assert "\n  memory: " in out and "\n  time: " in out
    assert "grpo_usmle_2day" in GRPO_PRESETS


@pytest.mark.fast
def test_plan_verdicts_and_overrides(capsys) -> None:
    from pure_transformer.cli import main

    assert main(["plan", "--config", "a100_2day", "--gpu", "a100-80gb"]) == 0
    out = capsys.readouterr().out
    # 2,000,158,720 tokens in 48 h need 11,575 tokens/s: 2,612,908,800 FLOPs each, 9.7% of 312 TFLOP/s
    assert "48 h needs 11,575 tokens/s = 9.7% MFU" in out and "time: on time" in out
    assert "memory: fits" in out and "peak by activation checkpointing: off" in out
    assert main(["plan", "--config", "a100_2day", "--set", "micro_batch=64", "--set", "global_batch_tokens=524288",
                 "--gpu", "a100-80gb"]) == 0
    assert "memory: does NOT fit" in capsys.readouterr().out
    assert main(["plan", "--config", "grpo_usmle_2day", "--gpu", "h200-141gb"]) == 0
    assert "rollout KV cache, 16 x 16 rows" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--config", "a100_3day"], "error: unknown config 'a100_3day'"),
    (["--gpu", "v100"], "error: unknown gpu 'v100'"),
    (["--set", "micro_batchh=4"], "error: unknown config key 'micro_batchh'"),
])
@pytest.mark.fast
def test_plan_mistakes_are_one_line(argv: list[str], message: str, capsys) -> None:
    from pure_transformer.cli import main

    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


if __name__ == "__main__":  # the measuring child of test_planned_cpu_peak_within_15_percent_of_measured
    print(json.dumps(measure(*json.loads(sys.argv[1]))))


@pytest.mark.fast
@pytest.mark.parametrize("updates", [1, 4])
def test_grpo_time_samples_and_scores_the_reference_once_per_rollout(updates: int) -> None:
    """rl/train.py samples a rollout and scores it with the reference once, then takes
    ``updates_per_rollout`` policy steps on it: only the training FLOPs repeat (the plan once
    multiplied all three, 1.43x too much at 4 updates)."""
    import dataclasses

    from pure_transformer.config.rl import grpo_preset

    cfg = dataclasses.replace(grpo_preset("grpo_usmle_2day"), updates_per_rollout=updates, max_steps=None)
    model_cfg, new_tokens, questions = model_preset("medium-large"), 64, 1000
    tp = plan.grpo_plan(cfg, model_cfg, plan.gpu_target("h100-80gb"), new_tokens, questions=questions).time
    steps = -(-cfg.epochs * questions // cfg.prompts_per_step)
    completion_tokens = steps * cfg.prompts_per_step * cfg.samples_per_prompt * new_tokens
    train = plan.flops_per_token(model_cfg, plan.MEDQA_PROMPT_TOKENS + new_tokens)
    forward = train // 3  # sampling and the reference: one forward each per rollout
    assert tp.tokens == completion_tokens
    assert tp.tokens * tp.flops_per_token == completion_tokens * (2 * forward + updates * train)
