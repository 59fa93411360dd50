"""Clipping boxes to an image and boxes of the objects in an instance map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

__all__ = ["clip_boxes", "boxes_from_instance_map"]


def clip_boxes(boxes: Tensor, shape: Sequence[int]) -> Tensor:
    """Clip boxes to an image of ``shape`` (half-open: coordinates end up in ``[0, shape[k]]``).

    boxes: Tensor[N, 2*dim], shape: ``dim`` ints (array order) -> new Tensor[N, 2*dim].
    """
    dim = boxes.shape[-1] // 2
    if len(shape) != dim:
        raise ValueError(f"shape {tuple(shape)} has {len(shape)} axes, boxes have {dim}")
    upper = torch.as_tensor([float(s) for s in shape] * 2, dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), upper)


def boxes_from_instance_map(inst: np.ndarray) -> dict[int, np.ndarray]:
    """Tight half-open box of every instance id > 0 (one pass, ``scipy.ndimage.find_objects``).

    inst: ndarray[*S] of integer ids (0 background) -> {id: ndarray[2*dim] int64}; a voxel at index i
    spans [i, i + 1). Ids that do not occur are absent.
    """
    inst = np.asarray(inst)
    if inst.dtype == bool:
        inst = inst.astype(np.int32)
    elif not np.issubdtype(inst.dtype, np.integer):
        if not np.all(np.mod(inst, 1) == 0):
            raise ValueError("instance map must hold integer ids")
        inst = inst.astype(np.int64)
    boxes: dict[int, np.ndarray] = {}
    if inst.size == 0 or inst.max(initial=0) <= 0:
        return boxes
    if inst.min() < 0:
        inst = np.where(inst < 0, 0, inst)
    for index, slices in enumerate(ndimage.find_objects(inst)):
        if slices is None:
            continue
        lo = [s.start for s in slices]
        hi = [s.stop for s in slices]
        boxes[index + 1] = np.asarray(lo + hi, dtype=np.int64)
    return boxes
