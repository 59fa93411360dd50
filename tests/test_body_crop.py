"""CT cropped to the body: the box, the planner's rule, exact boxes back, and one crop for training and
prediction that never cuts a labelled voxel."""

from __future__ import annotations

import numpy as np
from retinaunet.planning.crop_rule import choose_crop
from retinaunet.planning.pipeline import summary_table
from retinaunet.preprocessing.preprocess import preprocess_case, preprocess_image_files

from retinaunet.boxes import boxes_from_instance_map
from retinaunet.coordinates import CaseCoordinates
from retinaunet.crop import body_box, case_crop, nonzero_box
from retinaunet.io import Geometry, write_image
from retinaunet.plans import CropPlan, Plans, make_test_plans

SPACING = (2.0, 0.8, 0.8)


def _chest(shape=(20, 96, 96), table=True) -> np.ndarray:
    """Air, a body ellipse (soft tissue with a lung inside), a table below it, padding outside the circle."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    image = np.full(shape, -1000, np.int16)
    body = ((y - 40) / 22.0) ** 2 + ((x - 48) / 30.0) ** 2 <= 1.0
    image[:, body[0]] = 40
    lung = ((y - 40) / 14.0) ** 2 + ((x - 48) / 20.0) ** 2 <= 1.0
    image[:, lung[0]] = -850
    if table:
        image[:, 78:81, 14:82] = 100
    image[:, ((y - 47.5) ** 2 + (x - 47.5) ** 2 > 47.5 ** 2)[0]] = -3024
    return image


def test_body_box_leaves_out_air_table_and_padding():
    image = _chest()
    box = body_box(image, SPACING, -500.0, margin_mm=4.0)
    assert nonzero_box(image[None]) == [[0, 20], [0, 96], [0, 96]]  # air is not zero: no crop at all
    (z0, z1), (y0, y1), (x0, x1) = box
    assert (z0, z1) == (0, 20)
    assert y0 <= 18 and y1 >= 63 and x0 <= 18 and x1 >= 79  # the body with its margin
    assert y1 < 78  # the table (rows 78-80) is not the body's component and stays out
    assert (y1 - y0) * (x1 - x0) < 0.6 * 96 * 96
    assert body_box(np.full((4, 8, 8), -1000, np.int16), SPACING) is None
    scattered = np.full((10, 60, 60), -1000, np.int16)
    scattered[2:5, 5:15, 5:15] = 40  # three blobs of a size, no body around them
    scattered[5:8, 40:50, 40:50] = 40
    scattered[2:5, 40:50, 5:14] = 40
    assert body_box(scattered, SPACING) is None
    assert case_crop(scattered[None], SPACING, "body") == nonzero_box(scattered[None])


def test_labelled_voxels_outside_the_body_widen_the_crop():
    image = _chest()
    labels = np.zeros(image.shape, np.int32)
    labels[5:7, 80:84, 40:44] = 1  # on the table, outside the body's box
    box = case_crop(image[None], SPACING, "body", labels=labels)
    assert box[1][1] >= 84 and box[1][0] <= 18
    assert case_crop(image[None], SPACING, "body")[1][1] < 78


def _plans() -> Plans:
    plans = make_test_plans(dim=3, num_classes=1)
    plans.target_spacing = list(SPACING)
    plans.normalization = [{"scheme": "ct", "clip": [-1000.0, 400.0], "mean": 0.0, "std": 100.0}]
    plans.crop = CropPlan(method="body")
    return plans


def test_preprocess_crops_to_the_body_and_boxes_map_back_exactly(tmp_path):
    image = _chest()
    inst = np.zeros(image.shape, np.int32)
    inst[8:11, 30:36, 30:37] = 1  # a nodule in the lung
    inst[3:5, 58:61, 60:63] = 2  # near the body's edge
    geom = Geometry(spacing=SPACING, origin=(10.0, -20.0, 5.0), direction=tuple(np.eye(3).ravel()), shape=image.shape)
    data, seg, props = preprocess_case(image[None], geom, _plans(), inst, {1: 0, 2: 0}, case="c")
    crop = props["crop"]
    assert data.shape[1:] == tuple(hi - lo for lo, hi in crop) and data.shape[2] < 70 < 96
    assert np.count_nonzero(seg) == np.count_nonzero(inst)  # nothing lost
    coords = CaseCoordinates.from_props(props)
    original = boxes_from_instance_map(inst)
    for key, box in props["boxes"].items():
        back = coords.to_original(np.asarray(box, dtype=float))[0]
        assert np.array_equal(back, original[int(key)].astype(float))  # exactly, no rounding
        assert np.array_equal(coords.to_preprocessed(back)[0], np.asarray(box, dtype=float))
    # a new image is cut by the same function: the same crop without labels (both objects lie in the body)
    path = write_image(image, geom, tmp_path / "c_0000.nii.gz")
    new, new_props = preprocess_image_files([path], _plans(), "c")
    assert new_props["crop"] == crop and np.array_equal(new, data)


def _fp(outside: int) -> dict:
    case = {"case": "a", "shape": [100, 512, 512], "crop_shape": [100, 512, 512], "num_objects": 2,
            "body_crop_shape": [100, 330, 450], "objects_outside_body": outside}
    return {"body_channel": 0, "cases": [case, dict(case, case="b", objects_outside_body=0)]}


def test_planner_crops_ct_to_the_body_unless_an_object_lies_outside():
    crop, reason = choose_crop(_fp(0))
    assert crop["method"] == "body" and crop["channel"] == 0 and "57%" in reason
    crop, reason = choose_crop(_fp(1))
    assert crop["method"] == "nonzero" and "1 training object(s) in 1 case(s) (e.g. a)" in reason
    no_body = _fp(0)
    no_body["cases"][1]["body_crop_shape"] = None
    crop, reason = choose_crop(no_body)
    assert crop["method"] == "nonzero" and "no dominant component" in reason
    crop, reason = choose_crop({"body_channel": None, "cases": []})
    assert crop == {"method": "nonzero"} and "no CT" in reason
    plans = _plans()
    plans.reasons["crop"] = "because"
    assert "crop" in summary_table(plans) and "because" in summary_table(plans)
    assert Plans.from_dict(plans.to_dict()).crop == CropPlan(method="body")
