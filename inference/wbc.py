"""Weighted box clustering (WBC, paper section 3.2): consolidating the boxes of many views of one case.

The views of a case (ensemble members x test-time mirrorings x overlapping tiles) predict the same
object several times. Per class, boxes are taken in order of decreasing score; the highest remaining
box and every remaining box whose IoU with it is above ``iou_threshold`` (default 1e-5: any overlap)
form a cluster, which is removed from the list and replaced by one box:

- weight of member i: ``w_i = f_i * a_i * p_i`` with f_i its IoU with the top box (1 for the top box),
  a_i its area/volume and p_i its patch-centre factor (:func:`patch_center_factor`; 1 if untiled);
- ``n_missing = max(0, E - V)`` with E the mean of the members' ``expected_views`` (ensemble members x
  number of tiles covering the box, times mirrorings if each mirroring is its own view) and V the
  number of distinct ``view_ids`` among the members;
- score ``o_s = sum(s w) / (sum(w) + n_missing * mean(w))``: a box that only some of the views found
  is damped;
- coordinates ``o_c = sum(c s w) / sum(s w)``;
- clusters with ``o_s <= min_score`` (0.01) are dropped.

Boxes without volume (max <= min on some axis) are discarded first: they carry no weight.
:func:`weighted_box_clustering` is the numba implementation; :func:`weighted_box_clustering_numpy`
is a plain NumPy implementation of the same algorithm, kept as a readable reference for tests and
the benchmark (``scripts/bench_wbc.py``). :func:`consolidate` chooses WBC or per-class NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from retinaunet.boxes import batched_nms_np, box_iou_np
from retinaunet.boxes.iou import intersection_nb
from retinaunet.plans import InferencePlan

__all__ = [
    "consolidate",
    "patch_center_factor",
    "weighted_box_clustering",
    "weighted_box_clustering_numpy",
]

_DEFAULTS = InferencePlan()  # the one set of inference defaults
PATCH_CENTER_SIGMA = 0.8  # std of the patch-centre Gaussian, in half patch sizes


def patch_center_factor(boxes: np.ndarray, patch_size: Sequence[float]) -> np.ndarray:
    """Down-weighting of boxes far from the centre of the patch they were predicted in.

    boxes: ndarray[N, 2*dim] in patch coordinates, patch_size: dim values -> float[N] in (0, 1]:
    ``mean_d exp(-0.5 ((c_d - p_d/2) / (0.8 p_d/2))^2)`` with c_d the box centre: 1 at the patch
    centre, exp(-0.78) = 0.46 for a box centred on a patch corner, (1 + 0.46)/2 = 0.73 on the middle
    of an edge in 2D.
    Use 1 for boxes of an image that was not tiled.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    dim = boxes.shape[1] // 2
    half = np.asarray(patch_size, dtype=np.float64).reshape(-1)
    if half.size != dim:
        raise ValueError(f"patch_size has {half.size} values, boxes have {dim} dims")
    half = half / 2
    centre = (boxes[:, :dim] + boxes[:, dim:]) / 2
    return np.exp(-0.5 * ((centre - half) / (PATCH_CENTER_SIGMA * half)) ** 2).mean(axis=1)


def _prepare(boxes, scores, labels, view_ids, patch_center_factors, expected_views):
    """Validate, fill defaults, drop boxes without volume; returns float64/int64 contiguous arrays."""
    boxes = np.ascontiguousarray(boxes, dtype=np.float64)
    n = boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[1] % 2:
        raise ValueError(f"boxes must be [N, 2*dim], got {boxes.shape}")
    scores = np.ascontiguousarray(scores, dtype=np.float64).reshape(-1)
    labels = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
    views = np.ascontiguousarray(view_ids, dtype=np.int64).reshape(-1)
    pcf = np.ones(n) if patch_center_factors is None else np.ascontiguousarray(patch_center_factors, np.float64)
    if expected_views is None:
        expected = np.full(n, float(len(np.unique(views))))
    else:
        expected = np.ascontiguousarray(np.broadcast_to(np.asarray(expected_views, np.float64), (n,)))
    for name, a in (("scores", scores), ("labels", labels), ("view_ids", views), ("patch_center_factors", pcf),
                    ("expected_views", expected)):
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    dim = boxes.shape[1] // 2
    valid = np.all(boxes[:, dim:] > boxes[:, :dim], axis=1)
    if valid.all():
        return boxes, scores, labels, views, pcf, expected
    return boxes[valid], scores[valid], labels[valid], views[valid], pcf[valid], expected[valid]


def _empty(columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, columns)), np.zeros(0), np.zeros(0, dtype=np.int64)


def _sort_output(boxes, scores, labels):
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order], labels[order]


@numba.njit(cache=True, nogil=True)
def _sweep_axis(boxes, start, end, dim):
    """Axis along which the boxes of [start, end) are most spread out relative to their largest size."""
    best_axis, best_ratio = 0, -1.0
    for k in range(dim):
        lo, hi, size = np.inf, -np.inf, 0.0
        for i in range(start, end):
            lo = min(lo, boxes[i, k])
            hi = max(hi, boxes[i, k])
            size = max(size, boxes[i, dim + k] - boxes[i, k])
        ratio = (hi - lo) / size
        if ratio > best_ratio:
            best_axis, best_ratio = k, ratio
    return best_axis


