"""The sweep: inference settings chosen on a fold's raw validation predictions, without a network pass.

The planner fixes the consolidation and post-processing settings as constants; the sweep measures them.
From the raw predictions (:mod:`retinaunet.inference.raw`, every view's boxes of each validation case, kept by the
trainer) it searches, against the validation metric:

1. the consolidation: checkpoints kept per fold, test-time mirroring on or off, WBC or NMS and its IoU
   (every combination; post-processing off);
2. then, on the best consolidation, the post-processing steps: minimum object size, score threshold and
   detections per case (every combination; the boxes are consolidated once).

The planned settings are evaluated too, as the first row, and stay chosen unless a setting's gain over
them holds: the gain of the best other row is resampled over the validation cases (a paired bootstrap,
:func:`paired_bootstrap`), and the row replaces the planned settings only when the lower end of the gain's
interval is above zero. A validation set of a dozen cases saturates easily and is moved by one case: on a
nodule task the best of about a hundred rows gained 0.024 val mAP on 12 cases and lost 0.125 held-out
mAP; on the 3D spheres toy every row scored val mAP 1.0 and a tie-break towards fewer boxes lost 19
points. Among the other rows, ties go to the setting with fewer boxes, then to the earlier row.

The grid is bounded by what the data and the plan say:

- the ensemble (kept checkpoints, test-time mirroring) is what the plan paid for and stays as planned;
  ``faster_ensemble`` lets the sweep try fewer checkpoints and no mirroring, reported as such;
- detections per case are never capped below the planned cap, which is at least twice the most objects
  any case of the task holds;
- a score threshold is never above the lowest score of a true positive of the consolidated validation
  boxes (a higher one would lose validation recall).

:func:`sweep` returns every row evaluated (the search table), the decision with its interval, and the chosen
values as ``inference`` keys of the plans. With the chosen settings it proposes the score thresholds for a
target sensitivity and a target false-positive rate (operating points).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from loguru import logger
from retinaunet.inference.postprocess import STANDARD_STEPS, STEPS
from retinaunet.inference.predictor import CasePrediction
from retinaunet.inference.raw import RawPrediction, consolidate_raw, load_raw

from retinaunet.evaluation.ap import average_precision, mean_over_classes
from retinaunet.evaluation.froc import froc_from_matches
from retinaunet.evaluation.matching import match_cases
from retinaunet.evaluation.operating_point import operating_curve, propose_threshold
from retinaunet.evaluation.patient import patient_level_ap
from retinaunet.plans import InferencePlan, Plans

__all__ = ["METRICS", "SweepCase", "SweepResult", "load_sweep_cases", "metric_value", "paired_bootstrap",
           "recall_keeping_score", "sweep"]

WBC_IOUS = (1e-5, 0.1, 0.25)
NMS_IOUS = (0.1, 0.3, 0.5)
MIN_SCORES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
METRICS = ("map", "cpm", "patient")
BOOTSTRAP_SAMPLES = 1000  # resamples of the validation cases for the gain's interval
CONFIDENCE = 0.9  # two-sided interval of the gain; its lower end (the 5th percentile) must be above zero
RECALL_IOU = 0.1  # matching IoU for the score threshold that keeps the validation recall
# the inference keys a sweep chooses (written to sweep.json, applied on top of the plans)
SWEPT_KEYS = ("checkpoints", "mirror", "consolidation", "wbc_iou", "consolidation_nms_iou", "min_size",
              "min_score", "max_detections", "postprocess")


@dataclass
class SweepCase:
    """One validation case: its raw prediction and ground truth (preprocessed coordinates)."""

    name: str
    raw: RawPrediction
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. the frame: factors, crop_lo, original_shape

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Preprocessed boxes -> original image index coordinates (needs the frame in ``extra``)."""
        if "factors" not in self.extra:
            raise ValueError(f"{self.name}: its raw prediction lacks the case's frame; predict it again")
        f, lo = np.tile(self.extra["factors"], 2), np.tile(self.extra["crop_lo"], 2)
        shape = np.tile(np.asarray(self.extra["original_shape"], dtype=np.float64), 2)
        return np.clip(np.asarray(boxes, dtype=np.float64).reshape(-1, len(f)) * f + lo, 0, shape)


