"""Training step time alone and beside a busy process, with torch's default threads and with the fair share;
and the share measured right after an earlier stage of the same pipeline ended (the load average still holds it).

Each measurement runs in a fresh process. "busy" is another torch job that keeps every core busy with
torch's default thread count (as a second training or prediction would). The step is a full training
step (forward, losses, backward, Adam update) of the detector on a 2D batch; the figures are medians.

    python scripts/bench_threads.py                    # 2D, batch 4, patch 128 x 128, 10 steps
    python scripts/bench_threads.py --patch 256 --steps 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()


def step_worker(threads: str, patch: int, steps: int) -> dict:
    import torch

    from retinaunet.models import build_model
    from retinaunet.plans import make_test_plans
    from retinaunet.threads import set_threads
    from retinaunet.training.batch import TrainBatch
    from retinaunet.training.step import LossModule, train_step

    if threads == "fair":
        n = set_threads(None)
    elif threads == "default":
        n = torch.get_num_threads()
    else:
        n = set_threads(int(threads))
    torch.manual_seed(0)
    plans = make_test_plans(dim=2, patch_size=[patch, patch])
    model = build_model("retina_unet", plans)
    module = LossModule(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    b = 4
    seg = torch.zeros(b, patch, patch, dtype=torch.long)
    seg[:, 20:40, 30:50] = 1
    batch = TrainBatch(torch.randn(b, 1, patch, patch), [torch.tensor([[20.0, 30.0, 40.0, 50.0]])] * b,
                       [torch.tensor([0])] * b, seg)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        train_step(module, opt, batch, torch.device("cpu"))
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {"threads": n, "median_s": statistics.median(times)}


def busy_worker() -> None:
    import torch

    x = torch.randn(8, 16, 256, 256)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    while True:
        with torch.no_grad():
            conv(x)


def measure(threads: str, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), "--worker", "step", "--threads", threads,
                          "--patch", str(args.patch), "--steps", str(args.steps)],
                         check=True, capture_output=True, text=True, encoding="utf-8", errors="replace")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["step", "busy"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", default="default", help=argparse.SUPPRESS)
    p.add_argument("--patch", type=int, default=128, help="patch side in pixels")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (after 2 warm-up steps)")
    p.add_argument("--earlier-seconds", type=float, default=30.0,
                   help="how long the 'earlier stage' keeps the cores busy before the share is measured")
    args = p.parse_args()
    if args.worker == "step":
        print(json.dumps(step_worker(args.threads, args.patch, args.steps)))
        return
    if args.worker == "busy":
        busy_worker()
        return
    from retinaunet.threads import available_cpus, busy_cpus, fair_threads

    print(f"{available_cpus()} core(s); other work keeps {busy_cpus():.1f} busy before the run")
    # an earlier stage of the same pipeline: busy for a while, then finished
    earlier = subprocess.Popen([sys.executable, str(SCRIPT), "--worker", "busy"], stdout=subprocess.DEVNULL)
    time.sleep(args.earlier_seconds)
    earlier.terminate()
    earlier.wait()
    load = os.getloadavg()[0]
    print(f"right after an earlier stage of {args.earlier_seconds:.0f} s ended: the 1-minute load average says "
          f"{load:.1f} busy (share {max(1, min(available_cpus(), math.floor(available_cpus() - load + 0.5)))} "
          f"thread(s)); measured now: {busy_cpus():.1f} busy (share {fair_threads()} thread(s))")
    alone = {policy: measure(policy, args) for policy in ("default", "fair")}
    busy = subprocess.Popen([sys.executable, str(SCRIPT), "--worker", "busy"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(3.0)
        beside = {policy: measure(policy, args) for policy in ("default", "fair")}
    finally:
        busy.terminate()
        busy.wait()
    print(f"training step (2D, batch 4, {args.patch}^2), median s/step")
    print(f"{'threads':<28} {'alone':>14} {'beside busy':>14} {'slowdown':>9}")
    for policy, name in (("default", "torch default"), ("fair", "fair share (rud_* default)")):
        a, b = alone[policy], beside[policy]
        print(f"{name:<28} {a['median_s']:>8.3f} ({a['threads']:>2}) {b['median_s']:>8.3f} ({b['threads']:>2}) "
              f"{b['median_s'] / a['median_s']:>8.2f}x")
    ratio = beside["fair"]["median_s"] / alone["default"]["median_s"]
    print(f"fair share beside busy vs torch default alone: {ratio:.2f}x")

if __name__ == "__main__":
    main()
