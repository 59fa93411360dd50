"""Benchmark whole-case inference of a CT-sized volume on this machine.

A small demo network (make_test_plans-like, random weights, 3D patch 64 x 128 x 128) predicts one
preprocessed volume with and without test-time mirroring, with the segmentation output accumulated
or not. Each configuration runs in a fresh subprocess so that its peak resident memory (maxrss) is its
own. The classification prior is zeroed so that every tile reports its maximum number of boxes: a
worst case for consolidation.

``--network stub`` replaces the network by a 1x1 convolution that returns the same number of
(random) boxes and a softmax segmentation: it measures what the pipeline itself costs (tiling,
accumulation, WBC, memory) at sizes where the demo network would take an hour on a CPU.

    python scripts/bench_inference.py                                      # demo network, 64 x 256 x 256
    python scripts/bench_inference.py --network stub --shape 300 512 512   # pipeline at the full CT size
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
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


def worker(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    plans = make_test_plans(dim=3, num_classes=2, patch_size=args.patch)
    if args.network == "stub":
        model = StubDetector(plans.num_classes, plans.inference.decode_max_detections)
    else:
        model = build_model("retina_unet", plans)
        torch.nn.init.zeros_(model.network.cls_head.out.bias)
    data = np.random.default_rng(0).standard_normal((1, *args.shape), dtype=np.float32)
    predictor = Predictor([model], plans, device=args.device, mirror=args.mirror, keep_seg=args.keep_seg,
                          batch_size=args.batch_size, seg_dtype=args.seg_dtype)
    start = time.perf_counter()
    pred = predictor.predict_case(data)
    seconds = time.perf_counter() - start
    tiles = len(TileGrid(args.shape, args.patch, plans.inference.tile_overlap))
    return {"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tiles": tiles, "views": len(predictor.views), "boxes": len(pred.boxes),
            "data_mb": data.nbytes / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256], help="preprocessed volume (z y x)")
    p.add_argument("--network", choices=("demo", "stub"), default="demo",
                   help="demo: the small Retina U-Net; stub: a 1x1 conv with random boxes (pipeline cost only)")
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
    base = [sys.executable, __file__, "--worker", "--shape", *map(str, args.shape), "--patch", *map(str, args.patch),
            "--batch-size", str(args.batch_size), "--device", args.device, "--threads", str(args.threads),
            "--seg-dtype", args.seg_dtype, "--network", args.network]
    rows = []
    for k, (label, mirror, keep_seg) in enumerate(CONFIGS):
        if args.only is not None and k not in args.only:
            continue
        cmd = base + (["--mirror"] if mirror else []) + (["--keep-seg"] if keep_seg else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append((label, json.loads(out)))
        print(f"done: {label}", file=sys.stderr)
    shape = " x ".join(map(str, args.shape))
    print(f"\nwhole-case inference, {args.network} network, volume {shape} float32, patch {args.patch}, "
          f"batch {args.batch_size}, "
          f"device {args.device}, {args.threads} threads, seg accumulator {args.seg_dtype}")
    print(f"{'configuration':36s} {'tiles':>6s} {'views':>6s} {'boxes':>6s} {'s/case':>8s} {'s/tile-view':>12s} "
          f"{'peak RSS MB':>12s}")
    for label, r in rows:
        per = r["seconds"] / (r["tiles"] * r["views"])
        print(f"{label:36s} {r['tiles']:6d} {r['views']:6d} {r['boxes']:6d} {r['seconds']:8.1f} {per:12.3f} "
              f"{r['maxrss_mb']:12.0f}")
    if rows:
        print(f"(input volume itself: {rows[0][1]['data_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
