"""The metrics of a set of cases in memory: AP per class and IoU, mAP, mAP over IoU 0.1:0.5,
patient-level AP, FROC/CPM.

:func:`evaluate_cases` is the one place these are computed from boxes; the folder and cross-validation
evaluation (`.evaluate`) and the metrics per object size (`.sizes`) both call it. Conventions are those
of :mod:`.ap`, :mod:`.froc` and :mod:`.patient`; NaN values (classes without objects) are returned as None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from retinaunet.evaluation.ap import interpolated_ap, iou_range, mean_over_classes, pool_matches, precision_recall_curve
from retinaunet.evaluation.froc import FROC_RATES, froc_from_matches
from retinaunet.evaluation.io import CaseBoxes, EvaluationError
from retinaunet.evaluation.matching import DEFAULT_MAX_DETECTIONS, match_cases
from retinaunet.evaluation.patient import patient_level_ap

__all__ = ["CONVENTIONS", "evaluate_cases"]

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
