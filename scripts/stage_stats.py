"""Run one pipeline stage as a command and record its wall time and peak memory; print the per-stage table.

    python scripts/stage_stats.py --log stages.jsonl --stage "rud_plan (CPU)" --scans 6 -- rud_plan -t 160
    python scripts/stage_stats.py --log stages.jsonl --table          # Markdown table of every row

Peak memory is the largest resident set of any process of the command's tree (``ru_maxrss`` of the
children, as ``/usr/bin/time -v`` reports it), not their sum: a stage with two worker processes peaks at its
largest one. ``ru_maxrss`` of the children covers every child this process ever waited for, so the script
runs one command per invocation. A failing command fails this script with its exit status, after its row is
written.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def run_stage(log: Path, stage: str, scans: int, command: list[str], note: str = "") -> int:
    """Run ``command``, append ``{stage, scans, seconds, peak_mb, rc, note}`` to ``log``; returns its status."""
    start = time.perf_counter()
    rc = subprocess.run(command).returncode
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    row = {"stage": stage, "scans": scans, "seconds": round(seconds, 2), "peak_mb": round(peak_mb, 1), "rc": rc,
           "note": note}
    with open(log, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return rc


def table(log: Path) -> str:
    """The rows of ``log`` as a Markdown table (stage, scans, time, time per scan, peak memory, note)."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    out = ["| stage | scans | time | time per scan | peak memory (largest process) | note |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        per = f"{r['seconds'] / r['scans']:.1f} s" if r["scans"] else "-"
        status = "" if r["rc"] == 0 else f" **exit {r['rc']}**"
        out.append(f"| {r['stage']} | {r['scans'] or '-'} | {r['seconds']:.1f} s | {per} | "
                   f"{r['peak_mb'] / 1024:.2f} GB | {r['note']}{status} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", type=Path, required=True, help="JSON-lines file the rows are appended to")
    p.add_argument("--stage", default="", help="the stage's name in the table")
    p.add_argument("--scans", type=int, default=0, help="scans the stage handles (for the time per scan)")
    p.add_argument("--note", default="", help="a remark for the table's last column")
    p.add_argument("--table", action="store_true", help="print the table of the rows logged so far")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    args = p.parse_args(argv)
    if args.table:
        print(table(args.log))
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command after --")
    return run_stage(args.log, args.stage, args.scans, command, args.note)


if __name__ == "__main__":
    sys.exit(main())
