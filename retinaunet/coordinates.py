"""Case coordinates: the one owner of the mapping original image <-> preprocessed grid <-> world (mm).

Preprocessing crops a case to its non-zero box (corner ``crop_lo`` in original indices) and resamples it
from the original spacing ``s`` to the target spacing ``t``. Along axis ``a`` one preprocessed voxel spans
``f_a = t_a / s_a`` original voxels (:func:`scale_factors`), so a half-open box edge ``e`` of the
preprocessed grid is the original edge ``crop_lo_a + e * f_a`` exactly, with no rounding drift.

World: SimpleITK's integer index ``i`` is the centre of voxel ``i``, which spans the continuous indices
``i - 0.5 .. i + 0.5``; a half-open box ``[lo, hi)`` therefore has its centre at the continuous index
``(lo + hi) / 2 - 0.5``, mapped with ``Geometry.index_to_world``; its size is ``(hi - lo) * spacing`` mm.

Build the mapping of a preprocessed case with ``CaseCoordinates.from_props(props)`` (its ``<case>.json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retinaunet.io import Geometry

__all__ = ["CaseCoordinates", "scale_factors", "box_world"]


def scale_factors(spacing: Sequence[float], target_spacing: Sequence[float]) -> np.ndarray:
    """f = target / original per axis: one output voxel spans f original voxels.

    Factors within 1e-5 of 1 are exactly 1 (spacings stored as float32 in image headers differ from
    the planned spacing in the 8th digit; such an axis is not resampled).
    """
    f = np.asarray(target_spacing, dtype=np.float64) / np.asarray(spacing, dtype=np.float64)
    return np.where(np.abs(f - 1.0) < 1e-5, 1.0, f)


def box_world(boxes: np.ndarray | Sequence[float], geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """World centres ``[K, dim]`` (x, y, z mm, as SimpleITK) and sizes ``[K, dim]`` (mm, array order) of
    boxes ``[K, 2*dim]`` in the image's index coordinates."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * geometry.dim)
    lo, hi = boxes[:, : geometry.dim], boxes[:, geometry.dim:]
    centre = geometry.index_to_world((lo + hi) / 2 - 0.5).reshape(-1, geometry.dim)
    return centre, (hi - lo) * np.asarray(geometry.spacing)


@dataclass(frozen=True)
class CaseCoordinates:
    """The frames of one case: ``original`` geometry, crop corner, scale factors, preprocessed shape."""

    original: Geometry
    crop_lo: np.ndarray  # float64[dim], original indices
    factors: np.ndarray  # float64[dim], original voxels per preprocessed voxel
    shape: tuple[int, ...]  # the preprocessed grid

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> CaseCoordinates:
        """From a preprocessed case's properties (``original``, ``crop``, ``spacing``, ``shape``)."""
        original = Geometry.from_dict(props["original"])
        return cls(original, np.asarray([c[0] for c in props["crop"]], dtype=np.float64),
                   scale_factors(props["original"]["spacing"], props["spacing"]),
                   tuple(int(s) for s in props["shape"]))

    @property
    def dim(self) -> int:
        return len(self.shape)

    def _reshape(self, boxes: Any) -> np.ndarray:
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * self.dim)

    def to_original(self, boxes: Any, clip: bool = True) -> np.ndarray:
        """Boxes ``[K, 2*dim]`` of the preprocessed grid -> original index coordinates (clipped to the image)."""
        f, lo = np.tile(self.factors, 2), np.tile(self.crop_lo, 2)
        out = self._reshape(boxes) * f + lo
        if clip:
            shape = np.asarray(self.original.shape, dtype=np.float64)
            out = np.clip(out, 0, np.tile(shape, 2))
        return out

    def to_preprocessed(self, boxes: Any) -> np.ndarray:
        """Inverse of :meth:`to_original` (unclipped): original index boxes -> the preprocessed grid."""
        return (self._reshape(boxes) - np.tile(self.crop_lo, 2)) / np.tile(self.factors, 2)

    def to_world(self, boxes: Any) -> tuple[np.ndarray, np.ndarray]:
        """World centres and sizes in mm (see :func:`box_world`) of boxes in original index coordinates."""
        return box_world(boxes, self.original)

    def original_index_of(self, axis: int) -> np.ndarray:
        """For each original voxel along ``axis``, the preprocessed voxel holding its centre (may fall outside
        ``0..shape[axis]-1`` where the crop or the grid ends): ``floor((i + 0.5 - crop_lo) / f)``."""
        n = int(self.original.shape[axis])
        return np.floor((np.arange(n) + 0.5 - self.crop_lo[axis]) / self.factors[axis]).astype(np.int64)
