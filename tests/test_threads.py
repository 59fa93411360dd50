"""Thread counts: the free cores, at least one; an explicit count wins; other work measured now, not averaged."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from retinaunet import threads
from retinaunet.threads import available_cpus, fair_threads


def test_fair_share_leaves_busy_cores_to_others():
    assert fair_threads(cpus=2, busy=0.0) == 2
    assert fair_threads(cpus=2, busy=1.0) == 1  # beside one busy process: one core each
    assert fair_threads(cpus=2, busy=7.0) == 1
    assert fair_threads(cpus=16, busy=4.2) == 12
    assert fair_threads(3, cpus=2, busy=9.0) == 3
    with pytest.raises(ValueError, match="--threads"):
        fair_threads(0)


def test_machine_readings_are_sane():
    n = fair_threads()
    assert 1 <= n <= available_cpus()
    assert 0.0 <= threads.busy_cpus(window=0.05) <= available_cpus()


def fake_readings(monkeypatch, busy_cores: float, own_cores: float, cores: int = 2, ticks: int = 100):
    """/proc readings of a window of 1 s: ``busy_cores`` of ``cores`` busy in all, ``own_cores`` of it ours."""
    calls = {"stat": 0, "own": 0}

    def cpu_times(allowed):
        calls["stat"] += 1
        return (0.0, 0.0) if calls["stat"] == 1 else (busy_cores * ticks, cores * ticks)

    def own():
        calls["own"] += 1
        return 0.0 if calls["own"] == 1 else own_cores * ticks

    clock = iter([0.0, 1.0])
    monkeypatch.setattr(threads, "_cpu_times", cpu_times)
    monkeypatch.setattr(threads, "_own_jiffies", own)
    monkeypatch.setattr(threads, "_allowed_cpus", lambda: set(range(cores)))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads.os, "sysconf", lambda name: ticks)


def test_own_work_is_not_other_work(monkeypatch):
    """A process that keeps both cores busy itself sees a quiet machine (the load average saw it busy)."""
    fake_readings(monkeypatch, busy_cores=2.0, own_cores=2.0)
    assert threads.busy_cpus() == pytest.approx(0.0)


def test_other_work_counts(monkeypatch):
    fake_readings(monkeypatch, busy_cores=1.8, own_cores=0.8)
    assert threads.busy_cpus() == pytest.approx(1.0)
    assert fair_threads(cpus=2, busy=1.0) == 1


def test_a_living_child_is_counted_as_own_work():
    before = threads._own_jiffies()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    try:
        time.sleep(1.2)
        during = threads._own_jiffies()
    finally:
        child.wait()
    assert during > before  # the child's CPU time is part of this process's own


def test_recheck_follows_other_work_and_respects_an_explicit_count(monkeypatch):
    monkeypatch.setattr(threads, "_state", {"requested": None, "threads": None, "checked": 0.0})
    assert threads.recheck_threads() is None  # no share managed yet
    applied = []
    monkeypatch.setattr(threads, "_apply", applied.append)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    readings = iter([0.0, 1.0, 1.0])
    monkeypatch.setattr(threads, "busy_cpus", lambda window=threads.WINDOW_S: next(readings))
    assert threads.set_threads(None) == 2  # a quiet machine: every core
    assert threads.recheck_threads(interval=3600) == 2  # not due yet: nothing measured
    assert threads.recheck_threads(interval=0) == 1  # another job started: one core each
    assert applied == [2, 1]
    assert threads.set_threads(2) == 2
    assert threads.recheck_threads(interval=0) == 2  # --threads 2 stays
    assert applied == [2, 1, 2]


def test_workers_follow_the_free_cores_and_the_free_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "available_cpus", lambda: 16)
    gb = 2**30
    assert threads.fair_workers(None, busy=0.0, memory=64 * gb) == 16  # a quiet 16-core machine: all of them
    assert threads.fair_workers(None, busy=4.0, memory=64 * gb) == 12
    # 10 GB free at 2 GB each, a fifth kept free: 4 workers, whatever the cores
    assert threads.fair_workers(None, per_worker_bytes=2 * gb, busy=0.0, memory=10 * gb) == 4
    assert threads.fair_workers(None, per_worker_bytes=64 * gb, busy=0.0, memory=10 * gb) == 1
    assert threads.fair_workers(None, busy=0.0, memory=64 * gb, items=3) == 3
    assert threads.fair_workers(5, per_worker_bytes=64 * gb, busy=16.0, memory=gb) == 5  # --workers wins
    with pytest.raises(ValueError, match="--workers"):
        threads.fair_workers(-1)


def test_a_workers_memory_estimate_grows_with_the_largest_case(tmp_path):
    import json

    (tmp_path / "fingerprint.json").write_text(json.dumps(
        {"modalities": {"0": "CT"}, "cases": [{"shape": [160, 512, 512]}, {"shape": [40, 64, 64]}]}))
    est = threads.case_worker_bytes(tmp_path, "preprocess")
    assert est == pytest.approx(threads.PROCESS_BYTES + 7 * 4 * 160 * 512 * 512)
    # the measured whole-process peak of preprocessing such a case was 1.09 GB: the estimate is above it
    assert 1.09 * 2**30 < est < 2 * 2**30
    assert threads.case_worker_bytes(tmp_path / "missing", "preprocess") is None
    images = tmp_path / "raw_splitted" / "imagesTr"
    images.mkdir(parents=True)
    (images / "a_0000.nii.gz").write_bytes(b"x" * 1000)
    assert threads.case_worker_bytes(tmp_path, "fingerprint") == pytest.approx(threads.PROCESS_BYTES + 10_000)
