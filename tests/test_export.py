from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from retinaunet.inference.export import box_mask, export_case, seg_to_original, write_run_csv
from retinaunet.inference.predictor import CasePrediction
from retinaunet.preprocessing.preprocess import preprocess_case

from retinaunet.coordinates import box_world
from retinaunet.io import Geometry
from retinaunet.plans import make_test_plans


def rotation(a, b):
    """A proper rotation (about z by a, then about x by b), row-major flat, as SimpleITK's direction."""
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx).ravel())


SPACING = (2.5, 0.7, 0.9)  # array order z, y, x
ORIGIN = (10.0, -20.0, 5.0)
DIRECTION = rotation(0.5, -0.3)
SHAPE = (20, 30, 40)


def sitk_image(shape=SHAPE, spacing=SPACING, origin=ORIGIN, direction=DIRECTION):
    image = sitk.Image(list(reversed(shape)), sitk.sitkUInt8)
    image.SetSpacing(tuple(reversed(spacing)))
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


@pytest.fixture
def props():
    crop = [[2, 18], [3, 27], [4, 40]]
    target = (5.0, 1.4, 0.9)  # z and y downsampled by 2, x unchanged
    shape = [8, 12, 36]
    return {"case": "case7", "original": {"shape": list(SHAPE), "spacing": list(SPACING), "origin": list(ORIGIN),
                                          "direction": list(DIRECTION)},
            "crop": crop, "spacing": list(target), "shape": shape}


def test_box_world_matches_simpleitk_continuous_index():
    image = sitk_image()
    geom = Geometry.from_image(image)
    boxes = np.array([[3, 5, 7, 6, 9, 10], [0, 0, 0, 1, 1, 1], [4.5, 2.25, 7, 9, 3, 8.5]])
    centres, sizes = box_world(boxes, geom)
    for box, centre, size in zip(boxes, centres, sizes):
        cont = (box[:3] + box[3:]) / 2 - 0.5  # half-open [lo, hi) spans continuous indices lo-0.5 .. hi-0.5
        expected = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in cont[::-1]))
        np.testing.assert_allclose(centre, expected, atol=1e-9)
        np.testing.assert_allclose(size, (box[3:] - box[:3]) * np.array(SPACING))
    # a one-voxel box is centred on that voxel's SimpleITK index
    np.testing.assert_allclose(centres[1], image.TransformIndexToPhysicalPoint((0, 0, 0)), atol=1e-9)
    # and the centre maps back to the continuous index of the box centre
    np.testing.assert_allclose(geom.world_to_index(centres[0]), [4, 6.5, 8], atol=1e-9)


def test_exported_box_maps_back_to_the_original_voxels(tmp_path, props):
    # an object on original voxels z 6..9, y 9..14, x 10..16 (inclusive); preprocessed box = (orig - crop) / f
    obj_lo, obj_hi = np.array([6, 9, 10]), np.array([10, 15, 17])
    f = np.array(props["spacing"]) / np.array(SPACING)
    crop_lo = np.array([c[0] for c in props["crop"]])
    pre_box = np.concatenate([(obj_lo - crop_lo) / f, (obj_hi - crop_lo) / f])
    seg = np.zeros(props["shape"], dtype=np.uint8)
    seg[2:4, 3:6, 6:13] = 2  # the same object on the preprocessed grid, class 1 (+1)
    pred = CasePrediction(np.array([pre_box, [0, 0, 0, 1, 1, 1]]), np.array([0.3, 0.8]), np.array([1, 0]), seg)
    path = export_case(pred, props, tmp_path, class_names=["a", "b"], save_seg=True, save_boxes=True)
    doc = json.loads(path.read_text())
    assert doc["case"] == "case7" and doc["shape"] == list(SHAPE) and doc["spacing"] == list(SPACING)
    assert [b["score"] for b in doc["boxes"]] == [0.8, 0.3]  # sorted by score
    exported = doc["boxes"][1]
    assert exported["class"] == 1 and exported["class_name"] == "b"
    np.testing.assert_allclose(exported["box"], np.concatenate([obj_lo, obj_hi]))
    # the world centre is the centre of the object's voxels, as SimpleITK places them
    image = sitk_image()
    voxel_centre = (obj_lo + obj_hi - 1) / 2
    np.testing.assert_allclose(
        exported["center_world"],
        image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in voxel_centre[::-1])), atol=1e-6)
    np.testing.assert_allclose(exported["size_mm"], (obj_hi - obj_lo) * np.array(SPACING))
    # box mask: exactly the object's voxels, in the original geometry
    mask_img = sitk.ReadImage(str(tmp_path / "case7_boxes.nii.gz"))
    assert mask_img.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask_img.GetDirection(), DIRECTION, atol=1e-6)
    np.testing.assert_allclose(mask_img.GetOrigin(), ORIGIN, atol=1e-4)
    mask = sitk.GetArrayFromImage(mask_img)
    expected = np.zeros(SHAPE, dtype=bool)
    expected[6:10, 9:15, 10:17] = True
    np.testing.assert_array_equal(mask == 2, expected)
    # segmentation: back on the original voxels (z, y upsampled by 2 from the crop)
    seg_orig = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "case7_seg.nii.gz")))
    np.testing.assert_array_equal(seg_orig == 2, expected)
    assert seg_orig.sum() == 2 * expected.sum()


