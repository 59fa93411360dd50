"""The boxes-only network of a plan on the CPU: PyTorch (oneDNN) against ONNX Runtime, side by side.

The network's inference pass without the segmentation output (what ``rud_predict`` runs per tile) is
exported to ONNX and run by ONNX Runtime's CPU provider on the same random tiles as PyTorch, both with
``--threads`` threads, alternating repeats in this one process. Reported: milliseconds per tile for each,
the ratio, and the largest difference of their outputs (classification logits and box deltas).

    python scripts/bench_onnx.py --plans Task160_LUNA16/plans.json          # a task's plan (its patch and batch)
    python scripts/bench_onnx.py --patch 16 32 32 --tiles 4 --repeats 1     # tiny, seconds (a test plan)

Needs ``pip install onnxruntime onnx`` (not a dependency of the package).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class BoxesOnly(torch.nn.Module):
    """The network's boxes-only pass as plain tensors (classification logits, box deltas)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.network(images, segmentation=False)
        return out.cls_logits, out.box_deltas


def load(args: argparse.Namespace):
    from retinaunet.models import build_model
    from retinaunet.plans import load_plans, make_test_plans

    if args.plans is not None:
        plans = load_plans(args.plans, args.plan)
    else:
        plans = make_test_plans(dim=3, patch_size=list(args.patch))
    torch.manual_seed(0)
    return plans, build_model("retina_unet", plans).eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plans", type=Path, default=None, help="a plans.json (default: a small 3D test plan)")
    p.add_argument("--plan", default=None, help="the configuration of --plans (default: its default)")
    p.add_argument("--patch", type=int, nargs=3, default=[16, 32, 32], help="tile of the test plan (no --plans)")
    p.add_argument("--batch", type=int, default=None, help="tiles per pass (default: the plan's batch)")
    p.add_argument("--tiles", type=int, default=64, help="tiles per timed repeat")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats of each runtime (median reported)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        print("bench_onnx: needs ONNX Runtime: pip install onnxruntime onnx", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    plans, model = load(args)
    batch = args.batch or plans.batch_size
    net = BoxesOnly(model.network).eval()
    x = torch.randn(batch, plans.in_channels, *plans.inference_patch_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "boxes_only.onnx"
        torch.onnx.export(net, (x,), str(path), input_names=["images"], output_names=["cls", "box"],
                          opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    tiles = [rng.standard_normal(x.shape).astype(np.float32) for _ in range(max(1, args.tiles // batch))]
    n_tiles = len(tiles) * batch

    def run_torch() -> list:
        with torch.inference_mode():
            return [tuple(t.numpy() for t in net(torch.from_numpy(a))) for a in tiles]

    def run_ort() -> list:
        return [tuple(session.run(None, {"images": a})) for a in tiles]

    run_torch(), run_ort()  # warm-up: oneDNN's primitives, ONNX Runtime's allocations
    times = {"pytorch": [], "onnxruntime": []}
    outs = {}
    for _ in range(args.repeats):
        for name, fn in (("pytorch", run_torch), ("onnxruntime", run_ort)):
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    diff = max(float(np.abs(a - b).max()) for pt, on in zip(outs["pytorch"], outs["onnxruntime"])
               for a, b in zip(pt, on))
    ms = {k: 1000 * float(np.median(v)) / n_tiles for k, v in times.items()}
    print(f"boxes-only network, CPU, {args.threads} thread(s): tile {list(plans.inference_patch_size)}, batch "
          f"{batch}, {n_tiles} tiles x {args.repeats} repeats (median)")
    print("| runtime | ms per tile | vs pytorch |")
    print("|---|---|---|")
    for name in ("pytorch", "onnxruntime"):
        print(f"| {name} | {ms[name]:.1f} | {ms['pytorch'] / ms[name]:.2f}x |")
    print(f"largest output difference: {diff:.2e}")
    if diff > 1e-3:  # float32 sums in another order differ by ~1e-5; more is another computation
        print("RESULTS DIFFER: the exported network does not compute what PyTorch does")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
