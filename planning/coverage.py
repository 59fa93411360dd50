"""Anchor coverage on the real anchor grid, per object-size bucket.

An object does not sit where an anchor is centred: the patch is cut anywhere, so its centre lies at a
random offset to each level's grid of anchor centres ``(i + 0.5) * stride``. For a fixed anchor shape the
overlap along an axis only falls with the distance of the two centres, so the best anchor of a shape is
the one at the nearest grid centre on every axis. :func:`grid_best_iou` uses that to compute, for objects
dropped at random offsets, the best IoU any anchor of the plan reaches (exact, checked against a brute-force
loop over all anchors in the tests). :func:`matcher_positives` runs the planned matcher itself on anchors
around each dropped object, and :func:`coverage_table` reports both per size bucket (in mm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from retinaunet.planning.anchors_plan import grid_iou

from retinaunet.anchors import AnchorGenerator, build_matcher
from retinaunet.boxes import box_iou

__all__ = ["SIZE_BUCKETS_MM", "bucket_names", "bucket_of", "object_size_mm", "grid_best_iou", "matcher_positives",
           "coverage_table", "format_coverage", "choose_matching", "GRID_COVERAGE_MIN"]

SIZE_BUCKETS_MM = (6.0, 10.0, 20.0)  # edges: < 6, 6-10, 10-20, > 20 mm (LIDC-like nodule sizes)


def bucket_names(edges: Sequence[float] = SIZE_BUCKETS_MM) -> list[str]:
    """``['<6', '6-10', '10-20', '>20']`` for the default edges."""
    e = [f"{v:g}" for v in edges]
    return [f"<{e[0]}"] + [f"{a}-{b}" for a, b in zip(e[:-1], e[1:])] + [f">{e[-1]}"]


def bucket_of(size_mm: np.ndarray, edges: Sequence[float] = SIZE_BUCKETS_MM) -> np.ndarray:
    """Bucket index of each object size in mm (``size_mm: [N]``): 0 for < edges[0] ... len(edges) above."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(size_mm, dtype=float), side="right")