def test_seg_to_original_is_zero_outside_the_crop(props):
    seg = np.ones(props["shape"], dtype=np.uint8)
    out = seg_to_original(seg, props)
    assert out.shape == SHAPE
    inside = np.zeros(SHAPE, dtype=bool)
    inside[2:18, 3:27, 4:40] = True
    np.testing.assert_array_equal(out == 1, inside)


def test_box_mask_marks_voxel_centres_and_tiny_boxes():
    mask = box_mask(np.array([[1.4, 2.4, 3.5, 4.5], [6.2, 6.2, 6.3, 6.3]]), (10, 10))
    assert set(map(tuple, np.argwhere(mask == 1))) == {(y, x) for y in (1, 2) for x in (2, 3)}
    assert list(map(tuple, np.argwhere(mask == 2))) == [(6, 6)]


def test_run_csv_lists_every_box(tmp_path, props):
    for name, n in (("b", 2), ("a", 1), ("empty", 0)):
        pred = CasePrediction(np.tile([[0, 0, 0, 2, 2, 2]], (n, 1)).astype(float), np.full(n, 0.5),
                              np.zeros(n, dtype=np.int64))
        export_case(pred, {**props, "case": name}, tmp_path)
    (tmp_path / "other.json").write_text('{"not": "a prediction"}')
    rows = list(csv.DictReader(write_run_csv(tmp_path).open()))
    assert [r["case"] for r in rows] == ["a", "b", "b"]
    assert {"center_x_mm", "center_y_mm", "center_z_mm", "size_z_mm", "z0", "x1"} <= set(rows[0])
    assert float(rows[0]["size_z_mm"]) == pytest.approx(2 * 2 * 2.5)


def test_round_trip_through_preprocessing(tmp_path):
    """A real image (rotated, anisotropic, zero border that is cropped) preprocessed to another spacing:
    the preprocessed box of an object, exported, lands on the object's original voxels."""
    image = np.zeros(SHAPE, dtype=np.float32)
    image[2:18, 3:27, 4:40] = 1.0  # the non-zero region: crop [2, 18) x [3, 27) x [4, 40)
    inst = np.zeros(SHAPE, dtype=np.int32)
    inst[6:10, 9:15, 10:17] = 1
    image[inst > 0] = 5.0
    geometry = Geometry.from_image(sitk_image())
    plans = make_test_plans(dim=3)
    plans.target_spacing = [5.0, 1.4, 0.9]
    data, seg, props = preprocess_case(image[None], geometry, plans, inst, {1: 0}, case="rt")
    pre_box = np.asarray(props["boxes"]["1"], dtype=float)
    pred = CasePrediction(pre_box[None], np.array([0.9]), np.array([0]), (seg > 0).astype(np.uint8))
    doc = json.loads(export_case(pred, props, tmp_path, save_seg=True, save_boxes=True).read_text())
    np.testing.assert_allclose(doc["boxes"][0]["box"], [6, 9, 10, 10, 15, 17])
    expected_centre = sitk_image().TransformContinuousIndexToPhysicalPoint((13.0, 11.5, 7.5))  # x, y, z index
    np.testing.assert_allclose(doc["boxes"][0]["center_world"], expected_centre, atol=1e-6)
    boxes_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "rt_boxes.nii.gz")))
    np.testing.assert_array_equal(boxes_mask == 1, inst == 1)
    seg_orig = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "rt_seg.nii.gz")))
    np.testing.assert_array_equal(seg_orig == 1, inst == 1)