@dataclass
class SweepResult:
    """The outcome of a sweep: chosen ``inference`` values, the metric, every row evaluated."""

    metric: str
    chosen: dict[str, Any]
    value: float
    planned_value: float
    table: list[dict[str, Any]] = field(default_factory=list)
    num_cases: int = 0
    operating_points: list[dict[str, Any]] = field(default_factory=list)  # proposed score thresholds
    decision: dict[str, Any] = field(default_factory=dict)  # the best other row, its gain and interval, the reason

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "planned_value": self.planned_value,
                "num_cases": self.num_cases, "chosen": self.chosen, "decision": self.decision,
                "operating_points": self.operating_points, "table": self.table}


def load_sweep_cases(folder: str | Path) -> list[SweepCase]:
    """Every ``<case>.npz`` raw prediction with its ground truth in ``folder`` (a fold's ``val_raw``)."""
    cases = []
    for path in sorted(Path(folder).glob("*.npz")):
        raw, extra = load_raw(path)
        cases.append(SweepCase(path.stem, raw, extra.pop("gt_boxes"), extra.pop("gt_labels"), extra))
    return cases


# ------------------------------------------------------------------------------------------------ metric
Prediction = tuple[np.ndarray, np.ndarray, np.ndarray]


def metric_value(metric: str, preds: Sequence[Prediction], cases: Sequence[SweepCase], num_classes: int,
                 iou: float = 0.1) -> float:
    """The validation metric of consolidated predictions: ``map`` (mAP at ``iou``), ``cpm`` (mean FROC
    sensitivity at 1/8..8 FP per case, averaged over classes) or ``patient`` (patient-level AP)."""
    boxes, scores, labels = ([p[i] for p in preds] for i in range(3))
    gt_boxes, gt_labels = [c.gt_boxes for c in cases], [c.gt_labels for c in cases]
    if metric == "map":
        value = float(mean_over_classes(average_precision(boxes, scores, labels, gt_boxes, gt_labels,
                                                          num_classes, (iou,)))[0])
    elif metric == "cpm":
        per_class = [froc_from_matches(match_cases(boxes, scores, labels, gt_boxes, gt_labels, c, (iou,)))["cpm"]
                     for c in range(num_classes)]
        per_class = [v for v in per_class if math.isfinite(v)]
        value = float(np.mean(per_class)) if per_class else float("nan")
    elif metric == "patient":
        value = float(np.nanmean(patient_level_ap(scores, labels, gt_labels, num_classes)))
    else:
        raise ValueError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    return value if math.isfinite(value) else 0.0


# ------------------------------------------------------------------------------------------------ search
def _post(pred: Prediction, settings: InferencePlan, steps: Sequence[str] = STANDARD_STEPS) -> Prediction:
    """The registered post-processing ``steps`` on consolidated (boxes, scores, labels) with ``settings``."""
    out = CasePrediction(*pred)
    view = SimpleNamespace(inference=settings)  # the steps read only the inference section
    for name in steps:
        out = STEPS[name](out, view)
    return out.boxes, out.scores, out.labels


def _volumes(boxes: np.ndarray) -> np.ndarray:
    dim = boxes.shape[1] // 2
    return np.prod(boxes[:, dim:] - boxes[:, :dim], axis=1)


