"""Evaluate a set of cases: AP per class and IoU, mAP, mAP over IoU 0.1:0.5, patient-level AP, FROC/CPM.

:func:`evaluate_cases` works on boxes in memory; :func:`evaluate_folder` reads a prediction folder and
a label folder and writes ``metrics.json`` and the curves; :func:`evaluate_cv` pools the test
predictions of the five cross-validation folds. Conventions are those of :mod:`.ap`, :mod:`.froc`
and :mod:`.patient`; NaN values (classes without objects) are written as null.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from loguru import logger

from retinaunet.evaluation.ap import interpolated_ap, iou_range, mean_over_classes, pool_matches, precision_recall_curve
from retinaunet.evaluation.froc import FROC_RATES, froc_from_matches
from retinaunet.evaluation.io import CaseBoxes, EvaluationError, label_files, load_ground_truth, load_predictions
from retinaunet.evaluation.matching import DEFAULT_MAX_DETECTIONS, match_cases
from retinaunet.evaluation.patient import patient_level_ap
from retinaunet.evaluation.plots import plot_froc, plot_pr_curves
from retinaunet.evaluation.sizes import SIZE_BUCKETS_MM, evaluate_by_size, label_spacings
from retinaunet.io import read_json, write_json

__all__ = ["CONVENTIONS", "evaluate_cases", "evaluate_cv", "evaluate_folder", "write_results"]

CONVENTIONS = (
    "COCO matching per case and class (greedy by score, unmatched gt of highest IoU >= threshold, at most "
    "max_detections per case and class); AP = mean of non-increasing precision at recall 0:0.01:1; "
    "classes without objects have AP/CPM null and are left out of means; patient AP from the max score per "
    "case and class; FROC sensitivity at the most permissive score with FP/case <= rate, CPM = mean over rates."
)


def _key(t: float) -> str:
    return f"{t:g}"


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def evaluate_cases(
    predictions: Mapping[str, CaseBoxes],
    ground_truth: Mapping[str, CaseBoxes],
    num_classes: int,
    iou_thresholds: Sequence[float] = (0.1,),
    class_names: Sequence[str] | None = None,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> tuple[dict, dict]:
    """Metrics of the cases in ``ground_truth`` (a case missing from ``predictions`` has no detections).

    Returns (metrics: JSON-ready dict, curves: {"pr": {name: (recall, precision)}, "froc": {name:
    (fp_per_case, sensitivity)}}), both at the first threshold in ``iou_thresholds`` for the curves/FROC.
    """
    if not ground_truth:
        raise EvaluationError("no cases to evaluate")
    iou_thresholds = [float(t) for t in iou_thresholds] or [0.1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    cases = sorted(ground_truth)
    dim = ground_truth[cases[0]].boxes.shape[1] // 2
    preds = [predictions.get(c) or CaseBoxes.empty(dim) for c in cases]
    gts = [ground_truth[c] for c in cases]
    coco = iou_range()
    thresholds = np.union1d(np.round(iou_thresholds, 10), coco)
    asked = [int(np.searchsorted(thresholds, round(t, 10))) for t in iou_thresholds]
    in_range = [int(np.searchsorted(thresholds, t)) for t in coco]

    ap = np.full((len(thresholds), num_classes), np.nan)
    curves: dict[str, dict] = {"pr": {}, "froc": {}}
    froc = {}
    for cls, name in enumerate(names):
        matches = match_cases([p.boxes for p in preds], [p.scores for p in preds], [p.labels for p in preds],
                              [g.boxes for g in gts], [g.labels for g in gts], cls, thresholds, max_detections)
        dt_matched, _, num_gt = pool_matches(matches)
        ap[:, cls] = [interpolated_ap(dt_matched[t], num_gt) for t in range(len(thresholds))]
        curves["pr"][name] = precision_recall_curve(dt_matched[asked[0]], num_gt)
        froc[name] = froc_from_matches(matches, asked[0], FROC_RATES)
        curves["froc"][name] = (froc[name]["fp_per_case"], froc[name]["curve_sensitivity"])
    patient = patient_level_ap([p.scores for p in preds], [p.labels for p in preds], [g.labels for g in gts],
                               num_classes)
    cpm = np.array([froc[n]["cpm"] for n in names])

    def per_class(values: np.ndarray) -> dict[str, float | None]:
        return {n: _finite_or_none(v) for n, v in zip(names, values)}

    metrics = {
        "num_cases": len(cases),
        "dim": dim,
        "classes": names,
        "num_objects": {n: int(sum((g.labels == c).sum() for g in gts)) for c, n in enumerate(names)},
        "num_detections": {n: int(sum((p.labels == c).sum() for p in preds)) for c, n in enumerate(names)},
        "max_detections": max_detections,
        "iou_thresholds": iou_thresholds,
        "AP": {_key(t): per_class(ap[i]) for t, i in zip(iou_thresholds, asked)},
        "mAP": {_key(t): _finite_or_none(mean_over_classes(ap[i])) for t, i in zip(iou_thresholds, asked)},
        "AP_0.1:0.5": per_class(ap[in_range].mean(axis=0)),
        "mAP_0.1:0.5": _finite_or_none(float(np.mean(mean_over_classes(ap[in_range])))),
        "patient_AP": per_class(patient),
        "patient_mAP": _finite_or_none(float(mean_over_classes(patient))),
        "FROC": {
            "iou": iou_thresholds[0],
            "rates": list(FROC_RATES),
            "sensitivity": {n: [_finite_or_none(s) for s in froc[n]["sensitivity"]] for n in names},
            "CPM": per_class(cpm),
            "mean_CPM": _finite_or_none(float(mean_over_classes(cpm))),
        },
        "conventions": CONVENTIONS,
    }
    return metrics, curves


def write_results(metrics: dict, curves: dict, out_dir: str | os.PathLike) -> Path:
    """Write ``metrics.json`` (atomic), ``pr_curves.png`` and ``froc.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    iou = _key(metrics["iou_thresholds"][0])
    plot_pr_curves(curves["pr"], out_dir / "pr_curves.png", title=f"Precision-recall at IoU {iou}")
    plot_froc(curves["froc"], metrics["FROC"]["rates"], out_dir / "froc.png", title=f"FROC at IoU {iou}")
    return write_json(metrics, out_dir / "metrics.json")


