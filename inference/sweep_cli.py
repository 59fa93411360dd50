"""``rud_sweep -t TASK``: choose a model folder's inference settings on its raw validation predictions.

Three layers: :func:`main` parses arguments; :func:`run_sweep` makes missing raw predictions (one network
pass per fold, from the preprocessed store and ``splits.json``) and sweeps; :mod:`retinaunet.inference.sweep` searches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from retinaunet.inference.sweep import METRICS, SweepResult
from retinaunet.inference.tune import sweep_folds, write_raw_predictions

from retinaunet.io import ReadError, read_json
from retinaunet.layout import LayoutError, TaskPaths
from retinaunet.model_folder import ModelFolder, ModelFolderError
from retinaunet.plans import PlansError

__all__ = ["main", "run_sweep"]


def run_sweep(task: str | None, model: str = "retina_unet", plan: str | None = None,
              folds: Sequence[int] | None = None, metric: str = "map", device: str = "cpu",
              target_sensitivity: float | None = 0.9, target_fp: float | None = 1.0,
              faster_ensemble: bool = False) -> tuple[SweepResult, Path]:
    """Sweep the pooled validation predictions of ``folds`` (default: every trained fold) of a model folder."""
    from retinaunet.inference.cli import resolve_model_dir

    paths = TaskPaths.from_task(task)
    folder = ModelFolder(resolve_model_dir(task, model, plan))
    trained = folder.available_folds()
    folds = sorted(trained if folds is None else folds)
    if not folds or not set(folds) <= set(trained):
        raise ModelFolderError(f"{folder.path}: fold(s) {sorted(set(folds) - set(trained)) or ''} not trained "
                               f"(trained: {trained or 'none'}); run rud_train first or choose --folds among them")
    for fold in folds:
        if not any(folder.fold(fold).val_raw.glob("*.npz")):
            plans = folder.load_plans()
            splits = read_json(paths.splits)
            write_raw_predictions(folder, fold, paths.preprocessed(plans.plan_name), splits[fold]["val"],
                                  folder.fold(fold).val_raw, device)
    return sweep_folds(folder, folds, metric, faster_ensemble, target_sensitivity=target_sensitivity,
                       target_fp=target_fp)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_sweep",
        description="Choose the inference settings of a trained model on its validation cases: consolidation "
                    "(WBC or NMS and its IoU), checkpoints per fold, mirroring, minimum object size, score "
                    "threshold and detections per case, each measured by the validation metric. Works on the "
                    "raw validation predictions rud_train keeps (no network pass; a fold without them is "
                    "predicted once). Writes sweep.json (chosen values, the whole search table) and "
                    "sweep_table.csv into the fold, or into the model folder for several folds; rud_predict "
                    "applies the chosen values. A setting replaces the planned one only when its gain holds under "
                    "a paired bootstrap over the validation cases (the 90% interval's lower end above zero). Never "
                    "chosen: fewer checkpoints or mirrored views than planned (unless --faster-ensemble), a cap on "
                    "boxes per case below the planned one, a score threshold that loses validation recall.")
    p.add_argument("-t", "--task", default=None, help="task number or name (default $RUD_TASK)")
    p.add_argument("--model", default="retina_unet", help="model name (default retina_unet)")
    p.add_argument("--plan", default=None, help="plan name: 2d, 2dc, 3d ... (default: the task's plans.json)")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="folds whose validation cases are pooled (default: every trained fold)")
    p.add_argument("--metric", choices=METRICS, default="map",
                   help="what the sweep maximises: mAP at IoU 0.1, FROC CPM (sensitivity at 1/8..8 FP per "
                        "case) or patient-level AP")
    p.add_argument("--target-sensitivity", type=float, default=0.9,
                   help="propose the highest score threshold reaching this sensitivity (default 0.9)")
    p.add_argument("--target-fp", type=float, default=1.0,
                   help="propose the lowest score threshold with at most this many false positives per case "
                        "(default 1)")
    p.add_argument("--faster-ensemble", action="store_true",
                   help="also try fewer checkpoints and no test-time mirroring than planned (faster prediction; "
                        "chosen only when it holds the validation metric). Default: the planned ensemble stays")
    p.add_argument("--device", default="auto", help="for missing raw predictions: cpu, cuda ... (default: cuda "
                                                    "when available)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        result, path = run_sweep(args.task, args.model, args.plan, args.folds, args.metric, device,
                                 args.target_sensitivity, args.target_fp, args.faster_ensemble)
    except (ModelFolderError, LayoutError, PlansError, ReadError, ValueError, FileNotFoundError, KeyError,
            IndexError) as err:
        print(f"rud_sweep: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 1
    values = ", ".join(f"{k}={v}" for k, v in result.chosen.items())
    print(f"{result.metric} on {result.num_cases} validation case(s): planned {result.planned_value:.4f}, "
          f"chosen {result.value:.4f} ({len(result.table)} settings tried)\n{result.decision['reason']}\n"
          f"chosen: {values}")
    for point in result.operating_points:
        target = ", ".join(f"{k} {v:g}" for k, v in point["target"].items())
        if point["reachable"]:
            sens = "n/a" if point["sensitivity"] is None else f"{point['sensitivity']:.3f}"
            print(f"operating point for {target}: score >= {point['threshold']:.4f} (sensitivity {sens}, "
                  f"{point['fp_per_case']:.3f} FP per case)")
        else:
            print(f"operating point for {target}: not reachable on the validation cases")
    print(f"written: {path}")
    return 0
