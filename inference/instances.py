"""Instance masks of detected boxes from the segmentation output (``rud_predict --save-instances``).

A detector with a segmentation output (Retina U-Net, DetU-Net) labels voxels by class; its boxes say where
the objects are. The instance map joins both: the voxels of box k (the JSON's ``boxes[k]``, original index
space, the voxels whose centres lie in it as in ``--save-boxes``) that the segmentation gives the box's class
hold k + 1; 0 is background. Where boxes overlap, the higher-scoring box (the earlier one) keeps the voxel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["instance_map"]


def instance_map(seg: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``uint16[*seg.shape]``: id k+1 on the voxels of ``boxes[k]`` whose segmentation is class ``labels[k]``.

    seg: argmax label map in the boxes' space (0 background, c+1 class c); boxes: [K, 2*dim] sorted by
    decreasing score; labels: [K] classes from 0.
    """
    from retinaunet.inference.export import box_mask

    dim = seg.ndim
    out = np.zeros(seg.shape, dtype=np.uint16)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * dim)[: np.iinfo(np.uint16).max]
    for k in range(len(boxes) - 1, -1, -1):  # the best box painted last
        region = box_mask(boxes[k: k + 1], seg.shape) > 0
        out[region & (seg == int(labels[k]) + 1)] = k + 1
    return out
