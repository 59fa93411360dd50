"""Cropping to the non-zero region of an image (all channels together)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["nonzero_box", "crop_to_box"]


def nonzero_box(images: np.ndarray) -> list[list[int]]:
    """Bounding box ``[[lo, hi) per axis]`` of the voxels of ``images: ndarray[C, *S]`` non-zero in any
    channel; the whole image when every voxel is zero."""
    mask = np.any(images != 0, axis=0)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other)) if other else np.flatnonzero(mask)
        box.append([int(hits[0]), int(hits[-1]) + 1] if hits.size else [0, int(mask.shape[axis])])
    return box


def crop_to_box(array: np.ndarray, box: Sequence[Sequence[int]]) -> np.ndarray:
    """The trailing spatial axes of ``array`` (``[..., *S]``) cut to ``box`` (a view)."""
    lead = array.ndim - len(box)
    return array[(slice(None),) * lead + tuple(slice(lo, hi) for lo, hi in box)]
