"""Average precision, COCO style (101 recall points), per class and IoU threshold.

Per class, the matched detections of all cases (see :mod:`retinaunet.evaluation.matching`) are pooled
and sorted by decreasing score (stable, case order breaks ties). Precision is made non-increasing
(each value replaced by the maximum precision at any higher recall) and read at the recall points
0, 0.01, ..., 1: at each point, the precision of the first detection whose recall reaches it, or 0
when recall never reaches it. AP is the mean of the 101 values.

Conventions:
- Recall points are compared in exact integer arithmetic (``tp * 100 >= k * num_gt``), so a recall of
  exactly k/100 reaches point k. (MONAI and pycocotools compare rounded floats and can miss such a
  point by one detection; away from these ties the numbers are identical.)
- A class without ground truth in the evaluated cases has AP NaN (written as null in JSON) and is left
  out of every mean over classes; its detections are then all false positives, but there is nothing to
  find, so no AP is defined. If no class has ground truth, mAP is NaN too.
- A class with ground truth but no detection has AP 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retinaunet.evaluation.matching import DEFAULT_MAX_DETECTIONS, CaseMatch, match_cases

__all__ = [
    "NUM_RECALL_POINTS",
    "average_precision",
    "interpolated_ap",
    "iou_range",
    "mean_over_classes",
    "pool_matches",
    "precision_recall_curve",
]

NUM_RECALL_POINTS = 101


def iou_range(start: float = 0.1, stop: float = 0.5, step: float = 0.05) -> np.ndarray:
    """Thresholds start, start+step, ..., stop (inclusive), rounded to 10 decimals."""
    count = int(round((stop - start) / step)) + 1
    return np.round(np.linspace(start, stop, count), 10)


def pool_matches(matches: Sequence[CaseMatch]) -> tuple[np.ndarray, np.ndarray, int]:
    """Pool the matches of all cases of one class.

    Returns (dt_matched bool[T, D] and scores float[D], both sorted by decreasing score, num_gt).
    """
    if not matches:
        raise ValueError("no cases to evaluate")
    scores = np.concatenate([m.dt_scores for m in matches])
    dt_matched = np.concatenate([m.dt_matched for m in matches], axis=1)
    order = np.argsort(-scores, kind="mergesort")
    return dt_matched[:, order], scores[order], sum(m.num_gt for m in matches)


def precision_recall_curve(tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """tp: bool[D] (detections sorted by score) -> (recall float[D], precision float[D] non-increasing)."""
    tp = np.asarray(tp, dtype=bool)
    tp_cum = np.cumsum(tp)
    rank = np.arange(1, len(tp) + 1)
    recall = tp_cum / num_gt if num_gt else np.full(len(tp), np.nan)
    precision = tp_cum / rank
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return recall, precision


def interpolated_ap(tp: np.ndarray, num_gt: int, num_points: int = NUM_RECALL_POINTS) -> float:
    """AP of detections sorted by score: mean precision at ``num_points`` recall points.

    tp: bool[D] (true positive flags, decreasing score); num_gt: number of objects (NaN if 0).
    """
    if num_gt <= 0:
        return float("nan")
    tp = np.asarray(tp, dtype=bool)
    if len(tp) == 0:
        return 0.0
    _, precision = precision_recall_curve(tp, num_gt)
    steps = num_points - 1
    # recall point k/steps is reached at the first detection with tp_cum / num_gt >= k / steps
    reached = np.searchsorted(np.cumsum(tp) * steps, np.arange(num_points) * num_gt, side="left")
    values = np.where(reached < len(tp), precision[np.minimum(reached, len(tp) - 1)], 0.0)
    return float(values.mean())


def mean_over_classes(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN (classes without ground truth); NaN where all are NaN."""
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values)
    counts = valid.sum(axis=-1)
    sums = np.where(valid, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def average_precision(
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    num_classes: int,
    iou_thresholds: Sequence[float] = (0.1,),
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> np.ndarray:
    """AP per IoU threshold and class: float[T, num_classes], NaN for classes without ground truth.

    Per-case lists (one entry per case): pred_boxes[i]: [D_i, 2*dim], pred_scores[i]: [D_i],
    pred_labels[i]: [D_i], gt_boxes[i]: [G_i, 2*dim], gt_labels[i]: [G_i]; classes from 0.
    Works for 2D (4 columns) and 3D (6 columns) boxes.

    >>> ap = average_precision([p_boxes], [p_scores], [p_labels], [g_boxes], [g_labels], 2)
    >>> mean_over_classes(ap)  # mAP per threshold
    """
    result = np.full((len(iou_thresholds), num_classes), np.nan)
    for cls in range(num_classes):
        matches = match_cases(
            pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels, cls, iou_thresholds, max_detections
        )
        dt_matched, _, num_gt = pool_matches(matches)
        for t in range(len(iou_thresholds)):
            result[t, cls] = interpolated_ap(dt_matched[t], num_gt)
    return result
