"""Post-processing steps: ordered, named, configured from the plans, applied on every prediction path.

A step takes a consolidated :class:`~retinaunet.inference.predictor.CasePrediction` (preprocessed coordinates) and
returns a new one. ``plans.inference.postprocess`` lists the steps to run, in order (none by default);
each reads its settings from the ``inference`` section. :func:`retinaunet.inference.pipeline.PredictionRun` applies
them to `rud_predict`'s cases and to the trainer's validation and test cases alike, so a step added here
(or chosen by a sweep over validation predictions) reaches every result.

A new step: a function ``(pred, plans) -> pred`` decorated with ``@register_step("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from retinaunet.inference.predictor import CasePrediction

from retinaunet.plans import Plans, PlansError

__all__ = ["STEPS", "STANDARD_STEPS", "register_step", "build_steps", "apply_steps"]

# the steps a sweep tunes, in their order
STANDARD_STEPS = ["min_size", "min_score", "max_detections"]

Step = Callable[[CasePrediction, Plans], CasePrediction]
STEPS: dict[str, Step] = {}


def register_step(name: str) -> Callable[[Step], Step]:
    def wrap(fn: Step) -> Step:
        if name in STEPS:
            raise ValueError(f"post-processing step '{name}' registered twice")
        STEPS[name] = fn
        return fn

    return wrap


def _keep(pred: CasePrediction, keep: np.ndarray) -> CasePrediction:
    return replace(pred, boxes=pred.boxes[keep], scores=pred.scores[keep], labels=pred.labels[keep])


@register_step("min_size")
def min_size(pred: CasePrediction, plans: Plans) -> CasePrediction:
    """Drop boxes smaller than ``inference.min_size`` voxels (pixels in 2D) at the target spacing."""
    boxes = np.asarray(pred.boxes, dtype=np.float64)
    dim = boxes.shape[1] // 2
    volume = np.prod(np.clip(boxes[:, dim:] - boxes[:, :dim], 0, None), axis=1)
    return _keep(pred, np.flatnonzero(volume >= plans.inference.min_size))


@register_step("min_score")
def min_score(pred: CasePrediction, plans: Plans) -> CasePrediction:
    """Drop the consolidated boxes scoring below ``inference.min_score``."""
    return _keep(pred, np.flatnonzero(np.asarray(pred.scores) >= plans.inference.min_score))


@register_step("max_detections")
def max_detections(pred: CasePrediction, plans: Plans) -> CasePrediction:
    """Keep the ``inference.max_detections`` best boxes of the case."""
    order = np.argsort(-np.asarray(pred.scores), kind="stable")[: plans.inference.max_detections]
    return _keep(pred, np.sort(order))


def build_steps(plans: Plans) -> list[tuple[str, Step]]:
    """The plans' ``inference.postprocess`` steps, in order; PlansError names an unknown step."""
    unknown = [n for n in plans.inference.postprocess if n not in STEPS]
    if unknown:
        raise PlansError(f"plans.json: inference.postprocess names unknown step(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(STEPS))}")
    return [(n, STEPS[n]) for n in plans.inference.postprocess]


def apply_steps(pred: CasePrediction, steps: list[tuple[str, Step]], plans: Plans) -> CasePrediction:
    for _, step in steps:
        pred = step(pred, plans)
    return pred