def _num_classes(gt: Mapping[str, CaseBoxes], preds: Mapping[str, CaseBoxes], class_names) -> int:
    if class_names is not None:
        for case, p in preds.items():
            if len(p.labels) and p.labels.max() >= len(class_names):
                raise EvaluationError(f"{case}.json: class {int(p.labels.max())} but the task has "
                                      f"{len(class_names)} classes (0..{len(class_names) - 1})")
        return len(class_names)
    top = max([int(b.labels.max()) for b in [*gt.values(), *preds.values()] if len(b.labels)], default=0)
    return top + 1


def _evaluate(pred_dirs, label_dir, cases, iou_thresholds, out_dir, class_names, max_detections, sources,
              size_edges=SIZE_BUCKETS_MM):
    gt = load_ground_truth(label_dir, cases)
    dim = next(iter(gt.values())).boxes.shape[1] // 2
    preds = load_predictions(pred_dirs, list(gt), dim)
    num_classes = _num_classes(gt, preds, class_names)
    metrics, curves = evaluate_cases(preds, gt, num_classes, iou_thresholds, class_names, max_detections)
    metrics = {**sources, "label_dir": str(label_dir), **metrics}
    if size_edges:
        files = label_files(label_dir)
        spacings = label_spacings({c: files[c] for c in gt})
        metrics["by_size"] = evaluate_by_size(preds, gt, spacings, num_classes, float(iou_thresholds[0]),
                                              class_names, max_detections, size_edges)
    if out_dir is not None:
        path = write_results(metrics, curves, out_dir)
        logger.info(f"metrics written to {path}")
    return metrics


def evaluate_folder(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    iou_thresholds: Sequence[float] = (0.1,),
    out_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    size_edges: Sequence[float] | None = SIZE_BUCKETS_MM,
) -> dict:
    """Evaluate ``<pred_dir>/<case>.json`` against every labelled case in ``label_dir``.

    Writes metrics.json, pr_curves.png and froc.png into ``out_dir`` unless it is None; returns the
    metrics dict. Without ``class_names`` the classes are 0..max class seen. ``size_edges``: bucket edges
    in mm for the metrics per object size (``metrics["by_size"]``, see `.sizes`); None or empty: none.
    """
    return _evaluate(pred_dir, label_dir, None, iou_thresholds, out_dir, class_names, max_detections,
                     {"pred_dir": str(pred_dir)}, size_edges)


def _split_test_cases(splits_file: Path) -> list[str] | None:
    """Union of the folds' test cases if splits.json lists them ([{"test": [...]}, ...]), else None."""
    if not splits_file.is_file():
        return None
    splits = read_json(splits_file)
    if isinstance(splits, dict):
        splits = splits.get("folds", splits.get("splits"))
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "test" in s for s in splits):
        return None
    return sorted({str(c) for s in splits for c in s["test"]})


def evaluate_cv(
    task_dir: str | os.PathLike,
    model: str,
    plan: str,
    iou_thresholds: Sequence[float] = (0.1,),
    out_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    num_folds: int = 5,
    size_edges: Sequence[float] | None = SIZE_BUCKETS_MM,
) -> dict:
    """Pool the test predictions of the cross-validation folds and evaluate them against labelsTr.

    Reads ``<task>/models/<model>_<plan>/fold<k>/test_predictions/``. The cases evaluated are the test
    cases of splits.json when it lists them (a missing file then means no detections), otherwise the
    labelled cases that some fold predicted. A missing fold folder is a warning. Writes the results into
    ``out_dir`` unless it is None (``rud_evaluate --cv`` uses the model folder).
    """
    from retinaunet.layout import TaskPaths
    from retinaunet.model_folder import ModelFolder

    paths = TaskPaths(Path(task_dir))
    folder = ModelFolder(paths.model_dir(model, plan))
    dirs = [folder.fold(k).test_predictions for k in range(num_folds)]
    present = [d for d in dirs if d.is_dir()]
    for d in sorted(set(dirs) - set(present)):
        logger.warning(f"{d}: missing; its fold is left out of the pooled evaluation")
    if not present:
        raise EvaluationError(f"{paths.model_dir(model, plan)}: no fold<k>/test_predictions folders; "
                              "train and test the folds first (rud_train)")
    labelled = set(label_files(paths.labels_tr))
    cases = _split_test_cases(paths.splits) if len(present) == len(dirs) else None
    if cases is None:
        cases = sorted({f.stem for d in present for f in d.glob("*.json")} & labelled)
    if not cases:
        raise EvaluationError(f"{paths.model_dir(model, plan)}: no prediction file matches a case in "
                              f"{paths.labels_tr}")
    return _evaluate(present, paths.labels_tr, cases, iou_thresholds, out_dir, class_names, max_detections,
                     {"pred_dirs": [str(d) for d in present]}, size_edges)
