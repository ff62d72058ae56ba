"""How the pretraining model is spread over ranks: DDP or FSDP2, with compile per block.

``parallelize`` returns the module the training step calls:

- one process: the model itself;
- ``parallel="ddp"`` (default): ``DistributedDataParallel``, a full replica per rank;
- ``parallel="fsdp"``: ``torch.distributed.fsdp.fully_shard`` on every block and
  then the root, so each rank holds 1/world of the parameters, gradients and
  AdamW moments, and a block's weights are gathered only while it runs. On CUDA
  the policy computes in bf16 and reduces gradients in fp32.

With ``compile`` every block is compiled in place first (torchtitan's placement):
the wrappers then hook around compiled blocks, instead of one graph around DDP's
communication. Checkpoints stay full tensors in safetensors: ``full_state``
gathers FSDP's shards (every rank calls it; rank 0 writes) and ``shard_like``
hands a loaded optimizer state back out as shards, so a run can be saved under
one parallelism and resumed under the other, or in one process.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch
from torch import nn

from ..model.transformer import Transformer
from .runtime import Runtime


def parallelize(model: Transformer, rt: Runtime, parallel: str = "ddp", compile: bool = False) -> nn.Module:
    """The training view of ``model`` (see the module docstring). Under FSDP the
    model's own parameters become shards: build the optimizer afterwards."""
    if compile:
        for block in model.layers:
            block.compile()
    if not rt.distributed:
        return model
    if parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(rt.device.type, (rt.world_size,))
        policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                  if rt.bf16 else MixedPrecisionPolicy())
        for block in model.layers:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)  # the embedding, final norm and head
        return model
    devices = [rt.device.index] if rt.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=devices)


# FSDP and DTensor are imported only by the runs that shard (they cost 0.8 s of start-up
# per process); until then nothing can be an FSDP module or a DTensor.
def _is_dtensor(t: Any) -> bool:
    tensor = sys.modules.get("torch.distributed.tensor")
    return tensor is not None and isinstance(t, tensor.DTensor)


def is_sharded(module: nn.Module) -> bool:
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(module, fsdp.FSDPModule)


def grad_sync(module: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient reduction of a micro-batch that is not a step's last."""
    if is_sharded(module):
        module.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if isinstance(module, nn.parallel.DistributedDataParallel) and not sync:
        return module.no_sync()
    return contextlib.nullcontext()


def full_tensor(t: Any) -> Any:
    """A DTensor gathered to one full tensor (a collective: every rank calls); anything else as is."""
    return t.full_tensor() if _is_dtensor(t) else t


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state dict, optimizer state dict) with every shard gathered, on CPU."""
    cpu = lambda t: full_tensor(t).cpu() if torch.is_tensor(t) else t  # noqa: E731
    # A tied embedding and head are one Parameter under two names: gathered once, stored once.
    owner = {name: id(p) for name, p in model.named_parameters(remove_duplicate=False)}
    weights, gathered = {}, {}
    for name, t in model.state_dict().items():
        key = owner.get(name, name)
        if key not in gathered:
            gathered[key] = cpu(t)
        weights[name] = gathered[key]
    optim = optimizer.state_dict()
    optim["state"] = {i: {k: cpu(v) for k, v in s.items()} for i, s in optim["state"].items()}
    return weights, optim


def shard_like(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A full optimizer state dict with each per-parameter tensor split like its (sharded) parameter."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = dict(state)
    out["state"] = {}
    for i, s in state["state"].items():
        p = params[int(i)]
        out["state"][i] = {k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
                           if _is_dtensor(p) and torch.is_tensor(v) and v.shape == p.shape else v
                           for k, v in s.items()}
    return out
