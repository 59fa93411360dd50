"""Instance masks from the segmentation output, and operating points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from retinaunet.inference.instances import instance_map

from retinaunet.evaluation.operating_point import operating_curve, operating_point, propose_threshold
from tests.test_predict_cli import make_model_folder, write_image


def test_instance_map_cuts_each_box_from_its_class_and_best_box_wins():
    seg = np.zeros((20, 20), dtype=np.uint8)
    seg[2:6, 2:6] = 1  # class 0
    seg[10:15, 10:15] = 2  # class 1
    boxes = np.array([[10, 10, 15, 15], [2, 2, 6, 6], [0, 0, 12, 12]], dtype=float)  # by decreasing score
    out = instance_map(seg, boxes, np.array([1, 0, 0]))
    assert (out[10:15, 10:15] == 1).all()  # box 0 (class 1) keeps its voxels, also where box 2 overlaps
    assert (out[2:6, 2:6] == 2).all()  # box 1 beats the weaker box 2 that also covers it
    assert (out == 3).sum() == 0 and (out[seg == 0] == 0).all()


def test_rud_predict_save_instances(tmp_path):
    from retinaunet.inference.cli import main

    from retinaunet.plans import make_test_plans

    plans = make_test_plans(dim=2, num_classes=2)
    task = tmp_path / "Task000_Test"
    make_model_folder(task, plans)
    (task / "plans.json").write_text(json.dumps(plans.to_dict()))
    write_image(tmp_path / "images" / "a_0000.nii.gz", np.random.default_rng(0).normal(size=(64, 70)), (1, 1))
    assert main(["-t", str(task), "-i", str(tmp_path / "images"), "-o", str(tmp_path / "out"), "--folds", "0",
                 "--device", "cpu", "--save-instances", "--override", "min_score=0"]) == 0
    inst = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "a_instances.nii.gz")))
    boxes = json.loads((tmp_path / "out" / "a.json").read_text())["boxes"]
    assert inst.shape == (64, 70) and inst.max() <= len(boxes)


def test_operating_point_counts_and_proposed_thresholds():
    gt = [np.array([[0, 0, 10, 10]], float), np.array([[0, 0, 10, 10]], float)]
    gl = [np.zeros(1, np.int64), np.zeros(1, np.int64)]
    pb = [np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([[0, 0, 10, 10], [30, 30, 40, 40]], float)]
    ps = [np.array([0.9, 0.6]), np.array([0.4, 0.7])]
    pl = [np.zeros(2, np.int64), np.zeros(2, np.int64)]
    point = operating_point(pb, ps, pl, gt, gl, 1, threshold=0.5)
    assert point["total"] == {"tp": 1, "fp": 2, "fn": 1, "sensitivity": 0.5, "fp_per_case": 1.0}
    curve = operating_curve(pb, ps, pl, gt, gl, 1)
    full = propose_threshold(*curve, 2, target_sensitivity=1.0)
    assert full["threshold"] == pytest.approx(0.4) and full["fp_per_case"] == 1.0
    strict = propose_threshold(*curve, 2, target_fp=0.0)
    assert strict["threshold"] == pytest.approx(0.9) and strict["sensitivity"] == 0.5
    assert not propose_threshold(*curve, 2, target_sensitivity=1.1)["reachable"]


def test_pretrained_weights_load_where_they_fit(tmp_path):
    import torch

    from retinaunet.models import build_model
    from retinaunet.plans import make_test_plans
    from retinaunet.training.pretrained import load_pretrained

    source = make_model_folder(tmp_path / "Task000_Test", make_test_plans(dim=2, num_classes=2))
    model = build_model("retina_unet", make_test_plans(dim=2, num_classes=3))
    report = load_pretrained(model, source)
    assert report["loaded"] and any("cls_head" in k for k in report["initialised"])
    from retinaunet.model_folder import ModelFolder, load_checkpoint

    weights = load_checkpoint(ModelFolder(source).fold(0).checkpoint_files()[0])["state_dict"]
    name = report["loaded"][0]
    assert torch.equal(model.state_dict()[name], weights[name])
