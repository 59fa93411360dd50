"""Merging the 2D boxes of a volume's slices into 3D cubes (paper section 4.2).

Per class, the boxes of all slices are projected into one plane, keeping their slice index, and
processed like NMS in order of decreasing score: the highest remaining box and every remaining box
whose in-plane IoU with it is above ``iou_threshold`` (0.1) are its matches. Of these, only the boxes
on slices connected to the top box's slice merge: starting at that slice, the run of consecutive
slices that hold a match (a slice without a match ends the run). The merged cube keeps the top box's
in-plane extent and spans the lowest to the highest slice of the run, half-open in z:
``[z_lo, y0, x0, z_hi + 1, y1, x1]``. Matches beyond a gap stay in the list and can form cubes of
their own (another object behind the same in-plane position).

Score: by default the top box's score ("max"), as the paper's adaptation of NMS keeps the highest
scoring box of the cluster (its original code did the same); "mean" averages the merged boxes'
scores instead, which penalises cubes built from many weak slices.
"""

from __future__ import annotations

import numpy as np

from retinaunet.boxes import box_iou_np

__all__ = ["connected_run", "merge_2d_to_3d"]


def connected_run(slices: np.ndarray, start: int) -> tuple[int, int]:
    """Lowest and highest slice of the run of consecutive values in ``slices`` that contains ``start``."""
    present = set(np.asarray(slices).tolist())
    lo = hi = int(start)
    while lo - 1 in present:
        lo -= 1
    while hi + 1 in present:
        hi += 1
    return lo, hi


def merge_2d_to_3d(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    slices: np.ndarray,
    iou_threshold: float = 0.1,
    score_mode: str = "max",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-slice 2D boxes of one volume into 3D boxes, per class.

    boxes: [N, 4] in-plane ``[y0, x0, y1, x1]`` (array order of a slice), scores: [N], labels: [N] int,
    slices: [N] int (z index of each box's slice) -> (boxes [K, 6] ``[z0, y0, x0, z1, y1, x1]``,
    scores [K], labels [K]) sorted by decreasing score.
    """
    if score_mode not in ("max", "mean"):
        raise ValueError(f"score_mode must be 'max' or 'mean', got {score_mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    slices = np.asarray(slices, dtype=np.int64).reshape(-1)
    n = len(boxes)
    if not (len(scores) == len(labels) == len(slices) == n):
        raise ValueError("boxes, scores, labels and slices need one entry per box")
    out_boxes, out_scores, out_labels = [], [], []
    for cls in np.unique(labels):
        remaining = np.nonzero(labels == cls)[0]
        remaining = remaining[np.argsort(-scores[remaining], kind="stable")]
        while remaining.size:
            top = remaining[0]
            matches = box_iou_np(boxes[top:top + 1], boxes[remaining])[0] > iou_threshold
            matches[0] = True  # the top box belongs to its own cluster even if it has no area
            z_lo, z_hi = connected_run(slices[remaining[matches]], slices[top])
            merged = matches & (slices[remaining] >= z_lo) & (slices[remaining] <= z_hi)
            y0, x0, y1, x1 = boxes[top]
            out_boxes.append([z_lo, y0, x0, z_hi + 1, y1, x1])
            out_scores.append(scores[top] if score_mode == "max" else scores[remaining[merged]].mean())
            out_labels.append(cls)
            remaining = remaining[~merged]
    if not out_scores:
        return np.zeros((0, 6)), np.zeros(0), np.zeros(0, dtype=np.int64)
    out_b, out_s, out_l = np.array(out_boxes), np.array(out_scores), np.array(out_labels, dtype=np.int64)
    order = np.argsort(-out_s, kind="stable")
    return out_b[order], out_s[order], out_l[order]
