"""How many threads a command takes: its fair share of the CPUs it may run on, not all of them.

torch (and numba) start one thread per core by default. Beside another busy process on the same
cores, every thread then waits for the others at each parallel region and a training step can take
many times as long; with a share that fits, each process runs at about its fair fraction of the
machine. The share is the cores this process may use (``sched_getaffinity``) minus those other
processes keep busy right now, at least one. An explicit count (``--threads``) always wins.

"Right now" is measured, not averaged: the CPU time the cores this process may use spent busy over a
short window (``/proc/stat``), less the CPU time of this process and its children (``/proc/<pid>/stat``)
in the same window. The 1-minute load average, used before, still held the pipeline's own earlier stage
for a minute after it ended, so a quiet machine looked half busy and every stage ran on one of two
cores. Long work calls :func:`recheck_threads` (each training epoch, every few cases of a prediction):
when other work starts or stops, the share follows.
"""

from __future__ import annotations

import math
import os
import time

from loguru import logger

__all__ = ["available_cpus", "available_memory", "busy_cpus", "fair_threads", "fair_workers", "recheck_threads",
           "set_threads"]

WINDOW_S = 0.5  # the window other processes' CPU use is measured over
RECHECK_S = 60.0  # long work re-measures the share at most this often

_state: dict = {"requested": None, "threads": None, "checked": 0.0}


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _cpu_times(allowed: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over the allowed cores' ``cpuN`` lines of ``/proc/stat``."""
    busy = total = 0.0
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *values = line.split()
                if allowed is not None and int(name[3:]) not in allowed:
                    continue
                v = [float(x) for x in values]
                idle = v[3] + (v[4] if len(v) > 4 else 0.0)  # idle + iowait
                span = sum(v[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
                busy += span - idle
                total += span
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total > 0 else None


def _children(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    found += [int(c) for c in fh.read().split()]
            except OSError:
                continue
    except OSError:
        pass
    return found


def _own_jiffies(pid: int | None = None) -> float:
    """CPU time (jiffies, user + system) of this process and its living descendants (e.g. loader workers)."""
    todo, seen, total = [os.getpid() if pid is None else pid], set(), 0.0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += float(fields[11]) + float(fields[12])  # utime, stime (fields 14 and 15 of the file)
        except (OSError, ValueError, IndexError):
            continue
        todo += _children(p)
    return total


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def busy_cpus(window: float = WINDOW_S) -> float:
    """Cores that other processes keep busy now: the allowed cores' busy time over ``window`` seconds less
    this process's and its children's own, in cores. Without ``/proc``, the 1-minute load average."""
    allowed = _allowed_cpus()
    first, own0, t0 = _cpu_times(allowed), _own_jiffies(), time.monotonic()
    if first is None:
        return _load_average()
    time.sleep(window)
    second, own1, t1 = _cpu_times(allowed), _own_jiffies(), time.monotonic()
    if second is None or second[1] <= first[1]:
        return _load_average()
    cores = len(allowed) if allowed else available_cpus()
    busy_all = (second[0] - first[0]) / (second[1] - first[1]) * cores
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    own = (own1 - own0) / ticks / max(t1 - t0, 1e-6)
    return float(min(cores, max(0.0, busy_all - own)))


def fair_threads(requested: int | None = None, cpus: int | None = None, busy: float | None = None) -> int:
    """Threads for this process: ``requested`` when given, else the free cores (at least 1)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return requested
    cpus = available_cpus() if cpus is None else cpus
    busy = busy_cpus() if busy is None else busy
    return max(1, min(cpus, math.floor(cpus - busy + 0.5)))


def available_memory() -> int | None:
    """Bytes of memory available to new work now (``MemAvailable`` of ``/proc/meminfo``), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def fair_workers(requested: int | None = None, per_worker_bytes: float | None = None, items: int | None = None,
                 what: str = "worker process(es)", busy: float | None = None,
                 memory: int | None = None) -> int:
    """Worker processes for per-case work (fingerprint, preprocessing): ``requested`` when given, else the
    fair share of the cores (:func:`fair_threads`), no more than the available memory holds at
    ``per_worker_bytes`` each (keeping a fifth free) and no more than ``items``; at least 1. Logs the choice
    and its reason, so every stage says how many cores it used."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"--workers must be at least 0, got {requested}")
        logger.info(f"using {requested} {what} (--workers)")
        return requested
    busy = busy_cpus() if busy is None else busy
    n = fair_threads(None, busy=busy)
    reasons = [f"{busy:.1f} busy with other work now"]
    memory = available_memory() if memory is None else memory
    if per_worker_bytes and memory:
        fits = max(1, int(0.8 * memory // per_worker_bytes))
        if fits < n:
            reasons.append(f"memory for {fits}: {memory / 2**30:.1f} GB free, about "
                           f"{per_worker_bytes / 2**30:.1f} GB each")
        n = min(n, fits)
    if items is not None and 0 < items < n:
        reasons.append(f"{items} case(s) to do")
        n = items
    logger.info(f"using {n} {what} of {available_cpus()} core(s) ({'; '.join(reasons)}; --workers sets it)")
    return n


PROCESS_BYTES = 0.4 * 2**30  # Python, NumPy, torch and the libraries in a fresh worker


def case_worker_bytes(task, stage: str = "preprocess") -> float | None:
    """An estimate of one worker's peak memory for a per-case stage of ``task`` (a task's number or name as
    the commands take it, or its folder as a Path).

    ``preprocess``: the largest case of the fingerprint as float32 (all modalities) times 7, plus the
    process itself (measured: 1.09 GB for a 160 x 512 x 512 CT case, whose float32 is 168 MB; the estimate
    gives 1.58 GB). ``fingerprint``: the largest image file of imagesTr times 10 (compressed int16 on disk;
    the fingerprint reads it as float32 and keeps a mask), plus the process. None when nothing is known."""
    import json
    from pathlib import Path

    if isinstance(task, Path):
        root = task
    else:
        from retinaunet.layout import TaskPaths

        try:
            root = TaskPaths.from_task(task).root
        except Exception:  # noqa: BLE001 - the stage itself reports a missing task with its own message
            return None
    try:
        if stage == "preprocess":
            fp = json.loads((root / "fingerprint.json").read_text())
            channels = max(1, len(fp.get("modalities", {}) or {"0": ""}))
            largest = max(math.prod(c["shape"]) for c in fp["cases"])
            return PROCESS_BYTES + 7 * 4 * channels * largest
        files = [f.stat().st_size for f in (root / "raw_splitted" / "imagesTr").iterdir() if f.is_file()]
        return PROCESS_BYTES + 10 * max(files) if files else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _apply(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass


def set_threads(requested: int | None = None) -> int:
    """Choose the thread count (see :func:`fair_threads`) and apply it to torch and numba; returns it.
    Remembers ``requested`` for :func:`recheck_threads`."""
    busy = None if requested is not None else busy_cpus()
    n = fair_threads(requested, busy=busy)
    _apply(n)
    _state.update(requested=requested, threads=n, checked=time.monotonic())
    logger.info(f"using {n} thread(s) of {available_cpus()} core(s)"
                + ("" if requested is None else " (--threads)")
                + ("" if busy is None else f" ({busy:.1f} busy with other work now; --threads sets it)"))
    return n


def recheck_threads(interval: float = RECHECK_S) -> int | None:
    """During long work: measure the share again (at most every ``interval`` seconds; never when the count was
    given with ``--threads`` or :func:`set_threads` was not called) and apply it when it changed. Returns the
    count in use, or None when no share is managed."""
    if _state["threads"] is None or _state["requested"] is not None:
        return _state["threads"]
    now = time.monotonic()
    if now - _state["checked"] < interval:
        return _state["threads"]
    busy = busy_cpus()
    n = fair_threads(None, busy=busy)
    _state["checked"] = time.monotonic()
    if n != _state["threads"]:
        _apply(n)
        logger.info(f"now using {n} thread(s) of {available_cpus()} core(s) (was {_state['threads']}; "
                    f"{busy:.1f} busy with other work)")
        _state["threads"] = n
    return n
