"""A training-time budget as a plan input: the schedule (epochs x batches) sized from the measured step time.

``rud_plan --train-minutes N`` measures one training step of the planned network, patch and batch on this
machine (:func:`retinaunet.planning.measure.measure_step_seconds`) and fits ``N`` minutes of such steps:
the planned number of epochs (each ends with a validation, which the planner already weighed against the
training time), fewer when an epoch would hold under ``MIN_BATCHES_PER_EPOCH`` batches. Without the option
the planner's schedule stands (about five minutes on a CPU, the paper's 100 x 200 on a GPU).
"""

from __future__ import annotations

import dataclasses
import math

from retinaunet.plans import Plans

__all__ = ["budget_schedule", "apply_train_minutes", "MIN_BATCHES_PER_EPOCH"]

MIN_BATCHES_PER_EPOCH = 20  # a shorter epoch validates more often than it trains


def budget_schedule(plans: Plans, minutes: float, step_seconds: float, device: str) -> tuple[int, int, str]:
    """(epochs, batches per epoch, reason) for ``minutes`` of training steps of ``step_seconds`` each."""
    if not minutes > 0:
        raise ValueError(f"--train-minutes must be positive, got {minutes}")
    steps = max(1, int(60.0 * minutes / max(step_seconds, 1e-6)))
    planned = plans.training.epochs
    epochs = max(1, min(planned, steps // MIN_BATCHES_PER_EPOCH))
    batches = int(math.ceil(steps / epochs))
    fewer = (f", fewer than the planned {planned} so an epoch holds at least {MIN_BATCHES_PER_EPOCH} batches"
             if epochs < planned else " (the planned number of epochs)")
    reason = (f"--train-minutes {minutes:g}: {steps} steps at {step_seconds:.3f} s per step, measured on {device} "
              f"(the plan's network, patch and batch; data loading not included) -> {epochs} epochs{fewer} x "
              f"{batches} batches; validations, the sweep and test prediction come on top")
    return epochs, batches, reason


def apply_train_minutes(plans: Plans, minutes: float, step_seconds: float, device: str) -> Plans:
    """Set the plans' schedule for the budget and record the reason (the planned one follows it)."""
    epochs, batches, reason = budget_schedule(plans, minutes, step_seconds, device)
    planned = plans.reasons.get("training", "")
    plans.training = dataclasses.replace(plans.training, epochs=epochs, batches_per_epoch=batches)
    plans.reasons["training"] = reason + (f"; without a budget: {planned}" if planned else "")
    return plans
