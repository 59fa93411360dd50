"""Greedy non-maximum suppression for 2D and 3D boxes: torch (any device) and numba (numpy).

Both visit boxes in a stable descending-score order (ties keep their input order) and suppress a box
when its IoU with an already kept box of the same group is strictly above the threshold, so they
return the same kept set as the plain sequential loop, in decreasing score order.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from retinaunet.boxes.iou import box_iou, intersection_nb

__all__ = ["nms", "batched_nms", "nms_np", "batched_nms_np"]

# boxes per block: small blocks keep CPU temporaries cache-sized, large ones cut GPU round trips
_BLOCK_CPU = 512
_BLOCK_CUDA = 4096


def _suppression(a: Tensor, b: Tensor, ga: Tensor | None, gb: Tensor | None, thr: float) -> Tensor:
    """Bool[N, M]: box a_i would suppress b_j (IoU above thr, same group)."""
    hit = box_iou(a, b) > thr
    if ga is not None:
        hit &= ga[:, None] == gb[None, :]
    return hit


def _resolve_block(sup: Tensor) -> Tensor:
    """Greedy keep mask of boxes in score order, given sup[i, j] (i < j) = i suppresses j.

    The greedy result is the unique fixed point of ``keep_j = not any_i(keep_i and sup_ij)``; the
    iteration reaches it after at most (length of the longest suppression chain + 1) rounds, each a
    vector-matrix product, so there is no per-box loop and no transfer to the host.
    """
    sup_f = sup.triu(diagonal=1).to(torch.float32)
    keep = torch.ones(sup.shape[0], dtype=torch.bool, device=sup.device)
    for _ in range(sup.shape[0] + 1):
        new = (keep.to(torch.float32) @ sup_f) == 0
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def _nms_torch(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float,
               block: int | None = None) -> Tensor:
    """Blockwise greedy NMS: each block of boxes (in score order) is first filtered by the boxes kept
    in earlier blocks, then resolved on its own suppression matrix."""
    n = boxes.shape[0]
    if block is None:
        block = _BLOCK_CUDA if boxes.is_cuda else _BLOCK_CPU
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if scores.shape != (n,) or (idxs is not None and idxs.shape != (n,)):
        raise ValueError(f"expected scores/idxs of shape ({n},), got {tuple(scores.shape)}")
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes if boxes.is_floating_point() else boxes.float()
    boxes = boxes[order]
    groups = idxs[order] if idxs is not None else None
    thr = float(iou_threshold)

    kept_pos: list[Tensor] = []
    kept_boxes = boxes[:0]
    kept_groups = groups[:0] if groups is not None else None
    for start in range(0, n, block):
        pos = torch.arange(start, min(start + block, n), device=boxes.device)
        blk = boxes[start:start + block]
        grp = groups[start:start + block] if groups is not None else None
        # drop boxes suppressed by boxes kept in earlier blocks (compared in chunks to bound memory)
        for k in range(0, kept_boxes.shape[0], 4 * block):
            if pos.numel() == 0:
                break
            kg = kept_groups[k:k + 4 * block] if kept_groups is not None else None
            alive = ~_suppression(kept_boxes[k:k + 4 * block], blk, kg, grp, thr).any(dim=0)
            pos, blk = pos[alive], blk[alive]
            grp = grp[alive] if grp is not None else None
        if pos.numel() == 0:
            continue
        keep = _resolve_block(_suppression(blk, blk, grp, grp, thr))
        kept_pos.append(pos[keep])
        kept_boxes = torch.cat([kept_boxes, blk[keep]])
        if kept_groups is not None:
            kept_groups = torch.cat([kept_groups, grp[keep]])
    if not kept_pos:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    return order[torch.cat(kept_pos)]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS (torch, CPU or CUDA, vectorised in blocks of boxes).

    boxes: Tensor[N, 2*dim], scores: Tensor[N] -> LongTensor[K] kept indices, decreasing score.
    A box is suppressed when its IoU with a kept higher-scoring box is > ``iou_threshold``.
    """
    return _nms_torch(boxes, scores, None, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group (class and/or image) given by ``idxs``; boxes of other groups never
    suppress each other.

    boxes: Tensor[N, 2*dim], scores: Tensor[N], idxs: Tensor[N] int -> LongTensor[K], decreasing score.
    """
    return _nms_torch(boxes, scores, idxs, iou_threshold)


@numba.njit(cache=True, nogil=True)
def _nms_sorted(boxes: np.ndarray, groups: np.ndarray, thr: float, use_groups: bool) -> np.ndarray:
    """Sequential greedy NMS over boxes already in score order; returns kept positions."""
    n = boxes.shape[0]
    dim = boxes.shape[1] // 2
    vol = np.ones(n)
    for i in range(n):
        for k in range(dim):
            vol[i] *= max(boxes[i, dim + k] - boxes[i, k], 0.0)
    suppressed = np.zeros(n, dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    count = 0
    for i in range(n):
        if suppressed[i]:
            continue
        keep[count] = i
        count += 1
        for j in range(i + 1, n):
            if suppressed[j] or (use_groups and groups[j] != groups[i]):
                continue
            inter = intersection_nb(boxes, i, boxes, j, dim)
            union = vol[i] + vol[j] - inter
            iou = inter / union if union > 0.0 else 0.0
            if iou > thr:
                suppressed[j] = True
    return keep[:count]


def _nms_numpy(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray | None,
               iou_threshold: float) -> np.ndarray:
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    n = boxes.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if scores.shape != (n,) or (idxs is not None and np.shape(idxs) != (n,)):
        raise ValueError(f"expected scores/idxs of shape ({n},), got {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    sorted_boxes = np.ascontiguousarray(boxes[order], dtype=np.float64)
    if idxs is None:
        groups = np.zeros(n, dtype=np.int64)
    else:
        groups = np.ascontiguousarray(np.asarray(idxs)[order], dtype=np.int64)
    kept = _nms_sorted(sorted_boxes, groups, float(iou_threshold), idxs is not None)
    return order[kept].astype(np.int64)


def nms_np(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS (numpy, numba-compiled sequential loop).

    boxes: ndarray[N, 2*dim], scores: ndarray[N] -> ndarray[K] int64 kept indices, decreasing score.
    """
    return _nms_numpy(boxes, scores, None, iou_threshold)


def batched_nms_np(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray,
                   iou_threshold: float) -> np.ndarray:
    """NMS within each group given by ``idxs`` (numpy, numba).

    boxes: ndarray[N, 2*dim], scores: ndarray[N], idxs: ndarray[N] int -> ndarray[K] int64.
    """
    return _nms_numpy(boxes, scores, idxs, iou_threshold)
