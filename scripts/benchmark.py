"""Every benchmark under scripts/ in one invocation, printed as one table.

Each row is one figure of this code beside the baseline it names (a plain Python or NumPy reference, scipy,
the loader without augmentation, the network alone, Retina U-Net, prediction without mirroring), both
measured here, side by side, in this run; the ratio says how many times faster (or larger) ours is. The
absolute figures are labelled with the machine (CPU model, cores, torch and its threads, load average), so
a table from another machine is read as such. The scripts it calls (bench_boxes, bench_wbc,
bench_preprocess, bench_loader, bench_step, bench_models, bench_inference; bench_gpu where CUDA is present)
still run alone with their own, more detailed output.

    .venv/bin/python scripts/benchmark.py --tiny       # the smallest sizes: a smoke run that every row works
    .venv/bin/python scripts/benchmark.py --quick      # a few minutes on 2 CPU cores
    .venv/bin/python scripts/benchmark.py              # the sizes quoted in docs/speed.md (about 10 minutes)
    .venv/bin/python scripts/benchmark.py --only boxes wbc --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_boxes  # noqa: E402
import bench_inference  # noqa: E402
import bench_loader  # noqa: E402
import bench_models  # noqa: E402
import bench_preprocess  # noqa: E402
import bench_step  # noqa: E402
import bench_wbc  # noqa: E402


@dataclass
class Row:
    """One figure: ``value`` of ours and ``base_value`` of the named baseline, in ``unit``; ``ratio`` is
    base/value for times (x faster) and value/base for rates and sizes, as ``ratio_means`` says."""

    bench: str
    figure: str
    value: float
    unit: str
    baseline: str
    base_value: float | None
    ratio: float | None
    ratio_means: str
    note: str = ""


def _times(bench: str, figure: str, ours_s: float, baseline: str, base_s: float | None, note: str = "",
           unit: str = "ms") -> Row:
    scale = {"ms": 1e3, "s": 1.0}[unit]
    return Row(bench, figure, ours_s * scale, unit, baseline, None if base_s is None else base_s * scale,
               None if not base_s else base_s / ours_s, "x faster", note)


def machine() -> str:
    """CPU model, cores, torch version and threads, load average: the label of every absolute figure."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores{gpu}; torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"Python {platform.python_version()}; load average {load}")


# ------------------------------------------------------------------------------------------ benchmarks
def boxes(size: str) -> list[Row]:
    rows = []
    sizes = {"tiny": [100], "quick": [1000]}.get(size, [1000, 5000])
    cols, ref = (100, 5) if size == "tiny" else (1000, 100)
    for r in bench_boxes.measure(sizes=sizes, iou_cols=cols, ref_rows=ref):
        name = f"{r['op'].upper()} {r['dim']}D, N={r['n']}" + (f" x {cols}" if r["op"] == "iou" else "")
        same = "same result" if r["same"] else "RESULTS DIFFER"
        scaled = f"; Python loop timed on {ref} rows, scaled" if r["python_scaled"] else ""
        rows.append(_times("boxes", f"{name}, numba", r["numba_s"], "plain Python loop", r["python_s"],
                           same + scaled))
        rows.append(_times("boxes", f"{name}, torch (1 thread)", r["torch_s"], "plain Python loop", r["python_s"],
                           same + scaled))
    return rows


def wbc(size: str) -> list[Row]:
    cases, repeats = {"tiny": (1, 1), "quick": (2, 2)}.get(size, (5, 3))
    res = bench_wbc.measure(cases=cases, repeats=repeats)
    n = len(res["cases"])
    return [_times("wbc", f"WBC 3D, {n} cases x 4000 boxes (8 views x 5 checkpoints), numba", res["numba_s"],
                   "plain NumPy reference", res["numpy_s"], "same clusters")]


