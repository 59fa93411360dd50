"""Training step on a CUDA GPU at a task's planned patch and batch: float32 vs bf16 autocast (AMP).

For every given plans.json the planned network is trained for a few steps on random patches with
objects (the trainer's own ``train_step``: forward, losses, backward, gradient clipping, Adam), once in
float32 and once with bf16 autocast. Reported per plan and precision: median step time, patches per
second, the peak allocated GPU memory, and the planner's memory estimate for the step (float32), so the
planner's memory model can be checked against a real card.

    python scripts/bench_gpu.py $RUD_DATA/Task101_ToyShapes/plans.json [more plans.json] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import make_batch  # noqa: E402
from retinaunet.planning.memory import estimate_memory  # noqa: E402

from retinaunet.models import build_model  # noqa: E402
from retinaunet.plans import load_plans  # noqa: E402
from retinaunet.training.batch import TrainBatch  # noqa: E402
from retinaunet.training.step import LossModule, train_step  # noqa: E402


def run(plans_file: Path, amp: bool, steps: int, device: torch.device) -> dict:
    plans = load_plans(plans_file)
    torch.manual_seed(0)
    det = build_model("retina_unet", plans).to(device)
    module = LossModule(det).train()
    opt = torch.optim.Adam(module.parameters(), lr=float(plans.training.learning_rate))
    images, boxes, labels, seg = make_batch(plans, int(plans.batch_size), 2, torch.device("cpu"))
    batch = TrainBatch(images=images, boxes=boxes, labels=labels, seg=seg, cases=["bench"] * images.shape[0])
    cuda = device.type == "cuda"  # on the CPU (a smoke run) there is no peak to read
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for i in range(steps + 3):  # three warm-up steps
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        res = train_step(module, opt, batch, device, amp=amp)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
        losses.append(res.losses["loss"])
    step = statistics.median(times)
    return {
        "plans": str(plans_file), "mode": plans.mode, "patch": list(plans.patch_size), "batch": int(plans.batch_size),
        "precision": "bf16 autocast" if amp else "float32", "step_ms": round(1000 * step, 1),
        "patches_per_s": round(int(plans.batch_size) / step, 1),
        "peak_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
        "estimate_gb_fp32": round(estimate_memory(plans) / 2**30, 2),
        "loss_first": round(losses[0], 3), "loss_last": round(losses[-1], 3),
        "finite": all(torch.isfinite(torch.tensor(losses)).tolist()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plans", nargs="+", type=Path)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA device; run it on a machine with a GPU")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    rows = []
    for plans_file in args.plans:
        for amp in (False, True):
            rows.append(run(plans_file, amp, args.steps, device))
            print(json.dumps(rows[-1]), flush=True)
            torch.cuda.empty_cache()
    print("\n| plan | patch x batch | precision | step ms | patches/s | peak GB | planner estimate GB (fp32) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['mode']} | {'x'.join(map(str, r['patch']))} x {r['batch']} | {r['precision']} | {r['step_ms']} | "
              f"{r['patches_per_s']} | {r['peak_gb']} | {r['estimate_gb_fp32']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
