"""Tile positions along one axis: where the sliding window of a whole-case prediction starts.

Shared by the planner (which counts the tiles of the median case to size the inference ensemble) and by
inference (which cuts the tiles, ``retinaunet.inference.tiling``), so neither stage imports the other.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["tile_starts"]


def tile_starts(size: int, patch: int, overlap: float) -> np.ndarray:
    """Start positions along one axis: int64[n].

    ``size <= patch``: one start ``-((patch - size) // 2)`` (the image centred in a zero-padded tile).
    Otherwise ``n = ceil((size - patch) / step) + 1`` starts spread evenly from 0 to ``size - patch``
    with ``step = floor(patch * (1 - overlap))``, so neighbours overlap by at least ``overlap * patch``.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap must be in [0, 1), got {overlap}")
    if size <= patch:
        return np.asarray([-((patch - size) // 2)], dtype=np.int64)
    step = max(1, int(math.floor(patch * (1.0 - overlap))))
    n = int(math.ceil((size - patch) / step)) + 1
    return np.round(np.linspace(0, size - patch, n)).astype(np.int64)