def preprocess(size: str) -> list[Row]:
    shape = {"tiny": (40, 64, 64), "quick": (300, 128, 128)}.get(size, (300, 512, 512))
    out_mb = shape[0] * 2 * shape[1] * shape[2] * 4 / 2 ** 20
    zoom_s, zoom_peak, _, (zoom_err, _) = bench_preprocess.measure("zoom", shape)
    ours_s, ours_peak, _, (ours_err, _) = bench_preprocess.measure("ours", shape)
    size = " x ".join(map(str, shape))
    note = f"RMSE vs phantom {ours_err:.2f} HU (zoom {zoom_err:.2f} HU)"
    return [
        _times("preprocess", f"preprocess_case, CT {size} int16, 2.5 -> 1.25 mm", ours_s,
               "scipy.ndimage.zoom(order=3)", zoom_s, note, unit="s"),
        Row("preprocess", "  peak memory over start", ours_peak / 2 ** 20, "MB", "float32 output size", out_mb,
            ours_peak / 2 ** 20 / out_mb, "x output", f"zoom: {zoom_peak / 2 ** 20:.0f} MB"),
    ]


def loader(size: str) -> list[Row]:
    small = size in ("tiny", "quick")
    labels = {"tiny": ["2D 64x64 b32 CPU plan"], "quick": ["2D 64x64 b32 CPU plan", "3D 16x40x40 b8 CPU plan"]}
    rows = []
    for label, aug, workers, rate, ratio, _ in bench_loader.measure(batches={"tiny": 1, "quick": 5}.get(size, 10),
                                                                    workers=[0] if small else [0, 1, 2],
                                                                    cases=1 if size == "tiny" else 4,
                                                                    labels=labels.get(size)):
        if aug == "none":
            base = rate
            continue
        rows.append(Row("loader", f"{label}, augmented, {workers} worker(s)", rate, "patches/s",
                        "same loader without augmentation, 0 workers", base, ratio, "x the baseline's rate"))
    return rows


def step(size: str) -> list[Row]:
    rows = []
    configs = {"tiny": {"2d": dict(dim=2, patch_size=[64, 64], batch=2)}}.get(size, bench_step.CONFIGS)
    for name in (["2d"] if size in ("tiny", "quick") else ["2d", "3d"]):
        cfg = configs[name]
        r = bench_step.bench(bench_step.make_plans(cfg["dim"], cfg["patch_size"], "small"), cfg["batch"],
                             3 if size == "full" else 1, 3, torch.device("cpu"))
        net = r["forward"] + r["backward"]
        patch = " x ".join(map(str, cfg["patch_size"]))
        rows.append(Row("step", f"training step {name.upper()} {patch} x {cfg['batch']}, small network",
                        1e3 * r["step"], "ms", "network forward + backward alone", 1e3 * net, r["step"] / net,
                        "x the baseline's time", f"outside the network: {100 * (r['step'] - net) / r['step']:.1f}%"))
        infer = r["infer_forward"] + r["decode"]
        rows.append(Row("step", f"  inference pass {name.upper()} with decoding", 1e3 * infer, "ms",
                        "network forward alone", 1e3 * r["infer_forward"], infer / r["infer_forward"],
                        "x the baseline's time"))
    return rows


def models(size: str) -> list[Row]:
    """Training step of every model on real loader batches: the demo's task when it is preprocessed, else
    synthetic 320 x 320 cases with the demo's CPU plan shape (64 x 64 patches, batch 32, small network)."""
    from loguru import logger

    from retinaunet import store
    from retinaunet.layout import TaskPaths, find_task
    from retinaunet.plans import load_plans, make_test_plans

    logger.remove()
    steps = {"tiny": 1, "quick": 2}.get(size, 5)
    with tempfile.TemporaryDirectory() as tmp:
        source = "synthetic 320 x 320 cases"
        try:
            paths = TaskPaths(find_task("101", os.environ.get("RUD_DATA", "data")))
            plans = load_plans(paths.plans)
            pre = paths.preprocessed(plans.plan_name)
            cases = store.list_cases(pre)
            if not cases:
                raise FileNotFoundError(pre)
            source = f"{paths.name}'s plan and cases"
        except Exception:  # noqa: BLE001 - no demo task: fall back to synthetic cases
            plans = make_test_plans(dim=2, patch_size=[64, 64])
            plans.batch_size = 4 if size == "tiny" else 32
            pre = Path(tmp)
            side = 96 if size == "tiny" else 320
            source = f"synthetic {side} x {side} cases"
            cases = bench_loader.write_cases(pre, (side, side), 1 if size == "tiny" else 4, n_objects=6)
        batches = bench_models.loader_batches(pre, cases, plans, steps + 1)
        times = bench_models.step_times(plans, batches)
    patch = " x ".join(map(str, plans.patch_size))
    return [Row("models", f"training step {name}, {patch} x {plans.batch_size}", sec, "s",
                "Retina U-Net", times[0][1], sec / times[0][1], "x the baseline's time", source)
            for name, sec in times]


