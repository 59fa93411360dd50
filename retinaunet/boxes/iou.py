"""Box sizes, volumes and pairwise IoU for 2D and 3D boxes.

A box is ``[min_0, .., min_{d-1}, max_0, .., max_{d-1}]`` in array-index coordinates, half-open:
a one-voxel object at index ``i`` spans ``[i, i + 1)``. IoU uses these extents exactly (no +1).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

__all__ = ["box_size", "box_volume", "box_iou", "box_iou_np"]


def _as_float(boxes: Tensor) -> Tensor:
    return boxes if boxes.is_floating_point() else boxes.float()


def box_size(boxes: Tensor) -> Tensor:
    """Extent per axis.

    boxes: Tensor[N, 2*dim] -> Tensor[N, dim] (``max - min``, negative for malformed boxes).
    """
    dim = boxes.shape[-1] // 2
    return boxes[..., dim:] - boxes[..., :dim]


def box_volume(boxes: Tensor) -> Tensor:
    """Area (2D) or volume (3D); malformed boxes have volume 0.

    boxes: Tensor[N, 2*dim] -> Tensor[N].
    """
    return box_size(boxes).clamp(min=0).prod(dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise intersection over union (torch, any device).

    a: Tensor[N, 2*dim], b: Tensor[M, 2*dim] -> Tensor[N, M]. Integer boxes are computed in float32.
    Pairs whose union is empty get IoU 0.
    """
    a, b = _as_float(a), _as_float(b)
    if a.shape[-1] != b.shape[-1] or a.shape[-1] % 2:
        raise ValueError(f"boxes need the same even number of columns, got {a.shape} and {b.shape}")
    dim = a.shape[-1] // 2
    # contiguous columns: broadcasting strided column views is many times slower on CPU
    ca, cb = a.t().contiguous(), b.t().contiguous()
    inter = None
    for k in range(dim):
        lo = torch.maximum(ca[k, :, None], cb[k, None, :])
        hi = torch.minimum(ca[dim + k, :, None], cb[dim + k, None, :])
        extent = (hi - lo).clamp(min=0)
        inter = extent if inter is None else inter * extent
    vol_a = (ca[dim:] - ca[:dim]).clamp(min=0).prod(dim=0)
    vol_b = (cb[dim:] - cb[:dim]).clamp(min=0).prod(dim=0)
    union = vol_a[:, None] + vol_b[None, :] - inter
    # union is 0 only when inter is 0 too: those pairs get IoU 0
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


@numba.njit(cache=True, nogil=True, inline="always")
def intersection_nb(a: np.ndarray, i: int, b: np.ndarray, j: int, dim: int) -> float:
    """Overlap volume of box ``a[i]`` and box ``b[j]`` (numba; 0 when they do not overlap)."""
    inter = 1.0
    for k in range(dim):
        extent = min(a[i, dim + k], b[j, dim + k]) - max(a[i, k], b[j, k])
        if extent <= 0.0:
            return 0.0
        inter *= extent
    return inter


@numba.njit(cache=True, nogil=True)
def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n, m = a.shape[0], b.shape[0]
    dim = a.shape[1] // 2
    vol_a = np.ones(n)
    for i in range(n):
        for k in range(dim):
            vol_a[i] *= max(a[i, dim + k] - a[i, k], 0.0)
    vol_b = np.ones(m)
    for j in range(m):
        for k in range(dim):
            vol_b[j] *= max(b[j, dim + k] - b[j, k], 0.0)
    out = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            inter = intersection_nb(a, i, b, j, dim)
            if inter > 0.0:
                out[i, j] = inter / (vol_a[i] + vol_b[j] - inter)
    return out


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union (numpy, numba-compiled).

    a: ndarray[N, 2*dim], b: ndarray[M, 2*dim] (any real dtype) -> ndarray[N, M] float64.
    """
    a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1, np.shape(a)[-1])
    b = np.ascontiguousarray(b, dtype=np.float64).reshape(-1, np.shape(b)[-1])
    if a.shape[1] != b.shape[1] or a.shape[1] % 2:
        raise ValueError(f"boxes need the same even number of columns, got {a.shape} and {b.shape}")
    return _iou_matrix(a, b)
