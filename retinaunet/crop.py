"""Cropping a case before it is resampled: to the non-zero region, or for CT to the body.

``nonzero_box`` keeps every voxel that is non-zero in any channel. In CT air is -1000 HU, so that box is the
whole scan: ``body_box`` instead keeps the patient, the voxels above a threshold (-500 HU: soft tissue and
bone, not air, lung or the padding outside the scanner's field of view) in the largest connected component,
which leaves out the air around the body, a table that does not touch it and the padding. The component is
found on a grid subsampled to about 2 mm (cheap and memory-light on a 512 x 512 x 400 scan), and the box is
widened by one sampling step and a margin in mm. An image without one dominant component (the largest under
``BODY_DOMINANCE`` times the second: scattered objects of a size, a CT region without the body's outline)
has no body box, and keeps the non-zero crop. ``case_crop`` applies a plan's
choice and always widens the box to hold every labelled voxel, so a crop never cuts an object of a training
case.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["nonzero_box", "body_box", "case_crop", "crop_to_box", "union_box", "BODY_SAMPLING_MM",
           "BODY_DOMINANCE"]

BODY_SAMPLING_MM = 2.0  # the body mask is computed on a grid of about this spacing
BODY_DOMINANCE = 3.0  # the body outweighs every other component above the threshold this many times


def _mask_box(mask: np.ndarray) -> list[list[int]] | None:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other)) if other else np.flatnonzero(mask)
        if not hits.size:
            return None
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def nonzero_box(images: np.ndarray) -> list[list[int]]:
    """Bounding box ``[[lo, hi) per axis]`` of the voxels of ``images: ndarray[C, *S]`` non-zero in any
    channel; the whole image when every voxel is zero."""
    box = _mask_box(np.any(images != 0, axis=0))
    return box if box is not None else [[0, int(n)] for n in images.shape[1:]]


def body_box(image: np.ndarray, spacing: Sequence[float], threshold: float = -500.0, margin_mm: float = 5.0
             ) -> list[list[int]] | None:
    """Box ``[[lo, hi) per axis]`` of the body in one CT channel ``image: ndarray[*S]`` (HU) with ``spacing``
    (mm, array order): the largest connected component above ``threshold``, found on a grid of about
    ``BODY_SAMPLING_MM``, widened by one sampling step and ``margin_mm``. None when no voxel is above, or
    when the largest component is under ``BODY_DOMINANCE`` times the second (no dominant body)."""
    step = [max(1, int(BODY_SAMPLING_MM / float(s) + 1e-6)) for s in spacing]
    sampled = image[tuple(slice(None, None, k) for k in step)] > threshold
    labels, count = ndimage.label(sampled)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    if count > 1 and sizes[largest] < BODY_DOMINANCE * np.partition(sizes, -2)[-2]:
        return None
    box = _mask_box(labels == largest)
    out = []
    for (lo, hi), k, s, n in zip(box, step, spacing, image.shape):
        pad = k + int(np.ceil(margin_mm / float(s)))
        out.append([max(0, lo * k - pad), min(int(n), (hi - 1) * k + 1 + pad)])
    return out


def union_box(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> list[list[int]]:
    """The smallest box holding boxes ``a`` and ``b`` (``[[lo, hi) per axis]``)."""
    return [[min(int(x[0]), int(y[0])), max(int(x[1]), int(y[1]))] for x, y in zip(a, b)]


def case_crop(images: np.ndarray, spacing: Sequence[float], method: str = "nonzero", channel: int = 0,
              threshold: float = -500.0, margin_mm: float = 5.0, labels: np.ndarray | None = None
              ) -> list[list[int]]:
    """The crop of one case (training and prediction alike): ``method`` "nonzero" (:func:`nonzero_box`) or
    "body" (:func:`body_box` of channel ``channel``; the non-zero box where no voxel is above the threshold).

    ``labels``: the instance map ``[*S]`` of a training case; the box is widened to hold every labelled
    voxel, so no object is ever cut.
    """
    if method == "body":
        box = body_box(images[channel], spacing, threshold, margin_mm) or nonzero_box(images)
    elif method == "nonzero":
        box = nonzero_box(images)
    else:
        raise ValueError(f"unknown crop method '{method}'; use 'nonzero' or 'body' in plans.json")
    if labels is not None:
        objects = _mask_box(labels > 0)
        if objects is not None:
            box = union_box(box, objects)
    return box


def crop_to_box(array: np.ndarray, box: Sequence[Sequence[int]]) -> np.ndarray:
    """The trailing spatial axes of ``array`` (``[..., *S]``) cut to ``box`` (a view)."""
    lead = array.ndim - len(box)
    return array[(slice(None),) * lead + tuple(slice(lo, hi) for lo, hi in box)]
