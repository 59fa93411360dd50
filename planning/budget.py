"""The compute budget a plan must fit: GPU memory, or on a machine without CUDA a CPU step-time budget.

On a GPU the limit is memory: the estimated peak of a training step must fit the card. On a CPU the
limit is time (memory is rarely short): the estimated FLOPs of a step divided by a nominal CPU
throughput must stay within a few seconds, and the memory within a share of the RAM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Budget", "cuda_memory_gb", "default_budget", "gpu_budget", "cpu_budget",
           "CPU_FLOPS", "CPU_STEP_FLOPS"]

GB = 1024 ** 3
# The one CPU throughput of the planner: training-step FLOP/s of the small CPU networks with both cores of a
# 2-core machine (measured: the 2D toy's 128x128 x 8 step, 23.8 GFLOP by retinaunet.planning.memory, in 0.27 s -> about
# 88 GFLOP/s). It turns step FLOPs into seconds for the step budget and for the training length.
CPU_FLOPS = 80e9
CPU_STEP_FLOPS = {2: 25e9, 3: 50e9}  # largest CPU training step, per network dim (about 0.3 s / 0.6 s)
GPU_RESERVED_GB = 0.75  # CUDA context, cuDNN workspace and allocator slack
GPU_USABLE = 0.9


@dataclass(frozen=True)
class Budget:
    """What a training step may cost: ``kind`` "gpu" or "cpu", ``memory`` bytes, ``step_flops`` (CPU only)."""

    kind: str
    memory: float
    step_flops: float | None = None
    gpu_memory_gb: float | None = None

    def describe(self) -> str:
        if self.kind == "gpu":
            return f"GPU with {self.gpu_memory_gb:g} GB: {self.memory / GB:.1f} GB for a training step"
        return (f"CPU: {self.memory / GB:.1f} GB and {self.step_flops / 1e9:.0f} GFLOP per step "
                f"(about {self.step_flops / CPU_FLOPS:.2f} s at {CPU_FLOPS / 1e9:.0f} GFLOP/s)")


def cuda_memory_gb() -> float | None:
    """Total memory of CUDA device 0 in GB, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GB


def gpu_budget(gb: float) -> Budget:
    """Budget of a GPU with ``gb`` GB: 90% of it, less a reserve for the CUDA context."""
    return Budget("gpu", max(0.5, gb * GPU_USABLE - GPU_RESERVED_GB) * GB, None, float(gb))


def _ram_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8.0 * GB


def cpu_budget(dim: int) -> Budget:
    """CPU budget for a network of ``dim`` dims: a step of ``CPU_STEP_FLOPS[dim]``, <= 1/4 of RAM (max 4 GB)."""
    return Budget("cpu", min(4 * GB, _ram_bytes() / 4), CPU_STEP_FLOPS[dim])


def default_budget(dim: int, gpu_memory_gb: float | None = None) -> Budget:
    """``--gpu-memory`` if given, else the CUDA device present, else the CPU budget."""
    if gpu_memory_gb is not None:
        return gpu_budget(gpu_memory_gb)
    gb = cuda_memory_gb()
    return gpu_budget(gb) if gb is not None else cpu_budget(dim)
