from __future__ import annotations

import numpy as np
import pytest
from retinaunet.inference.tiling import TileGrid, extract_tile, tile_slices, tile_starts

from retinaunet.store import context_slice


@pytest.mark.parametrize("size,patch,overlap", [(100, 32, 0.5), (64, 32, 0.5), (33, 32, 0.5), (97, 16, 0.25),
                                                (50, 48, 0.0), (300, 64, 0.5)])
def test_tile_starts_cover_inside_and_overlap(size, patch, overlap):
    starts = tile_starts(size, patch, overlap)
    assert starts[0] == 0 and starts[-1] == size - patch  # inside the image, flush with both ends
    assert np.all(np.diff(starts) > 0)
    covered = np.zeros(size, dtype=bool)
    for s in starts:
        covered[s: s + patch] = True
    assert covered.all()
    # neighbours share at least the asked fraction of the patch
    assert np.all(patch - np.diff(starts) >= overlap * patch)


def test_tile_overlap_is_as_asked_not_more_tiles_than_needed():
    assert list(tile_starts(96, 32, 0.5)) == [0, 16, 32, 48, 64]
    assert list(tile_starts(96, 32, 0.0)) == [0, 32, 64]
    with pytest.raises(ValueError):
        tile_starts(96, 32, 1.0)


def test_small_images_are_centred_and_padded():
    assert list(tile_starts(20, 32, 0.5)) == [-6]
    assert list(tile_starts(32, 32, 0.5)) == [0]
    image = np.arange(1 * 5 * 20, dtype=np.float32).reshape(1, 5, 20) + 1
    grid = TileGrid((5, 20), (8, 32), 0.5)
    assert len(grid) == 1
    (start,) = list(grid)
    tile = extract_tile(image, start, (8, 32))
    assert tile.shape == (1, 8, 32)
    src, dst = tile_slices(start, (8, 32), (5, 20))
    np.testing.assert_array_equal(tile[(slice(None), *dst)], image)
    assert tile.sum() == image.sum()  # zeros everywhere else


def test_grid_covers_every_voxel_and_counts_coverage():
    shape, patch = (40, 70, 33), (16, 32, 32)
    grid = TileGrid(shape, patch, 0.5)
    count = np.zeros(shape, dtype=np.int64)
    for start in grid:
        src, _ = tile_slices(start, patch, shape)
        count[src] += 1
    assert count.min() >= 1
    np.testing.assert_array_equal(grid.coverage(), count)
    assert len(grid.starts) == len(grid) == len(list(grid))


def test_mean_coverage_of_boxes_matches_brute_force():
    shape, patch = (50, 45), (20, 16)
    grid = TileGrid(shape, patch, 0.5)
    cover = grid.coverage()
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 40, size=(20, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.5, 10, size=(20, 2))], axis=1)
    got = grid.mean_coverage(boxes)
    for box, value in zip(boxes, got):
        a = np.clip(np.floor(box[:2]), 0, np.array(shape) - 1).astype(int)
        b = np.maximum(np.clip(np.ceil(box[2:]), 0, shape).astype(int), a + 1)
        assert value == pytest.approx(cover[a[0]: b[0], a[1]: b[1]].mean())


def test_extract_tile_cuts_the_right_region():
    image = np.random.default_rng(1).normal(size=(2, 30, 40)).astype(np.float32)
    tile = extract_tile(image, (10, 25), (16, 16))
    np.testing.assert_array_equal(tile[:, :, :15], image[:, 10:26, 25:40])
    assert not tile[:, :, 15:].any()


def test_context_slice_stacks_neighbours_modality_major_with_zero_border():
    data = np.arange(2 * 4 * 3 * 3, dtype=np.float32).reshape(2, 4, 3, 3) + 1
    ctx = context_slice(data, 0, 1)
    assert ctx.shape == (6, 3, 3)
    assert not ctx[0].any() and not ctx[3].any()  # slice -1 of both modalities is zero
    np.testing.assert_array_equal(ctx[1], data[0, 0])
    np.testing.assert_array_equal(ctx[2], data[0, 1])
    np.testing.assert_array_equal(ctx[4], data[1, 0])
    np.testing.assert_array_equal(context_slice(data, 3, 1)[2], np.zeros((3, 3)))
