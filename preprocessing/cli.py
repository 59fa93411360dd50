"""``rud_preprocess -t TASK``: crop, normalise, resample and store every training case (thin argument layer)."""

from __future__ import annotations

import argparse
import sys

from retinaunet.cli_errors import run_command
from retinaunet.layout import default_task
from retinaunet.threads import case_worker_bytes, fair_workers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_preprocess",
        description="Preprocess the training cases of a task as its plans.json says (crop to the non-zero "
                    "region, normalise, resample to the target spacing) into preprocessed/<plan>/ as "
                    "memory-mappable .npy files plus a json per case. Resumable: up-to-date cases are skipped.")
    p.add_argument("-t", "--task", default=default_task(),
                   help="task number (1, 001) or full name (Task001_Name); default $RUD_TASK")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel processes, one case in memory each (0: in this process; default: the cores other "
                        "work leaves free, no more than the free memory holds at the largest case's estimate)")
    p.add_argument("--force", action="store_true", help="redo every case, even those that are up to date")
    p.add_argument("--shard", default="0/1",
                   help="i/n: preprocess every n-th case (sorted names) starting at i, so n machines sharing the "
                        "task folder split a large cohort (run i = 0..n-1 once each)")
    p.add_argument("--plan", default=None,
                   help="configuration of plans.json to preprocess for: 2d, 2dc, 3d, 3dlr (default: its default)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def preprocess() -> int:
        from retinaunet.preprocessing.task import preprocess_task

        from retinaunet.shard import parse_shard

        workers = fair_workers(args.workers, case_worker_bytes(args.task))
        report = preprocess_task(args.task, workers=workers, force=args.force, plan=args.plan,
                                 shard=parse_shard(args.shard))
        if report.failed:
            print(f"rud_preprocess: {len(report.failed)} case(s) failed: "
                  + "; ".join(f"{k} ({v})" for k, v in sorted(report.failed.items())), file=sys.stderr)
            return 1
        print(f"{len(report.done)} case(s) preprocessed, {len(report.skipped)} up to date, in {report.out_dir}")
        return 0

    return run_command("rud_preprocess", preprocess)
