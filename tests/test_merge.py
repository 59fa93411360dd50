"""2D -> 3D merging of slice-wise boxes (paper section 4.2)."""

from __future__ import annotations

import numpy as np
import pytest
from retinaunet.inference.merge import connected_run, merge_2d_to_3d


def test_connected_run():
    assert connected_run(np.array([23, 46, 48, 49, 50, 51, 52, 53, 56, 57]), 50) == (48, 53)
    assert connected_run(np.array([7]), 7) == (7, 7)


def test_connected_slices_merge_into_one_cube():
    boxes = np.array([[10, 10, 20, 20], [11, 10, 21, 20], [10, 11, 20, 21]], float)
    b, s, lab = merge_2d_to_3d(boxes, [0.6, 0.9, 0.7], [0, 0, 0], [3, 4, 5])
    np.testing.assert_allclose(b, [[3, 11, 10, 6, 21, 20]])  # top box's in-plane extent, z in [3, 6)
    assert s.tolist() == [0.9] and lab.tolist() == [0]
    _, s_mean, _ = merge_2d_to_3d(boxes, [0.6, 0.9, 0.7], [0, 0, 0], [3, 4, 5], score_mode="mean")
    assert s_mean == pytest.approx([(0.6 + 0.9 + 0.7) / 3])


def test_gap_splits_and_separate_objects_stay_separate():
    boxes = np.array([[10, 10, 20, 20]] * 4 + [[50, 50, 60, 60]], float)
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    slices = [4, 3, 6, 7, 4]
    b, s, _ = merge_2d_to_3d(boxes, scores, [0] * 5, slices)
    # top at slice 4 merges slice 3; slice 5 is empty, so 6-7 form their own cube; the far box is alone
    np.testing.assert_allclose(b, [[3, 10, 10, 5, 20, 20], [6, 10, 10, 8, 20, 20], [4, 50, 50, 5, 60, 60]])
    np.testing.assert_allclose(s, [0.9, 0.7, 0.5])


def test_classes_and_overlap_threshold():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 8, 10, 18]], float)
    b, _, lab = merge_2d_to_3d(boxes, [0.9, 0.8, 0.7], [0, 1, 0], [0, 1, 1])
    # different classes never merge; in-plane IoU 20/180 ~ 0.11 > 0.1 merges the third box into the first
    assert sorted(lab.tolist()) == [0, 1] and len(b) == 2
    b2, _, _ = merge_2d_to_3d(boxes, [0.9, 0.8, 0.7], [0, 1, 0], [0, 1, 1], iou_threshold=0.2)
    assert len(b2) == 3
    empty = merge_2d_to_3d(np.zeros((0, 4)), [], [], [])
    assert empty[0].shape == (0, 6)
