"""Network topology, patch size and batch size under a budget.

Strides: at each of the 5 down-sampling transitions an axis is pooled when its feature map stays at
least ``MIN_FEATURE`` voxels and its current spacing is at most ``POOL_SPACING_RATIO`` times the finest
one (so an anisotropic axis waits until the others have caught up; the paper's 3D network keeps z for
two stages this way). nnU-Net pools up to twice the finest spacing; at 1.25 x 0.7 x 0.7 mm (chest CT)
that pools z from the first stage and puts z anchors on a grid 1.8x coarser than in-plane, so here
the limit is 1.5. The patch is then a multiple of the cumulative stride.

Head levels (`choose_head_levels`): the pyramid levels P2-P5 with distinct strides (of levels with the
same stride the deepest, whose features see most), and P1 in front when many objects are smaller than
twice P2's in-plane stride (they fall between P2's anchor centres).

Search (as nnU-Net): start from the initial patch with the smallest batch; while the step does not fit
the budget, shrink the axis with the largest physical extent by one stride multiple; when no axis
can shrink, halve the network's widths. Then grow the batch while it fits, up to ``MAX_BATCH`` and
to 5% of the dataset's voxels per batch. With a ``target_batch`` (the planner's CPU batch-norm batch) a patch
that leaves a smaller batch shrinks further, not below ``min_patch``, when the target then fits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from retinaunet.planning.budget import Budget
from retinaunet.planning.memory import estimate_flops, estimate_memory

from retinaunet.plans import NetworkPlan, Plans, cumulative_stride

__all__ = ["network_template", "plan_strides", "fit_patch_and_batch", "PatchPlan", "choose_head_levels",
           "level_strides", "MIN_FEATURE", "MAX_BATCH", "MIN_BATCH", "POOL_SPACING_RATIO"]

MIN_FEATURE = 4
MIN_BATCH = 2
MAX_BATCH = {2: 32, 3: 8}
MIN_PATCH = 8
POOL_SPACING_RATIO = 1.5
SMALL_OBJECT_SHARE = 0.1  # P1 joins the heads when at least this share of objects is small for P2

_GPU_NETWORK = {  # the paper's ResNet50 FPN (start filters 48 in 2D, 18 in 3D)
    2: {"start_channels": 48, "max_channels": 1536, "fpn_channels": 192, "head_channels": 256, "head_convs": 4,
        "block": "bottleneck", "blocks_per_stage": [3, 4, 6, 3]},
    3: {"start_channels": 18, "max_channels": 576, "fpn_channels": 36, "head_channels": 64, "head_convs": 4,
        "block": "bottleneck", "blocks_per_stage": [3, 4, 6, 3]},
}
_CPU_NETWORK = {  # small enough that a CPU trains the 2D toy tasks in minutes
    2: {"start_channels": 16, "max_channels": 128, "fpn_channels": 32, "head_channels": 32, "head_convs": 2,
        "block": "basic", "blocks_per_stage": [1, 1, 1, 1]},
    3: {"start_channels": 8, "max_channels": 64, "fpn_channels": 16, "head_channels": 32, "head_convs": 2,
        "block": "basic", "blocks_per_stage": [1, 1, 1, 1]},
}


def network_template(dim: int, budget: Budget) -> dict[str, Any]:
    """Widths and depths of the network for a budget (paper-sized on a GPU, small on a CPU)."""
    return dict((_GPU_NETWORK if budget.kind == "gpu" else _CPU_NETWORK)[dim])


def plan_strides(patch: Sequence[int], spacing: Sequence[float], transitions: int = 5) -> list[list[int]]:
    """Per-axis strides (1 or 2) of the 5 transitions C0->C1 .. C4->C5 for a patch at a spacing."""
    size, sp = [float(p) for p in patch], [float(s) for s in spacing]
    strides = []
    for _ in range(transitions):
        poolable = [size[a] / 2 >= MIN_FEATURE for a in range(len(size))]
        finest = min((sp[a] for a in range(len(sp)) if poolable[a]), default=min(sp))
        step = [2 if poolable[a] and sp[a] <= POOL_SPACING_RATIO * finest + 1e-6 else 1 for a in range(len(size))]
        strides.append(step)
        size = [s / k for s, k in zip(size, step)]
        sp = [s * k for s, k in zip(sp, step)]
    return strides


def level_strides(strides: Sequence[Sequence[int]], level: int) -> list[int]:
    """Cumulative stride per axis of pyramid level ``level`` (P0 = 1, P1 = the first transition, ...)."""
    return cumulative_stride([[1] * len(strides[0])] + [list(s) for s in strides[:level]])


def choose_head_levels(strides: Sequence[Sequence[int]], object_sizes: Sequence[Sequence[float]] | None = None
                       ) -> tuple[list[int], str]:
    """Head levels (finest first) for the network's strides and the training objects (voxels), with the reason.

    P2-P5 without duplicate strides (of equal strides the deepest level); P1 in front when at least
    ``SMALL_OBJECT_SHARE`` of the objects are smaller than twice P2's stride on an in-plane axis.
    """
    levels: list[int] = []
    for k in range(2, 6):
        if levels and level_strides(strides, levels[-1]) == level_strides(strides, k):
            levels[-1] = k
        else:
            levels.append(k)
    dropped = 4 - len(levels)
    reason = "P2-P5" if not dropped else f"P2-P5 less {dropped} level(s) of a duplicate stride (the deepest kept)"
    sizes = np.asarray(object_sizes if object_sizes is not None else [], dtype=float)
    p1, p2 = level_strides(strides, 1), level_strides(strides, 2)
    if len(sizes) and p1 != p2:
        small = float((sizes[:, -2:] < 2 * np.asarray(p2[-2:], dtype=float)[None]).any(axis=1).mean())
        if small >= SMALL_OBJECT_SHARE:
            levels = [1, *levels]
            reason += (f"; P1 (stride {p1}) added: {small:.0%} of the objects are smaller than twice P2's "
                       f"in-plane stride {p2[-2:]}")
    return levels, reason


def _snap(patch: Sequence[int], spacing: Sequence[float], limit: Sequence[int] | None = None
          ) -> tuple[list[int], list[list[int]]]:
    """Strides for the patch, and the patch rounded to a multiple of the cumulative stride."""
    strides = plan_strides(patch, spacing)
    cum = cumulative_stride(strides)
    out = []
    for a, (p, c) in enumerate(zip(patch, cum)):
        up = int(math.ceil(p / c) * c)
        out.append(up if limit is None or up <= max(limit[a], c) else max(c, int(p // c) * c))
    return out, plan_strides(out, spacing) if out != list(patch) else strides


def _shrink_step(patch: list[int], strides: list[list[int]], spacing: Sequence[float],
                 floor: Sequence[float] | None = None) -> tuple[list[int], list[list[int]]] | None:
    """The patch one stride smaller along the axis of the largest extent in mm (no axis below ``MIN_PATCH``
    or ``floor``), with its strides; None when no axis can shrink."""
    cum = cumulative_stride(strides)
    shrinkable = [a for a in range(len(patch))
                  if patch[a] - cum[a] >= max(MIN_PATCH, floor[a] if floor is not None else 0)]
    if not shrinkable:
        return None
    axis = max(shrinkable, key=lambda a: (patch[a] * spacing[a], patch[a], a))
    smaller = [p - (cum[a] if a == axis else 0) for a, p in enumerate(patch)]
    return _snap(smaller, spacing, smaller)


def _shrink_for_batch(patch: list[int], strides: list[list[int]], spacing: Sequence[float], budget: Budget,
                      trial: Any, batch: int, min_patch: Sequence[float]
                      ) -> tuple[list[int] | None, list[list[int]]]:
    """The patch shrunk (largest extent in mm first, no axis below ``min_patch``) until ``batch`` fits; None
    when the floor comes first."""
    for _ in range(200):
        if _fits(trial(patch, strides, batch), budget):
            return patch, strides
        step = _shrink_step(patch, strides, spacing, min_patch)
        if step is None:
            return None, strides
        patch, strides = step
    return None, strides


@dataclass
class PatchPlan:
    """Result of the search."""

    patch_size: list[int]
    batch_size: int
    strides: list[list[int]]
    network: dict[str, Any]
    memory: int
    flops: float
    notes: list[str]


def _fits(plans: Plans, budget: Budget) -> bool:
    if estimate_memory(plans) > budget.memory:
        return False
    return budget.step_flops is None or estimate_flops(plans) <= budget.step_flops


def fit_patch_and_batch(initial_patch: Sequence[int], spacing: Sequence[float], budget: Budget,
                        base: Plans, median_shape: Sequence[int], dataset_voxels: float,
                        object_sizes: Sequence[Sequence[float]] | None = None, target_batch: int = MIN_BATCH,
                        min_patch: Sequence[float] | None = None) -> PatchPlan:
    """Patch, batch, strides and network that fit the budget (see the module docstring).

    ``base``: plans with dim, in_channels, num_classes and anchors (scales, ratios) set;
    ``median_shape``: median image shape at target spacing (network axes), caps the patch;
    ``dataset_voxels``: all training voxels at target spacing, caps the batch (5% per batch);
    ``object_sizes``: the training objects (voxels), for the head levels (`choose_head_levels`);
    ``target_batch``, ``min_patch``: when the fitted patch leaves a batch below ``target_batch``, shrink it
    further (largest extent first, no axis below ``min_patch``) until that batch fits; when it cannot, the
    fitted patch stays.
    """
    dim = len(initial_patch)
    network = network_template(dim, budget)
    notes: list[str] = []
    patch, strides = _snap([max(MIN_PATCH, int(p)) for p in initial_patch], spacing, median_shape)

    def trial(p: list[int], s: list[list[int]], b: int) -> Plans:
        levels = choose_head_levels(s, object_sizes)[0]
        return dataclasses.replace(base, patch_size=p, batch_size=b,
                                   network=NetworkPlan(strides=s, head_levels=levels, **network))

    for _ in range(200):
        if _fits(trial(patch, strides, MIN_BATCH), budget):
            break
        step = _shrink_step(patch, strides, spacing)
        if step is not None:
            patch, strides = step
            continue
        if network["start_channels"] <= 4:
            notes.append("even the smallest patch and network exceed the budget; training may run out of memory")
            break
        network = {**network, **{k: max(4, network[k] // 2) for k in
                                 ("start_channels", "max_channels", "fpn_channels", "head_channels")}}
        notes.append("network widths halved to fit the budget")

    def largest_batch(p: list[int], s: list[list[int]]) -> int:
        batch = MIN_BATCH
        cap = max(MIN_BATCH, int(0.05 * dataset_voxels / math.prod(p)))
        while batch < min(MAX_BATCH[dim], cap) and _fits(trial(p, s, batch + 1), budget):
            batch += 1
        return batch

    batch = largest_batch(patch, strides)
    if batch < target_batch and min_patch is not None:
        smaller_patch, smaller_strides = _shrink_for_batch(patch, strides, spacing, budget, trial, target_batch,
                                                           min_patch)
        # kept only when the batch then reaches the target (5% of a small dataset's voxels may cap it first)
        if smaller_patch is not None and largest_batch(smaller_patch, smaller_strides) >= target_batch:
            notes.append(f"patch shrunk from {patch} (not below the objects' size {[round(m) for m in min_patch]}) "
                         f"so a batch of {target_batch} fits")
            patch, strides = smaller_patch, smaller_strides
            batch = largest_batch(patch, strides)
    final = trial(patch, strides, batch)
    return PatchPlan(patch, batch, strides, network, estimate_memory(final), estimate_flops(final), notes)
