"""PR and FROC curves as PNG files (matplotlib's Agg canvas, no display or pyplot state needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from retinaunet.io import atomic_path

__all__ = ["plot_froc", "plot_pr_curves", "save_figure", "variant_style"]


VARIANT_STYLES = [("s", "--"), ("^", ":"), ("D", "-."), ("v", (0, (5, 1))), ("P", (0, (1, 1))),
                  ("X", (0, (3, 1, 1, 1)))]


def variant_style(model: str, models: Sequence[str]) -> tuple[str, object]:
    """(marker, line style) of a study's model: a detector ``o`` and a solid line; a variant (``base+name``) its
    own hollow-marker style by name order among the variants of ``models``, the same in every panel."""
    if "+" not in model:
        return "o", "-"
    variants = sorted({m for m in models if "+" in m})
    return VARIANT_STYLES[variants.index(model) % len(VARIANT_STYLES)]


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Render and write atomically (temporary name, then rename)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return Path(path)


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str = "Precision-recall"
) -> Path:
    """One PR curve per class: ``{label: (recall[D], precision[D])}`` (precision non-increasing)."""
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    for label, (recall, precision) in curves.items():
        if len(recall) and np.isnan(recall).all():
            ax.plot([], [], label=f"{label} (no objects)")
        elif len(recall):
            # step curve starting at recall 0 with the best precision
            ax.step(np.concatenate([[0.0], recall]), np.concatenate([precision[:1], precision]), where="pre",
                    label=label)
        else:
            ax.plot([], [], label=f"{label} (no detections)")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_froc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], rates: Sequence[float], path: str | os.PathLike,
    title: str = "FROC",
) -> Path:
    """One FROC curve per class: ``{label: (fp_per_case[K], sensitivity[K])}``, log x-axis over ``rates``."""
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    lo, hi = min(rates) / 2, max(rates) * 2
    for label, (fp, sens) in curves.items():
        if len(sens) and np.isnan(sens).all():
            ax.plot([], [], label=f"{label} (no objects)")
            continue
        fp = np.concatenate([[lo], np.maximum(fp, lo)]) if len(fp) else np.array([lo, hi])
        sens = np.concatenate([[0.0], sens]) if len(sens) else np.zeros(2)
        ax.step(np.append(fp, hi), np.append(sens, sens[-1]), where="post", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(rates), [f"{r:g}" for r in rates])
    ax.set(xlim=(lo, hi), ylim=(0, 1.02), xlabel="false positives per case", ylabel="sensitivity", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)
