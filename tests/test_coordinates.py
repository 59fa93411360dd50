"""Case coordinates: preprocessed grid <-> original image <-> world, owned by retinaunet.coordinates."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from retinaunet.coordinates import CaseCoordinates, box_world, scale_factors
from retinaunet.io import Geometry

DIRECTION = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _props():
    return {"case": "c", "original": {"shape": [40, 60, 50], "spacing": [2.5, 0.8, 0.6],
                                      "origin": [10.0, -5.0, 3.0], "direction": list(DIRECTION)},
            "crop": [[4, 36], [10, 50], [0, 50]], "spacing": [5.0, 0.8, 1.2], "shape": [16, 40, 25]}


def test_round_trip_and_clip():
    coords = CaseCoordinates.from_props(_props())
    np.testing.assert_allclose(coords.factors, [2.0, 1.0, 2.0])
    boxes = np.array([[1, 2, 3, 4, 10, 7], [0, 0, 0, 16, 40, 25]], dtype=float)
    orig = coords.to_original(boxes)
    np.testing.assert_allclose(orig[0], [6, 12, 6, 12, 20, 14])
    np.testing.assert_allclose(orig[1], [4, 10, 0, 36, 50, 50])  # the whole grid is the crop
    np.testing.assert_allclose(coords.to_preprocessed(orig), boxes)
    far = coords.to_original([[-10, 0, 0, 30, 5, 5]])
    assert far[0, 0] == 0 and far[0, 3] == 40  # clipped to the original image


def test_world_agrees_with_simpleitk():
    props = _props()
    coords = CaseCoordinates.from_props(props)
    image = sitk.Image(*reversed(props["original"]["shape"]), sitk.sitkUInt8)
    Geometry.from_dict(props["original"]).apply_to(image)
    centre, size = coords.to_world(coords.to_original([[1, 2, 3, 4, 10, 7]]))
    expected = image.TransformContinuousIndexToPhysicalPoint([(6 + 14) / 2 - 0.5, (12 + 20) / 2 - 0.5,
                                                              (6 + 12) / 2 - 0.5])
    np.testing.assert_allclose(centre[0], expected)
    np.testing.assert_allclose(size[0], [6 * 2.5, 8 * 0.8, 8 * 0.6])
    np.testing.assert_allclose(box_world([[0, 0, 0, 1, 1, 1]], coords.original)[0][0],
                               image.TransformIndexToPhysicalPoint((0, 0, 0)))


def test_voxel_lookup_matches_box_mapping():
    coords = CaseCoordinates.from_props(_props())
    j = coords.original_index_of(2)  # x: crop from 0, factor 2
    assert j[0] == 0 and j[1] == 0 and j[2] == 1 and j[-1] == 24
    j = coords.original_index_of(0)  # z: crop from 4, factor 2; voxels before the crop fall outside
    assert (j[:4] < 0).all() and j[4] == 0 and j[35] == 15 and j[36] == 16
    assert scale_factors([1.0], [1.0 + 1e-7])[0] == 1.0
