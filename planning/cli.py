"""``rud_plan -t TASK``: fingerprint a raw dataset and write its plans (thin argument layer)."""

from __future__ import annotations

import argparse

from retinaunet.cli_errors import run_command
from retinaunet.layout import default_task
from retinaunet.threads import case_worker_bytes, fair_workers, set_threads


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_plan",
        description="Validate a raw dataset, write its fingerprint.json and plans.json (every choice with its "
                    "reason) and print a summary. A rerun with nothing changed rewrites nothing.")
    p.add_argument("-t", "--task", default=default_task(),
                   help="task number (1, 001) or full name (Task001_Name); default $RUD_TASK")
    p.add_argument("--mode", choices=["2d", "2dc", "3d", "3dlr", "all"], default=None,
                   help="network mode: 2d slices, 2dc (slices with +-3 neighbours as channels), 3d, or 3dlr (3d at "
                        "half resolution, for large objects); added to plans.json beside the plans already there. "
                        "'all': every configuration that fits the data. Default: the planner's choice from the "
                        "data's dimension and anisotropy, made the default configuration")
    p.add_argument("--gpu-memory", type=float, default=None, metavar="GB",
                   help="plan for a GPU with this much memory (GB); default: the CUDA device present, or a CPU "
                        "budget (small network, a training step of about a second) without one")
    p.add_argument("--train-minutes", type=float, default=None, metavar="N",
                   help="training-time budget: measure one training step of the planned network, patch and batch "
                        "on this machine and size the schedule (epochs x batches) to N minutes of steps "
                        "(validations, the sweep and test prediction come on top; the reason is in plans.json). "
                        "Default: the planner's schedule (about 5 minutes on a CPU, 100 x 200 batches on a GPU)")
    p.add_argument("--override", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="set one plans entry after planning, dotted key and JSON value, e.g. "
                        "training.epochs=20 or patch_size=[96,96]; several may follow one --override. "
                        "Changes results: use with care")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for the fingerprint (0: in this process; default: the cores other work leaves free, "
                        "no more than the free memory holds)")
    p.add_argument("--force", action="store_true", help="recompute the fingerprint even if the raw data is unchanged")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def plan() -> None:
        from retinaunet.planning.pipeline import plan_task, proposals, summary_table

        mode = None if args.mode == "all" else args.mode
        workers = fair_workers(args.workers, case_worker_bytes(args.task, "fingerprint"),
                               what="process(es) for the fingerprint (when it is computed)")
        if args.train_minutes is not None:
            set_threads(None)  # the measured step runs with the threads rud_train would use now
        plans, _ = plan_task(args.task, mode=mode, gpu_memory=args.gpu_memory, overrides=args.override,
                             workers=workers, force=args.force, train_minutes=args.train_minutes)
        proposed = proposals(args.task, plans)
        if args.mode == "all":
            for name, _ in proposed:
                if name != plans.plan_name:
                    plan_task(args.task, mode=name, gpu_memory=args.gpu_memory, overrides=args.override,
                              workers=workers, validate=False, train_minutes=args.train_minutes)
        print(summary_table(plans))
        print("\nconfigurations that fit this data (" + ("all planned" if args.mode == "all" else
                                                         "add one with rud_plan --mode NAME") + "):")
        for name, why in proposed:
            print(f"  {name:<5} {why}")

    return run_command("rud_plan", plan)
