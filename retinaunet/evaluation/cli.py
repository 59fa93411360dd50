"""``rud_evaluate``: detection metrics of a prediction folder, or of the pooled cross-validation folds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retinaunet.evaluation.evaluate import evaluate_cv, evaluate_folder
from retinaunet.evaluation.io import EvaluationError
from retinaunet.evaluation.matching import DEFAULT_MAX_DETECTIONS
from retinaunet.evaluation.report import format_table

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_evaluate",
        description="Object-level detection metrics, matched in the labels' dimension (3D boxes for 3D "
                    "images, also for 2D models whose boxes were merged to 3D): AP per class and mAP at the "
                    "given IoU thresholds, mAP over IoU 0.1:0.5:0.05, patient-level AP, FROC and CPM. "
                    "Writes metrics.json, pr_curves.png and froc.png and prints a table.",
        epilog="Examples: rud_evaluate -t 1 -p $RUD_DATA/Task001_Shapes/predictions/run1 ;  "
               "rud_evaluate -t 1 --cv --model retina_unet --plan 2d",
    )
    p.add_argument("-t", "--task", default=None,
                   help="task number or name (default $RUD_TASK); gives the class names and the default label "
                        "folder. May be left out when -l is given (classes are then numbered).")
    p.add_argument("-p", "--pred", type=Path, default=None,
                   help="folder with one <case>.json per case as rud_predict writes it. A labelled case "
                        "without a file counts as a case with no detections (a warning says so).")
    p.add_argument("-l", "--labels", type=Path, default=None,
                   help="folder with the raw label maps and jsons (default: the task's labelsTs, or labelsTr "
                        "with --cv). Every labelled case in it is evaluated.")
    p.add_argument("--iou", type=float, nargs="+", default=[0.1], metavar="T",
                   help="IoU thresholds to report AP at (default 0.1, the paper's mAP10); the first one is also "
                        "used for the PR curves and the FROC. mAP over 0.1:0.5:0.05 is always reported.")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="folder for metrics.json and the plots (default: the prediction folder; with --cv the "
                        "model folder models/<model>_<plan>)")
    p.add_argument("--max-detections", type=int, default=DEFAULT_MAX_DETECTIONS,
                   help="detections per case and class that count, highest scores first (default 100, as "
                        "COCO/MONAI/nnDetection); lowering it can only lower recall.")
    p.add_argument("--cv", action="store_true",
                   help="pool the test predictions of the 5 folds (models/<model>_<plan>/fold<k>/"
                        "test_predictions) and evaluate them together against labelsTr")
    p.add_argument("--model", default="retina_unet", help="with --cv: model name (default retina_unet)")
    p.add_argument("--plan", default=None,
                   help="with --cv: plan name (2d, 2dc, 3d; default the plan_name in the task's plans.json)")
    p.add_argument("--score-threshold", type=float, default=None, metavar="S",
                   help="also report the operating point at this score (boxes scoring >= S): TP, FP, FN, "
                        "sensitivity and false positives per case at the first --iou (operating_point.json)")
    p.add_argument("--no-write", action="store_true", help="only print the table, write no files")
    return p


def _plan_name(task_dir: Path) -> str:
    from retinaunet.layout import TaskPaths
    from retinaunet.plans import load_plans

    plans_file = TaskPaths(task_dir).plans
    if not plans_file.is_file():
        raise EvaluationError(f"{plans_file}: not found; pass --plan (2d, 2dc or 3d)")
    return load_plans(plans_file).plan_name


def run(args: argparse.Namespace) -> dict:
    """Do what the parsed arguments ask; returns the metrics dict."""
    from retinaunet.dataset import load_dataset_info
    from retinaunet.layout import TaskPaths, find_task

    for t in args.iou:
        if not 0 < t <= 1:
            raise EvaluationError(f"--iou {t}: thresholds must lie in (0, 1]")
    if args.max_detections < 1:
        raise EvaluationError("--max-detections must be at least 1")
    need_task = args.cv or args.labels is None
    task_dir = find_task(args.task) if (need_task or args.task is not None) else None
    class_names = load_dataset_info(task_dir).class_names if task_dir is not None else None
    if args.cv:
        if args.pred is not None:
            raise EvaluationError("--cv reads the fold folders itself; leave out -p")
        plan = args.plan or _plan_name(task_dir)
        out = None if args.no_write else (args.out or TaskPaths(task_dir).model_dir(args.model, plan))
        return evaluate_cv(task_dir, args.model, plan, args.iou, out, class_names, args.max_detections)
    if args.pred is None:
        raise EvaluationError("give the prediction folder with -p PRED_DIR (or --cv)")
    labels = args.labels if args.labels is not None else TaskPaths(task_dir).labels_ts
    out = None if args.no_write else (args.out or args.pred)
    return evaluate_folder(args.pred, labels, args.iou, out, class_names, args.max_detections)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from retinaunet.dataset import DatasetError
    from retinaunet.io import ReadError
    from retinaunet.layout import LayoutError

    try:
        metrics = run(args)
        point = _operating_point(args, metrics) if args.score_threshold is not None else None
    except (EvaluationError, LayoutError, ReadError, DatasetError, ValueError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"rud_evaluate: {message}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    if point is not None:
        t = point["total"]
        sens = "n/a" if t["sensitivity"] is None else f"{t['sensitivity']:.3f}"
        print(f"at score >= {point['threshold']:g} (IoU {point['iou']:g}): sensitivity {sens}, "
              f"{t['fp_per_case']:.3f} FP per case, TP {t['tp']}, FP {t['fp']}, FN {t['fn']}")
    return 0


def _operating_point(args: argparse.Namespace, metrics: dict) -> dict:
    """The operating point at ``--score-threshold`` (written beside metrics.json unless --no-write)."""
    from retinaunet.evaluation.operating_point import operating_point_folder
    from retinaunet.io import write_json
    from retinaunet.layout import TaskPaths, find_task

    if args.cv or args.pred is None:
        raise EvaluationError("--score-threshold needs a prediction folder (-p); it is not computed with --cv")
    labels = args.labels if args.labels is not None else TaskPaths(find_task(args.task)).labels_ts
    point = operating_point_folder(args.pred, labels, args.score_threshold, args.iou[0], metrics.get("classes"))
    if not args.no_write:
        write_json(point, (args.out or args.pred) / "operating_point.json")
    return point


