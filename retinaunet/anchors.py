"""Anchor boxes for every feature level, and the matcher that assigns them to ground-truth boxes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from retinaunet.boxes import box_iou
from retinaunet.plans import MatchingPlan

__all__ = ["AnchorGenerator", "Matcher", "AdaptiveMatcher", "build_matcher"]


class AnchorGenerator:
    """Anchors of all feature levels (P2, P3, ...), 2D or 3D.

    Per level ``l`` and location, one anchor per (ratio, scale) pair, ratio-major: anchor index
    ``i_ratio * len(scales) + i_scale``. With base size ``b = base_sizes[l]``, scale ``s`` and ratio
    ``r`` (height / width) the anchor is ``b*s*sqrt(r)`` along axis -2 and ``b*s/sqrt(r)`` along
    axis -1; in 3D its size along axis 0 (z) is ``z_base_sizes[l] * s`` (``base_sizes`` when None).
    Anchors are centred at ``(i + 0.5) * stride`` with ``stride = image_shape / feature_shape`` per axis.

    Args:
        base_sizes: one base size per level, finest first.
        z_base_sizes: 3D only, one z base size per level, or None for isotropic anchors.
        scales: size multipliers (paper: 1, 2**(1/3), 2**(2/3)).
        ratios: height / width ratios (paper: 0.5, 1, 2).
        dim: 2 or 3 spatial dimensions.

    Example:
        >>> gen = AnchorGenerator([4, 8], None, [1.0], [0.5, 1.0, 2.0], dim=2)
        >>> gen((64, 64), [(16, 16), (8, 8)]).shape      # (16*16 + 8*8) * 3 anchors
        torch.Size([960, 4])
    """

    def __init__(self, base_sizes: Sequence[float], z_base_sizes: Sequence[float] | None = None,
                 scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0), dim: int = 2) -> None:
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        if z_base_sizes is not None and dim == 3 and len(z_base_sizes) != len(base_sizes):
            raise ValueError("z_base_sizes needs one entry per level of base_sizes")
        self.base_sizes = [float(b) for b in base_sizes]
        self.z_base_sizes = [float(z) for z in z_base_sizes] if z_base_sizes is not None else None
        self.scales = [float(s) for s in scales]
        self.ratios = [float(r) for r in ratios]
        self.dim = dim

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.ratios)

    def cell_sizes(self, level: int) -> Tensor:
        """Anchor sizes at one location of ``level``: Tensor[num_anchors_per_location, dim] (float64)."""
        base = self.base_sizes[level]
        sizes = []
        for r in self.ratios:
            for s in self.scales:
                in_plane = [base * s * math.sqrt(r), base * s / math.sqrt(r)]
                if self.dim == 3:
                    z_base = self.z_base_sizes[level] if self.z_base_sizes is not None else base
                    in_plane = [z_base * s, *in_plane]
                sizes.append(in_plane)
        return torch.tensor(sizes, dtype=torch.float64)

    def level_anchors(self, level: int, image_shape: Sequence[int], feature_shape: Sequence[int]) -> Tensor:
        """Anchors of one level: Tensor[*feature_shape, num_anchors_per_location, 2*dim] (float64)."""
        if len(image_shape) != self.dim or len(feature_shape) != self.dim:
            raise ValueError(f"expected {self.dim} axes, got image {tuple(image_shape)} "
                             f"and feature {tuple(feature_shape)}")
        axes = [(torch.arange(f, dtype=torch.float64) + 0.5) * (i / f)
                for i, f in zip(image_shape, feature_shape)]
        centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # [*S, dim]
        half = self.cell_sizes(level) / 2  # [n, dim]
        centres = centres[..., None, :]
        return torch.cat([centres - half, centres + half], dim=-1)

    def __call__(self, image_shape: Sequence[int], feature_shapes: Sequence[Sequence[int]],
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Anchors of all levels concatenated level by level; within a level in C order of the
        positions, then anchor index (matches head outputs ``[B, n*K, *S] -> [B, *S, n, K] -> [B, -1, K]``).

        image_shape: ``dim`` ints, feature_shapes: one shape of ``dim`` ints per level (finest first,
        at most ``len(base_sizes)``) -> Tensor[A, 2*dim].
        """
        if len(feature_shapes) > len(self.base_sizes):
            raise ValueError(f"{len(feature_shapes)} feature levels but only {len(self.base_sizes)} base sizes")
        levels = [self.level_anchors(k, image_shape, shape).reshape(-1, 2 * self.dim)
                  for k, shape in enumerate(feature_shapes)]
        return torch.cat(levels).to(device=device, dtype=dtype)


