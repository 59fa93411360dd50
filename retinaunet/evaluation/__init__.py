"""Detection metrics (COCO-style AP, patient-level AP, FROC/CPM) and ``rud_evaluate``.

Pure functions take per-case lists of arrays (boxes ``[N, 2*dim]``, scores ``[N]``, labels ``[N]``);
:func:`evaluate_folder` reads prediction and label folders. Classes without ground truth have AP NaN
(null in JSON) and are left out of every mean.
"""

from __future__ import annotations

from retinaunet.evaluation.ap import average_precision, interpolated_ap, iou_range, mean_over_classes
from retinaunet.evaluation.evaluate import evaluate_cases, evaluate_cv, evaluate_folder
from retinaunet.evaluation.froc import FROC_RATES, froc_curve, sensitivity_at
from retinaunet.evaluation.io import CaseBoxes, EvaluationError
from retinaunet.evaluation.matching import match_case, match_cases
from retinaunet.evaluation.patient import patient_level_ap

__all__ = [
    "FROC_RATES",
    "CaseBoxes",
    "EvaluationError",
    "average_precision",
    "evaluate_cases",
    "evaluate_cv",
    "evaluate_folder",
    "froc_curve",
    "interpolated_ap",
    "iou_range",
    "match_case",
    "match_cases",
    "mean_over_classes",
    "patient_level_ap",
    "sensitivity_at",
]