@numba.njit(cache=True, nogil=True)
def _first_above(values, x, strict):
    """First index of sorted ``values`` with value > x (strict) or >= x."""
    lo, hi = 0, values.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] > x or (not strict and values[mid] == x):
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, nogil=True)
def _next_alive(skip, pos):
    """First position >= pos not yet clustered (``skip`` links used positions onwards, compressed)."""
    root = pos
    while skip[root] != root:
        root = skip[root]
    while skip[pos] != root:
        skip[pos], pos = root, skip[pos]
    return root


@numba.njit(cache=True, nogil=True)
def _sort_members(member, member_iou, m):
    """Sort member[:m] ascending (and member_iou with it), in place: insertion sort for the usual small
    clusters, argsort for large ones."""
    if m <= 32:
        for a in range(1, m):
            j, iou = member[a], member_iou[a]
            b = a - 1
            while b >= 0 and member[b] > j:
                member[b + 1], member_iou[b + 1] = member[b], member_iou[b]
                b -= 1
            member[b + 1], member_iou[b + 1] = j, iou
    else:
        order = np.argsort(member[:m], kind="mergesort")
        member[:m] = member[:m][order]
        member_iou[:m] = member_iou[:m][order]


@numba.njit(cache=True, nogil=True)
def _summarise(member, member_iou, boxes, scores, vol, pcf, expected, views, seen, cluster, coords):
    """Score o_s of one cluster (members in score order); writes its coordinates o_c into ``coords``."""
    sum_w = 0.0
    sum_sw = 0.0
    sum_expected = 0.0
    distinct = 0
    coords[:] = 0.0
    for t in range(member.shape[0]):
        j = member[t]
        w = member_iou[t] * vol[j] * pcf[j]
        sw = scores[j] * w
        sum_w += w
        sum_sw += sw
        for c in range(boxes.shape[1]):
            coords[c] += boxes[j, c] * sw
        sum_expected += expected[j]
        if seen[views[j]] != cluster:
            seen[views[j]] = cluster
            distinct += 1
    m = member.shape[0]
    n_missing = max(0.0, sum_expected / m - distinct)
    if sum_sw > 0.0:
        coords /= sum_sw
    return sum_sw / (sum_w + n_missing * sum_w / m)


@numba.njit(cache=True, nogil=True)
def _wbc_sorted(boxes, scores, labels, views, pcf, expected, num_views, iou_threshold, min_score):
    """WBC over boxes sorted by (label, decreasing score); returns (boxes, scores, labels) of clusters.

    Candidates of a cluster are found by a sweep: within a class, boxes sorted by their minimum along
    the axis where they are most spread out; a box can only overlap the top box if its minimum lies in
    (top min - largest size, top max). Members are then accumulated in score order.
    """
    n, columns = boxes.shape
    dim = columns // 2
    vol = np.ones(n)
    for i in range(n):
        for k in range(dim):
            vol[i] *= max(boxes[i, dim + k] - boxes[i, k], 0.0)
    seen = np.full(num_views, -1, dtype=np.int64)  # cluster that last counted this view
    out_boxes = np.empty((n, columns))
    out_scores = np.empty(n)
    out_labels = np.empty(n, dtype=np.int64)
    member = np.empty(n, dtype=np.int64)
    member_iou = np.empty(n)
    coords = np.empty(columns)
    count = 0
    start = 0
    while start < n:
        end = start
        while end < n and labels[end] == labels[start]:
            end += 1
        # the class's boxes in sweep order, copied so that the candidate scan reads memory in sequence
        axis = _sweep_axis(boxes, start, end, dim)
        by_min = start + np.argsort(boxes[start:end, axis], kind="mergesort")
        swept = boxes[by_min]
        swept_vol = vol[by_min]
        swept_min = swept[:, axis].copy()
        skip = np.arange(end - start + 1)  # per sweep position: itself if alive, else a later one
        position = np.empty(end - start, dtype=np.int64)
        max_size = 0.0
        for pos in range(end - start):
            position[by_min[pos] - start] = pos
            max_size = max(max_size, swept[pos, dim + axis] - swept[pos, axis])
        for i in range(start, end):
            if skip[position[i - start]] != position[i - start]:
                continue
            first = _first_above(swept_min, boxes[i, axis] - max_size, True)
            last = _first_above(swept_min, boxes[i, dim + axis], False)
            m = 0
            pos = _next_alive(skip, first)
            while pos < last:
                candidate = pos
                pos = _next_alive(skip, pos + 1)
                inter = intersection_nb(boxes, i, swept, candidate, dim)
                if inter <= 0.0:
                    continue
                iou = inter / (vol[i] + swept_vol[candidate] - inter)
                if iou > iou_threshold:
                    member[m] = by_min[candidate]
                    member_iou[m] = iou
                    m += 1
            _sort_members(member, member_iou, m)  # score order, as the reference sums
            for t in range(m):
                skip[position[member[t] - start]] = position[member[t] - start] + 1
            score = _summarise(member[:m], member_iou[:m], boxes, scores, vol, pcf, expected, views, seen, i,
                               coords)
            if score > min_score:
                out_boxes[count] = coords
                out_scores[count] = score
                out_labels[count] = labels[i]
                count += 1
        start = end
    return out_boxes[:count], out_scores[:count], out_labels[:count]


