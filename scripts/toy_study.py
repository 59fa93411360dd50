"""The paper's toy study (section 4.6, Figure 5): AP@0.1 against training-set size, per model and task.

For each toy task (``shapes``: the donut's hole is cut from the mask; ``patterns``: the hole stays in the
mask; ``scales``: circles of radius 19 vs 20) one task folder is written with ``rud_example``, planned and
preprocessed once. Every cell (task, training-set size n, model, seed) then trains fold 0 of a
``splits.json`` that names n training images (a seeded draw from one pool, nested: the smaller sets are
prefixes of the larger ones) and the same validation images, with the planner's defaults; predicts the
task's held-out test images (the same for every cell) and scores AP@0.1. Stages run through the
commands' own entry functions (``rud_train``, ``rud_predict``), in this process.

Cells run in an order that makes a partly finished study informative (:func:`cell_order`).
Resumable: each finished cell is a JSON file beside the report, under ``<out>/cells/`` (committed with it,
so a lost data folder loses no result); a rerun skips those and re-trains an interrupted one from scratch.
After every cell the CSV, the markdown table and the figure are rewritten from all finished cells, so an
interrupted study still leaves its results.

    .venv/bin/python scripts/toy_study.py --quick     # 2-core CPU: 2 sizes x 2 seeds x 4 models x 3 tasks
    .venv/bin/python scripts/toy_study.py             # full profile (a GPU): the paper's data sizes, six models
    .venv/bin/python scripts/toy_study.py --quick --report-only   # rewrite table and figure from the cells
    .venv/bin/python scripts/toy_study.py --profile pair  # Retina U-Net vs Retina Net, 400 steps per cell
    .venv/bin/python scripts/toy_study.py --profile settle --models retina_unet+lrdrop \
        --variant lrdrop retina_unet training.lr_drop_at=0.53   # a variant, paired with its base by seed

A variant (``--variant NAME MODEL KEY=VALUE ...``) is a model trained with plan overrides, named
``MODEL+NAME`` in cells and report; the report adds it beside the profile's models and pairs it by seed with
its base model (variant minus base, with the same bootstrap interval as the central pair).

Parts of one study may run at once in separate processes as long as no two share a task (each task
folder holds one splits.json and one model folder per model): e.g. one process per ``--kinds``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from retinaunet.io import atomic_path, write_json

KINDS = ("shapes", "patterns", "scales")
TASK_NUMBERS = {"shapes": 121, "patterns": 122, "scales": 123}
MODEL_NAMES = {"retina_unet": "Retina U-Net", "retina_net": "Retina Net", "det_unet": "DetU-Net",
               "faster_rcnn": "Faster R-CNN+", "u_faster_rcnn": "U-FRCNN+", "mask_rcnn": "Mask R-CNN"}
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Profile:
    """What one study runs. ``epochs``/``batches`` None: the planner's training length."""

    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    models: tuple[str, ...]
    num_val: int
    num_test: int
    epochs: int | None = None
    batches: int | None = None
    keep_best: int | None = None
    mirror: bool = True
    kinds: tuple[str, ...] = KINDS
    extra: dict = field(default_factory=dict)


