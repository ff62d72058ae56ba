"""What the benchmarks share: the transformers twin of a model, alternating timing
with per-call peak memory, the environment header and markdown tables."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch

from ..distributed.runtime import synchronize
from ..errors import ConfigError
from ..model.hf import hf_llama_config, hf_llama_state_dict
from ..model.transformer import Transformer
from ..tokenizer.bpe import Tokenizer


def bundled_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE of at most 4,096 tokens trained on the bundled corpus (a few
    seconds). A benchmark's speed does not depend on which ids it feeds; ids past
    this vocabulary, which a random model of a larger one samples, decode to nothing."""
    from ..bundled.synthetic import training_texts
    from ..tokenizer.bpe import train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return train_tokenizer(islice(training_texts(), 20_000), min(4096, vocab_size), tmp, show_progress=False)


def hf_twin(model: Transformer, attn_implementation: str = "sdpa") -> torch.nn.Module:
    """A ``transformers.LlamaForCausalLM`` with ``model``'s weights, dtype and device
    (the export's renaming, :func:`pure_transformer.model.hf.hf_llama_state_dict`)."""
    import transformers

    weight = model.embed_tokens.weight
    config = transformers.LlamaConfig(**hf_llama_config(model.cfg), attn_implementation=attn_implementation)
    with torch.device(weight.device):
        hf = transformers.LlamaForCausalLM(config).to(weight.dtype)
    missing, unexpected = hf.load_state_dict(hf_llama_state_dict(model), strict=False)
    if unexpected or set(missing) - ({"lm_head.weight"} if model.cfg.tie_embeddings else set()):
        raise RuntimeError(f"weight mapping failed: missing={missing} unexpected={unexpected}")
    if model.cfg.tie_embeddings:
        hf.tie_weights()
    return hf.train(model.training)


@dataclass
class Timed:
    """Wall times of one contender's timed calls, its peak memory and last result."""

    seconds: list[float] = field(default_factory=list)
    peak_gb: float | None = None
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def alternate(contenders: dict[str, Callable[[], Any]], repeats: int, device: torch.device,
              warmup: int = 1) -> dict[str, Timed]:
    """Call each contender ``warmup`` times, then ``repeats`` rounds of one call each
    in turn. On CUDA the allocator's peak is reset before every call, so each
    contender's ``peak_gb`` is its own; on CPU it is None (the process's resident
    peak cannot be split between two contenders of one process)."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    out = {name: Timed() for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            out[name].result = fn()
            synchronize(device)
            out[name].seconds.append(time.perf_counter() - start)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 1e9
                out[name].peak_gb = max(out[name].peak_gb or 0.0, peak)
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{name}, {os.cpu_count()} CPUs visible, torch threads {torch.get_num_threads()}"


def command_line() -> str:
    """This process's command as a user types it: ``python -m pure_transformer bench ...`` where
    ``sys.argv[0]`` holds the path of a ``__main__.py``, else the program's name and its arguments."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name.removesuffix('.__main__')}" if spec is not None else \
        os.path.basename(sys.argv[0])
    return f"{program} {shlex.join(sys.argv[1:])}".rstrip()


def environment(device: torch.device) -> list[str]:
    """The header lines every benchmark prints: command, hardware, versions, load."""
    import transformers

    lines = [f"command: {command_line()}",
             f"device: {device} ({device_name(device)})",
             f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"]
    if hasattr(os, "getloadavg"):
        lines.append("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return lines


def markdown(header: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, align, *rows])


def fmt_gb(gb: float | None) -> str:
    return "n/a (CPU)" if gb is None else f"{gb:.2f}"


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cuda or cpu (default cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def device_of(args: argparse.Namespace) -> torch.device:
    """The device the flags name (checked), with ``--threads`` applied."""
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ConfigError(f"unknown device '{args.device}'; use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but no CUDA device is available")
    return device


def per_device(value: Any, device: torch.device, on_gpu: Any, on_cpu: Any) -> Any:
    """``value`` if given, else the device's default."""
    return value if value is not None else on_gpu if device.type == "cuda" else on_cpu


def require_positive_flags(**flags: int | None) -> None:
    for name, value in flags.items():
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
