"""The GPUs the planner and the MFU figure know: peak dense bf16 FLOP/s and memory.

Figures from the vendors' datasheets. Free of torch at import, so ``plan`` and
``model info`` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Peak dense bf16 tensor-core FLOP/s (no sparsity), for MFU. Matched by substring
# of torch.cuda.get_device_name(); unknown devices report no MFU rather than a guess.
PEAK_BF16_FLOPS = {
    "H200": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
    "A100": 312e12, "A10G": 125e12, "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12,
}


# The GPUs `pure-transformer plan --gpu` knows: name -> (memory bytes, peak dense bf16 FLOP/s), from the
# vendors' datasheets: A100 80GB 312 TFLOPS bf16 (NVIDIA A100 datasheet, dense), H100 SXM5 80GB 989 TFLOPS
# (H100 datasheet: 1,979 with sparsity, half of it dense), H200 SXM 141GB 989 TFLOPS (H200 datasheet, same
# compute as H100 SXM). "80GB" is 80 GiB as nvidia-smi reports it (81,920 MiB); "141GB" is 141e9 bytes.
GPU_SPECS = {
    "a100-80gb": (80 * 2**30, PEAK_BF16_FLOPS["A100"]),
    "h100-80gb": (80 * 2**30, PEAK_BF16_FLOPS["H100"]),
    "h200-141gb": (141 * 10**9, PEAK_BF16_FLOPS["H200"]),
}


def device_peak_flops(device: "torch.device") -> float | None:
    """Peak bf16 FLOP/s of a CUDA device when known, else None (CPU included)."""
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops
    return None
