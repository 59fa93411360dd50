"""Painting objects given by centre and size into an instance map: spheres, ellipsoids and boxes.

Two frames: ``world`` (x, y, z in mm, the image's physical space as SimpleITK gives it, LPS for DICOM
and LUNA16's ``.mhd``) and ``voxel`` (array order indices, e.g. z, y, x). In the world frame a voxel
belongs to a shape when its centre does (SimpleITK's integer index is the voxel centre), so a
rotated direction matrix is handled exactly. Objects are painted only onto background, and an object
that covers no voxel centre still gets the voxel nearest its centre, so every object given is present.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retinaunet.io import Geometry

__all__ = ["paint_box", "paint_ellipsoid", "world_centre_inside"]


def _block(geometry: Geometry, centre_idx: np.ndarray, half: np.ndarray) -> tuple[slice, ...] | None:
    shape = np.asarray(geometry.shape)
    lo = np.maximum(np.floor(centre_idx - half).astype(np.int64), 0)
    hi = np.minimum(np.ceil(centre_idx + half).astype(np.int64) + 1, shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _grid(region: tuple[slice, ...]) -> np.ndarray:
    """Indices of a block: float[*block, dim] (array order)."""
    axes = [np.arange(s.start, s.stop, dtype=np.float64) for s in region]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def world_centre_inside(geometry: Geometry, centre: Sequence[float], world: bool = True) -> bool:
    """True when the centre's nearest voxel lies in the image."""
    idx = geometry.world_to_index(centre) if world else np.asarray(centre, dtype=np.float64)
    nearest = np.round(idx)
    return bool(np.all(nearest >= 0) and np.all(nearest < np.asarray(geometry.shape)))


def _paint(instances: np.ndarray, region: tuple[slice, ...] | None, inside: np.ndarray | None, value: int,
           centre_idx: np.ndarray) -> int:
    painted = 0
    if region is not None and inside is not None:
        view = instances[region]
        mask = inside & (view == 0)
        view[mask] = value
        painted = int(mask.sum())
    if painted == 0:
        nearest = tuple(int(v) for v in np.round(centre_idx))
        if all(0 <= v < n for v, n in zip(nearest, instances.shape)) and instances[nearest] == 0:
            instances[nearest] = value
            painted = 1
    return painted


def paint_ellipsoid(instances: np.ndarray, geometry: Geometry, centre: Sequence[float],
                    radii: float | Sequence[float], value: int, world: bool = True) -> int:
    """Paint an ellipsoid (a sphere for one radius) with ``value`` onto background; returns voxels painted.

    world=True: ``centre`` (x, y, z) mm, ``radii`` mm along x, y, z. world=False: ``centre`` in array-order
    voxel indices (voxel centres at integers), ``radii`` in voxels along the array axes.
    """
    dim = geometry.dim
    radii_arr = np.broadcast_to(np.asarray(radii, dtype=np.float64), (dim,)).copy()
    radii_arr = np.maximum(radii_arr, 1e-6)
    if world:
        centre_w = np.asarray(centre, dtype=np.float64)
        centre_idx = geometry.world_to_index(centre_w)
        half = radii_arr.max() / np.asarray(geometry.spacing)
    else:
        centre_idx = np.asarray(centre, dtype=np.float64)
        half = radii_arr
    region = _block(geometry, centre_idx, half)
    inside = None
    if region is not None:
        grid = _grid(region)
        if world:
            offset = (geometry.index_to_world(grid) - centre_w) / radii_arr
        else:
            offset = (grid - centre_idx) / radii_arr
        inside = (offset ** 2).sum(-1) <= 1.0
    return _paint(instances, region, inside, value, centre_idx)


def paint_box(instances: np.ndarray, geometry: Geometry, box: Sequence[float], value: int,
              world: bool = True) -> int:
    """Paint a filled box with ``value`` onto background; returns voxels painted.

    world=True: ``box`` = [x0, y0, (z0), x1, y1, (z1)] mm, the voxels whose centres lie inside.
    world=False: ``box`` = [lo_0, lo_1, (lo_2), hi_0, hi_1, (hi_2)] half-open array-order indices (voxel i
    spans [i, i+1)), the project's box convention.
    """
    dim = geometry.dim
    b = np.asarray(box, dtype=np.float64).reshape(2 * dim)
    lo, hi = np.minimum(b[:dim], b[dim:]), np.maximum(b[:dim], b[dim:])
    if world:
        corners = np.array(np.meshgrid(*[[lo[a], hi[a]] for a in range(dim)], indexing="ij")).reshape(dim, -1).T
        corners_idx = geometry.world_to_index(corners)
        centre_idx = geometry.world_to_index((lo + hi) / 2)
        half = (corners_idx.max(0) - corners_idx.min(0)) / 2 + 0.5
        region = _block(geometry, centre_idx, half)
        inside = None
        if region is not None:
            p = geometry.index_to_world(_grid(region))
            inside = np.all((p >= lo - 1e-6) & (p <= hi + 1e-6), axis=-1)
        return _paint(instances, region, inside, value, centre_idx)
    first = np.ceil(lo - 0.5).astype(np.int64)
    stop = np.ceil(hi - 0.5).astype(np.int64)
    centre_idx = (lo + hi) / 2 - 0.5
    shape = np.asarray(geometry.shape)
    first, stop = np.clip(first, 0, shape), np.clip(stop, 0, shape)
    region = None if np.any(stop <= first) else tuple(slice(int(a), int(c)) for a, c in zip(first, stop))
    inside = None if region is None else np.ones(tuple(s.stop - s.start for s in region), dtype=bool)
    return _paint(instances, region, inside, value, centre_idx)
