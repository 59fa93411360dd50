"""Benchmark: preprocessing one CT-sized case vs a plain ``scipy.ndimage.zoom(order=3)`` of the same volume.

Volume: 512 x 512 x 300 int16 (array 300 x 512 x 512), spacing 2.5 x 0.7 x 0.7 mm (z, y, x), resampled
to 1.25 x 0.7 x 0.7 mm. The image is an analytic CT-like phantom (a body of soft tissue with smooth
blobs and small nodules), so the quality of each result is its error against the phantom evaluated at
that method's own output voxel centres (RMSE in HU over random columns and columns through the blobs).

Each method runs in a fresh spawned process; peak memory is the resident high-water mark above the
process's resident size before the run (input volume already in memory; glibc mmap threshold set low
so freed arrays leave the resident set). Linux only.

    .venv/bin/python scripts/bench_preprocess.py            # full size (about 1-3 minutes on 2 cores)
    .venv/bin/python scripts/bench_preprocess.py --small    # 1/4 size per in-plane axis, for a quick look
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import time

import numpy as np

SPACING = (2.5, 0.7, 0.7)
TARGET = (1.25, 0.7, 0.7)
BLOBS = [  # (centre z, y, x in mm from the volume corner, sigma mm, amplitude HU)
    (150.0, 150.0, 180.0, 12.0, 300.0), (400.0, 200.0, 220.0, 20.0, -150.0), (600.0, 180.0, 150.0, 8.0, 500.0),
    (300.0, 240.0, 260.0, 3.0, 600.0), (520.0, 130.0, 250.0, 2.5, 700.0), (80.0, 260.0, 140.0, 4.0, 400.0),
]


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{key}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE).group(1)) * 1024


def phantom(z: np.ndarray, y: np.ndarray, x: np.ndarray, extent_yx: tuple[float, float]) -> np.ndarray:
    """CT-like values (HU) at physical points (mm, broadcastable arrays)."""
    cy, cx = extent_yx[0] / 2, extent_yx[1] / 2
    r = np.sqrt(((y - cy) / (0.42 * extent_yx[0])) ** 2 + ((x - cx) / (0.46 * extent_yx[1])) ** 2)
    body = 0.5 * (1 - np.tanh((r - 1) * 40.0))
    value = -1000.0 + body * (1040.0 + 30.0 * np.sin(z / 23.0) * np.cos(y / 31.0))
    scale_y, scale_x = extent_yx[0] / 358.4, extent_yx[1] / 358.4
    for bz, by, bx, sigma, amp in BLOBS:
        d2 = (z - bz) ** 2 + (y - by * scale_y) ** 2 + (x - bx * scale_x) ** 2
        value = value + body * amp * np.exp(-d2 / (2 * sigma ** 2))
    return value


def make_volume(shape: tuple[int, int, int]) -> np.ndarray:
    extent = (shape[1] * SPACING[1], shape[2] * SPACING[2])
    y = (np.arange(shape[1]) + 0.5)[:, None] * SPACING[1]
    x = (np.arange(shape[2]) + 0.5)[None, :] * SPACING[2]
    vol = np.empty(shape, dtype=np.int16)
    for k in range(shape[0]):
        vol[k] = np.round(phantom(np.full((1, 1), (k + 0.5) * SPACING[0]), y, x, extent))
    return vol


def make_labels(shape: tuple[int, int, int]) -> tuple[np.ndarray, dict[int, int]]:
    inst = np.zeros(shape, dtype=np.int16)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for i, (bz, by, bx, sigma, _) in enumerate(BLOBS, start=1):
        c = (bz / SPACING[0] * shape[0] / 300, by / SPACING[1] * shape[1] / 512, bx / SPACING[2] * shape[2] / 512)
        r = 1.5 * sigma
        inst[((zz - c[0]) * SPACING[0]) ** 2 + ((yy - c[1]) * SPACING[1]) ** 2 + ((xx - c[2]) * SPACING[2]) ** 2
             <= r * r] = i
    return inst, {i: 0 for i in range(1, len(BLOBS) + 1)}


def _run(method: str, shape: tuple[int, int, int], queue: mp.Queue) -> None:
    from retinaunet.preprocessing.preprocess import preprocess_case
    from retinaunet.preprocessing.resample import resample_array
    from scipy import ndimage

    from retinaunet.io import Geometry
    from retinaunet.plans import make_test_plans

    vol = make_volume(shape)
    inst, mapping = make_labels(shape)
    geom = Geometry(SPACING, (-180.0, -200.0, -400.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), shape[::-1])
    plans = make_test_plans(dim=3)
    plans.target_spacing = list(TARGET)
    plans.normalization = [{"scheme": "ct", "clip": [-1000.0, 1000.0], "mean": 40.0, "std": 300.0}]
    if method == "ours":  # warm the numba kernels on a small array (compiled once, cached on disk)
        resample_array(np.zeros((4, 8, 8), np.float32), SPACING, TARGET)
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    start = time.perf_counter()
    if method == "ours":
        data, seg, props = preprocess_case(vol[None], geom, plans, inst, mapping, case="bench")
        out = data[0]
    else:
        out = ndimage.zoom(vol.astype(np.float32), [s / t for s, t in zip(SPACING, TARGET)], order=3)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM") - base
    if method == "ours":  # undo the CT normalisation to compare in HU
        out = out * 300.0 + 40.0
    queue.put((seconds, peak, out.shape, _quality(method, out, shape)))


def _quality(method: str, out: np.ndarray, shape: tuple[int, int, int]) -> tuple[float, float]:
    """(RMSE over the sampled columns, RMSE excluding 4 mm at the z ends) in HU against the phantom."""
    rng = np.random.default_rng(0)
    n_out = out.shape[0]
    ys = list(rng.integers(0, out.shape[1], 2000))
    xs = list(rng.integers(0, out.shape[2], 2000))
    for _, by, bx, sigma, _ in BLOBS:  # and columns through every blob, where interpolation matters most
        cy, cx = by * shape[1] / 512 / SPACING[1], bx * shape[2] / 512 / SPACING[2]
        ys += list(np.clip(np.round(cy + rng.normal(0, sigma / SPACING[1], 300)), 0, out.shape[1] - 1).astype(int))
        xs += list(np.clip(np.round(cx + rng.normal(0, sigma / SPACING[2], 300)), 0, out.shape[2] - 1).astype(int))
    ys, xs = np.asarray(ys), np.asarray(xs)
    if method == "ours":  # edge-aligned: output voxel j centred at (j + 0.5) * t mm
        z = (np.arange(n_out) + 0.5) * TARGET[0]
    else:  # zoom's default maps the corner voxel centres onto each other
        z = (np.arange(n_out) * (shape[0] - 1) / (n_out - 1) + 0.5) * SPACING[0]
    extent = (shape[1] * SPACING[1], shape[2] * SPACING[2])
    truth = phantom(z[:, None], ((ys + 0.5) * SPACING[1])[None], ((xs + 0.5) * SPACING[2])[None], extent)
    err = out[:, ys, xs].astype(np.float64) - truth
    inner = (z > 4.0) & (z < shape[0] * SPACING[0] - 4.0)
    return float(np.sqrt(np.mean(err ** 2))), float(np.sqrt(np.mean(err[inner] ** 2)))


def measure(method: str, shape: tuple[int, int, int]) -> tuple[float, int, tuple, tuple[float, float]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(256 * 1024)
    proc = ctx.Process(target=_run, args=(method, shape, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="300 x 128 x 128 instead of 300 x 512 x 512")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="any other volume size (e.g. 40 64 64 for a smoke run)")
    args = parser.parse_args()
    shape = tuple(args.shape) if args.shape else (300, 128, 128) if args.small else (300, 512, 512)
    out_mb = shape[0] * 2 * shape[1] * shape[2] * 4 / 2 ** 20
    print(f"volume {shape[::-1]} (x, y, z) int16, spacing {SPACING[::-1]} -> {TARGET[::-1]} mm (x, y, z); "
          f"float32 output {out_mb:.0f} MB")
    rows = {}
    for method in ("zoom", "ours"):
        seconds, peak, out_shape, (rmse, rmse_inner) = measure(method, shape)
        rows[method] = (seconds, peak)
        name = "scipy.ndimage.zoom(order=3)" if method == "zoom" else "preprocess_case (crop+CT norm+resample+labels)"
        print(f"{name:48s} {seconds:7.2f} s  peak +{peak / 2 ** 20:6.0f} MB ({peak / 2 ** 20 / out_mb:.2f}x output)  "
              f"shape {tuple(out_shape)}  RMSE {rmse:6.2f} HU (interior {rmse_inner:6.2f} HU)")
    print(f"speed-up {rows['zoom'][0] / rows['ours'][0]:.1f}x; peak memory ours / output size "
          f"{rows['ours'][1] / 2 ** 20 / out_mb:.2f} (target < 4)")


if __name__ == "__main__":
    main()
