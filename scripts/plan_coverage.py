"""Anchor coverage per object size on the real anchor grid, for the plans of several budgets (no files written).

    python scripts/plan_coverage.py -t 110 --budgets cpu 11 24 80
    python scripts/plan_coverage.py -t 110 --plans-file OTHER/plans.json   # coverage of an existing plan
    python scripts/plan_coverage.py -t 110 --plans-file $RUD_DATA/Task110_ToyNodules/plans.json  # the task's own

For each budget the planner runs on the task's fingerprint.json (write it with rud_plan first) and the
summary of strides, head levels, anchors and matching is printed with the coverage table that rud_plan
shows. With ``--plans-file`` the coverage of a plans.json written before (e.g. by an older version, whose
plan has no coverage per size) is measured on the same objects: its strides, P2-P5 heads (or its
head_levels), anchors and matching.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retinaunet.planning.budget import gpu_budget  # noqa: E402
from retinaunet.planning.coverage import coverage_table  # noqa: E402
from retinaunet.planning.pipeline import coverage_rows  # noqa: E402
from retinaunet.planning.planner import object_sizes, plan_from_fingerprint  # noqa: E402
from retinaunet.planning.topology import level_strides  # noqa: E402

from retinaunet.anchors import AnchorGenerator  # noqa: E402
from retinaunet.io import read_json  # noqa: E402
from retinaunet.layout import TaskPaths, find_task  # noqa: E402


def _describe(plans: dict, by_size: dict) -> str:
    net = plans["network"]
    levels = net.get("head_levels", [2, 3, 4, 5])
    strides = [level_strides(net["strides"], k) for k in levels]
    return "\n".join([
        f"patch {plans['patch_size']} batch {plans['batch_size']}; head levels "
        + ", ".join(f"P{k} {s}" for k, s in zip(levels, strides)),
        f"anchors {plans['anchors']['base_sizes']} z {plans['anchors'].get('z_base_sizes')}; matching "
        + json.dumps(plans["matching"]),
        coverage_rows(by_size, float(plans["matching"].get("iou_high", 0.5))),
    ])


def _measure(plans: dict, fp: dict) -> dict:
    """Coverage per size of an existing plan on the fingerprint's objects."""
    dim = int(plans["dim"])
    axes = list(range(int(plans["data_dim"])))[-dim:]
    sizes = object_sizes(fp, plans["target_spacing"], axes)
    sizes = np.minimum(sizes, np.asarray(plans["patch_size"], dtype=float)[None])
    net, anchors = plans["network"], plans["anchors"]
    strides = [level_strides(net["strides"], k) for k in net.get("head_levels", [2, 3, 4, 5])]
    gen = AnchorGenerator(anchors["base_sizes"], anchors.get("z_base_sizes") if dim == 3 else None,
                          anchors["scales"], anchors["ratios"], dim)
    matching = {"method": "iou", **plans["matching"]}
    return coverage_table(sizes, [plans["target_spacing"][a] for a in axes], gen, strides, matching,
                          float(matching["iou_high"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-t", "--task", required=True, help="task number or name (its fingerprint.json must exist)")
    p.add_argument("--budgets", nargs="+", default=["cpu", "11", "24", "80"],
                   help="'cpu' or GPU memory in GB, one plan each")
    p.add_argument("--mode", default=None, help="2d, 2dc or 3d (default: the planner's choice)")
    p.add_argument("--plans-file", type=Path, default=None, help="measure this plans.json instead of planning")
    args = p.parse_args(argv)
    paths = TaskPaths(find_task(args.task))
    fp = read_json(paths.fingerprint)
    if args.plans_file is not None:
        plans = read_json(args.plans_file)
        if "configurations" in plans:  # a task's file of several plans: its default (or --mode)
            name = args.mode or plans.get("default") or next(iter(plans["configurations"]))
            if name not in plans["configurations"]:
                print(f"{args.plans_file}: no plan '{name}' (has {', '.join(plans['configurations'])})",
                      file=sys.stderr)
                return 1
            plans = plans["configurations"][name]
        print(f"== {args.plans_file}")
        print(_describe(plans, _measure(plans, fp)))
        return 0
    for b in args.budgets:  # 'cpu': the planner's CPU budget (this machine has no CUDA device)
        plans = plan_from_fingerprint(fp, mode=args.mode, budget=None if b == "cpu" else gpu_budget(float(b)))
        data = plans.to_dict()
        print(f"== {'CPU' if b == 'cpu' else b + ' GB GPU'} plan ({data['mode']})")
        print(_describe(data, data["anchors"]["coverage_by_size"]))
        print("matching reason:", data["reasons"]["matching"])
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