def _consolidation_grid(cases: Sequence[SweepCase], planned: InferencePlan,
                        faster_ensemble: bool = False) -> list[dict[str, Any]]:
    """Consolidation settings within the ensemble the raw views hold. The planned ensemble stays (the whole
    ensemble keeps the planned value, so a plan's limit stays a limit); ``faster_ensemble`` adds fewer
    checkpoints and no mirroring."""
    ranks = max((int(c.raw.member_rank.max(initial=0)) + 1 for c in cases), default=1)
    if faster_ensemble:
        checkpoints = sorted({1, max(1, (ranks + 1) // 2), ranks})
        mirrors = [True, False] if any(c.raw.num_mirrors > 1 for c in cases) else [planned.mirror]
    else:
        checkpoints, mirrors = [ranks], [planned.mirror]
    methods = [("wbc", {"wbc_iou": v}) for v in WBC_IOUS]
    methods += [("nms", {"consolidation_nms_iou": v}) for v in NMS_IOUS]
    return [{"checkpoints": k if k < ranks else planned.checkpoints, "mirror": m, "consolidation": method, **iou}
            for k, m, (method, iou) in itertools.product(checkpoints, mirrors, methods)]


def recall_keeping_score(preds: Sequence[Prediction], cases: Sequence[SweepCase], num_classes: int,
                         iou: float = RECALL_IOU) -> float:
    """The highest score threshold that keeps every true positive of ``preds`` (matched greedily at ``iou``,
    class by class): the lowest true-positive score; 1.0 when nothing is found."""
    lowest = 1.0
    boxes, scores, labels = ([p[i] for p in preds] for i in range(3))
    for c in range(num_classes):
        for m in match_cases(boxes, scores, labels, [x.gt_boxes for x in cases], [x.gt_labels for x in cases],
                             c, (iou,), max_detections=max((len(s) for s in scores), default=1) or 1):
            hits = m.dt_scores[m.dt_matched[0]]
            if hits.size:
                lowest = min(lowest, float(hits.min()))
    return lowest


def _post_grid(cases: Sequence[SweepCase], planned: InferencePlan, max_score: float = 1.0) -> list[dict[str, Any]]:
    """Post-processing settings within the bounds: no cap below the planned one (at least twice the most
    objects of any case), no score threshold above ``max_score`` (the one that keeps the validation recall)."""
    volumes = np.concatenate([_volumes(c.gt_boxes) for c in cases] or [np.zeros(0)])
    smallest = float(volumes.min()) if len(volumes) else 0.0
    sizes = sorted({0.0, round(0.25 * smallest, 3), round(0.5 * smallest, 3)})
    floor = int(planned.max_detections)
    most = max((len(c.gt_boxes) for c in cases), default=1)
    dets = sorted({d for d in (floor, 2 * max(1, most), 5 * max(1, most), 2 * floor) if d >= floor})
    scores = sorted({s for s in MIN_SCORES if s <= max_score} | ({planned.min_score} if planned.min_score <= max_score
                                                                  else set()))
    return [{"min_size": s, "min_score": t, "max_detections": d}
            for s, t, d in itertools.product(sizes, scores, dets)]


def _settings(base: InferencePlan, **values: Any) -> InferencePlan:
    return replace(base, **values)


def paired_bootstrap(metric: str, preds: Sequence[Prediction], baseline: Sequence[Prediction],
                     cases: Sequence[SweepCase], num_classes: int, samples: int = BOOTSTRAP_SAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """The gain of ``preds`` over ``baseline`` (the metric on all ``cases``) and its ``confidence`` interval
    from ``samples`` resamplings of the cases with replacement, both predictions on the same resample."""
    n = len(cases)
    gain = metric_value(metric, preds, cases, num_classes) - metric_value(metric, baseline, cases, num_classes)
    rng = np.random.default_rng(seed)
    gains = np.empty(samples)
    for b in range(samples):
        pick = rng.integers(0, n, n)
        sub = [cases[i] for i in pick]
        gains[b] = (metric_value(metric, [preds[i] for i in pick], sub, num_classes)
                    - metric_value(metric, [baseline[i] for i in pick], sub, num_classes))
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(gains, [tail, 1.0 - tail])
    return {"gain": round(float(gain), 6), "interval": [round(float(lo), 6), round(float(hi), 6)],
            "confidence": confidence, "samples": samples, "cases": n,
            "share_of_resamples_with_gain": round(float(np.mean(gains > 0)), 4)}


def sweep(cases: Sequence[SweepCase], plans: Plans, metric: str = "map",
          progress: Callable[[str], None] | None = None, target_sensitivity: float | None = 0.9,
          target_fp: float | None = 1.0, faster_ensemble: bool = False,
          samples: int = BOOTSTRAP_SAMPLES) -> SweepResult:
    """Search the consolidation and post-processing settings on ``cases`` (see the module docstring).

    With the chosen settings (but no score threshold) it also proposes the score thresholds that reach
    ``target_sensitivity`` and keep false positives per case at most ``target_fp`` (operating points).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    if not cases:
        raise ValueError("no validation cases with raw predictions to sweep over")
    planned = plans.inference
    table: list[dict[str, Any]] = []

    def row(stage: str, settings: InferencePlan, preds: list[Prediction], **extra: Any) -> dict[str, Any]:
        value = metric_value(metric, preds, cases, plans.num_classes)
        entry = {"stage": stage, **{k: getattr(settings, k) for k in SWEPT_KEYS if k != "postprocess"},
                 **extra, metric: round(value, 6),
                 "boxes_per_case": round(sum(len(p[1]) for p in preds) / len(cases), 3)}
        table.append(entry)
        return entry

    def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return min(rows, key=lambda r: (-r[metric], r["boxes_per_case"]))

    # the planner's settings as they stand (their own post-processing steps)
    planned_preds = [_post(consolidate_raw(c.raw, planned), planned, planned.postprocess) for c in cases]
    planned_row = row("planned", planned, planned_preds, postprocess=list(planned.postprocess))

    stage1 = []
    consolidated: dict[int, list[Prediction]] = {}
    for values in _consolidation_grid(cases, planned, faster_ensemble):
        settings = _settings(planned, **values)
        preds = [consolidate_raw(c.raw, settings) for c in cases]
        consolidated[len(table)] = preds
        preds_capped = [_post(p, settings, ["max_detections"]) for p in preds]
        stage1.append(row("consolidation", settings, preds_capped, postprocess=["max_detections"]))
        if progress:
            progress(f"consolidation {values}")
    top = best(stage1)
    top_index = table.index(top)
    base = _settings(planned, **{k: top[k] for k in ("checkpoints", "mirror", "consolidation", "wbc_iou",
                                                     "consolidation_nms_iou")})
    keep_recall = recall_keeping_score([_post(p, base, ["max_detections"]) for p in consolidated[top_index]], cases,
                                       plans.num_classes)
    stage2, stage2_preds = [], {}
    for values in _post_grid(cases, planned, keep_recall):
        settings = _settings(base, **values)
        preds = [_post(p, settings) for p in consolidated[top_index]]
        stage2_preds[len(table)] = preds
        stage2.append(row("postprocess", settings, preds, postprocess=list(STANDARD_STEPS)))
    candidate = best(stage2)
    decision: dict[str, Any] = {"candidate": table.index(candidate), "faster_ensemble": faster_ensemble,
                                "score_threshold_bound": round(keep_recall, 6),
                                "max_detections_floor": int(planned.max_detections)}
    if candidate[metric] <= planned_row[metric]:
        chosen_row = planned_row
        decision["reason"] = (f"no setting beat the planned {metric} ({planned_row[metric]:.4f}) on {len(cases)} "
                              f"validation case(s); the planned settings stay")
    else:
        boot = paired_bootstrap(metric, stage2_preds[table.index(candidate)], planned_preds, cases,
                                plans.num_classes, samples)
        decision.update(boot)
        candidate["gain_interval"] = boot["interval"]
        lo, hi = boot["interval"]
        if lo > 0:
            chosen_row = candidate
            decision["reason"] = (f"the best setting gains {boot['gain']:+.4f} {metric} on {len(cases)} validation "
                                  f"case(s), {int(100 * CONFIDENCE)}% interval [{lo:+.4f}, {hi:+.4f}] over "
                                  f"{samples} resamples: the gain holds, so it replaces the planned settings")
        else:
            chosen_row = planned_row
            decision["reason"] = (f"the best setting gains {boot['gain']:+.4f} {metric} on {len(cases)} validation "
                                  f"case(s), but its {int(100 * CONFIDENCE)}% interval [{lo:+.4f}, {hi:+.4f}] over "
                                  f"{samples} resamples reaches zero: the planned settings stay")
    decision["chosen"] = "swept" if chosen_row is not planned_row else "planned"
    chosen = {k: chosen_row[k] for k in SWEPT_KEYS}
    final = _settings(planned, **{k: v for k, v in chosen.items()})
    open_preds = [_post(consolidate_raw(c.raw, final), replace(final, min_score=0.0), final.postprocess)
                  for c in cases]
    curve = operating_curve(*([p[i] for p in open_preds] for i in range(3)), [c.gt_boxes for c in cases],
                            [c.gt_labels for c in cases], plans.num_classes)
    points = []
    if target_sensitivity is not None:
        points.append(propose_threshold(*curve, len(cases), target_sensitivity=target_sensitivity))
    if target_fp is not None:
        points.append(propose_threshold(*curve, len(cases), target_fp=target_fp))
    logger.info(f"sweep over {len(cases)} validation case(s), {len(table)} settings: {decision['reason']}")
    return SweepResult(metric, chosen, float(chosen_row[metric]), float(planned_row[metric]), table, len(cases),
                       points, decision)
