"""Whole-scan prediction of a full-size chest CT on the CPU: today's predictor against the boxes-only path.

One scan (written by ``retinaunet.toy_chestct`` at ``--slices`` x ``--size`` x ``--size``, or any ``--mhd``)
is read and preprocessed as ``rud_predict`` does (body crop, resampling) with a CPU plan: ``--plans`` (a
task's or model folder's plans.json), else the planner's CPU plan of a one-scan task made from the scan
itself (converted as ``rud_convert luna16`` does). Each configuration then predicts the preprocessed scan
in a fresh process (one view, one checkpoint, random weights of a fixed seed), so its peak memory is its own:

- ``baseline``: today's predictor, which runs the segmentation output (P0 at full resolution and the
  segmentation head) in every pass even when only boxes are kept;
- ``boxes only``: the predictor now, which leaves that out when no segmentation is kept (the same boxes);
- ``boxes only, batch N``: the same with ``--batch`` tiles per pass instead of the plan's batch.

Reported per configuration: wall seconds per scan, process CPU seconds (fairer on a shared machine), tiles,
boxes, and the peak resident memory (whole process, and over its start with the scan loaded) as a multiple
of the scan's float32 size. The ``preprocess`` row reads and preprocesses the raw scan. ``--check-boxes``
zeroes the classification bias so every tile reports boxes, and compares every configuration's boxes with
the baseline's (count, IoU per matched box, score difference).

    python scripts/bench_scan.py                                  # 300 x 512 x 512, the planner's CPU plan
    python scripts/bench_scan.py --mhd scan.mhd --plans plans.json
    python scripts/bench_scan.py --slices 24 --size 64 --z-slices 8   # tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CONFIGS = ["baseline", "boxes only", "boxes only, batch N"]


def rss_mb() -> float:
    """Current resident memory of this process (Linux /proc), MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    """This process's resident high-water mark (VmHWM), MB. Not ``ru_maxrss``: Linux carries that over an
    exec from the forking parent, so a worker would report at least its parent's size at the fork."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FullPass(torch.nn.Module):
    """Today's inference pass: the detector with its segmentation output computed in every pass."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def predict(self, images: torch.Tensor):
        return self.detector.predict(images, segmentation=True)


def make_scan(work: Path, slices: int, size: int, seed: int) -> Path:
    """One chest CT of ``slices`` x ``size`` x ``size`` in LUNA16's layout under ``work/cohort``."""
    from retinaunet.toy_chestct import ChestCTConfig, write_chestct_cohort

    cohort = work / "cohort"
    if not cohort.is_dir():
        cfg = ChestCTConfig(num_scans=1, subsets=1, size=size, slices=(slices, slices), seed=seed,
                            nodules_per_scan=(4,), rotated_fraction=0.0)
        write_chestct_cohort(cohort, cfg, progress=False)
    return next(cohort.glob("subset0/*.mhd"))


def plan_for_scan(cohort: Path, work: Path):
    """The planner's CPU 3d plan of a one-scan task made from ``cohort`` (LUNA16 layout)."""
    from retinaunet.planning.budget import cpu_budget
    from retinaunet.planning.pipeline import plan_task

    from retinaunet.convert.luna16 import convert_luna16

    task = work / "Task990_BenchScan"
    if not (task / "dataset.json").is_file():
        convert_luna16(cohort, task, progress=False)
    plans, _ = plan_task(task, mode="3d", budget=cpu_budget(3), validate=False)
    return plans


def preprocess_worker(args: argparse.Namespace) -> dict:
    from retinaunet.preprocessing.preprocess import preprocess_case

    from retinaunet.io import read_case
    from retinaunet.plans import load_plans

    plans = load_plans(args.plans_file)
    start_mb = rss_mb()
    t0 = time.perf_counter()
    images, geom = read_case([args.mhd])
    scan_mb = images[0].size * 4 / 2**20
    data, _, props = preprocess_case(images, geom, plans, case="scan")
    del images
    seconds = time.perf_counter() - t0
    np.save(args.data, data)
    return {"seconds": seconds, "peak_mb": peak_mb(), "over_start_mb": peak_mb() - start_mb, "scan_mb": scan_mb,
            "scan_shape": list(geom.shape), "spacing": list(geom.spacing), "shape": list(data.shape[1:])}