PROFILES = {
    # 2 CPU cores, about an hour on a quiet machine (estimated from the models' step times: about 85 s per
    # cell). Every model trains the same 200 steps (the planner's batch of 32 patches of 64 x 64 at lr 1e-3,
    # 4 epochs x 50); the best epoch by val mAP predicts the 80 held-out images without mirroring. 100 steps
    # were too few: at n = 8 no model told the classes apart (AP@0.1 0.58-0.64 for all, classes 0.5-0.75).
    "quick": Profile(sizes=(8, 128), seeds=(0, 1),
                     models=("retina_unet", "retina_net", "det_unet", "u_faster_rcnn"),
                     num_val=16, num_test=80, epochs=4, batches=50, keep_best=1, mirror=False),
    # The central pair (the same detector with and without segmentation supervision) trained longer: 400
    # steps (4 epochs x 100 batches). The quick profile's 200 steps stop where the shapes plan is still
    # learning fast (the demo's val mAP@0.1 went 0.58, 0.66, 0.98 over its first epochs of 106 batches), so
    # there the comparison mixes data efficiency with speed of learning. About 50 minutes on 2 CPU cores.
    "pair": Profile(sizes=(8, 128), seeds=(0, 1), models=("retina_unet", "retina_net"),
                    num_val=16, num_test=80, epochs=4, batches=100, keep_best=1, mirror=False),
    # The central pair settled: the pair profile with 8 seeds per cell, so the difference between the two
    # detectors is read per seed (paired: the same training images and seed for both) with a bootstrap
    # interval over the seeds. 96 cells, about two minutes each on 2 CPU cores.
    "settle": Profile(sizes=(8, 128), seeds=tuple(range(8)), models=("retina_unet", "retina_net"),
                      num_val=16, num_test=80, epochs=4, batches=100, keep_best=1, mirror=False),
    # The paper's sizes of data (1000 train pool, 500 val, 1000 test), all six models, the planner's
    # training length and inference (best epochs, mirroring): GPU work, and a lot of it: 324 cells, each
    # the planner's GPU schedule (100 x 200 batches; the shapes plan ran 61 s per 200 batches on an H100).
    # Run parts of it (--kinds, --models, --sizes, --seeds) or shorten it (--epochs, --batches).
    "full": Profile(sizes=(20, 50, 100, 200, 500, 1000), seeds=(0, 1, 2),
                    models=tuple(MODEL_NAMES), num_val=500, num_test=1000),
    # A smoke run of the whole study machinery (task, splits, training, prediction, report) in about a
    # minute: one cell of two training steps. Its figures mean nothing.
    "tiny": Profile(sizes=(4,), seeds=(0,), models=("retina_unet",), num_val=2, num_test=2, epochs=1, batches=2,
                    keep_best=1, mirror=False, kinds=("shapes",)),
}


def cell_order(prof: Profile) -> list[tuple[int, int, str, str]]:
    """(seed, n, kind, model) in an order that makes a partly finished study informative.

    The first seed before the others; within it Retina U-Net and Retina Net (the paper's central pair:
    the same detector with and without segmentation supervision) before the other models; sizes from
    the extremes inwards (smallest, largest, then the rest); every task at each step.
    """
    sizes = sorted(prof.sizes)
    outside_in = []
    while sizes:
        outside_in.append(sizes.pop(0))
        if sizes:
            outside_in.append(sizes.pop())
    pair = [m for m in prof.models if m in ("retina_unet", "retina_net")]
    groups = [g for g in (pair, [m for m in prof.models if m not in pair]) if g]
    return [(seed, n, kind, model) for seed in prof.seeds for group in groups for n in outside_in
            for kind in prof.kinds for model in group]


