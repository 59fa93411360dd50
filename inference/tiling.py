"""Sliding-window tiles over a whole preprocessed case.

A case of spatial shape ``S`` is covered by patches of the plan's size ``P`` that overlap by at least
``overlap * P`` along every axis. Along an axis shorter than the patch, a single tile is centred on
the image and the outside is zero padded (``start < 0``). Tiles are cut one at a time
(:func:`extract_tile`), so the padded volume is never held in memory.

Because the tiles form a regular product grid, the number of tiles covering a voxel is the product
of per-axis counts; :meth:`TileGrid.mean_coverage` uses this to give the mean number of tiles that
cover a box (the "expected views" of weighted box clustering) without any full-size map.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from retinaunet.tiles import tile_starts


@dataclass
class TileGrid:
    """All tiles over an image of spatial ``shape`` (data coordinates, array order).

    ``axis_starts[d]``: int64[n_d] starts along axis d; tiles are their product in C order.
    """

    shape: tuple[int, ...]
    patch_size: tuple[int, ...]
    overlap: float
    axis_starts: list[np.ndarray] = field(init=False)
    axis_coverage: list[np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if len(self.shape) != len(self.patch_size):
            raise ValueError(f"image shape {self.shape} and patch size {self.patch_size} differ in dims")
        self.axis_starts = [tile_starts(s, p, self.overlap) for s, p in zip(self.shape, self.patch_size)]
        self.axis_coverage = []
        for size, patch, starts in zip(self.shape, self.patch_size, self.axis_starts):
            count = np.zeros(size + 1, dtype=np.int64)
            for s in starts:
                count[max(0, s)] += 1
                count[min(size, s + patch)] -= 1
            self.axis_coverage.append(np.cumsum(count)[:size])

    @property
    def dim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return int(np.prod([len(s) for s in self.axis_starts]))

    @property
    def starts(self) -> np.ndarray:
        """int64[T, dim]: every tile's start, C order over the per-axis starts."""
        return np.asarray(list(itertools.product(*self.axis_starts)), dtype=np.int64).reshape(-1, self.dim)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        for start in itertools.product(*self.axis_starts):
            yield tuple(int(s) for s in start)

    def coverage(self) -> np.ndarray:
        """int64[*shape]: number of tiles covering each voxel (for tests and small images)."""
        out = np.ones((), dtype=np.int64)
        for c in self.axis_coverage:
            out = np.multiply.outer(out, c)
        return out

    def mean_coverage(self, boxes: np.ndarray) -> np.ndarray:
        """Mean number of tiles covering the voxels of each box: float64[N] for ``boxes: [N, 2*dim]``.

        A box ``[lo, hi)`` (data coordinates, may be fractional) covers the voxels ``floor(lo)`` up to
        ``ceil(hi)`` (at least one, clipped to the image); the mean over a box of a product of per-axis
        counts is the product of the per-axis means.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * self.dim)
        out = np.ones(len(boxes), dtype=np.float64)
        for d, (size, cover) in enumerate(zip(self.shape, self.axis_coverage)):
            cum = np.concatenate([[0], np.cumsum(cover)])
            lo = np.clip(np.floor(boxes[:, d]), 0, size - 1).astype(np.int64)
            hi = np.clip(np.ceil(boxes[:, d + self.dim]), 0, size).astype(np.int64)
            hi = np.maximum(hi, lo + 1)
            out *= (cum[hi] - cum[lo]) / (hi - lo)
        return out


def tile_slices(start: Sequence[int], patch_size: Sequence[int], shape: Sequence[int]
                ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The part of a tile inside the image: (slices into the image, slices into the tile)."""
    src, dst = [], []
    for s, p, n in zip(start, patch_size, shape):
        lo, hi = max(0, s), min(n, s + p)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    return tuple(src), tuple(dst)


def extract_tile(image: np.ndarray, start: Sequence[int], patch_size: Sequence[int],
                 out: np.ndarray | None = None) -> np.ndarray:
    """Cut one tile ``float32[C, *P]`` from ``image: [C, *S]``, zero outside the image (into ``out`` if given,
    so a batch buffer can be reused tile after tile)."""
    if out is None:
        tile = np.zeros((image.shape[0], *patch_size), dtype=np.float32)
    else:
        tile = out
        tile.fill(0)
    src, dst = tile_slices(start, patch_size, image.shape[1:])
    tile[(slice(None), *dst)] = image[(slice(None), *src)]
    return tile
