"""Throughput of IoU and NMS: numba and torch (CPU) versions side by side with plain Python loops.

Boxes are jittered around a few objects, like detector candidates. Run:
    .venv/bin/python scripts/bench_boxes.py [--sizes 1000 5000] [--threshold 0.1]
Python-loop IoU times for large N are measured on the first rows only and scaled (cost is linear in
rows), marked with '~'.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from retinaunet.boxes import box_iou, box_iou_np, nms, nms_np


def python_iou(a: np.ndarray, b: np.ndarray) -> list[list[float]]:
    dim = a.shape[1] // 2
    a_list, b_list = a.tolist(), b.tolist()
    out = []
    for p in a_list:
        vol_p = 1.0
        for k in range(dim):
            vol_p *= p[dim + k] - p[k]
        row = []
        for q in b_list:
            inter = 1.0
            vol_q = 1.0
            for k in range(dim):
                inter *= max(0.0, min(p[dim + k], q[dim + k]) - max(p[k], q[k]))
                vol_q *= q[dim + k] - q[k]
            row.append(inter / (vol_p + vol_q - inter))
        out.append(row)
    return out


def python_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    dim = boxes.shape[1] // 2
    box_list = boxes.tolist()
    vol = [float(np.prod(b[dim:] - b[:dim])) for b in boxes]
    keep: list[int] = []
    for i in sorted(range(len(box_list)), key=lambda i: -scores[i]):
        p = box_list[i]
        for j in keep:
            q = box_list[j]
            inter = 1.0
            for k in range(dim):
                inter *= max(0.0, min(p[dim + k], q[dim + k]) - max(p[k], q[k]))
            if inter / (vol[i] + vol[j] - inter) > thr:
                break
        else:
            keep.append(i)
    return keep


def make_boxes(rng: np.random.Generator, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    extent = 256.0 if dim == 2 else 96.0
    objects = rng.uniform(0, extent, size=(max(n // 25, 1), dim))
    centre = objects[rng.integers(0, len(objects), size=n)] + rng.normal(0, 4, size=(n, dim))
    size = rng.uniform(4, extent / 6, size=(n, dim))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1), rng.uniform(0, 1, n)


def best_time(fn: Callable[[], object], budget: float = 1.0, max_repeats: int = 20) -> float:
    """Best wall time of repeated calls (at least one, stopping after ``budget`` seconds)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (not times or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def row(r: dict) -> str:
    t_py = f"{'~' if r['python_scaled'] else ''}{r['python_s'] * 1e3:.1f}"
    return (f"{r['op']:<5}{r['dim']:>4}{r['n']:>7}{r['kept']:>7}{t_py:>12}{r['numba_s'] * 1e3:>10.2f}"
            f"{r['torch_s'] * 1e3:>10.2f}{r['python_s'] / r['numba_s']:>9.0f}{r['python_s'] / r['torch_s']:>9.1f}"
            f"{r['torch_s'] / r['numba_s']:>13.1f}{'yes' if r['same'] else 'NO':>6}")


def bench_iou(boxes: np.ndarray, other: np.ndarray, ref_rows: int) -> dict:
    """IoU matrix boxes x other: Python loop (timed on ``ref_rows`` rows, scaled), numba, torch."""
    n, dim = len(boxes), boxes.shape[1] // 2
    rows = min(ref_rows, n)
    t_py = best_time(lambda: python_iou(boxes[:rows], other), max_repeats=1) * n / rows
    tb, to = torch.from_numpy(boxes).float(), torch.from_numpy(other).float()
    t = {"numba": best_time(lambda: box_iou_np(boxes, other)), "torch": best_time(lambda: box_iou(tb, to))}
    same = np.allclose(box_iou_np(boxes, other), box_iou(tb, to).numpy(), atol=1e-5) and np.allclose(
        python_iou(boxes[:rows], other), box_iou_np(boxes[:rows], other))
    return {"op": "iou", "dim": dim, "n": n, "kept": "", "python_s": t_py, "python_scaled": rows < n,
            "numba_s": t["numba"], "torch_s": t["torch"], "same": bool(same)}


def bench_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> dict:
    """NMS at IoU ``thr``: Python loop, numba, torch; ``same`` when all keep the same indices."""
    n, dim = len(boxes), boxes.shape[1] // 2
    t0 = time.perf_counter()
    ref = python_nms(boxes, scores, thr)
    t_py = time.perf_counter() - t0
    tb, ts = torch.from_numpy(boxes).float(), torch.from_numpy(scores).float()
    t = {"numba": best_time(lambda: nms_np(boxes, scores, thr)), "torch": best_time(lambda: nms(tb, ts, thr))}
    same = nms_np(boxes, scores, thr).tolist() == ref == nms(tb, ts, thr).tolist()
    return {"op": "nms", "dim": dim, "n": n, "kept": str(len(ref)), "python_s": t_py, "python_scaled": False,
            "numba_s": t["numba"], "torch_s": t["torch"], "same": bool(same)}


def measure(sizes: Sequence[int] = (1000, 5000), threshold: float = 0.1, iou_cols: int = 1000,
            ref_rows: int = 100, threads: int = 1) -> list[dict]:
    """IoU and NMS rows (2D, then 3D; each size) with times in seconds; numba compiled beforehand."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    warm, warm_scores = make_boxes(rng, 50, 2)
    box_iou_np(warm, warm)
    nms_np(warm, warm_scores, 0.5)  # numba compilation is not part of the timings
    rows = []
    for dim in (2, 3):
        for n in sizes:
            boxes, scores = make_boxes(rng, n, dim)
            rows.append(bench_iou(boxes, boxes[:iou_cols], ref_rows))
            rows.append(bench_nms(boxes, scores, threshold))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000], help="numbers of boxes")
    parser.add_argument("--threshold", type=float, default=0.1, help="NMS IoU threshold (paper: 0.1)")
    parser.add_argument("--iou-cols", type=int, default=1000, help="columns of the IoU matrix")
    parser.add_argument("--ref-rows", type=int, default=100, help="rows timed for the Python IoU loop")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: like numba, and stable on a busy machine)")
    args = parser.parse_args()
    rows = measure(args.sizes, args.threshold, args.iou_cols, args.ref_rows, args.threads)
    print(f"torch {torch.__version__} CPU, {torch.get_num_threads()} thread(s), float32 boxes; numba float64; "
          f"NMS threshold {args.threshold}; IoU matrices N x {args.iou_cols}")
    header = f"{'op':<5}{'dim':>4}{'N':>7}{'kept':>7}{'python ms':>12}{'numba ms':>10}{'torch ms':>10}" \
             f"{'numba x':>9}{'torch x':>9}{'torch/numba':>13}{'same':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(row(r))
    print("x = speed-up over the plain Python loop (~: timed on the first rows, scaled to N);\n"
          "torch/numba = torch time / numba time; same = identical IoU values / kept indices")


if __name__ == "__main__":
    main()
