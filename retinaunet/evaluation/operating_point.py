"""Operating points: what a detector does at one score threshold, and the threshold for a target.

A reader sets one threshold: boxes scoring at least it are shown. :func:`operating_point` counts, at that
threshold and an IoU, the true positives (objects found), false positives and false negatives (objects
missed), sensitivity and false positives per case, per class and over all classes. Matching is greedy in
order of decreasing score, so the matches above a threshold are a prefix of the full matching: one pass
gives every threshold, and :func:`propose_threshold` reads the threshold for a target sensitivity or a
target false-positive rate off it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from retinaunet.evaluation.matching import match_cases

__all__ = ["operating_curve", "operating_point", "operating_point_folder", "propose_threshold"]


def operating_curve(pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray],
                    pred_labels: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                    gt_labels: Sequence[np.ndarray], num_classes: int, iou: float = 0.1,
                    classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Detections of the chosen ``classes`` (default all) pooled over cases, by decreasing score:
    (scores float[D], true positive bool[D], number of objects)."""
    scores, hits, num_gt = [], [], 0
    for cls in (range(num_classes) if classes is None else classes):
        for m in match_cases(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels, cls, (iou,), 10**9):
            scores.append(m.dt_scores)
            hits.append(m.dt_matched[0])
            num_gt += m.gt_matched.shape[1]
    scores = np.concatenate(scores) if scores else np.zeros(0)
    hits = np.concatenate(hits).astype(bool) if hits else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    return scores[order], hits[order], num_gt


def _counts(scores: np.ndarray, hits: np.ndarray, num_gt: int, num_cases: int, threshold: float) -> dict[str, Any]:
    keep = scores >= threshold
    tp, fp = int(hits[keep].sum()), int((~hits[keep]).sum())
    return {"tp": tp, "fp": fp, "fn": num_gt - tp, "sensitivity": tp / num_gt if num_gt else None,
            "fp_per_case": fp / max(num_cases, 1)}


def operating_point(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels, num_classes: int,
                    threshold: float, iou: float = 0.1, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """TP/FP/FN, sensitivity and FP per case at ``threshold`` (boxes scoring >= it), per class and in total.

    Per-case lists as in :func:`retinaunet.evaluation.ap.average_precision`.
    """
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    n = len(gt_boxes)
    out: dict[str, Any] = {"threshold": float(threshold), "iou": float(iou), "num_cases": n, "classes": {}}
    for cls, name in enumerate(names):
        curve = operating_curve(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels, num_classes, iou, [cls])
        out["classes"][name] = _counts(*curve, n, threshold)
    out["total"] = _counts(*operating_curve(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels,
                                            num_classes, iou), n, threshold)
    return out


def propose_threshold(scores: np.ndarray, hits: np.ndarray, num_gt: int, num_cases: int,
                      target_sensitivity: float | None = None, target_fp: float | None = None) -> dict[str, Any]:
    """The highest threshold that reaches ``target_sensitivity``, or the lowest whose false positives per
    case stay at or below ``target_fp``, with the operating point there (None when out of reach)."""
    if (target_sensitivity is None) == (target_fp is None):
        raise ValueError("give exactly one of target_sensitivity and target_fp")
    distinct = np.unique(scores)[::-1]  # strict to permissive
    chosen = None
    for t in distinct:
        point = _counts(scores, hits, num_gt, num_cases, float(t))
        if target_sensitivity is not None:
            if point["sensitivity"] is not None and point["sensitivity"] >= target_sensitivity:
                chosen = (float(t), point)
                break
        elif point["fp_per_case"] <= target_fp:
            chosen = (float(t), point)
        else:
            break
    target = {"sensitivity": target_sensitivity} if target_sensitivity is not None else {"fp_per_case": target_fp}
    if chosen is None:
        return {"target": target, "threshold": None, "reachable": False}
    return {"target": target, "threshold": chosen[0], "reachable": True, **chosen[1]}


def operating_point_folder(pred_dir: str | os.PathLike, label_dir: str | os.PathLike, threshold: float,
                           iou: float = 0.1, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`operating_point` of a folder of prediction JSONs against a folder of raw labels."""
    from retinaunet.evaluation.io import CaseBoxes, load_ground_truth, load_predictions

    gt = load_ground_truth(label_dir)
    cases = sorted(gt)
    dim = gt[cases[0]].boxes.shape[1] // 2
    preds = load_predictions(pred_dir, cases, dim)
    preds = [preds.get(c) or CaseBoxes.empty(dim) for c in cases]
    gts = [gt[c] for c in cases]
    num_classes = len(class_names) if class_names is not None else 1 + max(
        [int(g.labels.max(initial=-1)) for g in gts] + [int(p.labels.max(initial=-1)) for p in preds])
    return operating_point([p.boxes for p in preds], [p.scores for p in preds], [p.labels for p in preds],
                           [g.boxes for g in gts], [g.labels for g in gts], num_classes, threshold, iou, class_names)