def object_size_mm(sizes: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Size of an object for bucketing: its largest in-plane extent in mm (LIDC measures the axial
    diameter). ``sizes: [N, dim]`` in voxels, array order; in 2D both axes are in-plane."""
    mm = np.asarray(sizes, dtype=float).reshape(len(sizes), -1) * np.asarray(spacing, dtype=float)[None]
    return mm[:, -2:].max(axis=1) if mm.shape[1] else np.zeros(0)


def _level_sizes(gen: AnchorGenerator, level: int) -> np.ndarray:
    return gen.cell_sizes(level).numpy()


def grid_best_iou(sizes: np.ndarray, gen: AnchorGenerator, level_strides: Sequence[Sequence[int]],
                  offsets: np.ndarray) -> np.ndarray:
    """Best IoU of each object with any anchor of the grid.

    sizes: [N, dim] object extents (voxels); level_strides: per head level its stride per axis;
    offsets: [N, dim] object centres (voxels, any position; only their place relative to each grid
    matters). Returns [N].
    """
    sizes = np.asarray(sizes, dtype=float)
    best = np.zeros(len(sizes))
    for lvl, stride in enumerate(level_strides):
        best = np.maximum(best, grid_iou(sizes, _level_sizes(gen, lvl), stride, offsets))
    return best


def matcher_positives(sizes: np.ndarray, gen: AnchorGenerator, level_strides: Sequence[Sequence[int]],
                      offsets: np.ndarray, matching: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Positives the planned matcher gives each object dropped alone at ``offsets`` (see grid_best_iou).

    The anchors are those of a window around the object: every level's grid over the object and at least
    one cell of the coarsest grid on each side (which holds every candidate position of the adaptive
    matcher), the window a multiple of the coarsest stride so all grids line up as in a patch.
    Returns (positives per object [N], mean IoU of each object's positives [N], 0 without positives).
    """
    matcher = build_matcher(matching)
    top = np.max(np.asarray(level_strides, dtype=float), axis=0)
    counts, quality = np.zeros(len(sizes), dtype=int), np.zeros(len(sizes))
    for i, (size, off) in enumerate(zip(np.asarray(sizes, dtype=float), offsets)):
        reach = size + top  # the object and at least one cell of the coarsest grid around it
        cells = np.ceil(reach / top).astype(int) + 1
        shape = (cells * top).astype(int)
        centre = np.floor(shape / 2 / top) * top + np.mod(off, top)
        feats = [[int(s // st) for s, st in zip(shape, stride)] for stride in level_strides]
        anchors = gen(list(shape), feats, dtype=torch.float32)
        box = torch.tensor(np.concatenate([centre - size / 2, centre + size / 2])[None], dtype=torch.float32)
        per_level = [math.prod(f) * gen.num_anchors_per_location for f in feats]
        matches = matcher.match(box, anchors, per_level)
        pos = matches == 0
        counts[i] = int(pos.sum())
        if counts[i]:
            quality[i] = float(box_iou(box, anchors[pos]).mean())
    return counts, quality


def coverage_table(sizes_vox: np.ndarray, spacing: Sequence[float], gen: AnchorGenerator,
                   level_strides: Sequence[Sequence[int]], matching: dict[str, Any] | None, iou_high: float,
                   edges: Sequence[float] = SIZE_BUCKETS_MM, max_objects: int = 1000, per_bucket: int = 12,
                   seed: int = 0) -> dict[str, dict[str, float | int | None]]:
    """Per size bucket: objects, share with an anchor at IoU >= ``iou_high`` on the real grid, median best
    IoU, and (unless ``matching`` is None) the share with at least one positive from that matcher, the median
    number of positives and their mean IoU.

    Each object is dropped at a random offset to the grids (seeded); at most ``max_objects`` objects are
    sampled (the same ones whatever ``matching``), and the matcher runs on ``per_bucket`` of them per bucket
    (``matcher_sample``). Buckets without objects have None values.
    """
    sizes = np.asarray(sizes_vox, dtype=float).reshape(-1, len(spacing))
    rng = np.random.default_rng(seed)
    if len(sizes) > max_objects:
        sizes = sizes[rng.choice(len(sizes), max_objects, replace=False)]
    sizes = np.maximum(sizes, 1.0)
    top = np.max(np.asarray(level_strides, dtype=float), axis=0)
    offsets = rng.uniform(0, 1, size=sizes.shape) * top[None]
    best = grid_best_iou(sizes, gen, level_strides, offsets)
    which = bucket_of(object_size_mm(sizes, spacing), edges)
    if matching is not None:  # the matcher runs on anchor windows: a sample of each bucket suffices
        order = rng.permutation(len(sizes))
        run = np.concatenate([order[which[order] == b][:per_bucket] for b in range(len(edges) + 1)]).astype(int)
        counts, quality = np.zeros(len(sizes), dtype=int), np.zeros(len(sizes))
        counts[run], quality[run] = matcher_positives(sizes[run], gen, level_strides, offsets[run], matching)
        ran = np.zeros(len(sizes), dtype=bool)
        ran[run] = True
    table = {}
    for b, name in enumerate(bucket_names(edges)):
        sel = which == b
        n = int(sel.sum())
        if n == 0:
            table[name] = {"objects": 0, "grid_coverage": None, "median_best_iou": None}
            continue
        table[name] = {
            "objects": n,
            "grid_coverage": round(float((best[sel] >= iou_high - 1e-9).mean()), 4),
            "median_best_iou": round(float(np.median(best[sel])), 3),
        }
        if matching is None:
            continue
        sel &= ran
        table[name] |= {
            "matched": round(float((counts[sel] > 0).mean()), 4),
            "median_positives": float(np.median(counts[sel])),
            "positive_iou": round(float(quality[sel][counts[sel] > 0].mean()), 3) if (counts[sel] > 0).any()
            else None,
            "matcher_sample": int(sel.sum()),
        }
    return table


def format_coverage(table: dict[str, dict[str, Any]], iou_high: float) -> str:
    """One line per bucket: the real-grid coverage and what the matcher gives."""
    parts = []
    for name, row in table.items():
        if not row["objects"]:
            continue
        parts.append(f"{name} mm: n={row['objects']} grid IoU>={iou_high:g} {100 * row['grid_coverage']:.0f}% "
                     f"(median best {row['median_best_iou']:.2f}), matched {100 * row['matched']:.0f}% "
                     f"({row['median_positives']:g} positives, IoU {row['positive_iou'] or 0:.2f})")
    return "; ".join(parts)


GRID_COVERAGE_MIN = 0.9  # a fixed IoU threshold is kept when every size bucket reaches this coverage
ADAPTIVE_CANDIDATES = 4  # grid positions per level and object that the adaptive matcher considers


def choose_matching(sizes_vox: np.ndarray, spacing: Sequence[float], gen: AnchorGenerator,
                    level_strides: Sequence[Sequence[int]], iou_low: float, iou_high: float,
                    edges: Sequence[float] = SIZE_BUCKETS_MM) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The matching section of a plan, its coverage table (`coverage_table`) and the reason.

    Fixed thresholds (negative below ``iou_low``, positive from ``iou_high``) when on the real grid every
    size bucket has >= ``GRID_COVERAGE_MIN`` of its objects with an anchor at ``iou_high``; otherwise the
    adaptive matcher (`retinaunet.anchors.AdaptiveMatcher`), which gives each object its best-placed anchors
    whatever IoU the grid allows.
    """
    fixed = {"method": "iou", "iou_low": iou_low, "iou_high": iou_high}
    table = coverage_table(sizes_vox, spacing, gen, level_strides, None, iou_high, edges)
    filled = {k: v for k, v in table.items() if v["objects"]}
    worst = min((v["grid_coverage"] for v in filled.values()), default=1.0)
    if worst >= GRID_COVERAGE_MIN:
        table = coverage_table(sizes_vox, spacing, gen, level_strides, fixed, iou_high, edges)
        return fixed, table, (f"fixed IoU thresholds: on the real anchor grid every size bucket has >= "
                              f"{GRID_COVERAGE_MIN:.0%} of its objects with an anchor at IoU >= {iou_high:g} "
                              f"(lowest {worst:.0%}); negative below {iou_low:g} (RetinaNet; the paper's "
                              "lower threshold left finer-level anchors inside objects untrained)")
    low_name = min(filled, key=lambda k: filled[k]["grid_coverage"])
    adaptive = {"method": "adaptive", "candidates": ADAPTIVE_CANDIDATES, "iou_low": iou_low, "iou_high": iou_high}
    table = coverage_table(sizes_vox, spacing, gen, level_strides, adaptive, iou_high, edges)
    return adaptive, table, (
        f"adaptive (ATSS): on the real anchor grid only {worst:.0%} of the {low_name} mm objects have an anchor "
        f"at IoU >= {iou_high:g}, so a fixed threshold would leave them with one forced positive; per object the "
        f"anchors of the {ADAPTIVE_CANDIDATES} nearest grid positions per level are candidates and those above "
        f"their IoU mean + std (centre inside the object) are positive; near-hits at IoU >= min({iou_low:g}, that "
        "threshold) are ignored, not trained as background")