def predict_worker(args: argparse.Namespace) -> dict:
    from retinaunet.inference.predictor import Predictor
    from retinaunet.inference.tiling import TileGrid

    from retinaunet.models import build_model
    from retinaunet.plans import load_plans

    torch.set_num_threads(args.threads)
    plans = load_plans(args.plans_file)
    torch.manual_seed(0)
    model = build_model(args.model, plans).eval()
    if args.check_boxes:
        torch.nn.init.zeros_(model.network.cls_head.out.bias)
    data = np.load(args.data)
    if args.z_slices:
        data = np.ascontiguousarray(data[:, : args.z_slices])
    start_mb = rss_mb()
    config = args.config
    net = FullPass(model) if config == "baseline" else model
    batch = args.batch if config.endswith("batch N") else None
    predictor = Predictor([net], plans, mirror=False, batch_size=batch)
    wall, cpu = time.perf_counter(), time.process_time()
    pred = predictor.predict_case(data)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    np.savez(args.boxes, boxes=pred.boxes, scores=pred.scores, labels=pred.labels)
    return {"seconds": wall, "cpu_seconds": cpu, "peak_mb": peak_mb(), "over_start_mb": peak_mb() - start_mb,
            "tiles": len(TileGrid(data.shape[1:], predictor.patch_size, predictor.tile_overlap)),
            "tile": list(predictor.patch_size), "batch": predictor.batch_size, "boxes": int(len(pred.boxes)),
            "data_shape": list(data.shape[1:])}


