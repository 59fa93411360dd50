"""``rud_evaluate``: detection metrics of a prediction folder, or of the pooled cross-validation folds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retinaunet.cli_errors import run_command
from retinaunet.evaluation.evaluate import evaluate_cv, evaluate_folder
from retinaunet.evaluation.io import EvaluationError
from retinaunet.evaluation.matching import DEFAULT_MAX_DETECTIONS
from retinaunet.evaluation.report import format_table
from retinaunet.evaluation.sizes import SIZE_BUCKETS_MM, format_size_table

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
                   help="pool the test predictions of the folds (models/<model>_<plan>/fold<k>/"
                        "test_predictions; as many folds as splits.json lists, else 5) and evaluate them "
                        "together against labelsTr")
    p.add_argument("--model", default="retina_unet", help="with --cv: model name (default retina_unet)")
    p.add_argument("--plan", default=None,
                   help="with --cv: plan name (2d, 2dc, 3d; default the plan_name in the task's plans.json)")
    p.add_argument("--size-buckets", type=float, nargs="*", default=list(SIZE_BUCKETS_MM), metavar="MM",
                   help="edges in mm of the object-size buckets reported with AP and FROC per bucket (size: "
                        "largest in-plane box extent; default < 6, 6-10, 10-20, > 20 mm as LIDC studies); "
                        "give the flag alone for none")
    p.add_argument("--score-threshold", type=float, default=None, metavar="S",
                   help="also report the operating point at this score (boxes scoring >= S): TP, FP, FN, "
                        "sensitivity and false positives per case at the first --iou (operating_point.json)")
    p.add_argument("--no-write", action="store_true", help="only print the table, write no files")
    luna = p.add_argument_group("LUNA16 challenge evaluation (3D, class-agnostic, by distance)")
    luna.add_argument("--luna", action="store_true",
                      help="score the predictions (-p, or the folds' test predictions with --cv) as the LUNA16 "
                           "challenge does: a box centre hits a nodule when it lies within the nodule's radius "
                           "(world mm); repeated hits and hits on excluded findings are ignored; sensitivity at "
                           "1/8..8 FPs per scan by linear interpolation, CPM their mean. Writes "
                           "luna_submission.csv (seriesuid, coordX, coordY, coordZ, probability) and "
                           "luna_metrics.json. Case ids are mapped back to seriesuids by the task's "
                           "case_names.json.")
    luna.add_argument("--annotations", type=Path, default=None,
                      help="with --luna: the challenge's annotations.csv (seriesuid, coordX, coordY, coordZ, "
                           "diameter_mm)")
    luna.add_argument("--excluded", type=Path, default=None,
                      help="with --luna: annotations_excluded.csv; candidates on these findings are ignored "
                           "(without it they count as false positives, which lowers the CPM)")
    luna.add_argument("--seriesuids", type=Path, default=None,
                      help="with --luna: seriesuids.csv, the scans to evaluate (default: every predicted scan); a "
                           "listed scan without a prediction file has no candidates")
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
    if args.luna:
        return _run_luna(args)
    if args.annotations is not None or args.excluded is not None:
        raise EvaluationError("--annotations and --excluded go with --luna")
    edges = sorted(args.size_buckets)
    if any(e <= 0 for e in edges):
        raise EvaluationError("--size-buckets: edges must be positive millimetres")
    need_task = args.cv or args.labels is None
    task_dir = find_task(args.task) if (need_task or args.task is not None) else None
    class_names = load_dataset_info(task_dir).class_names if task_dir is not None else None
    if args.cv:
        if args.pred is not None:
            raise EvaluationError("--cv reads the fold folders itself; leave out -p")
        plan = args.plan or _plan_name(task_dir)
        out = None if args.no_write else (args.out or TaskPaths(task_dir).model_dir(args.model, plan))
        from retinaunet.splits import num_folds

        return evaluate_cv(task_dir, args.model, plan, args.iou, out, class_names, args.max_detections,
                           num_folds=num_folds(task_dir), size_edges=edges)
    if args.pred is None:
        raise EvaluationError("give the prediction folder with -p PRED_DIR (or --cv)")
    labels = args.labels if args.labels is not None else TaskPaths(task_dir).labels_ts
    out = None if args.no_write else (args.out or args.pred)
    return evaluate_folder(args.pred, labels, args.iou, out, class_names, args.max_detections, edges)


def _run_luna(args: argparse.Namespace) -> dict:
    """``--luna``: the challenge's FROC/CPM of -p (or the folds' test predictions with --cv)."""
    from retinaunet.convert.writer import load_case_names
    from retinaunet.evaluation.luna import evaluate_luna, format_luna, read_seriesuids
    from retinaunet.layout import TaskPaths, find_task
    from retinaunet.model_folder import ModelFolder

    if args.annotations is None:
        raise EvaluationError("--luna needs --annotations annotations.csv (the challenge's nodule list)")
    task_dir = find_task(args.task) if (args.cv or args.task is not None) else None
    if args.cv:
        if args.pred is not None:
            raise EvaluationError("--cv reads the fold folders itself; leave out -p")
        from retinaunet.splits import num_folds

        model_dir = TaskPaths(task_dir).model_dir(args.model, args.plan or _plan_name(task_dir))
        dirs = [ModelFolder(model_dir).fold(k).test_predictions for k in range(num_folds(task_dir))]
        missing = [d for d in dirs if not d.is_dir()]
        if len(missing) == len(dirs):
            raise EvaluationError(f"{model_dir}: no fold<k>/test_predictions folders; train the folds first")
        for d in missing:
            print(f"rud_evaluate: warning: {d} missing; its fold is left out", file=sys.stderr)
        dirs = [d for d in dirs if d.is_dir()]
        out = None if args.no_write else (args.out or model_dir)
    else:
        if args.pred is None:
            raise EvaluationError("give the prediction folder with -p PRED_DIR (or --cv)")
        dirs = [args.pred]
        out = None if args.no_write else (args.out or args.pred)
    names = load_case_names(task_dir) if task_dir is not None else load_case_names(args.pred)
    uids = read_seriesuids(args.seriesuids) if args.seriesuids is not None else None
    result = evaluate_luna(dirs, args.annotations, args.excluded, names, uids, out)
    print(format_luna(result))
    return result.to_dict()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def evaluate() -> None:
        metrics = run(args)
        if not args.luna:  # --luna printed its own table
            print(format_table(metrics))
            if metrics.get("by_size"):
                print()
                print(format_size_table(metrics["by_size"]))
        if args.score_threshold is not None:
            point = _operating_point(args, metrics)
            t = point["total"]
            sens = "n/a" if t["sensitivity"] is None else f"{t['sensitivity']:.3f}"
            print(f"at score >= {point['threshold']:g} (IoU {point['iou']:g}): sensitivity {sens}, "
                  f"{t['fp_per_case']:.3f} FP per case, TP {t['tp']}, FP {t['fp']}, FN {t['fn']}")

    return run_command("rud_evaluate", evaluate)


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
