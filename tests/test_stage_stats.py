"""The rehearsal's stage wrapper: a row per command with its wall time and the peak of its largest process."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "stage_stats.py"


def _module():
    spec = importlib.util.spec_from_file_location("stage_stats", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_row_holds_time_peak_memory_and_status(tmp_path):
    stats = _module()
    log = tmp_path / "stages.jsonl"
    grow = "import time; x = bytearray(120 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(0.2)"
    assert stats.main(["--log", str(log), "--stage", "alloc", "--scans", "2", "--", sys.executable, "-c", grow]) == 0
    assert stats.run_stage(log, "fails", 0, [sys.executable, "-c", "raise SystemExit(3)"]) == 3
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows[0]["stage"] == "alloc" and rows[0]["rc"] == 0 and rows[0]["seconds"] >= 0.2
    assert rows[0]["peak_mb"] >= 120  # the child touched 120 MiB
    table = stats.table(log)
    assert "| alloc | 2 |" in table and "**exit 3**" in table