def run_worker(kind: str, **options) -> dict:
    """A worker in a fresh process (its own peak memory); returns its JSON line."""
    cmd = [sys.executable, __file__, "--worker", kind]
    for key, value in options.items():
        if value is True:
            cmd.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_boxes(ref: dict, new: dict) -> dict:
    """Each reference box's best IoU with a new box of its class, and the score difference of that pair."""
    from retinaunet.boxes import box_iou

    out = {"count_ref": int(len(ref["boxes"])), "count_new": int(len(new["boxes"])), "min_iou": 1.0,
           "max_score_diff": 0.0}
    if len(ref["boxes"]) == 0 or len(new["boxes"]) == 0:
        out["min_iou"] = 1.0 if len(ref["boxes"]) == len(new["boxes"]) else 0.0
        return out
    iou = box_iou(torch.as_tensor(ref["boxes"]), torch.as_tensor(new["boxes"])).numpy()
    iou[ref["labels"][:, None] != new["labels"][None, :]] = 0.0
    best = iou.argmax(1)
    out["min_iou"] = float(iou.max(1).min())
    out["max_score_diff"] = float(np.abs(ref["scores"] - new["scores"][best]).max())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mhd", type=Path, default=None, help="a scan to predict (default: one written by toy_chestct)")
    p.add_argument("--slices", type=int, default=300, help="slices of the written scan")
    p.add_argument("--size", type=int, default=512, help="in-plane voxels of the written scan")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plans", type=Path, default=None,
                   help="plans.json to use (default: the planner's CPU plan of a one-scan task of the scan)")
    p.add_argument("--plan", default=None, help="the configuration of --plans (default: its default)")
    p.add_argument("--model", default="retina_unet")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="tiles per pass of the 'batch N' configuration")
    p.add_argument("--z-slices", type=int, default=0,
                   help="predict only the first N slices of the preprocessed scan (0: all; for quick runs)")
    p.add_argument("--only", nargs="*", default=None, help="configurations to run (default: all)")
    p.add_argument("--check-boxes", action="store_true",
                   help="zero the classification bias, so every tile reports boxes, and compare them")
    p.add_argument("--work", type=Path, default=None, help="folder for the scan, plan and arrays (default: temp)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    for hidden in ("--plans-file", "--data", "--boxes", "--config"):
        p.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(preprocess_worker(args) if args.worker == "preprocess" else predict_worker(args)))
        return

    from retinaunet.plans import load_plans, save_plans

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="bench_scan_")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    mhd = args.mhd or make_scan(work, args.slices, args.size, args.seed)
    plans = load_plans(args.plans, args.plan) if args.plans else plan_for_scan(mhd.parent.parent, work)
    plans_file = work / "bench_plans.json"
    save_plans(plans, plans_file)
    data = work / "scan.npy"
    pre = run_worker("preprocess", plans_file=plans_file, mhd=mhd, data=data)
    rows = []
    for config in CONFIGS:
        if args.only is not None and config not in args.only:
            continue
        boxes = work / f"boxes_{len(rows)}.npz"
        r = run_worker("predict", plans_file=plans_file, data=data, boxes=boxes, config=config,
                       threads=args.threads, batch=args.batch, z_slices=args.z_slices, model=args.model,
                       check_boxes=args.check_boxes)
        r["config"] = config.replace("batch N", f"batch {args.batch}")
        r["boxes_file"] = boxes
        rows.append(r)
        print(f"done: {r['config']}", file=sys.stderr)

    scan_mb = pre["scan_mb"]
    print(f"\nwhole-scan prediction on the CPU ({args.threads} threads), one view, one checkpoint, "
          f"{args.model} with random weights (seed 0{', classification bias zeroed' if args.check_boxes else ''})")
    print(f"scan {' x '.join(map(str, pre['scan_shape']))} ({scan_mb:.1f} MB as float32), spacing "
          f"{[round(s, 3) for s in pre['spacing']]}; plan: patch {plans.patch_size}, batch {plans.batch_size}, "
          f"target spacing {plans.target_spacing}, norm {plans.network.norm}, crop {plans.crop.method}")
    print(f"preprocessed {' x '.join(map(str, pre['shape']))}"
          + (f", predicted: its first {args.z_slices} slices" if args.z_slices else "")
          + f"; preprocessing {pre['seconds']:.1f} s, peak {pre['peak_mb']:.0f} MB "
          f"({pre['peak_mb'] / scan_mb:.2f}x the scan's float32; {pre['over_start_mb'] / scan_mb:.2f}x over start)")
    base = rows[0] if rows and rows[0]["config"] == "baseline" else None
    print(f"{'configuration':24s} {'tiles':>6s} {'batch':>5s} {'s/scan':>8s} {'cpu s':>8s} {'vs baseline':>11s} "
          f"{'peak MB':>8s} {'x scan':>7s} {'over start':>10s} {'boxes':>6s}  same boxes as the baseline")
    ref = None
    for r in rows:
        got = dict(np.load(r.pop("boxes_file")))
        ref = ref if ref is not None else got
        cmp = compare_boxes(ref, got)
        r["boxes_vs_baseline"] = cmp
        ratio = f"{base['seconds'] / r['seconds']:.2f}x" if base else "-"
        same = (f"{cmp['count_new']}/{cmp['count_ref']} boxes, min IoU {cmp['min_iou']:.4f}, "
                f"max score diff {cmp['max_score_diff']:.2e}")
        print(f"{r['config']:24s} {r['tiles']:6d} {r['batch']:5d} {r['seconds']:8.1f} {r['cpu_seconds']:8.1f} "
              f"{ratio:>11s} {r['peak_mb']:8.0f} {r['peak_mb'] / scan_mb:7.2f} "
              f"{r['over_start_mb'] / scan_mb:10.2f} {r['boxes']:6d}  {same}")
    if args.json is not None:
        args.json.write_text(json.dumps({"preprocess": pre, "rows": rows, "plans_patch": plans.patch_size},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
