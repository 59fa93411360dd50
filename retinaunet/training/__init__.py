"""Training: the trainer of one fold, its loader, steps, checkpoints and curves."""

from __future__ import annotations


def trained_seconds(history: list[dict]) -> float:
    """Seconds of training steps in a run's history (each epoch's steps, not its validation): what
    ``rud_train --max-minutes`` spends."""
    return float(sum(float(e.get("seconds") or 0.0) for e in history))
