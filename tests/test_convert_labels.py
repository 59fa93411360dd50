"""rud_convert seg2det (nnU-Net tasks), boxes and points (CSV / JSON, world / voxel coordinates)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from retinaunet.planning.pipeline import plan_task

from retinaunet.convert.cli import main as rud_convert
from retinaunet.convert.labels import convert_labels
from retinaunet.convert.seg2det import convert_seg2det, instances_from_semantic
from retinaunet.convert.shapes import paint_box, paint_ellipsoid
from retinaunet.dataset import validate_dataset
from retinaunet.io import Geometry, read_image, read_json
from retinaunet.layout import TaskPaths
from tests.convert_fixtures import ROTATED, make_images, make_nnunet_task


@pytest.mark.parametrize("v2", [False, True])
def test_seg2det_components_per_class_with_min_size(tmp_path, v2):
    src = make_nnunet_task(tmp_path / "Task500_Seg", v2=v2)
    task = tmp_path / "Task020_Seg"
    summary = convert_seg2det(src, task, min_size_mm3=3.0, progress=False)
    assert validate_dataset(task, progress=False) == []
    info = read_json(task / "dataset.json")
    assert info["labels"] == {"0": "organ", "1": "lesion"} and info["modalities"] == {"0": "CT"}
    classes = read_json(TaskPaths(task).labels_tr / "seg_000.json")["instances"]
    assert sorted(classes.values()) == [0, 1, 1]
    assert summary.objects == {0: 4, 1: 8} and len(summary.written) == 5  # 4 train + 1 unlabelled test
    assert len(summary.dropped) == 4 and "smaller than 3 mm3" in summary.text()  # the one-voxel specks (1.6 mm3)
    assert (TaskPaths(task).images_ts / "segts_000_0000.nii.gz").is_file()
    again = convert_seg2det(src, task, min_size_mm3=3.0, progress=False)
    assert again.written == [] and len(again.skipped) == 5 and again.objects == summary.objects
    # only the lesions, no minimum size
    only = convert_seg2det(src, tmp_path / "Task021_Lesions", label_values=[2], progress=False)
    assert only.objects == {0: 12}


def test_instances_from_semantic_connectivity():
    seg = np.zeros((1, 4, 4), dtype=np.uint8)
    seg[0, 0, 0] = seg[0, 1, 1] = 1  # touch at a corner
    inst, classes, _ = instances_from_semantic(seg, [1], 1.0, connectivity="full")
    assert classes == {1: 0}
    inst, classes, _ = instances_from_semantic(seg, [1], 1.0, connectivity="face")
    assert classes == {1: 0, 2: 0} and set(np.unique(inst)) == {0, 1, 2}


def test_paint_shapes_world_and_voxel():
    geom = Geometry((2.0, 1.0, 1.0), (10.0, 20.0, 30.0), ROTATED, (10, 20, 20))
    inst = np.zeros(geom.shape, dtype=np.uint16)
    centre_idx = np.array([5.0, 8.0, 12.0])
    centre = geom.index_to_world(centre_idx)
    assert paint_ellipsoid(inst, geom, centre, 3.0, 1) > 0
    voxels = np.argwhere(inst == 1)
    assert np.allclose(voxels.mean(0), centre_idx)
    assert (np.linalg.norm(geom.index_to_world(voxels.astype(float)) - centre, axis=1) <= 3.0).all()
    # a tiny point still marks its voxel; a second object does not paint over the first
    assert paint_ellipsoid(inst, geom, geom.index_to_world([1.0, 1.0, 1.0]), 0.01, 2) == 1 and inst[1, 1, 1] == 2
    assert paint_ellipsoid(inst, geom, centre, 1.0, 3) == 0
    # a voxel box [lo, hi) in array order covers exactly those voxels
    inst2 = np.zeros(geom.shape, dtype=np.uint16)
    assert paint_box(inst2, geom, [1, 2, 3, 4, 6, 8], 1, world=False) == 3 * 4 * 5
    assert inst2[1:4, 2:6, 3:8].all()
    # a world box (x, y, z mm) on the rotated grid
    inst3 = np.zeros(geom.shape, dtype=np.uint16)
    lo, hi = geom.index_to_world([2, 3, 4]), geom.index_to_world([4, 6, 9])
    paint_box(inst3, geom, [*np.minimum(lo, hi), *np.maximum(lo, hi)], 1, world=True)
    assert inst3[2:5, 3:7, 4:10].all() and inst3.sum() == 3 * 4 * 6


def test_points_csv_world_and_boxes_json_voxel(tmp_path):
    images = make_images(tmp_path / "imgs", direction=ROTATED, origin=(5.0, 6.0, 7.0))
    geom = read_image(images / "a_0000.nii.gz")[1]
    c1 = geom.index_to_world([8.0, 10.0, 12.0])
    csv_file = tmp_path / "points.csv"
    csv_file.write_text("case,class,x,y,z,diameter\n"
                        f"a,lesion,{c1[0]},{c1[1]},{c1[2]},6\n"
                        "b,cyst,100,100,100,4\n"       # outside the image
                        "zz,lesion,0,0,0,4\n")          # no such image
    task = tmp_path / "Task030_Points"
    summary = convert_labels("points", images, csv_file, task, coords="world", progress=False)
    assert validate_dataset(task, progress=False) == []
    info = read_json(task / "dataset.json")
    assert info["seg_supervision"] is False and info["labels"] == {"0": "cyst", "1": "lesion"}
    labels, _ = read_image(TaskPaths(task).labels_tr / "a.nii.gz")
    assert np.allclose(np.argwhere(labels == 1).mean(0), [8, 10, 12])
    assert sorted(r for _, r in summary.dropped) == ["no image of this case", "outside the image"]

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a": [{"class": 0, "x0": 2, "y0": 3, "z0": 1, "x1": 6, "y1": 9, "z1": 4}],
                                 "c": [{"class": 1, "x0": 0, "y0": 0, "z0": 0, "x1": 2, "y1": 2, "z1": 2}]}))
    task2 = tmp_path / "Task031_Boxes"
    convert_labels("boxes", images, boxes, task2, coords="voxel", progress=False)
    labels, _ = read_image(TaskPaths(task2).labels_tr / "a.nii.gz")
    assert labels[1:4, 3:9, 2:6].all() and (labels > 0).sum() == 3 * 6 * 4
    assert read_json(TaskPaths(task2).labels_tr / "b.json") == {"instances": {}}


def test_box_tasks_plan_without_segmentation_loss(tmp_path, data_root, capsys):
    make_images(tmp_path / "imgs", cases=("a", "b", "c", "d"))
    rows = ["case,class,x0,y0,z0,x1,y1,z1"] + [f"{c},0,4,4,2,12,14,8" for c in "abcd"]
    (tmp_path / "b.csv").write_text("\n".join(rows) + "\n")
    assert rud_convert(["boxes", str(tmp_path / "imgs"), "--labels", str(tmp_path / "b.csv"), "--coords", "voxel",
                        "-t", "32", "--quiet"]) == 0
    assert "objects: 4 (class0 4)" in capsys.readouterr().out
    plans, _ = plan_task(data_root / "Task032_Boxes")
    assert plans.training.seg_loss_weight == 0.0
    assert "seg_supervision" in plans.reasons["training.seg_loss_weight"]
    assert rud_convert(["boxes", str(tmp_path / "imgs"), "-t", "33"]) == 1  # no --labels