class Matcher:
    """Assign every anchor a ground-truth index from an IoU matrix.

    An anchor whose best IoU is below ``low`` is negative (``BELOW_LOW``), at or above ``high`` positive
    (matched to its best gt), in between ignored (``BETWEEN``). With ``allow_low_quality`` each gt's best
    anchor(s) are also positive for that gt whatever their IoU, so no object goes unmatched (as long as
    it overlaps some anchor and there are at least as many anchors as objects).

    Paper: low 0.1 (2D) / 0.01 (3D), high 0.5.
    """

    BELOW_LOW = -1
    BETWEEN = -2

    def __init__(self, low: float, high: float, allow_low_quality: bool = True) -> None:
        if low > high:
            raise ValueError(f"low {low} must not exceed high {high}")
        self.low = float(low)
        self.high = float(high)
        self.allow_low_quality = allow_low_quality

    def match(self, gt: Tensor, anchors: Tensor, num_per_level: Sequence[int] | None = None) -> Tensor:
        """gt: Tensor[G, 2d], anchors: Tensor[A, 2d] -> LongTensor[A] (see ``__call__``); levels unused."""
        return self(box_iou(gt, anchors))

    def __call__(self, iou: Tensor) -> Tensor:
        """iou: Tensor[G, A] -> LongTensor[A] with the matched gt index, BELOW_LOW or BETWEEN."""
        num_gt, num_anchors = iou.shape
        if num_gt == 0:
            return torch.full((num_anchors,), self.BELOW_LOW, dtype=torch.long, device=iou.device)
        best_iou, matches = iou.max(dim=0)
        matches = matches.clone()
        matches[best_iou < self.low] = self.BELOW_LOW
        matches[(best_iou >= self.low) & (best_iou < self.high)] = self.BETWEEN
        if self.allow_low_quality and num_anchors > 0:
            self._force_best_anchors(iou, matches)
        return matches

    @staticmethod
    def _force_best_anchors(iou: Tensor, matches: Tensor) -> None:
        """Make each gt's best anchor(s) positive for that gt (in place).

        An anchor that is the best of several gts goes to the one it overlaps most; a gt left without
        any positive then takes its best anchor that is no other gt's best anchor.
        """
        best_per_gt = iou.max(dim=1).values  # [G]
        is_best = (iou == best_per_gt[:, None]) & (best_per_gt[:, None] > 0)  # [G, A]
        forced = is_best.any(dim=0)  # [A]
        cols = torch.nonzero(forced).flatten()  # few anchors: decide owners on those columns only
        sub = iou[:, cols]
        owner = torch.where(is_best[:, cols], sub, torch.full_like(sub, -1.0)).argmax(dim=0)
        matches[cols] = owner
        has_positive = torch.zeros(iou.shape[0], dtype=torch.bool, device=iou.device)
        has_positive[matches[matches >= 0]] = True
        for g in torch.nonzero(~has_positive & (best_per_gt > 0)).flatten().tolist():
            free = torch.where(forced, torch.full_like(iou[g], -1.0), iou[g])
            anchor = int(free.argmax())
            if free[anchor] > 0:
                matches[anchor] = g
                forced[anchor] = True


