"""Patient-level average precision (paper section 4.3).

Per class, each case (patient) gets the maximum score of its detections of that class and is positive
when its ground truth holds an object of that class; matching of boxes plays no role. AP is computed
from the patients ranked by that score with the same 101-point interpolation as the object-level AP.
A patient without any detection of the class is never flagged (it counts as a missed positive if it
is one). A class that no patient has gets NaN, left out of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retinaunet.evaluation.ap import interpolated_ap

__all__ = ["patient_level_ap", "patient_scores"]


def patient_scores(pred_scores: Sequence[np.ndarray], pred_labels: Sequence[np.ndarray], cls: int) -> np.ndarray:
    """Maximum score of class ``cls`` per case: float[P], -inf for cases without such a detection."""
    out = np.full(len(pred_scores), -np.inf)
    for i, (scores, labels) in enumerate(zip(pred_scores, pred_labels)):
        selected = np.asarray(scores, dtype=np.float64).reshape(-1)[np.asarray(labels).reshape(-1) == cls]
        if selected.size:
            out[i] = selected.max()
    return out


def patient_level_ap(
    pred_scores: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    num_classes: int,
) -> np.ndarray:
    """Patient-level AP per class: float[num_classes] (NaN where no patient has the class).

    pred_scores[i]: [D_i], pred_labels[i]: [D_i], gt_labels[i]: [G_i] per case, classes from 0.
    """
    if not (len(pred_scores) == len(pred_labels) == len(gt_labels)):
        raise ValueError("predictions and ground truth need one entry per case")
    result = np.full(num_classes, np.nan)
    for cls in range(num_classes):
        positive = np.array([np.any(np.asarray(g).reshape(-1) == cls) for g in gt_labels], dtype=bool)
        scores = patient_scores(pred_scores, pred_labels, cls)
        flagged = np.isfinite(scores)
        order = np.argsort(-scores[flagged], kind="mergesort")
        result[cls] = interpolated_ap(positive[flagged][order], int(positive.sum()))
    return result
