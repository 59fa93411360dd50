"""The plans schema: one default per key, JSON round trip, one-line errors naming the key and the fix."""

from __future__ import annotations

import json

import pytest

from retinaunet.plans import InferencePlan, Plans, PlansError, apply_overrides, load_plans, make_test_plans, save_plans


def test_round_trip_through_json(tmp_path):
    for dim in (2, 3):
        plans = make_test_plans(dim=dim)
        save_plans(plans, tmp_path / "plans.json")
        assert load_plans(tmp_path / "plans.json") == plans
        assert json.loads((tmp_path / "plans.json").read_text())["training"]["epochs"] == 2


@pytest.mark.parametrize("key, value, message", [
    ("training.epochs", -3, "plans.json: training.epochs must be a positive integer, got -3"),
    ("training.epochs", 2.5, "plans.json: training.epochs must be an integer, got 2.5"),
    ("training.learning_rate", "fast", 'plans.json: training.learning_rate must be a number, got "fast"'),
    ("inference.nms_iou", 1.5, "plans.json: inference.nms_iou must be a number between 0 and 1, got 1.5"),
    ("network.block", "dense", "plans.json: network.block must be one of basic, bottleneck, got \"dense\""),
    ("anchors.base_sizes", [4, -8], "plans.json: anchors.base_sizes must be a list of positive numbers"),
    ("mode", "4d", "plans.json: mode must be one of 2d, 2dc, 3d"),
])
def test_bad_values_name_the_key(tmp_path, key, value, message):
    data = make_test_plans(dim=2).to_dict()
    section, _, name = key.rpartition(".")
    (data[section] if section else data)[name] = value
    (tmp_path / "plans.json").write_text(json.dumps(data))
    with pytest.raises(PlansError) as err:
        load_plans(tmp_path / "plans.json")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_missing_and_retired_keys(tmp_path):
    data = make_test_plans(dim=2).to_dict()
    data["training"]["epoch"] = 3  # a typo must not be ignored silently
    with pytest.raises(PlansError, match=r"unknown key training\.epoch; known keys of training: epochs"):
        Plans.from_dict(data, "plans.json")
    del data["training"]["epoch"]
    del data["batch_size"]
    with pytest.raises(PlansError, match="plans.json: batch_size is missing: rerun rud_plan"):
        Plans.from_dict(data, "plans.json")
    data["batch_size"] = 2
    data["training"]["optimizer"] = "adam"  # written by older planners, read by nothing: dropped
    assert "optimizer" not in Plans.from_dict(data).to_dict()["training"]


def test_defaults_are_filled_once_per_key():
    data = make_test_plans(dim=3).to_dict()
    for key in ("pre_nms_top_k", "max_detections", "max_components", "mirror_axes", "wbc_iou", "merge_iou"):
        del data["inference"][key]
    plans = Plans.from_dict(data)
    assert plans.inference.pre_nms_top_k == 50000 and plans.inference.max_detections == 30
    assert plans.inference.max_components == 15 and plans.inference.mirror_axes == [0, 1, 2]
    assert plans.inference.wbc_iou == InferencePlan().wbc_iou and plans.inference.merge_iou == 0.1
    assert plans.training.num_workers == 0 and Plans.from_dict(
        {**data, "training": {"epochs": 1, "batches_per_epoch": 1, "learning_rate": 1e-3}}).training.num_workers is None


def test_overrides_are_validated_and_typed():
    plans = make_test_plans(dim=2)
    apply_overrides(plans, ["training.epochs=7", "inference.min_score=0.2", "plan_name=2d_long"])
    assert plans.training.epochs == 7 and plans.inference.min_score == 0.2 and plans.plan_name == "2d_long"
    with pytest.raises(PlansError, match="--override: training.epochs must be a positive integer, got 0"):
        apply_overrides(plans, ["training.epochs=0"])
    assert plans.training.epochs == 7  # a rejected override changes nothing
    with pytest.raises(PlansError, match="no key 'training.epochz'"):
        apply_overrides(plans, ["training.epochz=3"])
    with pytest.raises(PlansError, match="must look like key=value"):
        apply_overrides(plans, ["training.epochs"])
    with pytest.raises(PlansError, match="not divisible by the network's stride"):
        plans.copy().override("patch_size", [48, 64])


def test_overrides_that_must_agree_change_together():
    """Head levels and anchor sizes go one per level: either alone is rejected, both in one call apply."""
    plans = make_test_plans(dim=2)
    levels, sizes = plans.network.head_levels, plans.anchors.base_sizes
    assert len(levels) == len(sizes) and len(levels) > 2
    fewer = [f"network.head_levels={json.dumps(levels[:2])}", f"anchors.base_sizes={json.dumps(sizes[:2])}"]
    for one in fewer:
        with pytest.raises(PlansError, match="one size per head level"):
            apply_overrides(plans.copy(), [one])
    apply_overrides(plans, fewer)
    assert plans.network.head_levels == levels[:2] and plans.anchors.base_sizes == sizes[:2]
    with pytest.raises(PlansError, match="training.epochs must be a positive integer"):
        apply_overrides(plans, ["training.epochs=3", "training.epochs=0"])
    assert plans.training.epochs != 0 and plans.network.head_levels == levels[:2]  # rejected: nothing changed
