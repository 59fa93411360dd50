"""Choose anchor base sizes per pyramid level (P2-P5) from the training objects' sizes.

The anchors follow `retinaunet.anchors.AnchorGenerator`: at level l an anchor of scale s and ratio r
has in-plane size (b_l s sqrt(r), b_l s / sqrt(r)) (y, x) and, in 3D, z size zb_l s.

Quality of a set of anchors for an object = the IoU of the object's box with the best anchor. With the
levels' strides given (as the planner does), the object lies at random offsets to each level's grid of
anchor centres, as it does in a patch cut anywhere, and the best anchor is the best one on that grid;
without, both are centred on the same point ("shape IoU", an upper bound). Coverage = the share of
objects (and offsets) whose best IoU reaches the positive matching threshold.

The search maximises coverage + mean best IoU: first a geometric ladder (as the paper's 4, 8, 16, 32;
start and factor searched) is fitted to the object sizes, then each level's size is refined by coordinate descent on a
fine geometric grid, keeping levels ordered so small anchors stay on fine levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AnchorPlan", "anchor_shapes", "best_anchor_iou", "grid_iou", "optimise_anchors", "GRID_OFFSETS",
           "DEFAULT_SCALES", "DEFAULT_RATIOS"]

DEFAULT_SCALES = [1.0, 2 ** (1 / 3), 2 ** (2 / 3)]
DEFAULT_RATIOS = [0.5, 1.0, 2.0]
_GRID_STEP = 2 ** (1 / 12)
_MIN_LEVEL_RATIO = 2 ** (1 / 3)  # consecutive levels differ at least by one scale step
_REG = 1e-3  # tie-breaker: prefer a doubling ladder between levels
GRID_OFFSETS = 8  # random placements per object on the real grid


@dataclass
class AnchorPlan:
    """Result of the search: sizes per level (P2..P5), coverage and mean best IoU (weighted by objects)."""

    base_sizes: list[float]
    z_base_sizes: list[float] | None
    coverage: float
    mean_iou: float
    num_objects: int


def _level_shapes(b: float, zb: float | None, scales: Sequence[float], ratios: Sequence[float]) -> np.ndarray:
    """Anchor sizes of one level: [len(scales)*len(ratios), dim] in array order (z, y, x)."""
    rows = []
    for s in scales:
        for r in ratios:
            yx = [b * s * np.sqrt(r), b * s / np.sqrt(r)]
            rows.append(([zb * s] if zb is not None else []) + yx)
    return np.asarray(rows, dtype=np.float64)


def anchor_shapes(base_sizes: Sequence[float], z_base_sizes: Sequence[float] | None,
                  scales: Sequence[float] = DEFAULT_SCALES,
                  ratios: Sequence[float] = DEFAULT_RATIOS) -> np.ndarray:
    """Sizes of all anchors of all levels: ndarray[A, dim], dim = 2 or 3 (z first)."""
    zs = list(z_base_sizes) if z_base_sizes is not None else [None] * len(base_sizes)
    return np.concatenate([_level_shapes(b, z, scales, ratios) for b, z in zip(base_sizes, zs)])


def best_anchor_iou(sizes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Centred IoU of each object with its best anchor: sizes [N, dim], anchors [A, dim] -> [N]."""
    if len(sizes) == 0:
        return np.zeros(0)
    inter = np.prod(np.minimum(sizes[:, None, :], anchors[None, :, :]), axis=-1)
    union = np.prod(sizes, axis=-1)[:, None] + np.prod(anchors, axis=-1)[None, :] - inter
    return (inter / union).max(axis=1)


