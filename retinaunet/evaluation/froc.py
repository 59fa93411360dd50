"""FROC: sensitivity against false positives per case, and the CPM (LUNA16 challenge score).

Detections are matched as for AP (COCO greedy matching at one IoU threshold, at most
``max_detections`` per case and class); a detection that hits an already found object counts as a
false positive. Per class, the detections of all cases are sorted by decreasing score; every distinct
score is an operating point (tied scores are accepted together) with
``fp_per_case = FP / number of cases`` and ``sensitivity = TP / number of objects``.

The sensitivity at a rate r is that of the most permissive operating point with fp_per_case <= r
(0 if even the strictest point has more false positives, the final sensitivity if the detections run
out before reaching r). CPM is the mean over the rates 1/8, 1/4, 1/2, 1, 2, 4, 8. A class without
objects has sensitivities and CPM NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retinaunet.evaluation.ap import pool_matches
from retinaunet.evaluation.matching import CaseMatch

__all__ = ["FROC_RATES", "froc_curve", "froc_from_matches", "sensitivity_at"]

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def froc_curve(
    tp: np.ndarray, scores: np.ndarray, num_gt: int, num_cases: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating points of detections sorted by decreasing score.

    tp: bool[D], scores: float[D] (decreasing) -> (fp_per_case[K], sensitivity[K], threshold[K]),
    one point per distinct score, from strict to permissive; point k accepts scores >= threshold[k].
    """
    tp = np.asarray(tp, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if len(tp) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    last_of_group = np.append(scores[1:] != scores[:-1], True)
    tp_cum = np.cumsum(tp)[last_of_group]
    fp_cum = np.cumsum(~tp)[last_of_group]
    sensitivity = tp_cum / num_gt if num_gt else np.full(len(tp_cum), np.nan)
    return fp_cum / max(num_cases, 1), sensitivity, scores[last_of_group]


def sensitivity_at(
    fp_per_case: np.ndarray, sensitivity: np.ndarray, rates: Sequence[float] = FROC_RATES
) -> np.ndarray:
    """Sensitivity at each FP rate: float[len(rates)] (see the module docstring for the rule)."""
    fp_per_case = np.asarray(fp_per_case, dtype=np.float64)
    out = np.zeros(len(rates))
    for i, rate in enumerate(rates):
        allowed = np.nonzero(fp_per_case <= rate)[0]
        out[i] = sensitivity[allowed[-1]] if len(allowed) else 0.0
    return out


def froc_from_matches(
    matches: Sequence[CaseMatch], threshold_index: int = 0, rates: Sequence[float] = FROC_RATES
) -> dict:
    """FROC of one class from its per-case matches, at the IoU threshold ``threshold_index``.

    Returns {"rates": [..], "sensitivity": float[R], "cpm": float, "fp_per_case": float[K],
    "curve_sensitivity": float[K]} (NaN sensitivities and CPM without objects).
    """
    dt_matched, scores, num_gt = pool_matches(matches)
    fp_rate, sens, _ = froc_curve(dt_matched[threshold_index], scores, num_gt, len(matches))
    at_rates = sensitivity_at(fp_rate, sens, rates) if num_gt else np.full(len(rates), np.nan)
    return {
        "rates": list(rates),
        "sensitivity": at_rates,
        "cpm": float(at_rates.mean()),
        "fp_per_case": fp_rate,
        "curve_sensitivity": sens,
    }
