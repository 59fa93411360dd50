"""How many threads a command takes: its fair share of the CPUs it may run on, not all of them.

torch (and numba) start one thread per core by default. Beside another busy process on the same
cores, every thread then waits for the others at each parallel region and a training step can take
many times as long; with a share that fits, each process runs at about its fair fraction of the
machine. The share is the cores this process may use (``sched_getaffinity``) minus those other
processes keep busy right now (runnable tasks from ``/proc/loadavg``, or the 1-minute load average),
at least one. An explicit count (``--threads``) always wins.
"""

from __future__ import annotations

import math
import os

from loguru import logger

__all__ = ["available_cpus", "busy_cpus", "fair_threads", "set_threads"]


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cpus() -> float:
    """Cores other processes keep busy: runnable tasks now (less this one), or the 1-minute load average."""
    running = None
    try:
        with open("/proc/loadavg") as fh:
            fields = fh.read().split()
        running = max(0, int(fields[3].split("/")[0]) - 1)
        load = float(fields[0])
    except (OSError, ValueError, IndexError):
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return float(max(load, running or 0))


def fair_threads(requested: int | None = None, cpus: int | None = None, busy: float | None = None) -> int:
    """Threads for this process: ``requested`` when given, else the free cores (at least 1)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return requested
    cpus = available_cpus() if cpus is None else cpus
    busy = busy_cpus() if busy is None else busy
    return max(1, min(cpus, math.floor(cpus - busy + 0.5)))


def set_threads(requested: int | None = None) -> int:
    """Choose the thread count (see :func:`fair_threads`) and apply it to torch and numba; returns it."""
    import torch

    n = fair_threads(requested)
    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass
    logger.info(f"using {n} thread(s) of {available_cpus()} core(s)"
                + ("" if requested is not None else f" ({busy_cpus():.1f} busy with other work; --threads sets it)"))
    return n