def weighted_box_clustering(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    view_ids: np.ndarray,
    patch_center_factors: np.ndarray | None = None,
    expected_views: np.ndarray | float | None = None,
    iou_threshold: float = _DEFAULTS.wbc_iou,
    min_score: float = 0.01,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted box clustering of one case, per class (numba).

    boxes: [N, 2*dim] (case coordinates), scores: [N], labels: [N] int, view_ids: [N] int (which view
    predicted the box), patch_center_factors: [N] (default 1), expected_views: [N] or a scalar
    (default: the number of distinct view ids) -> (boxes [K, 2*dim], scores [K], labels [K]) sorted by
    decreasing score.

    >>> b, s, l = weighted_box_clustering(boxes, scores, labels, view_ids, pcf, expected_views=8 * 5)
    """
    boxes, scores, labels, views, pcf, expected = _prepare(
        boxes, scores, labels, view_ids, patch_center_factors, expected_views)
    if len(boxes) == 0:
        return _empty(boxes.shape[1])
    order = np.lexsort((-scores, labels))  # by class, then decreasing score (stable)
    if views.min() < 0 or views.max() > 4 * len(views) + 1024:  # only the identity of a view matters
        views = np.unique(views, return_inverse=True)[1].reshape(-1)
    out = _wbc_sorted(boxes[order], scores[order], labels[order], views[order], pcf[order], expected[order],
                      int(views.max()) + 1, float(iou_threshold), float(min_score))
    return _sort_output(*out)


def weighted_box_clustering_numpy(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    view_ids: np.ndarray,
    patch_center_factors: np.ndarray | None = None,
    expected_views: np.ndarray | float | None = None,
    iou_threshold: float = _DEFAULTS.wbc_iou,
    min_score: float = 0.01,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same algorithm in plain NumPy, one vectorised step per cluster (reference and benchmark)."""
    boxes, scores, labels, views, pcf, expected = _prepare(
        boxes, scores, labels, view_ids, patch_center_factors, expected_views)
    dim = boxes.shape[1] // 2
    volume = np.prod(boxes[:, dim:] - boxes[:, :dim], axis=1)
    out_boxes, out_scores, out_labels = [], [], []
    for cls in np.unique(labels):
        remaining = np.nonzero(labels == cls)[0]
        remaining = remaining[np.argsort(-scores[remaining], kind="stable")]
        while remaining.size:
            iou = box_iou_np(boxes[remaining[:1]], boxes[remaining])[0]
            in_cluster = iou > iou_threshold
            members = remaining[in_cluster]
            weights = iou[in_cluster] * volume[members] * pcf[members]
            weighted_scores = scores[members] * weights
            n_missing = max(0.0, expected[members].mean() - len(np.unique(views[members])))
            score = weighted_scores.sum() / (weights.sum() + n_missing * weights.mean())
            if score > min_score:
                out_boxes.append((boxes[members] * weighted_scores[:, None]).sum(axis=0) / weighted_scores.sum())
                out_scores.append(score)
                out_labels.append(cls)
            remaining = remaining[~in_cluster]
    if not out_scores:
        return _empty(boxes.shape[1])
    return _sort_output(np.array(out_boxes), np.array(out_scores), np.array(out_labels, dtype=np.int64))


def consolidate(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    view_ids: np.ndarray,
    patch_center_factors: np.ndarray | None = None,
    expected_views: np.ndarray | float | None = None,
    method: str = "wbc",
    iou_threshold: float | None = None,
    min_score: float = 0.01,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consolidate the boxes of all views of one case by ``method`` "wbc" or "nms" (per class).

    iou_threshold defaults to the plans' ``inference.wbc_iou`` or ``nms_iou`` default; NMS ignores the view
    information and keeps the best box of each overlap group with its own score. Boxes scoring
    <= min_score are dropped either way. Shapes as in :func:`weighted_box_clustering`.
    """
    if method == "wbc":
        return weighted_box_clustering(boxes, scores, labels, view_ids, patch_center_factors, expected_views,
                                       _DEFAULTS.wbc_iou if iou_threshold is None else iou_threshold, min_score)
    if method != "nms":
        raise ValueError(f"unknown consolidation method {method!r}; use 'wbc' or 'nms'")
    boxes, scores, labels, *_ = _prepare(boxes, scores, labels, view_ids, patch_center_factors, expected_views)
    keep = batched_nms_np(boxes, scores, labels, _DEFAULTS.nms_iou if iou_threshold is None else iou_threshold)
    keep = keep[scores[keep] > min_score]
    return _sort_output(boxes[keep], scores[keep], labels[keep])
