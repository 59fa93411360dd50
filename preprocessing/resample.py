"""Separable resampling of images (cubic B-spline) and instance maps (nearest, no instance lost).

Geometry convention (exact, so that boxes map back without drift): along an axis with original
spacing ``s`` and target spacing ``t`` the output has ``n_out = max(1, round(n_in * s / t))`` voxels
and output voxel ``j`` covers the original half-open index interval ``[j * f, (j + 1) * f)`` with
``f = t / s``. Its centre therefore lies at the original continuous index ``(j + 0.5) * f - 0.5``.
A half-open box edge ``e`` in resampled coordinates is the edge ``e * f`` in original coordinates.

Why separable: a tensor-product B-spline is separable, so resampling one axis at a time (prefilter
along the axis, then a 4-tap weighted sum) gives the same result as a full 3D ``scipy.ndimage.zoom``
but costs 4 taps per output voxel and axis instead of 64, and axes whose spacing does not change are
skipped entirely (the interpolating spline reproduces samples at integer positions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from loguru import logger
from retinaunet.preprocessing.spline import apply_taps, prefilter_axis
from scipy import ndimage

from retinaunet.coordinates import scale_factors

__all__ = [
    "resampled_shape",
    "resample_image",
    "resample_array",
    "resample_labels",
    "source_coordinates",
]

def resampled_shape(shape: Sequence[int], spacing: Sequence[float],
                    target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling: round(n * s / t), at least 1 voxel per axis."""
    f = scale_factors(spacing, target_spacing)
    return tuple(max(1, int(round(n / fi))) for n, fi in zip(shape, f))


def source_coordinates(n_out: int, f: float) -> np.ndarray:
    """Original continuous index (voxel centres at integers) of each output voxel centre: [n_out]."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * f - 0.5


def _mirror(idx: np.ndarray, n: int) -> np.ndarray:
    """Whole-sample mirror boundary (d c b | a b c d | c b a), as scipy's mode='mirror'."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def _taps(n_in: int, n_out: int, f: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights [n_out, order + 1] of the B-spline of degree ``order`` along one axis."""
    x = source_coordinates(n_out, f)
    if order == 0:
        return np.clip(np.floor(x + 0.5), 0, n_in - 1).astype(np.int64)[:, None], np.ones((n_out, 1))
    if order == 1:
        i0 = np.floor(x)
        t = x - i0
        idx = np.stack([i0, i0 + 1], axis=1).astype(np.int64)
        return _mirror(idx, n_in), np.stack([1 - t, t], axis=1)
    if order != 3:
        raise ValueError(f"order must be 0, 1 or 3, got {order}")
    i1 = np.floor(x)
    t = x - i1
    idx = np.stack([i1 - 1, i1, i1 + 1, i1 + 2], axis=1).astype(np.int64)
    w = np.stack([
        (1 - t) ** 3 / 6,
        (3 * t ** 3 - 6 * t ** 2 + 4) / 6,
        (-3 * t ** 3 + 3 * t ** 2 + 3 * t + 1) / 6,
        t ** 3 / 6,
    ], axis=1)
    return _mirror(idx, n_in), w


def _resample_axis(c: np.ndarray, axis: int, n_out: int, f: float, order: int) -> np.ndarray:
    """Resample float32 ``c`` along ``axis`` to ``n_out`` voxels (prefilter in place, then taps)."""
    n_in = c.shape[axis]
    a = int(np.prod(c.shape[:axis], dtype=np.int64))
    c3 = c.reshape(a, n_in, -1)
    if order > 1 and n_in > 1:
        prefilter_axis(c3)
    idx, w = _taps(n_in, n_out, f, order)
    return apply_taps(c3, idx, w).reshape(c.shape[:axis] + (n_out,) + c.shape[axis + 1:])


def resample_array(x: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float],
                   order: int = 3, shape: Sequence[int] | None = None, overwrite: bool = False) -> np.ndarray:
    """Resample one spatial array ``x: ndarray[*S]`` to the target spacing, one axis at a time.

    Axes are processed in the order that shrinks the data first (downsampling axes before
    upsampling ones) to keep temporaries small. Returns float32 ``[*S']``. ``overwrite``: ``x`` is a
    float32 C-contiguous array the caller no longer needs, filtered in place instead of copied.
    """
    f = scale_factors(spacing, target_spacing)
    out_shape = tuple(shape) if shape is not None else resampled_shape(x.shape, spacing, target_spacing)
    if overwrite and x.dtype == np.float32 and x.flags.c_contiguous:
        c = x
    else:
        c = np.array(x, dtype=np.float32, order="C", copy=True)
    axes = [ax for ax in range(x.ndim) if not (out_shape[ax] == x.shape[ax] and f[ax] == 1.0)]
    axes.sort(key=lambda ax: out_shape[ax] / x.shape[ax])
    for ax in axes:
        c = _resample_axis(c, ax, out_shape[ax], float(f[ax]), order)
    return np.ascontiguousarray(c, dtype=np.float32)


def resample_image(img: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float],
                   order: int = 3) -> np.ndarray:
    """Resample a channel-first image ``img: ndarray[C, *S]`` channel by channel -> float32 [C, *S']."""
    out_shape = resampled_shape(img.shape[1:], spacing, target_spacing)
    out = np.empty((img.shape[0],) + out_shape, dtype=np.float32)
    for ch in range(img.shape[0]):
        out[ch] = resample_array(img[ch], spacing, target_spacing, order=order, shape=out_shape)
    return out


def resample_labels(inst: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float],
                    case: str = "") -> tuple[np.ndarray, list[int]]:
    """Nearest-neighbour resampling of an instance map ``inst: ndarray[*S]`` -> (int32 [*S'], restored ids).

    Each output voxel takes the label of the original voxel containing its centre. An instance that
    no output centre hits (smaller than an output voxel) is not dropped: its centre of mass is mapped
    to the output grid and that voxel gets its id, with a warning.
    """
    f = scale_factors(spacing, target_spacing)
    out_shape = resampled_shape(inst.shape, spacing, target_spacing)
    if all(o == n for o, n in zip(out_shape, inst.shape)) and np.all(f == 1.0):
        return inst.astype(np.int32, copy=True), []
    index = [np.clip(np.floor((np.arange(o) + 0.5) * fi), 0, n - 1).astype(np.int64)
             for o, fi, n in zip(out_shape, f, inst.shape)]
    out = np.ascontiguousarray(inst[np.ix_(*index)], dtype=np.int32)
    slices = ndimage.find_objects(inst)  # one pass, no copies (ids must be >= 0)
    present = ndimage.find_objects(out, max_label=len(slices))
    missing = [i + 1 for i, sl in enumerate(slices) if sl is not None and present[i] is None]
    if missing:
        for i in missing:
            sl = slices[i - 1]
            com = ndimage.center_of_mass(inst[sl] == i)
            pos = tuple(int(min(o - 1, max(0, np.floor((s.start + c + 0.5) / fi))))
                        for s, c, fi, o in zip(sl, com, f, out_shape))
            out[pos] = int(i)
        logger.warning(f"{case}: instance(s) {[int(i) for i in missing]} smaller than one voxel at the target "
                       "spacing; kept as their centre voxel")
    return out, [int(i) for i in missing]
