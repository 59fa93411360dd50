"""Benchmark: weighted box clustering, numba implementation vs the plain NumPy reference.

Realistic 3D input per case (volume 96 x 256 x 256, patches 64 x 128 x 128 tiled with 50 % overlap):
8 mirrorings x 5 checkpoints = 40 runs of 100 boxes each (12 objects found again with jitter by every
covering tile, plus low-scoring false positives), 3 classes; views are (run, tile) pairs, expected
views = 40 x tiles covering the box, patch-centre factors from the box position in its tile. Both implementations
run on the same cases; the outputs are checked to be the same (same boxes kept with the same labels,
coordinates and scores equal to 1e-12 relative: only the summation order differs) and the ratio printed.

    .venv/bin/python scripts/bench_wbc.py [--cases 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from retinaunet.inference.wbc import patch_center_factor, weighted_box_clustering, weighted_box_clustering_numpy

VOLUME = np.array([96.0, 256.0, 256.0])
PATCH = np.array([64.0, 128.0, 128.0])


def tile_origins(volume: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Origins of a 50 %-overlap tiling, float[T, 3]."""
    axes = [np.unique(np.minimum(np.arange(0, v - p + p / 2, p / 2), v - p)) for v, p in zip(volume, patch)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def make_case(rng: np.random.Generator, views: int = 40, per_view: int = 100, objects: int = 12, classes: int = 3):
    """One case's raw predictions: boxes [N, 6], scores, labels, view ids, patch-centre factors, expected views.

    A view is one (checkpoint, mirroring) pair on one tile: every tile that covers an object finds it
    with probability 0.8 in each of the 40 (checkpoint, mirroring) runs; false positives fill each run
    up to ``per_view`` boxes, spread over the tiles.
    """
    origins = tile_origins(VOLUME, PATCH)
    centres = rng.uniform(PATCH / 4, VOLUME - PATCH / 4, (objects, 3))
    sizes = rng.uniform([2, 4, 4], [10, 30, 30], (objects, 3))
    obj_class = rng.integers(0, classes, objects)
    covers = np.all((centres[:, None] >= origins[None]) & (centres[:, None] < origins[None] + PATCH), axis=2)
    boxes, scores, labels, view_ids, tiles = [], [], [], [], []
    for v in range(views):
        run = 0
        for o, t in zip(*np.nonzero(covers & (rng.uniform(size=covers.shape) < 0.8))):
            c = centres[o] + rng.normal(0, 1.0, 3)
            s = sizes[o] * rng.uniform(0.85, 1.15, 3)
            boxes.append(np.concatenate([c - s / 2, c + s / 2]))
            scores.append(rng.uniform(0.4, 1.0))
            labels.append(obj_class[o] if rng.uniform() < 0.9 else rng.integers(0, classes))
            view_ids.append(v * len(origins) + t)
            tiles.append(t)
            run += 1
        for _ in range(max(per_view - run, 0)):  # false positives
            t = rng.integers(0, len(origins))
            c, s = origins[t] + rng.uniform(0, PATCH), rng.uniform([2, 3, 3], [8, 20, 20])
            boxes.append(np.concatenate([c - s / 2, c + s / 2]))
            scores.append(rng.uniform(0.1, 0.5))
            labels.append(rng.integers(0, classes))
            view_ids.append(v * len(origins) + t)
            tiles.append(t)
    boxes, tiles = np.array(boxes), np.array(tiles)
    centre = (boxes[:, :3] + boxes[:, 3:]) / 2
    covering = np.all((centre[:, None] >= origins[None]) & (centre[:, None] < origins[None] + PATCH), axis=2)
    pcf = patch_center_factor(boxes - np.concatenate([origins[tiles], origins[tiles]], 1), PATCH)
    expected = views * np.maximum(covering.sum(1), 1).astype(float)
    return boxes, np.array(scores), np.array(labels), np.array(view_ids), pcf, expected


def best_time(fn, case, repeats: int) -> tuple[float, tuple]:
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*case)
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(cases: int = 5, repeats: int = 3, seed: int = 0) -> dict:
    """Best-of-``repeats`` times (s) of both implementations per case; raises if their outputs differ."""
    rng = np.random.default_rng(seed)
    inputs = [make_case(rng) for _ in range(cases)]
    weighted_box_clustering(*inputs[0])  # compile (or load the numba cache) outside the timing
    weighted_box_clustering_numpy(*inputs[0])
    rows = []
    for i, case in enumerate(inputs):
        t_fast, fast = best_time(weighted_box_clustering, case, repeats)
        t_ref, ref = best_time(weighted_box_clustering_numpy, case, repeats)
        if len(fast[1]) != len(ref[1]) or not np.array_equal(fast[2], ref[2]):
            raise SystemExit(f"case {i}: numba kept {len(fast[1])} boxes, the reference {len(ref[1])}")
        diff = max(np.abs(fast[0] - ref[0]).max(), np.abs(fast[1] - ref[1]).max())
        if not (np.allclose(fast[0], ref[0], rtol=1e-12, atol=0) and np.allclose(fast[1], ref[1], rtol=1e-12)):
            raise SystemExit(f"case {i}: outputs differ by up to {diff:.2e}")
        rows.append({"boxes": len(case[1]), "kept": len(fast[1]), "numba_s": t_fast, "numpy_s": t_ref,
                     "max_diff": float(diff)})
    return {"cases": rows, "numba_s": sum(r["numba_s"] for r in rows), "numpy_s": sum(r["numpy_s"] for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    result = measure(args.cases, args.repeats, args.seed)
    print(f"{'case':>4} {'boxes':>6} {'kept':>5} {'numba ms':>9} {'numpy ms':>9} {'ratio':>6}  same output")
    for i, r in enumerate(result["cases"]):
        note = "bit for bit" if r["max_diff"] == 0 else f"max |diff| {r['max_diff']:.1e} (summation order)"
        print(f"{i:>4} {r['boxes']:>6} {r['kept']:>5} {1e3 * r['numba_s']:>9.2f} {1e3 * r['numpy_s']:>9.2f} "
              f"{r['numpy_s'] / r['numba_s']:>6.1f}  {note}")
    total_fast, total_ref = result["numba_s"], result["numpy_s"]
    print(f"total: numba {1e3 * total_fast:.1f} ms, numpy {1e3 * total_ref:.1f} ms, "
          f"ratio {total_ref / total_fast:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
