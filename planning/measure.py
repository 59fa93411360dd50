"""Measure the peak memory and time of real training steps, to calibrate and check `retinaunet.planning.memory`.

Why resident memory of a fresh process: ``tracemalloc`` does not see torch's allocator, and the
profiler's memory events are awkward to reduce to a peak. Instead each measurement runs in a spawned
child with glibc's mmap threshold fixed low (``MALLOC_MMAP_THRESHOLD_``), so every large tensor is
its own mapping and is returned to the system when freed: resident memory then follows live tensors.
The child warms up (one small step, so lazily created kernels and caches exist), records its
resident set, resets the high-water mark (``/proc/self/clear_refs``), runs one full step (forward,
loss, backward, Adam step) and reports ``VmHWM - baseline``. Linux only.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing as mp
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from retinaunet.plans import Plans

__all__ = ["measure_steps", "measure_step_seconds"]

_MMAP_THRESHOLD = str(256 * 1024)


def _status(key: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _step(plans: Plans, model: str, seed: int = 0) -> float:
    """One training step on random data; returns its wall time in seconds."""
    import torch

    from retinaunet.models import build_model

    torch.manual_seed(seed)
    det = build_model(model, plans)
    opt = torch.optim.Adam(det.parameters(), lr=1e-4)
    b, dim, shape = plans.batch_size, plans.dim, plans.patch_size
    images = torch.randn(b, plans.in_channels, *shape)
    seg = torch.zeros(b, *shape, dtype=torch.long)
    lo = [s // 4 for s in shape]
    hi = [max(lo_i + 2, s // 2) for lo_i, s in zip(lo, shape)]
    seg[(slice(None), *[slice(a, c) for a, c in zip(lo, hi)])] = 1
    boxes = [torch.tensor([lo + hi], dtype=torch.float32) for _ in range(b)]
    labels = [torch.zeros(1, dtype=torch.long) for _ in range(b)]
    start = time.perf_counter()
    losses = det.compute_losses(images, boxes, labels, seg if dim == len(shape) else None)
    losses["loss"].backward()
    opt.step()
    return time.perf_counter() - start


def _child(configs: Sequence[Plans], model: str, threads: int, queue: Any) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        results = []
        for plans in configs:
            small = dataclasses.replace(plans, batch_size=1,
                                        patch_size=[_min_size(plans, ax) for ax in range(plans.dim)])
            _step(small, model)  # warm-up: kernels, caches, lazily loaded libraries
            gc.collect()
            base = _status("VmRSS")
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            seconds = _step(plans, model)
            peak = _status("VmHWM") - base
            gc.collect()
            results.append((peak, seconds))
        queue.put(results)
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        queue.put(err)


def _min_size(plans: Plans, axis: int) -> int:
    stride = 1
    for s in plans.network.strides:
        stride *= int(s[axis])
    return stride * 2


def measure_steps(configs: Sequence[Plans], model: str = "retina_unet", threads: int = 1,
                  timeout: float = 600.0) -> list[tuple[int, float]]:
    """(peak bytes, seconds) of one CPU training step for each plans, measured in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = _MMAP_THRESHOLD  # read by glibc when the child starts
    try:
        proc = ctx.Process(target=_child, args=(list(configs), model, threads, queue))
        proc.start()
    finally:
        if old is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old
    try:
        result = queue.get(timeout=timeout)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    if isinstance(result, BaseException):
        raise RuntimeError(f"memory measurement failed: {result}") from result
    return result


def measure_step_seconds(plans: Plans, model: str = "retina_unet", device: str | None = None,
                         steps: int = 3, seed: int = 0) -> tuple[float, str]:
    """Seconds of one training step of ``plans`` (its network, patch and batch) on this machine, and the device.

    In this process, with its thread count: the network is built once, one step warms up (kernels, caches,
    cuDNN's choice of algorithms), then the median of ``steps`` timed steps (forward, losses, backward, Adam)
    on random patches with one box each; bf16 autocast on CUDA as ``rud_train``. Data loading is not included
    (the loader's workers prepare batches while the network steps).
    """
    import torch

    from retinaunet.models import build_model

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    det = build_model(model, plans).to(dev)
    opt = torch.optim.Adam(det.parameters(), lr=1e-4)
    b, shape = plans.batch_size, plans.patch_size
    images = torch.randn(b, plans.in_channels, *shape, device=dev)
    seg = torch.zeros(b, *shape, dtype=torch.long, device=dev)
    lo = [s // 4 for s in shape]
    hi = [max(lo_i + 2, s // 2) for lo_i, s in zip(lo, shape)]
    seg[(slice(None), *[slice(a, c) for a, c in zip(lo, hi)])] = 1
    boxes = [torch.tensor([lo + hi], dtype=torch.float32, device=dev) for _ in range(b)]
    labels = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(b)]
    with_seg = seg if plans.dim == len(shape) else None

    def step() -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            losses = det.compute_losses(images, boxes, labels, with_seg)
        losses["loss"].float().backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - start

    step()
    times = sorted(step() for _ in range(max(1, steps)))
    return times[len(times) // 2], str(dev)
