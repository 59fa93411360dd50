"""Weighted box clustering: hand-computed clusters, patch-centre factors, numba == NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from retinaunet.inference.wbc import (
    consolidate,
    patch_center_factor,
    weighted_box_clustering,
    weighted_box_clustering_numpy,
)

IMPLEMENTATIONS = [weighted_box_clustering, weighted_box_clustering_numpy]


def arr(*rows):
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize("wbc", IMPLEMENTATIONS)
def test_missing_views_damp_the_score(wbc):
    box = arr([2, 2, 2, 6, 6, 6])
    b, s, lab = wbc(box, [0.8], [1], [0], expected_views=4.0)
    # o_s = s w / (w + 3 w)
    assert s == pytest.approx([0.2]) and lab.tolist() == [1]
    np.testing.assert_allclose(b, box)
    # all views present: the score stays
    assert wbc(box, [0.8], [1], [0], expected_views=1.0)[1] == pytest.approx([0.8])
    # two boxes of the same view count as one view: expected 2, found 1 -> n_missing 1
    _, s2, _ = wbc(arr([2, 2, 2, 6, 6, 6], [2, 2, 2, 6, 6, 6]), [0.8, 0.4], [0, 0], [3, 3], expected_views=2.0)
    assert s2 == pytest.approx([(0.8 + 0.4) / 3])


@pytest.mark.parametrize("wbc", IMPLEMENTATIONS)
def test_weighted_coordinates_and_score(wbc):
    # A: area 100, IoU 1 -> w 100; B: area 200, IoU with A 0.5 -> w 100; two views, both present
    boxes = arr([0, 0, 10, 10], [0, 0, 10, 20])
    b, s, _ = wbc(boxes, [0.9, 0.5], [0, 0], [0, 1], expected_views=2.0)
    assert s == pytest.approx([(0.9 * 100 + 0.5 * 100) / 200])
    x_max = (10 * 0.9 * 100 + 20 * 0.5 * 100) / (0.9 * 100 + 0.5 * 100)
    np.testing.assert_allclose(b, [[0, 0, 10, x_max]])


@pytest.mark.parametrize("wbc", IMPLEMENTATIONS)
def test_patch_center_factor_weights_members(wbc):
    boxes = arr([0, 0, 4, 4], [0, 0, 4, 4])
    _, s, _ = wbc(boxes, [1.0, 0.0], [0, 0], [0, 1], patch_center_factors=[1.0, 0.5], expected_views=2.0)
    assert s == pytest.approx([1.0 / 1.5])


@pytest.mark.parametrize("wbc", IMPLEMENTATIONS)
def test_separate_objects_classes_and_low_scores(wbc):
    boxes = arr([0, 0, 4, 4], [1, 1, 5, 5], [20, 20, 24, 24], [0, 0, 4, 4], [40, 40, 44, 44])
    scores = [0.9, 0.6, 0.7, 0.5, 0.03]
    labels = [0, 0, 0, 1, 0]
    b, s, lab = wbc(boxes, scores, labels, [0, 1, 0, 0, 0], expected_views=1.0)
    # class 0: {box 0, box 1} cluster, box 2 alone, box 4 alone; class 1: box 3 alone
    assert len(s) == 4 and sorted(lab.tolist()) == [0, 0, 0, 1]
    assert np.all(np.diff(s) <= 0)
    # 0.03 with 4 expected views -> 0.0075 <= 0.01: dropped
    _, s_low, _ = wbc(boxes[4:], [0.03], [0], [0], expected_views=4.0)
    assert len(s_low) == 0
    # boxes without volume are ignored; empty input is fine
    assert len(wbc(arr([0, 0, 0, 4]), [0.9], [0], [0])[1]) == 0
    b0, s0, l0 = wbc(np.zeros((0, 6)), [], [], [])
    assert b0.shape == (0, 6) and s0.shape == l0.shape == (0,)


def test_patch_center_factor_values():
    p = (64, 64)
    corner, edge = np.exp(-0.5 * (32 / (0.8 * 32)) ** 2), (1 + np.exp(-0.78125)) / 2
    f = patch_center_factor(arr([30, 30, 34, 34], [-2, -2, 2, 2], [30, -2, 34, 2]), p)
    np.testing.assert_allclose(f, [1.0, corner, edge])
    assert corner == pytest.approx(0.4578, abs=1e-4)
    f3 = patch_center_factor(arr([0, 30, 30, 8, 34, 34]), (8, 64, 64))
    assert f3[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        patch_center_factor(arr([0, 0, 1, 1]), (8, 8, 8))


def _random_views(rng, dim, n_objects=6, n_views=10, n_classes=3):
    centres = rng.uniform(10, 90, (n_objects, dim))
    sizes = rng.uniform(4, 15, (n_objects, dim))
    classes = rng.integers(0, n_classes, n_objects)
    boxes, scores, labels, views = [], [], [], []
    for v in range(n_views):
        for o in range(n_objects):
            if rng.uniform() < 0.7:
                c = centres[o] + rng.normal(0, 1.5, dim)
                s = sizes[o] * rng.uniform(0.8, 1.2, dim)
                boxes.append(np.concatenate([c - s / 2, c + s / 2]))
                scores.append(rng.uniform(0.05, 1))
                labels.append(classes[o] if rng.uniform() < 0.9 else rng.integers(0, n_classes))
                views.append(v)
        for _ in range(rng.integers(0, 4)):  # noise
            c, s = rng.uniform(0, 100, dim), rng.uniform(2, 10, dim)
            boxes.append(np.concatenate([c - s / 2, c + s / 2]))
            scores.append(rng.uniform(0, 0.5))
            labels.append(rng.integers(0, n_classes))
            views.append(v)
    n = len(scores)
    return (np.array(boxes), np.array(scores), np.array(labels), np.array(views) * 7 + 3,
            rng.uniform(0.3, 1, n), rng.uniform(5, 15, n))


@pytest.mark.parametrize("seed", range(6))
def test_numba_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    args = _random_views(rng, 2 + seed % 2)
    fast = weighted_box_clustering(*args)
    ref = weighted_box_clustering_numpy(*args)
    assert len(fast[1]) == len(ref[1]) > 0
    np.testing.assert_array_equal(fast[2], ref[2])
    np.testing.assert_allclose(fast[1], ref[1], rtol=1e-12)
    np.testing.assert_allclose(fast[0], ref[0], rtol=1e-12, atol=1e-12)
    # a larger threshold splits clusters the same way in both
    fast5 = weighted_box_clustering(*args, iou_threshold=0.5)
    ref5 = weighted_box_clustering_numpy(*args, iou_threshold=0.5)
    np.testing.assert_allclose(fast5[1], ref5[1], rtol=1e-12)
    assert len(fast5[1]) >= len(fast[1])


def test_numba_matches_reference_on_mixed_sizes_and_big_clusters():
    rng = np.random.default_rng(7)
    # sizes spanning two orders of magnitude (the sweep window depends on the largest box), touching
    # boxes (no overlap), and one cluster of 60 members
    lo = rng.uniform(0, 200, (300, 3))
    boxes = np.concatenate([lo, lo + np.exp(rng.uniform(0, 4.5, (300, 3)))], 1)
    touching = np.array([[0, 0, 0, 5, 5, 5], [5, 0, 0, 10, 5, 5]], float)
    crowd = np.array([300, 300, 300, 320, 320, 320], float) + rng.normal(0, 1, (60, 6))
    boxes = np.concatenate([boxes, touching, crowd])
    n = len(boxes)
    labels = rng.integers(0, 2, n)
    labels[-60:] = 1
    args = (boxes, rng.uniform(0, 1, n), labels, rng.integers(0, 50, n), rng.uniform(0.5, 1, n), rng.uniform(1, 60, n))
    fast, ref = weighted_box_clustering(*args), weighted_box_clustering_numpy(*args)
    assert len(fast[1]) == len(ref[1])
    np.testing.assert_array_equal(fast[2], ref[2])
    np.testing.assert_allclose(fast[1], ref[1], rtol=1e-12)
    np.testing.assert_allclose(fast[0], ref[0], rtol=1e-12, atol=1e-12)


def test_consolidate_nms_and_wbc():
    boxes = arr([0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40])
    b, s, lab = consolidate(boxes, [0.9, 0.8, 0.005], [0, 0, 0], [0, 1, 2], method="nms")
    np.testing.assert_allclose(b, boxes[:1])  # the overlapping 0.8 is suppressed, 0.005 is below min_score
    assert s.tolist() == [0.9]
    bw, sw, _ = consolidate(boxes, [0.9, 0.8, 0.5], [0, 0, 0], [0, 1, 2], method="wbc", expected_views=2.0)
    assert len(sw) == 2 and sw[0] < 0.9
    with pytest.raises(ValueError):
        consolidate(boxes, [0.9, 0.8, 0.5], [0, 0, 0], [0, 1, 2], method="mean")