def log(msg: str) -> None:
    print(f"[toy_study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run(entry, argv: list[str], what: str) -> None:
    """Call a command's entry function; a non-zero exit stops the study with the command's message."""
    code = entry(argv)
    if code:
        raise RuntimeError(f"{what} failed (exit {code}): {' '.join(argv)}")


# ----------------------------------------------------------------------------------------------- tasks
def prepare_task(kind: str, root: Path, prof: Profile) -> Path:
    """Write, plan and preprocess one toy task (each step skipped when already done); its folder."""
    from retinaunet.planning.cli import main as plan_main
    from retinaunet.preprocessing.cli import main as preprocess_main

    from retinaunet.toy_cli import main as example_main

    number, pool = TASK_NUMBERS[kind], _pool(prof)
    task_dir = root / f"Task{number:03d}_Study{kind.capitalize()}"
    want = {"kind": kind, "num_train": pool + prof.num_val, "num_test": prof.num_test}
    marker = task_dir / "study_data.json"
    if task_dir.exists() and (not marker.exists() or json.loads(marker.read_text()) != want):
        raise SystemExit(f"{task_dir} holds other data than this profile needs ({want}): "
                         f"delete it or pass another --data-root")
    if not task_dir.exists():
        log(f"writing {task_dir.name}: {want['num_train']} train, {want['num_test']} test images")
        _run(example_main, [kind, "--num-train", str(want["num_train"]), "--num-test", str(prof.num_test),
                            "--task-number", str(number), "--task-name", f"Study{kind.capitalize()}",
                            "--data-root", str(root), "--quiet"], "rud_example")
        write_json(want, marker)
    _run(plan_main, ["-t", str(number), "--workers", "0"], "rud_plan")
    _run(preprocess_main, ["-t", str(number), "--workers", "1"], "rud_preprocess")
    return task_dir


def _pool(prof: Profile) -> int:
    return int(prof.extra.get("pool", max(prof.sizes)))


def study_split(prof: Profile, n: int, seed: int) -> dict[str, list[str]]:
    """Fold 0 of a cell: n training images drawn from the pool by the seed (nested over n), fixed val."""
    pool = _pool(prof)
    order = np.random.default_rng(1000 + seed).permutation(pool)
    train = sorted(f"case_{i:04d}" for i in order[:n])
    val = [f"case_{i:04d}" for i in range(pool, pool + prof.num_val)]
    return {"train": train, "val": val, "test": []}


# ----------------------------------------------------------------------------------------------- cells
def cell_key(kind: str, n: int, model: str, seed: int) -> str:
    return f"{kind}_n{n:04d}_{model}_s{seed}"


def base_model(model: str) -> str:
    """The detector a model name trains: a variant ``retina_unet+lrdrop`` trains ``retina_unet``."""
    return model.split("+", 1)[0]


def model_label(model: str) -> str:
    base, _, variant = model.partition("+")
    return MODEL_NAMES[base] + (f", {variant}" if variant else "")


def report_models(cells: list[dict], prof: Profile) -> tuple[str, ...]:
    """The profile's models, then every variant that has a finished cell (in name order)."""
    variants = sorted({c["model"] for c in cells if c["model"] not in prof.models and "+" in c["model"]})
    return tuple(prof.models) + tuple(variants)


def run_cell(task_dir: Path, prof: Profile, kind: str, n: int, model: str, seed: int, device: str,
             overrides: tuple[str, ...] = ()) -> dict:
    """Train, predict and score one cell (a variant: its base model with ``overrides``); returns its record."""
    from retinaunet.inference.cli import main as predict_main

    from retinaunet.evaluation.evaluate import evaluate_folder
    from retinaunet.io import read_json
    from retinaunet.training.cli import main as train_main

    number = str(TASK_NUMBERS[kind])
    write_json([study_split(prof, n, seed)], task_dir / "splits.json")
    detector = base_model(model)
    argv = ["0", "-t", number, "--model", detector, "--seed", str(seed), "--force", "--no-test",
            "--device", device]
    if prof.epochs is not None:
        argv += ["--epochs", str(prof.epochs)]
    if prof.batches is not None:
        argv += ["--batches-per-epoch", str(prof.batches)]
    if prof.keep_best is not None:
        argv += ["--override", f"training.keep_best={prof.keep_best}"]
    for item in overrides:
        argv += ["--override", item]
    start = time.perf_counter()
    _run(train_main, argv, "rud_train")
    train_s = time.perf_counter() - start

    pred_dir = task_dir / "predictions" / f"study_{model}"
    shutil.rmtree(pred_dir, ignore_errors=True)
    start = time.perf_counter()
    _run(predict_main, ["-t", number, "-i", str(task_dir / "raw_splitted" / "imagesTs"), "-o", str(pred_dir),
                        "--folds", "0", "--model", detector, "--device", device]
         + ([] if prof.mirror else ["--no-tta"]), "rud_predict")
    predict_s = time.perf_counter() - start
    names = [v for _, v in sorted(read_json(task_dir / "dataset.json")["labels"].items(), key=lambda kv: int(kv[0]))]
    metrics = evaluate_folder(pred_dir, task_dir / "raw_splitted" / "labelsTs", (0.1,), None, names)
    fold_dirs = sorted((task_dir / "models").glob(f"{detector}_*/fold0"))
    best = read_json(fold_dirs[0] / "best_epochs.json")["epochs"] if fold_dirs else []
    return {"kind": kind, "n": n, "model": model, "seed": seed, **({"overrides": list(overrides)} if overrides else {}),
            "ap": metrics["mAP"]["0.1"], "ap_per_class": metrics["AP"]["0.1"],
            "best_val_ap": max((b["val_ap"] for b in best), default=None),
            "train_s": round(train_s, 1), "predict_s": round(predict_s, 1), "device": device,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


# ---------------------------------------------------------------------------------------------- report
def load_cells(cells_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cells_dir.glob("*.json"))]


def summarise(cells: list[dict]) -> dict[tuple[str, str, int], list[float]]:
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for c in cells:
        groups[(c["kind"], c["model"], c["n"])].append(float(c["ap"] or 0.0))
    return groups


def write_csv(cells: list[dict], path: Path) -> None:
    cols = ["kind", "n", "model", "seed", "ap", "best_val_ap", "train_s", "predict_s", "device", "finished"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols + ["ap_" + k for k in ("0", "1")], extrasaction="ignore")
        w.writeheader()
        for c in sorted(cells, key=lambda c: (c["kind"], c["n"], c["model"], c["seed"])):
            per = list((c.get("ap_per_class") or {}).values())
            w.writerow({**c, **{f"ap_{i}": v for i, v in enumerate(per)}})


def markdown_table(cells: list[dict], prof: Profile, title: str) -> str:
    """Mean AP@0.1 (%) over seeds with the range, per task and size (rows) and model (columns)."""
    groups = summarise(cells)
    models = report_models(cells, prof)
    lines = [title, "", "| task | n | " + " | ".join(model_label(m) for m in models) + " |",
             "|---|---|" + "---|" * len(models)]
    for k in prof.kinds:
        for n in prof.sizes:
            row = []
            for m in models:
                v = groups.get((k, m, n))
                if not v:
                    row.append("-")
                elif len(v) == 1:
                    row.append(f"{100 * v[0]:.1f} (1 seed)")
                else:
                    row.append(f"{100 * np.mean(v):.1f} ({100 * min(v):.0f}-{100 * max(v):.0f})")
            lines.append(f"| {k} | {n} | " + " | ".join(row) + " |")
    lines += ["", f"AP@0.1 in % on the same {prof.num_test} held-out images per task: mean over the seeds run "
              f"(of {list(prof.seeds)}; min-max in brackets); '-' not run yet."]
    return "\n".join(lines) + "\n"


PAIR = ("retina_unet", "retina_net")  # the same detector with and without segmentation supervision
PAIRED_SAMPLES = 10000  # bootstrap resamples of the seeds
PAIRED_CONFIDENCE = 0.95
PAIRED_MIN_SEEDS = 8  # a percentile bootstrap over fewer seeds is too coarse to read a lead from


def paired_differences(cells: list[dict], prof: Profile, samples: int = PAIRED_SAMPLES,
                       confidence: float = PAIRED_CONFIDENCE, seed: int = 0,
                       pair: tuple[str, str] = PAIR) -> list[dict]:
    """``pair[0]`` minus ``pair[1]`` (Retina U-Net minus Retina Net by default; a variant minus its base), AP@0.1
    per seed (paired: both trained on the seed's training images with the seed), per task and size, over the
    seeds both finished: the mean difference, its bootstrap interval (the seeds resampled with replacement;
    ``None`` with fewer than two seeds), the wins, ties and losses of ``pair[0]`` and the differences."""
    ap = {(c["kind"], c["n"], c["model"], c["seed"]): float(c["ap"] or 0.0) for c in cells}
    rng = np.random.default_rng(seed)
    rows = []
    for kind in prof.kinds:
        for n in prof.sizes:
            seeds = sorted(s for (k, m_n, m, s) in ap if (k, m_n, m) == (kind, n, pair[0])
                           and (kind, n, pair[1], s) in ap)
            if not seeds:
                continue
            d = np.array([ap[(kind, n, pair[0], s)] - ap[(kind, n, pair[1], s)] for s in seeds])
            interval = None
            if len(d) > 1:
                means = d[rng.integers(0, len(d), size=(samples, len(d)))].mean(axis=1)
                tail = (1.0 - confidence) / 2
                interval = [float(v) for v in np.quantile(means, [tail, 1.0 - tail])]
            rows.append({"kind": kind, "n": n, "seeds": seeds, "mean_difference": float(d.mean()),
                         "interval": interval, "confidence": confidence, "wins": int((d > 0).sum()),
                         "ties": int((d == 0).sum()), "losses": int((d < 0).sum()),
                         "differences": [round(float(v), 6) for v in d]})
    return rows


def paired_verdict(row: dict, pair: tuple[str, str] = PAIR) -> str:
    """A plain reading of one paired row: who leads, or that the seeds do not settle it (too few seeds to read
    one: under ``PAIRED_MIN_SEEDS``)."""
    if len(row["seeds"]) < PAIRED_MIN_SEEDS:
        return f"{len(row['seeds'])} seed(s) so far: too few to read (needs {PAIRED_MIN_SEEDS})"
    lo, hi = row["interval"]
    if lo > 0:
        return f"{model_label(pair[0])} ahead"
    if hi < 0:
        return f"{model_label(pair[1])} ahead"
    return "not settled (the interval holds 0)"


def paired_table(cells: list[dict], prof: Profile, pair: tuple[str, str] = PAIR) -> str:
    """The paired differences as markdown ('' when no seed has both models)."""
    rows = paired_differences(cells, prof, pair=pair)
    if not rows:
        return ""
    pct = int(round(100 * PAIRED_CONFIDENCE))
    a, b = model_label(pair[0]), model_label(pair[1])
    lines = [f"| task | n | seeds | {a} - {b} (points) | " + f"{pct}% interval | "
             "wins / ties / losses | reading |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        interval = "-" if r["interval"] is None else f"[{100 * r['interval'][0]:+.1f}, {100 * r['interval'][1]:+.1f}]"
        lines.append(f"| {r['kind']} | {r['n']} | {len(r['seeds'])} | {100 * r['mean_difference']:+.1f} | "
                     f"{interval} | {r['wins']} / {r['ties']} / {r['losses']} | {paired_verdict(r, pair)} |")
    lines += ["", f"AP@0.1 of {a} minus {b} for the same seed (the same training images and "
              f"initialisation seed), mean over the seeds both finished; {pct}% bootstrap interval of that "
              f"mean over {PAIRED_SAMPLES} resamples of the seeds; wins: seeds where {a} scored higher."]
    return "\n".join(lines) + "\n"


def plot(cells: list[dict], prof: Profile, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retinaunet.evaluation.plots import variant_style

    groups = summarise(cells)
    models = report_models(cells, prof)
    colors = {"retina_unet": "tab:blue", "retina_net": "tab:green", "det_unet": "tab:cyan",
              "faster_rcnn": "tab:orange", "u_faster_rcnn": "tab:red", "mask_rcnn": "tab:purple"}
    fig, axes = plt.subplots(1, len(prof.kinds), figsize=(4.2 * len(prof.kinds), 3.8), sharey=True)
    for ax, kind in zip(np.atleast_1d(axes), prof.kinds):
        for m in models:
            pts = [(n, groups[(kind, m, n)]) for n in prof.sizes if groups.get((kind, m, n))]
            if not pts:
                continue
            x = np.array([n for n, _ in pts], dtype=float)
            mean = np.array([np.mean(v) for _, v in pts])
            lo, hi = np.array([min(v) for _, v in pts]), np.array([max(v) for _, v in pts])
            color, variant = colors[base_model(m)], "+" in m
            marker, line = variant_style(m, models)  # a variant: its base's colour, its own marker and dashes
            ax.plot(x, mean, marker=marker, linestyle=line, color=color, markerfacecolor="none" if variant else color,
                    label=model_label(m))
            ax.fill_between(x, lo, hi, color=color, alpha=0.06 if variant else 0.15, linewidth=0)
            for n, v in pts:
                ax.scatter([n] * len(v), v, s=10 if variant else 8, alpha=0.5, marker=marker,
                           facecolors="none" if variant else color, edgecolors=color)
        ax.set_xscale("log")
        ax.set_xlim(min(prof.sizes) / 1.5, max(prof.sizes) * 1.5)
        ax.set_xticks(list(prof.sizes), [str(n) for n in prof.sizes])
        ax.minorticks_off()
        ax.set_title(kind)
        ax.set_xlabel("training images n")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("AP@0.1 (held-out test)")
    np.atleast_1d(axes)[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_report(cells_dir: Path, out_dir: Path, prof: Profile, name: str) -> None:
    cells = load_cells(cells_dir)
    if not cells:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    total = len(prof.kinds) * len(prof.sizes) * len(prof.models) * len(prof.seeds)
    own = sum(c["model"] in prof.models for c in cells)
    title = f"Toy study ({name} profile): {own} of {total} cells"
    if own < len(cells):
        title += f", and {len(cells) - own} of variants"
    write_csv(cells, out_dir / "toy_study.csv")
    paired = paired_table(cells, prof) if set(PAIR) <= set(prof.models) else ""
    text = markdown_table(cells, prof, f"### {title}")
    if paired:
        text += f"\n### Paired by seed: Retina U-Net against Retina Net\n\n{paired}"
    for variant in report_models(cells, prof)[len(prof.models):]:
        pair = (variant, base_model(variant))
        table = paired_table(cells, prof, pair)
        if table:
            text += f"\n### Paired by seed: {model_label(pair[0])} against {model_label(pair[1])}\n\n{table}"
    with atomic_path(out_dir / "toy_study.md") as md:
        md.write_text(text)
    if paired:
        write_json(paired_differences(cells, prof), out_dir / "paired.json")
    plot(cells, prof, out_dir / "toy_study.png", title + "; line: mean over seeds, band: min-max")


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the 2-core CPU profile (see PROFILES)")
    parser.add_argument("--profile", choices=tuple(PROFILES), default=None,
                        help="a profile by name (--quick is --profile quick; default full)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="where the study's task folders live (default data/toy_study_<profile> in the "
                             "repository)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for toy_study.csv/.md/.png and the finished cells (cells/; default "
                             "docs/toy_study/<profile>)")
    parser.add_argument("--device", default="cpu" if not __import__("torch").cuda.is_available() else "cuda")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=None, help="only these tasks")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"only these models ({', '.join(MODEL_NAMES)}, or a --variant's MODEL+NAME)")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME MODEL KEY=VALUE",
                        help="a model trained with plan overrides, run and reported as MODEL+NAME beside the "
                             "profile's models and paired with MODEL by seed (repeatable)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="only these training-set sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per cell (changes results)")
    parser.add_argument("--batches", type=int, default=None, help="batches per epoch (changes results)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite CSV, table and figure")
    args = parser.parse_args(argv)

    name = args.profile or ("quick" if args.quick else "full")
    whole = PROFILES[name]  # the report covers the whole profile, even when this process runs a part
    prof = replace(whole, extra=dict(whole.extra))
    variants: dict[str, tuple[str, ...]] = {}
    for spec in args.variant:
        if len(spec) < 3 or spec[1] not in MODEL_NAMES or not all("=" in o for o in spec[2:]) or "+" in spec[0]:
            parser.error(f"--variant {' '.join(spec)}: give NAME MODEL KEY=VALUE [KEY=VALUE ...] with MODEL one "
                         f"of {', '.join(MODEL_NAMES)} (e.g. --variant lrdrop retina_unet training.lr_drop_at=0.53)")
        variants[f"{spec[1]}+{spec[0]}"] = tuple(spec[2:])
    for m in args.models or ():
        if m not in MODEL_NAMES and m not in variants:
            parser.error(f"--models {m}: not a model ({', '.join(MODEL_NAMES)}) nor a --variant given")
    if variants and not args.models:
        prof.models = tuple(prof.models) + tuple(variants)
    for key in ("kinds", "models", "seeds"):
        if getattr(args, key):
            setattr(prof, key, tuple(getattr(args, key)))
    if args.sizes:  # the pool stays the profile's largest size, so the data and the draws do not change
        prof.extra["pool"] = max(prof.sizes)
        prof.sizes = tuple(sorted(args.sizes))
    if args.epochs is not None:
        prof.epochs = args.epochs
    if args.batches is not None:
        prof.batches = args.batches
    root = (args.data_root or ROOT / "data" / f"toy_study_{name}").resolve()
    out_dir = (args.out or ROOT / "docs" / "toy_study" / name).resolve()
    cells_dir = out_dir / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    os.environ["RUD_DATA"] = str(root)
    if not sys.stderr.isatty():  # a log file: the per-cell lines below, not progress bars
        os.environ.setdefault("TQDM_DISABLE", "1")
    if args.threads:
        __import__("torch").set_num_threads(args.threads)
    if args.report_only:
        write_report(cells_dir, out_dir, whole, name)
        return 0

    from loguru import logger
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    training = {k: getattr(prof, k) for k in ("epochs", "batches", "keep_best", "mirror", "num_val", "num_test")}
    settings = root / "training_settings.json"
    if settings.exists() and json.loads(settings.read_text()) != training:
        raise SystemExit(f"{settings}: the finished cells were trained with other settings "
                         f"({settings.read_text().strip()}); use another --data-root to compare")
    write_json(training, settings)
    write_json({"profile": name, **asdict(whole)}, root / "profile.json")
    for cell in load_cells(cells_dir):  # a variant name stands for one set of changes
        if cell["model"] in variants and tuple(cell.get("overrides", ())) != variants[cell["model"]]:
            raise SystemExit(f"{cells_dir}: {cell['model']} was run with {' '.join(cell.get('overrides', ()))}; "
                             "give these changes another variant name")
    order = cell_order(prof)
    todo = [c for c in order if not (cells_dir / f"{cell_key(c[2], c[1], c[3], c[0])}.json").exists()]
    log(f"{name} profile: {len(order)} cells, {len(order) - len(todo)} already done, device {args.device}")
    tasks = {kind: prepare_task(kind, root, prof) for kind in prof.kinds if any(c[2] == kind for c in todo)}
    start = time.perf_counter()
    for i, (seed, n, kind, model) in enumerate(todo):
        key = cell_key(kind, n, model, seed)
        record = run_cell(tasks[kind], prof, kind, n, model, seed, args.device, variants.get(model, ()))
        write_json(record, cells_dir / f"{key}.json")
        write_report(cells_dir, out_dir, whole, name)
        elapsed = time.perf_counter() - start
        log(f"{i + 1}/{len(todo)} {key}: AP@0.1 {record['ap'] or 0.0:.3f} (train {record['train_s']:.0f} s, "
            f"predict {record['predict_s']:.0f} s; {elapsed / 60:.1f} min so far, "
            f"~{elapsed / (i + 1) * (len(todo) - i - 1) / 60:.0f} min left)")
    write_report(cells_dir, out_dir, whole, name)
    log(f"done: {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