class AdaptiveMatcher:
    """Adaptive per-object matching (ATSS, Zhang et al. 2020), for objects that no fixed IoU threshold fits.

    Per object and level, the anchors of the ``candidates`` grid positions nearest to its centre are
    candidates (every anchor shape there). The object's threshold is the mean plus the standard deviation
    of the candidates' IoU; candidates at or above it whose centre lies inside the object are positive.
    A small object on a coarse grid thus still gets its best-placed anchors (IoU 0.2-0.4), a large one only
    anchors of high IoU. The object's best anchor is always positive. An anchor claimed by several objects
    goes to the one it overlaps most.

    Of the other anchors, those whose IoU with an object reaches ``min(low, that object's threshold)`` are
    ignored (near-hits as good as some positive are not trained as background); the rest are negative.
    Returns indices as `Matcher` does (gt index, ``BELOW_LOW`` or ``BETWEEN``).
    """

    BELOW_LOW = Matcher.BELOW_LOW
    BETWEEN = Matcher.BETWEEN

    def __init__(self, candidates: int = 4, low: float = 0.4, centre_inside: bool = True) -> None:
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.candidates = int(candidates)
        self.low = float(low)
        self.centre_inside = centre_inside

    def match(self, gt: Tensor, anchors: Tensor, num_per_level: Sequence[int] | None = None) -> Tensor:
        """gt: Tensor[G, 2d]; anchors: Tensor[A, 2d] in AnchorGenerator order; num_per_level: anchors per
        level (one level when None) -> LongTensor[A]."""
        num_gt, num_anchors = gt.shape[0], anchors.shape[0]
        matches = torch.full((num_anchors,), self.BELOW_LOW, dtype=torch.long, device=anchors.device)
        if num_gt == 0 or num_anchors == 0:
            return matches
        dim = gt.shape[1] // 2
        iou = box_iou(gt, anchors)  # [G, A]
        gt_c = (gt[:, :dim] + gt[:, dim:]) / 2
        an_c = (anchors[:, :dim] + anchors[:, dim:]) / 2
        candidate = torch.zeros_like(iou, dtype=torch.bool)
        start = 0
        for count in (list(num_per_level) if num_per_level is not None else [num_anchors]):
            if count == 0:
                continue
            centres = an_c[start:start + count]
            # the anchors of one position are consecutive and share their centre: rank positions
            per_pos = int(((centres[:64] - centres[0]).abs() < 1e-2).all(dim=1).sum())  # float32 rounding
            positions = centres[::per_pos]
            inverse = torch.arange(count, device=centres.device) // per_pos
            dist = torch.cdist(gt_c.to(positions.dtype), positions)  # [G, P]
            k = min(self.candidates, positions.shape[0])
            near = torch.zeros_like(dist, dtype=torch.bool)
            near.scatter_(1, dist.topk(k, dim=1, largest=False).indices, True)
            candidate[:, start:start + count] = near[:, inverse]
            start += count
        cand_iou = torch.where(candidate, iou, torch.zeros_like(iou))
        n = candidate.sum(dim=1).clamp(min=1)
        mean = cand_iou.sum(dim=1) / n
        std = ((cand_iou - mean[:, None]) ** 2 * candidate).sum(dim=1).div(n).sqrt()
        threshold = mean + std  # [G]
        positive = candidate & (iou >= threshold[:, None]) & (iou > 0)
        if self.centre_inside:
            inside = ((an_c[None] > gt[:, None, :dim]) & (an_c[None] < gt[:, None, dim:])).all(dim=-1)
            positive &= inside
        best, rows = iou.argmax(dim=1), torch.arange(num_gt, device=iou.device)
        positive[rows, best] = iou[rows, best] > 0
        owner_iou = torch.where(positive, iou, torch.full_like(iou, -1.0))
        top_iou, owner = owner_iou.max(dim=0)
        is_pos = top_iou >= 0
        near_hit = (iou >= torch.clamp(threshold, max=self.low)[:, None]).any(dim=0)
        matches[near_hit] = self.BETWEEN
        matches[is_pos] = owner[is_pos]
        return matches


def build_matcher(matching: MatchingPlan | Mapping[str, Any]) -> Matcher | AdaptiveMatcher:
    """The matcher a plans' ``matching`` section describes (a dict is read through the schema): ``method``
    "iou" (thresholds ``iou_low`` / ``iou_high``, each object's best anchor positive) or "adaptive"
    (`AdaptiveMatcher` with ``candidates`` and ``iou_low``)."""
    if not isinstance(matching, MatchingPlan):
        matching = MatchingPlan(**matching)
    if matching.method == "adaptive":
        return AdaptiveMatcher(matching.candidates, matching.iou_low)
    return Matcher(matching.iou_low, matching.iou_high, allow_low_quality=True)