def inference(size: str) -> list[Row]:
    rows = []
    shape = {"tiny": [16, 32, 32], "quick": [64, 128, 128]}.get(size, [64, 256, 256])
    patch = [16, 32, 32] if size == "tiny" else None
    plain = bench_inference.run_config(shape, mirror=False, keep_seg=True, patch=patch)
    mirrored = bench_inference.run_config(shape, mirror=True, keep_seg=True, patch=patch)
    extent = " x ".join(map(str, shape))
    for label, r, base in (("no mirroring", plain, None), ("8 mirrored views", mirrored, plain)):
        rows.append(Row("inference", f"whole case {extent}, demo network, {label}, boxes + seg", r["seconds"], "s",
                        "the same without mirroring" if base else "", base["seconds"] if base else None,
                        r["seconds"] / base["seconds"] if base else None, "x the baseline's time",
                        f"{r['tiles']} tiles; peak RSS {r['maxrss_mb']:.0f} MB"))
    rows.append(Row("inference", "  peak memory (RSS), 8 mirrored views", mirrored["maxrss_mb"], "MB",
                    "the same without mirroring", plain["maxrss_mb"], mirrored["maxrss_mb"] / plain["maxrss_mb"],
                    "x the baseline", f"input volume {plain['data_mb']:.0f} MB"))
    if size == "full":
        stub = bench_inference.run_config([300, 512, 512], mirror=False, keep_seg=False, network="stub")
        rows.append(Row("inference", "whole case 300 x 512 x 512, stub network (pipeline only), boxes",
                        stub["seconds"], "s", "", None, None, "",
                        f"{stub['tiles']} tiles; peak RSS {stub['maxrss_mb']:.0f} MB"))
    return rows


def gpu(size: str) -> list[Row]:
    if not torch.cuda.is_available():
        return []
    import bench_gpu

    from retinaunet.plans import make_test_plans, save_plans

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plans.json"
        save_plans(make_test_plans(dim=2, patch_size=[320, 320]), path)
        steps = {"tiny": 1, "quick": 5}.get(size, 15)
        res = {amp: bench_gpu.run(path, amp, steps, torch.device("cuda")) for amp in (False, True)}
    rows.append(Row("gpu", "training step 2D 320 x 320, small network, bf16 autocast", res[True]["step_ms"], "ms",
                    "float32", res[False]["step_ms"], res[False]["step_ms"] / res[True]["step_ms"], "x faster",
                    f"peak {res[True]['peak_gb']} GB vs {res[False]['peak_gb']} GB"))
    return rows


BENCHMARKS: dict[str, Callable[[str], list[Row]]] = {
    "boxes": boxes, "wbc": wbc, "preprocess": preprocess, "loader": loader, "step": step, "models": models,
    "inference": inference, "gpu": gpu,
}


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | figure | ours | baseline (named) | baseline | ratio | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{_fmt(r.ratio)} {r.ratio_means}" if r.ratio is not None else ""
        base = f"{_fmt(r.base_value)} {r.unit}" if r.base_value is not None else ""
        lines.append(f"| {r.bench} | {r.figure} | {_fmt(r.value)} {r.unit} | {r.baseline} | {base} | {ratio} | "
                     f"{r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes on 2 CPU cores")
    sizes.add_argument("--tiny", action="store_true",
                       help="the smallest sizes: checks that every row runs (its figures mean nothing)")
    parser.add_argument("--only", nargs="+", choices=tuple(BENCHMARKS), default=None, help="run only these")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the machine here")
    args = parser.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    from loguru import logger
    logger.remove()
    label = machine()
    rows: list[Row] = []
    start = time.perf_counter()
    for name, fn in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += fn(size)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    print(f"Machine: {label}")
    print(f"Profile: {size}; {elapsed:.0f} s in all; load average at the end "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": label, "quick": args.quick, "profile": size, "seconds": elapsed,
                                         "rows": [asdict(r) for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
