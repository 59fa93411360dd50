"""Training steps of a plan on the CPU: peak memory and time beside the planner's estimate.

    python scripts/rehearse_step.py PLANS_JSON [--plan 3d] [--steps 2] [--ram-cap-gb 6] [--threads N]

For a GPU plan rehearsed on a CPU (``rud_plan --gpu-memory 24``): each step (forward, losses, backward, Adam)
runs on random data at the plan's patch in a fresh process (:func:`retinaunet.planning.measure.measure_steps`:
the resident-memory high-water mark over the process's baseline after a warm-up step). Where the planner's
float32 estimate of the planned batch exceeds ``--ram-cap-gb``, the batch is halved until it fits (the
estimate is linear in the batch) and the table says so; a plan whose batch of 1 does not fit is not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from retinaunet.planning.measure import measure_steps
from retinaunet.planning.memory import estimate_memory

from retinaunet.plans import load_plans


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("plans_file", help="a plans.json (a task's, or a copy of it)")
    p.add_argument("--plan", default=None, help="configuration in the file (default: its default)")
    p.add_argument("--steps", type=int, default=2, help="measured steps (each after its own warm-up)")
    p.add_argument("--ram-cap-gb", type=float, default=6.0, help="largest estimated step to run, GB")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    args = p.parse_args(argv)
    plans = load_plans(args.plans_file, args.plan)
    planned = plans.batch_size
    batch = planned
    while batch > 1 and estimate_memory(dataclasses.replace(plans, batch_size=batch)) > args.ram_cap_gb * 2**30:
        batch = max(1, batch // 2)
    run = dataclasses.replace(plans, batch_size=batch)
    estimate = estimate_memory(run)
    print(f"plan {plans.plan_name}: patch {plans.patch_size} x batch {planned} (planned), network "
          f"{plans.network.block} {plans.network.blocks_per_stage}, estimate {estimate_memory(plans) / 2**30:.2f} GB")
    if estimate > args.ram_cap_gb * 2**30:
        print(f"not run: even a batch of 1 is estimated at {estimate / 2**30:.2f} GB, over --ram-cap-gb "
              f"{args.ram_cap_gb:g}")
        return 0
    results = measure_steps([run] * args.steps, threads=args.threads, timeout=3600)
    note = "" if batch == planned else f" (batch {planned} halved to {batch} to fit {args.ram_cap_gb:g} GB)"
    print("| step | patch x batch | time | peak memory over baseline | planner's estimate (float32) | ratio |")
    print("|---|---|---|---|---|---|")
    for i, (peak, seconds) in enumerate(results):
        print(f"| {i + 1} | {' x '.join(map(str, run.patch_size))} x {batch}{note} | {seconds:.1f} s | "
              f"{peak / 2**30:.2f} GB | {estimate / 2**30:.2f} GB | {peak / estimate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
