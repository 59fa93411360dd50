"""``gallery.png``: the first cases of a prediction run with their boxes, to look at rather than read.

One panel per case: the first modality (2D), or in 3D the slice through the centre of the case's top box
(the middle slice when it has none), with every box above ``min_score`` that crosses the shown slice
drawn in its class colour and labelled with class and score. Boxes are in the original image's array-index
space, as in the prediction JSONs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from retinaunet.evaluation.plots import save_figure

__all__ = ["GALLERY_NAME", "GalleryPanel", "gallery_panel", "write_gallery"]

GALLERY_NAME = "gallery.png"
GALLERY_CASES = 8
COLOURS = ("tab:red", "tab:cyan", "tab:orange", "tab:green", "tab:purple", "tab:olive")


@dataclass
class GalleryPanel:
    """What one panel shows: a 2D image, the in-plane boxes ``[N, 4]`` (y0, x0, y1, x1) and their labels."""

    case: str
    image: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    slice_index: int | None = None


def gallery_panel(case: str, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                  min_score: float = 0.5) -> GalleryPanel:
    """The panel of one case: image ``[*S]`` (2D or 3D) and its boxes ``[N, 2*dim]`` in the image's
    array-index space (as the prediction JSONs hold them), scores ``[N]`` and labels ``[N]``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * image.ndim)
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    keep = scores >= min_score
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if image.ndim == 2:
        return GalleryPanel(case, image, boxes, scores, labels)
    if len(scores):
        top = int(np.argmax(scores))
        z = int(np.clip((boxes[top, 0] + boxes[top, 3]) / 2, 0, image.shape[0] - 1))
    else:
        z = image.shape[0] // 2
    crosses = (boxes[:, 0] <= z) & (boxes[:, 3] > z)
    inplane = boxes[crosses][:, [1, 2, 4, 5]]
    return GalleryPanel(case, image[z], inplane, scores[crosses], labels[crosses], slice_index=z)


def write_gallery(panels: Sequence[GalleryPanel], class_names: Sequence[str], path: str | os.PathLike) -> Path:
    """A grid of up to ``GALLERY_CASES`` panels as one PNG (written atomically)."""
    panels = list(panels)[:GALLERY_CASES]
    cols = min(4, max(1, len(panels)))
    rows = max(1, -(-len(panels) // cols))
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows))
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i >= len(panels):
            continue
        p = panels[i]
        lo, hi = np.percentile(p.image, [1, 99]) if p.image.size else (0.0, 1.0)
        ax.imshow(p.image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        for (y0, x0, y1, x1), score, label in zip(p.boxes, p.scores, p.labels):
            colour = COLOURS[int(label) % len(COLOURS)]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=1.2))
            name = class_names[int(label)] if int(label) < len(class_names) else str(label)
            ax.text(x0 - 0.5, y0 - 1.5, f"{name} {score:.2f}", color=colour, fontsize=7, va="bottom")
        where = f", slice {p.slice_index}" if p.slice_index is not None else ""
        ax.set_title(f"{p.case}{where}", fontsize=8)
    fig.suptitle("detections with score >= 0.5", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
