"""Throughput of the training loader: patches per second for planned 2D and 3D patches.

Writes synthetic preprocessed cases (noise plus disks/spheres) to a temporary folder and times
``make_train_loader`` with 0, 1 and 2 workers, with augmentation, plus one run without augmentation as the
baseline of the ratios. Example:

    .venv/bin/python scripts/bench_loader.py --batches 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from loguru import logger

from retinaunet import store
from retinaunet.boxes import boxes_from_instance_map
from retinaunet.plans import make_test_plans
from retinaunet.training.loader import make_train_loader


def write_cases(folder: Path, shape: tuple[int, ...], n_cases: int, n_objects: int, seed: int = 0) -> list[str]:
    """Synthetic preprocessed cases: float32 noise with bright disks (2D) or spheres (3D) of two classes."""
    rng = np.random.default_rng(seed)
    names = []
    for c in range(n_cases):
        data = rng.normal(0, 0.2, (1, *shape)).astype(np.float32)
        seg = np.zeros(shape, np.int32)
        instances = {}
        for i in range(1, n_objects + 1):
            radius = rng.uniform(4, 12)
            centre = [rng.uniform(radius, s - radius) for s in shape]
            lo = [max(int(ct - radius), 0) for ct in centre]
            hi = [min(int(ct + radius) + 1, s) for ct, s in zip(centre, shape)]
            window = tuple(slice(a, b) for a, b in zip(lo, hi))
            grid = np.ogrid[window]
            mask = sum((g - ct) ** 2 for g, ct in zip(grid, centre)) <= radius ** 2
            seg[window][mask] = i
            data[(0, *window)][mask] += 1.0
            instances[str(i)] = int(i % 2)
        name = f"case{c:03d}"
        boxes = {str(k): v.tolist() for k, v in boxes_from_instance_map(seg).items()}
        store.save_case(folder, name, data, seg, {"case": name, "instances": instances, "boxes": boxes})
        names.append(name)
    return names


def time_loader(folder: Path, names: list[str], plans, workers: int, augment: bool,
                batches: int) -> tuple[float, float | None]:
    """(patches per second, CPU ms per patch in this process or None with workers) over ``batches`` batches,
    after two warm-up batches (worker start-up excluded). CPU time is robust to other load on the machine."""
    with make_train_loader(folder, names, plans, num_workers=workers, seed=0, augment=augment) as loader:
        for _ in range(2):
            next(loader)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(loader)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    patches = batches * plans.batch_size
    return patches / elapsed, (1000 * cpu / patches if workers == 0 else None)


def loader_configs() -> list[tuple[str, tuple[int, ...], object]]:
    """(label, case shape, plans) of the timed patch configurations."""
    configs = []
    # the planner's CPU plans of the toy tasks (shapes: 64x64 x 32; spheres: 16x40x40 x 8, 2.5/0.8 mm)
    cpu2d = make_test_plans(dim=2, patch_size=[64, 64])
    cpu2d.batch_size = 32
    configs.append(("2D 64x64 b32 CPU plan", (320, 320), cpu2d))
    cpu3d = make_test_plans(dim=3, patch_size=[16, 40, 40])
    cpu3d.batch_size, cpu3d.target_spacing = 8, [2.5, 0.8, 0.8]
    configs.append(("3D 16x40x40 b8 CPU plan", (28, 66, 66), cpu3d))
    plans2d = make_test_plans(dim=2, patch_size=[320, 320])
    plans2d.batch_size = 8
    configs.append(("2D 320x320 b8", (512, 512), plans2d))
    plans3d = make_test_plans(dim=3, patch_size=[48, 96, 96])
    plans3d.target_spacing = [2.5, 0.8, 0.8]  # anisotropic: in-plane rotation
    configs.append(("3D 48x96x96 b2 aniso", (80, 192, 192), plans3d))
    plans3i = make_test_plans(dim=3, patch_size=[48, 96, 96])  # isotropic: rotation about every axis
    configs.append(("3D 48x96x96 b2 iso", (80, 192, 192), plans3i))
    return configs


def measure(batches: int = 10, workers: Sequence[int] = (0, 1, 2), cases: int = 4,
            labels: Sequence[str] | None = None) -> list[tuple]:
    """Rows (label, augmentation, workers, patches/s, ratio to no augmentation, CPU ms/patch or None);
    ``labels``: only these configurations (default all)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, shape, plans in loader_configs():
            if labels is not None and label not in labels:
                continue
            folder = Path(tmp) / "_".join(label.split()[:2])
            if not folder.exists():
                folder.mkdir()
                write_cases(folder, shape, cases, n_objects=6)
            names = store.list_cases(folder)
            base, base_cpu = time_loader(folder, names, plans, 0, False, batches)
            rows.append((label, "none", 0, base, 1.0, base_cpu))
            for w in workers:
                rate, cpu = time_loader(folder, names, plans, w, True, batches)
                rows.append((label, "full", w, rate, rate / base, cpu))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10, help="timed batches per configuration")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to time")
    parser.add_argument("--cases", type=int, default=4, help="synthetic cases per configuration")
    args = parser.parse_args()
    logger.remove()
    rows = measure(args.batches, args.workers, args.cases)
    print(f"{'patches':24s} {'augment':8s} {'workers':>7s} {'patches/s':>10s} {'vs no-aug':>9s} "
          f"{'CPU ms/patch':>12s}")
    for label, aug, workers, rate, ratio, cpu in rows:
        cpu_text = f"{cpu:12.1f}" if cpu is not None else f"{'-':>12s}"
        print(f"{label:24s} {aug:8s} {workers:7d} {rate:10.1f} {ratio:9.2f} {cpu_text}")


if __name__ == "__main__":
    main()
