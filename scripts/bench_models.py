"""Training step time of every registered model at one plan, side by side in one process.

Each model gets the same real batches from the training loader of a preprocessed task (default: the
demo's shapes task) and runs the trainer's own step (forward, losses, backward, clipping, Adam); the first
step warms up and is not timed. Ratios are against Retina U-Net.

    .venv/bin/python scripts/bench_models.py                     # $RUD_DATA (./data) Task101_ToyShapes
    .venv/bin/python scripts/bench_models.py -t 104 --steps 5    # any preprocessed task
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from loguru import logger

from retinaunet import store
from retinaunet.io import read_json
from retinaunet.layout import TaskPaths, find_task
from retinaunet.models import available_models, build_model
from retinaunet.plans import load_plans
from retinaunet.training.loader import make_train_loader
from retinaunet.training.step import LossModule, train_step


def step_times(plans, batches: list, models: list[str] | None = None) -> list[tuple[str, float]]:
    """Seconds per training step of each model (Retina U-Net first) on ``batches``; the first warms up."""
    names = models or ["retina_unet"] + [m for m in available_models() if m != "retina_unet"]
    rows = []
    for name in names:
        torch.manual_seed(0)
        module = LossModule(build_model(name, plans)).train()
        opt = torch.optim.Adam(module.parameters(), lr=1e-3)
        train_step(module, opt, batches[0], torch.device("cpu"))
        start = time.perf_counter()
        for batch in batches[1:]:
            train_step(module, opt, batch, torch.device("cpu"))
        rows.append((name, (time.perf_counter() - start) / (len(batches) - 1)))
    return rows


def loader_batches(pre_dir, cases: list[str], plans, count: int) -> list:
    """``count`` real batches of the training loader (augmented, as the trainer sees them)."""
    with make_train_loader(pre_dir, cases, plans, num_workers=0) as loader:
        return [next(loader) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--task", default="101", help="preprocessed task (default 101, the demo's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    args = parser.parse_args()
    logger.remove()
    os.environ.setdefault("RUD_DATA", os.path.abspath("data"))
    paths = TaskPaths(find_task(args.task))
    plans = load_plans(paths.plans)
    cases = read_json(paths.splits)[0]["train"] if paths.splits.exists() else None
    pre = paths.preprocessed(plans.plan_name)
    cases = cases or store.list_cases(pre)
    rows = step_times(plans, loader_batches(pre, cases, plans, args.steps + 1))
    print(f"plan {plans.plan_name}: patch {plans.patch_size} x {plans.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'model':15s} {'s/step':>7s} {'vs retina_unet':>15s}")
    for name, sec in rows:
        print(f"{name:15s} {sec:7.3f} {sec / rows[0][1]:15.2f}")


if __name__ == "__main__":
    main()
