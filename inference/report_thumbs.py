"""Thumbnails of one finding for the report page: crops around the box with its outline, as PNG bytes.

A 3D box gets three views through its centre voxel: axial (the z slice: rows y, columns x), coronal (the
y slice: rows z, columns x) and sagittal (the x slice: rows z, columns y), with z running upwards; a 2D
box gets the image itself. The crop reaches ``MARGIN`` times the box's extent (at least ``MIN_CROP_MM``)
around it, the pixels are scaled to square millimetres, the grey values windowed to the case's 0.5-99.5
percentiles, and the box outline drawn in its class colour.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COLOURS", "grey_window", "thumbnails"]

COLOURS = ((230, 57, 70), (42, 157, 143), (244, 162, 97), (69, 123, 157), (155, 93, 229), (131, 56, 236))
MARGIN = 1.0
MIN_CROP_MM = 30.0
SIDE = 150  # pixels of a thumbnail's longer side


def grey_window(volume: np.ndarray) -> tuple[float, float]:
    """The (low, high) grey values a case's thumbnails map to black and white."""
    sample = np.asarray(volume, dtype=np.float32).ravel()[:: max(1, volume.size // 2_000_000)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _crop_range(lo: float, hi: float, spacing: float, size: int) -> tuple[int, int]:
    extent = max((hi - lo) * (1 + 2 * MARGIN), MIN_CROP_MM / spacing)
    centre = (lo + hi) / 2
    a = int(np.floor(centre - extent / 2))
    b = int(np.ceil(centre + extent / 2))
    return max(a, 0), min(max(b, a + 1), size)


def _png(plane: np.ndarray, window: tuple[float, float], box: Sequence[float], spacing: Sequence[float],
         colour: tuple[int, int, int], flip: bool) -> bytes:
    """One view: ``plane[rows, cols]`` (already cropped), ``box`` = (r0, c0, r1, c1) in the crop's voxel edges."""
    lo, hi = window
    grey = np.clip((plane.astype(np.float32) - lo) / (hi - lo), 0, 1)
    rows, cols = grey.shape
    height_mm, width_mm = rows * spacing[0], cols * spacing[1]
    scale = SIDE / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    image = Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    sy, sx = size[1] / rows, size[0] / cols
    r0, c0, r1, c1 = box
    if flip:  # the first row is the highest z
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        r0, r1 = rows - r1, rows - r0
    ImageDraw.Draw(image).rectangle([c0 * sx, r0 * sy, max(c1 * sx - 1, c0 * sx), max(r1 * sy - 1, r0 * sy)],
                                    outline=colour, width=2)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def thumbnails(volume: np.ndarray, spacing: Sequence[float], box: Sequence[float], window: tuple[float, float],
               colour: tuple[int, int, int] = COLOURS[0]) -> dict[str, bytes]:
    """{view name: PNG bytes} of a box ``[lo..., hi...]`` (original array-index space, half-open)."""
    dim = volume.ndim
    box = np.asarray(box, dtype=np.float64)
    lo, hi = box[:dim], box[dim:]
    ranges = [_crop_range(lo[a], hi[a], spacing[a], volume.shape[a]) for a in range(dim)]
    centre = [int(np.clip(np.floor((lo[a] + hi[a]) / 2), 0, volume.shape[a] - 1)) for a in range(dim)]
    if dim == 2:
        (a0, a1), (b0, b1) = ranges
        return {"image": _png(volume[a0:a1, b0:b1], window, (lo[0] - a0, lo[1] - b0, hi[0] - a0, hi[1] - b0),
                              spacing, colour, flip=False)}
    (z0, z1), (y0, y1), (x0, x1) = ranges
    zc, yc, xc = centre
    return {
        "axial": _png(volume[zc, y0:y1, x0:x1], window, (lo[1] - y0, lo[2] - x0, hi[1] - y0, hi[2] - x0),
                      (spacing[1], spacing[2]), colour, flip=False),
        "coronal": _png(volume[z0:z1, yc, x0:x1], window, (lo[0] - z0, lo[2] - x0, hi[0] - z0, hi[2] - x0),
                        (spacing[0], spacing[2]), colour, flip=True),
        "sagittal": _png(volume[z0:z1, y0:y1, xc], window, (lo[0] - z0, lo[1] - y0, hi[0] - z0, hi[1] - y0),
                         (spacing[0], spacing[1]), colour, flip=True),
    }
