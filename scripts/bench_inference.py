"""Benchmark whole-case inference of a CT-sized volume on this machine.

A small demo network (make_test_plans-like, random weights, 3D patch 64 x 128 x 128) predicts one
preprocessed volume with and without test-time mirroring, with the segmentation output accumulated
or not. Each configuration runs in a fresh subprocess so that its peak resident memory (VmHWM) is its
own. The classification prior is zeroed so that every tile reports its maximum number of boxes: a
worst case for consolidation.

``--network stub`` replaces the network by a 1x1 convolution that returns the same number of
(random) boxes and a softmax segmentation: it measures what the pipeline itself costs (tiling,
accumulation, WBC, memory) at sizes where the demo network would take an hour on a CPU.

``--network ct-plan`` builds the network, tile and batch the planner chooses for a CT dataset on a GPU of
``--gpu-memory`` GB (a synthetic fingerprint of lung CTs: 300 x 512 x 512 at 1.25 x 0.7 x 0.7 mm, nodules
of 4-30 mm; the paper-sized ResNet50-FPN) with random weights: whole-case time and peak GPU memory of
that plan, as ``scripts/gpu_check.sh`` runs it.

    python scripts/bench_inference.py                                      # demo network, 64 x 256 x 256
    python scripts/bench_inference.py --network stub --shape 300 512 512   # pipeline at the full CT size
    python scripts/bench_inference.py --network ct-plan --gpu-memory 80 --shape 300 512 512 --device cuda --only 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_scan import peak_mb  # VmHWM: ru_maxrss would carry the parent's size over the exec
from retinaunet.inference.predictor import Predictor
from retinaunet.inference.tiling import TileGrid
from torch import nn

from retinaunet.models import Detections, build_model
from retinaunet.plans import make_test_plans

CONFIGS = [  # (label, mirror, keep_seg)
    ("no mirroring, boxes only", False, False),
    ("no mirroring, boxes + seg", False, True),
    ("mirroring (8 views), boxes + seg", True, True),
]


class StubDetector(nn.Module):
    """A 1x1 convolution standing in for the network: random boxes (decode_max_detections per image, fixed
    seed) and a softmax segmentation of the right shape."""

    def __init__(self, num_classes: int, max_detections: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, num_classes + 1, 1)
        self.num_classes, self.k = num_classes, max_detections
        self.gen = torch.Generator().manual_seed(0)

    def predict(self, images: torch.Tensor) -> Detections:
        size = torch.tensor(images.shape[2:], dtype=torch.float32)
        boxes, scores, labels = [], [], []
        for _ in range(images.shape[0]):
            lo = torch.rand(self.k, 3, generator=self.gen) * size * 0.8
            hi = lo + 2 + torch.rand(self.k, 3, generator=self.gen) * 10
            boxes.append(torch.cat([lo, torch.minimum(hi, size)], 1).to(images.device))
            scores.append((0.1 + 0.9 * torch.rand(self.k, generator=self.gen)).to(images.device))
            labels.append(torch.randint(0, self.num_classes, (self.k,), generator=self.gen).to(images.device))
        return Detections(boxes, scores, labels, torch.softmax(self.conv(images), dim=1))


def ct_fingerprint(num_cases: int = 20, seed: int = 0) -> dict:
    """A fingerprint like a lung CT cohort's: 300 x 512 x 512 voxels of 1.25 x 0.7 x 0.7 mm, 1-4 nodules of
    4-30 mm per case in two classes, CT intensities; enough for the planner, no images needed."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(num_cases):
        objects = []
        for k in range(int(rng.integers(1, 5))):
            d = float(rng.uniform(4.0, 30.0))
            size_mm = [d * float(rng.uniform(0.9, 1.1)) for _ in range(3)]
            objects.append({"id": k + 1, "class": int(rng.integers(0, 2)), "size_mm": size_mm,
                            "size_voxels": [m / s for m, s in zip(size_mm, (1.25, 0.7, 0.7))]})
        cases.append({"case": f"ct{i:03d}", "shape": [300, 512, 512], "spacing": [1.25, 0.7, 0.7],
                      "crop_shape": [300, 512, 512], "num_objects": len(objects), "objects": objects})
    counts = [c["num_objects"] for c in cases]
    intensity = {"modality": 0, "name": "CT", "num_samples": 10_000, "mean": 40.0, "std": 250.0,
                 "min": -1000.0, "max": 1500.0, "p0.5": -800.0, "p99.5": 600.0}
    return {"task": "Task900_SyntheticCT", "dim": 3, "modalities": {"0": "CT"}, "num_classes": 2,
            "class_names": ["benign", "malignant"], "num_cases": num_cases, "intensity": [intensity],
            "objects_per_class": {"0": sum(counts) // 2, "1": sum(counts) - sum(counts) // 2},
            "objects_per_case": {"min": min(counts), "median": float(np.median(counts)), "max": max(counts),
                                 "total": sum(counts)},
            "empty_cases": [], "cases": cases}


def ct_plans(gpu_memory_gb: float):
    """The planner's 3D plan for :func:`ct_fingerprint` on a GPU of ``gpu_memory_gb`` GB."""
    from retinaunet.planning.budget import cuda_memory_gb, gpu_budget
    from retinaunet.planning.planner import plan_from_fingerprint

    if gpu_memory_gb <= 0:
        gpu_memory_gb = cuda_memory_gb()
        if gpu_memory_gb is None:
            raise SystemExit("--gpu-memory 0 means the CUDA device present, but there is none: give the GB")
    return plan_from_fingerprint(ct_fingerprint(), mode="3d", budget=gpu_budget(gpu_memory_gb))


def worker(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    plans = make_test_plans(dim=3, num_classes=2, patch_size=args.patch)
    if args.network == "ct-plan":
        plans = ct_plans(args.gpu_memory)
        model = build_model("retina_unet", plans)
        torch.nn.init.zeros_(model.network.cls_head.out.bias)
    elif args.network == "stub":
        model = StubDetector(plans.num_classes, plans.inference.decode_max_detections)
    else:
        model = build_model("retina_unet", plans)
        torch.nn.init.zeros_(model.network.cls_head.out.bias)
    data = np.random.default_rng(0).standard_normal((1, *args.shape), dtype=np.float32)
    batch_size = args.batch_size if args.network != "ct-plan" else None  # None: the plan's batch
    predictor = Predictor([model], plans, device=args.device, mirror=args.mirror, keep_seg=args.keep_seg,
                          batch_size=batch_size, seg_dtype=args.seg_dtype)
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(args.device)
    start = time.perf_counter()
    pred = predictor.predict_case(data)
    if cuda:
        torch.cuda.synchronize(args.device)
    seconds = time.perf_counter() - start
    tiles = len(TileGrid(args.shape, list(predictor.patch_size), predictor.tile_overlap))
    return {"seconds": seconds, "maxrss_mb": peak_mb(),
            "gpu_peak_mb": torch.cuda.max_memory_allocated(args.device) / 2**20 if cuda else None,
            "tiles": tiles, "views": len(predictor.views), "boxes": len(pred.boxes),
            "data_mb": data.nbytes / 2**20, "tile": list(predictor.patch_size), "batch": predictor.batch_size,
            "network": {k: getattr(plans.network, k)
                        for k in ("block", "blocks_per_stage", "start_channels", "fpn_channels", "norm")}}


def run_config(shape: list[int], mirror: bool, keep_seg: bool, network: str = "demo",
               patch: list[int] | None = None, batch_size: int = 2, device: str = "cpu", threads: int = 2,
               seg_dtype: str = "float32", gpu_memory: float = 80.0) -> dict:
    """One configuration in a fresh process (its own peak memory): seconds, maxrss_mb, gpu_peak_mb, tiles,
    views, boxes, tile, batch."""
    cmd = [sys.executable, __file__, "--worker", "--shape", *map(str, shape), "--patch",
           *map(str, patch or [64, 128, 128]), "--batch-size", str(batch_size), "--device", device,
           "--threads", str(threads), "--seg-dtype", seg_dtype, "--network", network,
           "--gpu-memory", str(gpu_memory)]
    cmd += (["--mirror"] if mirror else []) + (["--keep-seg"] if keep_seg else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, encoding="utf-8",
                         errors="replace").stdout.strip().splitlines()[-1]
    return json.loads(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256], help="preprocessed volume (z y x)")
    p.add_argument("--network", choices=("demo", "stub", "ct-plan"), default="demo",
                   help="demo: the small Retina U-Net; stub: a 1x1 conv with random boxes (pipeline cost only); "
                        "ct-plan: the planner's GPU plan for a CT cohort (network, tile and batch from the plan)")
    p.add_argument("--gpu-memory", type=float, default=80.0,
                   help="with --network ct-plan: the GPU's memory in GB (0: the CUDA device present)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    p.add_argument("--patch", type=int, nargs=3, default=[64, 128, 128])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seg-dtype", default="float32", choices=("float32", "float16"))
    p.add_argument("--only", type=int, nargs="*", default=None, help="indices of the configurations to run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mirror", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keep-seg", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    rows = []
    for k, (label, mirror, keep_seg) in enumerate(CONFIGS):
        if args.only is not None and k not in args.only:
            continue
        rows.append((label, run_config(args.shape, mirror, keep_seg, args.network, args.patch, args.batch_size,
                                       args.device, args.threads, args.seg_dtype, args.gpu_memory)))
        print(f"done: {label}", file=sys.stderr)
    shape = " x ".join(map(str, args.shape))
    tile = rows[0][1]["tile"] if rows else args.patch
    batch = rows[0][1]["batch"] if rows else args.batch_size
    print(f"\nwhole-case inference, {args.network} network, volume {shape} float32, tile {tile}, batch {batch}, "
          f"device {args.device}, {args.threads} threads, seg accumulator {args.seg_dtype}")
    if rows and args.network == "ct-plan":
        print(f"plan for a {args.gpu_memory:g} GB GPU: network {rows[0][1]['network']}")
    print(f"{'configuration':36s} {'tiles':>6s} {'views':>6s} {'boxes':>6s} {'s/case':>8s} {'s/tile-view':>12s} "
          f"{'peak RSS MB':>12s} {'peak GPU MB':>12s}")
    for label, r in rows:
        per = r["seconds"] / (r["tiles"] * r["views"])
        gpu = f"{r['gpu_peak_mb']:12.0f}" if r.get("gpu_peak_mb") is not None else f"{'-':>12s}"
        print(f"{label:36s} {r['tiles']:6d} {r['views']:6d} {r['boxes']:6d} {r['seconds']:8.1f} {per:12.3f} "
              f"{r['maxrss_mb']:12.0f} {gpu}")
    if rows:
        print(f"(input volume itself: {rows[0][1]['data_mb']:.0f} MB)")
    if args.json is not None:
        args.json.write_text(json.dumps([{"configuration": label, "shape": args.shape, "device": args.device,
                                          "network": args.network, **r} for label, r in rows], indent=1))

if __name__ == "__main__":
    main()
