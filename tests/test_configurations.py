"""Several configurations per task: plans.json with named plans, and consolidation choosing between them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from retinaunet.inference.consolidate import consolidate_task, ensemble_of_two
from retinaunet.inference.raw import save_raw

from retinaunet.model_folder import ModelFolder
from retinaunet.plans import PlansError, load_plans, make_test_plans, plan_names, save_plans, save_task_plans
from tests.test_predict_cli import make_model_folder
from tests.test_sweep import toy_case


def test_plans_file_holds_several_configurations_and_old_files_still_load(tmp_path):
    path = tmp_path / "plans.json"
    three = make_test_plans(dim=3)
    save_plans(three, path)  # a file of one plan, as older versions wrote
    assert load_plans(path).plan_name == "3d" and load_plans(path, "3d").mode == "3d"
    with pytest.raises(PlansError, match="holds only plan '3d'"):
        load_plans(path, "2d")
    two = make_test_plans(dim=2, mode="2dc", in_channels=7)
    assert save_task_plans(two, path)  # converts the file and adds beside
    assert plan_names(path) == (["3d", "2dc"], "3d")
    assert load_plans(path).plan_name == "3d" and load_plans(path, "2dc").in_channels == 7
    assert not save_task_plans(two, path)  # unchanged: nothing written
    save_task_plans(two, path, default=True)
    assert plan_names(path)[1] == "2dc"
    with pytest.raises(PlansError, match="no plan '2d'.*rud_plan --mode 2d"):
        load_plans(path, "2d")


def test_rud_plan_adds_configurations_side_by_side(tmp_path, monkeypatch, capsys):
    from retinaunet.planning.cli import main as plan_main

    from retinaunet.toy import Toy3DConfig, write_toy_task

    task = write_toy_task("spheres", tmp_path, config=Toy3DConfig(num_train=6, num_test=1), progress=False)
    monkeypatch.setenv("RUD_DATA", str(tmp_path))
    assert plan_main(["-t", task.name, "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "configurations that fit this data" in out and "2dc" in out
    assert plan_main(["-t", task.name, "--workers", "0", "--mode", "2d"]) == 0
    assert plan_main(["-t", task.name, "--workers", "0", "--mode", "3dlr"]) == 0
    names, default = plan_names(task / "plans.json")
    assert set(names) == {"3d", "2d", "3dlr"} and default == "3d"
    three, two, low = (load_plans(task / "plans.json", n) for n in ("3d", "2d", "3dlr"))
    assert two.mode == "2d" and two.dim == 2 and low.mode == "3d" and low.plan_name == "3dlr"
    assert low.target_spacing == [2 * t for t in three.target_spacing]


def _folder_with_raw(task_dir, plan_name, cases, score_scale=1.0):
    plans = make_test_plans(dim=2, num_classes=1)
    plans.plan_name = plan_name
    folder = ModelFolder(make_model_folder(task_dir, plans))
    for case in cases:
        raw = case.raw
        raw.scores = raw.scores * score_scale
        save_raw(raw, folder.fold(0).val_raw / f"{case.name}.npz", gt_boxes=case.gt_boxes, gt_labels=case.gt_labels,
                 factors=np.ones(2), crop_lo=np.zeros(2), original_shape=np.array([64, 64]))
    return folder


def test_consolidation_compares_configurations_and_says_why(tmp_path, monkeypatch):
    task = tmp_path / "Task000_Test"
    rng = np.random.default_rng(0)
    good = [toy_case(f"c{i}", rng) for i in range(4)]
    rng = np.random.default_rng(0)
    bad = [toy_case(f"c{i}", rng) for i in range(4)]
    for case in bad:  # the same cases, but the true boxes score below the noise
        case.raw.scores = np.where(case.raw.scores == 0.8, 0.01, case.raw.scores)
    _folder_with_raw(task, "2d", good)
    _folder_with_raw(task, "2dx", bad)
    record = consolidate_task(str(task), plans=["2d", "2dx"])
    assert record["choice"] == ["2d"] and "2d has the best pooled validation map" in record["why"]
    assert record["configurations"]["2d"]["value"] > record["configurations"]["2dx"]["value"]
    assert record["common_cases"] == 4 and "ensemble" in record
    saved = json.loads((task / "models" / "consolidation.json").read_text())
    assert saved["choice"] == ["2d"]
    ensemble = json.loads((task / "models" / "retina_unet_2d" / "ensemble.json").read_text())
    assert ensemble["folds"] == [0] and ensemble["checkpoints"]
    assert (task / "models" / "retina_unet_2d" / "fold0" / "sweep.json").exists()


def test_ensemble_of_two_configurations_clusters_their_boxes():
    a = (np.array([[0.0, 0, 10, 10]]), np.array([0.9]), np.array([0]))
    b = (np.array([[1.0, 1, 11, 11], [30, 30, 40, 40]]), np.array([0.7, 0.6]), np.array([0, 0]))
    boxes, scores, labels = ensemble_of_two(a, b)
    assert len(boxes) == 2
    assert scores[0] > 0.6 and scores[1] == pytest.approx(0.3)  # found by one configuration of two: damped


def test_rud_predict_merges_two_configurations(tmp_path):
    from retinaunet.inference.cli import main

    from tests.test_predict_cli import write_image

    task = tmp_path / "Task000_Test"
    for name in ("2d", "2dx"):
        plans = make_test_plans(dim=2, num_classes=2)
        plans.plan_name = name
        make_model_folder(task, plans)
    write_image(tmp_path / "images" / "a_0000.nii.gz", np.random.default_rng(0).normal(size=(64, 64)), (1, 1))
    out = tmp_path / "out"
    assert main(["-t", str(task), "-i", str(tmp_path / "images"), "-o", str(out), "--plan", "2d", "2dx",
                 "--folds", "0", "--device", "cpu", "--no-tta", "--override", "min_score=0"]) == 0
    merged = json.loads((out / "a.json").read_text())
    parts = [json.loads((out / p / "a.json").read_text()) for p in ("2d", "2dx")]
    assert merged["settings"]["ensemble_of"] == [str(out / "2d"), str(out / "2dx")]
    assert 0 < len(merged["boxes"]) <= sum(len(p["boxes"]) for p in parts)
    assert (out / "predictions.csv").exists()
