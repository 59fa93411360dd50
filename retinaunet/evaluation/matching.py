"""COCO-style greedy matching of detections to ground truth, per case and class.

The rule (as in pycocotools, nnDetection and MONAI): the detections of one case and one class are
sorted by decreasing score (stable sort) and only the first ``max_detections`` are kept; each
detection in turn is matched to the not yet matched ground-truth box of highest IoU, provided that
IoU is >= the threshold. Equal IoUs go to the ground-truth box listed first. Every IoU threshold is
matched independently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from retinaunet.boxes import box_iou_np

__all__ = ["CaseMatch", "DEFAULT_MAX_DETECTIONS", "match_case", "match_cases", "select_class"]

DEFAULT_MAX_DETECTIONS = 100


@dataclass
class CaseMatch:
    """Matching of one case and one class.

    dt_matched: bool[T, D]  detection d is a true positive at threshold t (D sorted by score)
    dt_scores: float[D]     scores, decreasing
    gt_matched: bool[T, G]  ground-truth box g was found at threshold t
    """

    dt_matched: np.ndarray
    dt_scores: np.ndarray
    gt_matched: np.ndarray

    @property
    def num_gt(self) -> int:
        return int(self.gt_matched.shape[1])

    @property
    def num_dt(self) -> int:
        return int(self.dt_scores.shape[0])


@numba.njit(cache=True, nogil=True)
def _greedy_match(ious: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ious: float[D, G] with detections sorted by score -> (dt_matched bool[T, D], gt_matched bool[T, G])."""
    num_dt, num_gt = ious.shape
    dt_matched = np.zeros((thresholds.shape[0], num_dt), dtype=np.bool_)
    gt_matched = np.zeros((thresholds.shape[0], num_gt), dtype=np.bool_)
    for t in range(thresholds.shape[0]):
        for d in range(num_dt):
            best, best_iou = -1, thresholds[t]
            for g in range(num_gt):
                if not gt_matched[t, g] and ious[d, g] >= best_iou and (best < 0 or ious[d, g] > best_iou):
                    best, best_iou = g, ious[d, g]
            if best >= 0:
                dt_matched[t, d] = True
                gt_matched[t, best] = True
    return dt_matched, gt_matched


def match_case(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    gt_boxes: np.ndarray,
    iou_thresholds: Sequence[float],
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> CaseMatch:
    """Match the detections of one case and one class to its ground truth.

    pred_boxes: [D, 2*dim], pred_scores: [D], gt_boxes: [G, 2*dim]; any D, G >= 0.
    """
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="mergesort")[:max_detections]
    scores = scores[order]
    num_gt = len(gt_boxes)
    dt_matched = np.zeros((len(thresholds), len(order)), dtype=bool)
    gt_matched = np.zeros((len(thresholds), num_gt), dtype=bool)
    if len(order) and num_gt:
        ious = box_iou_np(np.asarray(pred_boxes)[order], np.asarray(gt_boxes))
        dt_matched, gt_matched = _greedy_match(ious, thresholds)
    return CaseMatch(dt_matched=dt_matched, dt_scores=scores, gt_matched=gt_matched)


def select_class(
    boxes: np.ndarray, labels: np.ndarray, cls: int, scores: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of ``boxes`` (and ``scores``) whose label is ``cls``; tolerates empty inputs of any shape."""
    labels = np.asarray(labels).reshape(-1)
    mask = labels == cls
    boxes = np.asarray(boxes, dtype=np.float64)
    columns = boxes.shape[-1] if boxes.ndim == 2 else 0
    boxes = boxes.reshape(len(labels), columns)[mask] if len(labels) else boxes.reshape(0, columns)
    sel_scores = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)[mask]
    return boxes, sel_scores


def match_cases(
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    cls: int,
    iou_thresholds: Sequence[float],
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> list[CaseMatch]:
    """Match every case for one class.

    Each argument is a list with one entry per case: pred_boxes[i]: [D_i, 2*dim], pred_scores[i]: [D_i],
    pred_labels[i]: [D_i] (classes from 0), gt_boxes[i]: [G_i, 2*dim], gt_labels[i]: [G_i].
    """
    n = len(gt_boxes)
    if not (len(pred_boxes) == len(pred_scores) == len(pred_labels) == len(gt_labels) == n):
        raise ValueError("predictions and ground truth need one entry per case")
    matches = []
    for i in range(n):
        pb, ps = select_class(pred_boxes[i], pred_labels[i], cls, pred_scores[i])
        gb, _ = select_class(gt_boxes[i], gt_labels[i], cls)
        matches.append(match_case(pb, ps, gb, iou_thresholds, max_detections))
    return matches
