"""Instance masks of detected boxes from the segmentation output (``rud_predict --save-instances``).

A detector with a segmentation output (Retina U-Net, DetU-Net) labels voxels by class; its boxes say where
the objects are. The instance map joins both: the voxels of box k (the JSON's ``boxes[k]``, original index
space, the voxels whose centres lie in it as in ``--save-boxes``) that the segmentation gives the box's class
hold k + 1; 0 is background. Where boxes overlap, the higher-scoring box (the earlier one) keeps the voxel.
:func:`box_mask` is that box painting alone (``--save-boxes``); `.export` writes both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["box_mask", "instance_map"]


def instance_map(seg: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``uint16[*seg.shape]``: id k+1 on the voxels of ``boxes[k]`` whose segmentation is class ``labels[k]``.

    seg: argmax label map in the boxes' space (0 background, c+1 class c); boxes: [K, 2*dim] sorted by
    decreasing score; labels: [K] classes from 0.
    """
    dim = seg.ndim
    out = np.zeros(seg.shape, dtype=np.uint16)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * dim)[: np.iinfo(np.uint16).max]
    for k in range(len(boxes) - 1, -1, -1):  # the best box painted last
        region = box_mask(boxes[k: k + 1], seg.shape) > 0
        out[region & (seg == int(labels[k]) + 1)] = k + 1
    return out


def box_mask(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``uint16[*shape]``: voxels whose centre lies in ``boxes[k]`` (original index coords) hold k+1.

    At least the voxel at the box centre is marked; earlier boxes (higher scores) are painted last.
    """
    dim = len(shape)
    out = np.zeros(tuple(shape), dtype=np.uint16)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * dim)[: np.iinfo(np.uint16).max]
    for k in range(len(boxes) - 1, -1, -1):
        lo = np.ceil(boxes[k, :dim] - 0.5).astype(np.int64)
        hi = np.ceil(boxes[k, dim:] - 0.5).astype(np.int64)
        centre = np.floor((boxes[k, :dim] + boxes[k, dim:]) / 2).astype(np.int64)
        lo, hi = np.where(hi > lo, lo, centre), np.where(hi > lo, hi, centre + 1)
        lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
        out[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))] = k + 1
    return out