def grid_iou(sizes: np.ndarray, shapes: np.ndarray, stride: Sequence[float], offsets: np.ndarray) -> np.ndarray:
    """Best IoU of objects ``sizes [N, dim]`` centred at ``offsets [N, dim]`` with anchors of ``shapes [A, dim]``
    on one level's grid of centres ``(i + 0.5) * stride``: the nearest centre on every axis is the best place
    for each shape (the overlap along an axis only falls with the distance of the centres). -> [N]."""
    t = np.asarray(stride, dtype=np.float64)[None]
    d = np.abs(offsets - (np.floor(offsets / t) + 0.5) * t)  # to the nearest anchor centre: [N, dim]
    lo = np.maximum(-sizes[:, None] / 2, d[:, None] - shapes[None] / 2)
    hi = np.minimum(sizes[:, None] / 2, d[:, None] + shapes[None] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = np.prod(sizes, axis=1)[:, None] + np.prod(shapes, axis=1)[None] - inter
    return (inter / union).max(axis=1)


class _Search:
    """Objective bookkeeping for the coordinate descent (unique sizes with weights).

    With ``strides`` (per level) each object is scored at ``GRID_OFFSETS`` random offsets to the anchor grids
    (the real grid, where a patch is cut anywhere); without, centred on an anchor.
    """

    def __init__(self, sizes: np.ndarray, weights: np.ndarray, scales, ratios, iou_high: float,
                 strides: Sequence[Sequence[int]] | None = None, seed: int = 0) -> None:
        self.sizes, self.w = sizes, weights / weights.sum()
        self.scales, self.ratios, self.high = scales, ratios, iou_high
        self.strides, self.offsets = strides, None
        if strides is not None:
            top = np.max(np.asarray(strides, dtype=np.float64), axis=0)
            self.sizes = np.repeat(sizes, GRID_OFFSETS, axis=0)
            self.w = np.repeat(self.w, GRID_OFFSETS) / GRID_OFFSETS
            self.offsets = np.random.default_rng(seed).uniform(0, 1, size=self.sizes.shape) * top[None]

    def level_iou(self, lvl: int, b: float, zb: float | None) -> np.ndarray:
        shapes = _level_shapes(b, zb, self.scales, self.ratios)
        if self.strides is None:
            return best_anchor_iou(self.sizes, shapes)
        return grid_iou(self.sizes, shapes, self.strides[lvl], self.offsets)

    def score(self, iou: np.ndarray, b: Sequence[float], zb: Sequence[float] | None) -> float:
        reg = sum((np.log2(b[i + 1] / b[i]) - 1) ** 2 for i in range(len(b) - 1))
        if zb is not None:
            reg += sum((np.log2(zb[i + 1] / zb[i]) - 1) ** 2 for i in range(len(zb) - 1))
        return float(self.w @ (iou >= self.high - 1e-9)) + float(self.w @ iou) - _REG * reg

    def total_iou(self, b: Sequence[float], zb: Sequence[float] | None) -> np.ndarray:
        zs = zb if zb is not None else [None] * len(b)
        return np.max([self.level_iou(i, bi, zi) for i, (bi, zi) in enumerate(zip(b, zs))], axis=0)


def _grid(lo: float, hi: float) -> np.ndarray:
    n = int(np.ceil(np.log(hi / lo) / np.log(_GRID_STEP))) + 1
    return lo * _GRID_STEP ** np.arange(max(n, 1))


def _descend(search: _Search, b: list[float], zb: list[float] | None, grid_b: np.ndarray,
             grid_z: np.ndarray | None, floors: tuple[list[float], list[float] | None], sweeps: int = 4) -> None:
    """Coordinate descent over each level's in-plane (and z) size, levels kept ordered."""
    n = len(b)
    for _ in range(sweeps):
        changed = False
        for axis_sizes, grid, floor in ((b, grid_b, floors[0]), (zb, grid_z, floors[1])):
            if axis_sizes is None:
                continue
            for lvl in range(n):
                others = [search.level_iou(i, b[i], zb[i] if zb is not None else None) for i in range(n) if i != lvl]
                rest = np.max(others, axis=0) if others else np.zeros(len(search.w))
                lo = max(axis_sizes[lvl - 1] * _MIN_LEVEL_RATIO if lvl > 0 else 0.0, floor[lvl])
                hi = axis_sizes[lvl + 1] / _MIN_LEVEL_RATIO if lvl < n - 1 else np.inf
                best_v, best_s = axis_sizes[lvl], -np.inf
                for v in [axis_sizes[lvl]] + [g for g in grid if lo <= g <= hi]:
                    axis_sizes[lvl] = v
                    zl = zb[lvl] if zb is not None else None
                    s = search.score(np.maximum(rest, search.level_iou(lvl, b[lvl], zl)), b, zb)
                    if s > best_s + 1e-12:
                        best_v, best_s = v, s
                changed |= best_v != axis_sizes[lvl]
                axis_sizes[lvl] = best_v
        if not changed:
            break


def _best_ladder(search: _Search, starts: np.ndarray, assign, num_levels: int) -> list[float]:
    """Best ladder start * factor**l (factor 1.26..4) where ``assign(ladder) -> (b, zb)``."""
    best_s, best = -np.inf, None
    for factor in 2.0 ** (np.arange(2, 13) / 6):
        for start in starts:
            ladder = list(start * factor ** np.arange(num_levels))
            b, zb = assign(ladder)
            s = search.score(search.total_iou(b, zb), b, zb)
            if s > best_s + 1e-12:
                best_s, best = s, ladder
    return best


def optimise_anchors(object_sizes: np.ndarray, dim: int, iou_high: float = 0.5,
                     patch_size: Sequence[float] | None = None, num_levels: int = 4,
                     scales: Sequence[float] = DEFAULT_SCALES, ratios: Sequence[float] = DEFAULT_RATIOS,
                     max_objects: int = 3000, seed: int = 0,
                     level_strides: Sequence[Sequence[int]] | None = None) -> AnchorPlan:
    """Anchor base sizes per level for objects ``object_sizes: ndarray[N, dim]`` (voxels, array order).

    Objects larger than the patch are clipped to it (only their visible part can be matched). With
    ``level_strides`` (per level its stride per axis) the IoU is that on the real grid (objects at
    ``GRID_OFFSETS`` random offsets each) and no level's base size falls below its stride (in-plane: the
    smaller in-plane stride; z: the z stride): a smaller anchor on a coarser grid overlaps the object it
    was sized for only where the grid happens to fall on it.
    Without objects the paper's defaults (4, 8, 16, 32; z 1, 2, 4, 8) are returned.
    """
    sizes = np.asarray(object_sizes, dtype=np.float64).reshape(-1, dim)
    if patch_size is not None:
        sizes = np.minimum(sizes, np.asarray(patch_size, dtype=np.float64)[None])
    sizes = np.maximum(sizes, 1.0)
    if level_strides is not None:
        num_levels = len(level_strides)
        ls = np.asarray(level_strides, dtype=np.float64).reshape(num_levels, dim)
        floors = ([float(v) for v in ls[:, -2:].min(axis=1)], [float(v) for v in ls[:, 0]] if dim == 3 else None)
    else:
        floors = ([0.0] * num_levels, [0.0] * num_levels if dim == 3 else None)
    if len(sizes) == 0:
        return AnchorPlan([max(4.0 * 2 ** i, f) for i, f in enumerate(floors[0])],
                          [max(2.0 ** i, f) for i, f in enumerate(floors[1])] if dim == 3 else None, 0.0, 0.0, 0)
    if len(sizes) > max_objects:
        sizes = sizes[np.random.default_rng(seed).choice(len(sizes), max_objects, replace=False)]
    uniq, counts = np.unique(np.round(sizes, 2), axis=0, return_counts=True)
    search = _Search(uniq, counts.astype(np.float64), list(scales), list(ratios), iou_high,
                     None if level_strides is None else [list(map(float, st)) for st in level_strides], seed)
    inplane = np.sqrt(uniq[:, -1] * uniq[:, -2])
    smax = max(scales)
    grid_b = _grid(max(0.5, inplane.min() / (2 * smax)), inplane.max() * 2)
    grid_z = _grid(max(0.5, uniq[:, 0].min() / (2 * smax)), uniq[:, 0].max() * 2) if dim == 3 else None
    # 1) slide a geometric ladder (start size and factor between levels) over the sizes, in-plane then z
    rho = float(np.median(uniq[:, 0] / inplane))  # z size per in-plane size, until z is fitted
    zb = None
    b = _best_ladder(search, grid_b[::2], lambda lad: (lad, [rho * v for v in lad] if dim == 3 else None),
                     num_levels)
    if dim == 3:
        zb = _best_ladder(search, grid_z[::2], lambda lad: (b, lad), num_levels)
    b = [max(v, f) for v, f in zip(b, floors[0])]
    if zb is not None:
        zb = [max(v, f) for v, f in zip(zb, floors[1])]
    # 2) refine each level on its own
    _descend(search, b, zb, grid_b, grid_z, floors)
    iou = search.total_iou(b, zb)
    return AnchorPlan(
        base_sizes=[round(float(v), 3) for v in b],
        z_base_sizes=[round(float(v), 3) for v in zb] if zb is not None else None,
        coverage=min(1.0, round(float(search.w @ (iou >= iou_high - 1e-9)), 6)),
        mean_iou=float(search.w @ iou),
        num_objects=int(len(sizes)),
    )
