"""No name from plans.json, --override or the command line leads a write or a delete out of the task folder."""

from __future__ import annotations

import json

import pytest

from retinaunet.layout import LayoutError, TaskPaths, check_name, task_name
from retinaunet.plans import PlansError, apply_overrides, load_plans, make_test_plans, save_plans


@pytest.mark.parametrize("bad", ["../../x", "..", "a/b", "/tmp/x", "", ".hidden", "a\\b", "x..y"])
def test_check_name_refuses_paths(bad):
    with pytest.raises(LayoutError, match="plain name"):
        check_name(bad, "plan_name")


def test_paths_refuse_escaping_names(tmp_path):
    paths = TaskPaths(tmp_path / "Task001_A")
    assert paths.preprocessed("2d") == tmp_path / "Task001_A" / "preprocessed" / "2d"
    with pytest.raises(LayoutError, match="plan_name"):
        paths.preprocessed("../../x")
    with pytest.raises(LayoutError, match="plan_name"):
        paths.fold_dir("retina_unet", "../../../x", 0)
    with pytest.raises(LayoutError, match="model"):
        paths.model_dir("../m", "2d")


def test_task_name_refuses_paths():
    assert task_name(3, "Toy_3") == "Task003_Toy_3"
    with pytest.raises(LayoutError):
        task_name(1, "../../victim")


def test_plan_name_from_plans_or_override_is_refused(tmp_path):
    plans = make_test_plans(dim=2)
    with pytest.raises(PlansError, match="plan_name"):
        apply_overrides(plans, ["plan_name=../../x"])
    data = make_test_plans(dim=2).to_dict()
    data["plan_name"] = "../../outside"
    (tmp_path / "plans.json").write_text(json.dumps(data))
    with pytest.raises(PlansError, match="plan_name"):
        load_plans(tmp_path / "plans.json")


def test_force_delete_stays_inside(data_root):
    """rud_train --force and rud_preprocess with a hostile plan_name touch nothing outside the task."""
    from retinaunet.preprocessing.cli import main as preprocess_main

    from retinaunet.training.cli import main as train_main

    task = data_root / "Task001_A"
    task.mkdir()
    (task / "dataset.json").write_text(json.dumps({"task": task.name, "dim": 2, "labels": {"0": "a"},
                                                   "modalities": {"0": "CT"}}))
    victim = data_root.parent / "victim" / "fold0"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    plans = make_test_plans(dim=2)
    save_plans(plans, task / "plans.json")
    raw = json.loads((task / "plans.json").read_text())
    raw["plan_name"] = "../../../victim"
    (task / "plans.json").write_text(json.dumps(raw))
    assert train_main(["0", "-t", "1", "--force", "--model", "x"]) == 1
    assert preprocess_main(["-t", "1"]) == 1
    assert (victim / "keep.txt").read_text() == "mine"
    assert not (data_root.parent / "victim" / "preprocessed").exists()


def test_rud_example_refuses_a_path_as_task_name(data_root, capsys):
    from retinaunet.toy_cli import main

    outside = data_root.parent / "Task101_x"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    assert main(["shapes", "--task-name", "x/../../Task101_x", "--force", "--num-train", "1", "--num-test", "0",
                 "--quiet"]) == 1
    assert (outside / "keep.txt").exists()
    assert "rud_example" in capsys.readouterr().err
