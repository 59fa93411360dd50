"""The sweep's decision rule and bounds, on small hand-made raw predictions.

A setting replaces the planned one only when its gain survives resampling of the validation cases; the
cap on detections, the score threshold and the ensemble stay within what the data and the plan say.
"""

from __future__ import annotations

import numpy as np
import pytest
from retinaunet.inference.raw import RawPrediction
from retinaunet.inference.sweep import SweepCase, paired_bootstrap, recall_keeping_score, sweep

from retinaunet.plans import make_test_plans

GT = np.array([[10.0, 10.0, 20.0, 20.0]])


def views_case(name: str, found: list[tuple[np.ndarray, float]], gt: np.ndarray = GT) -> SweepCase:
    """Each (box, score) of ``found`` seen identically by 2 checkpoints x 2 mirrorings."""
    boxes, scores, members, mirrors = [], [], [], []
    for box, score in found:
        for m in range(2):
            for v in range(2):
                boxes.append(np.asarray(box, dtype=np.float64))
                scores.append(score)
                members.append(m)
                mirrors.append(v)
    n = len(boxes)
    raw = RawPrediction(np.array(boxes).reshape(n, 4), np.array(scores), np.zeros(n, np.int64), np.array(members),
                        np.array(mirrors), np.zeros(n, np.int32), np.full(n, -1), np.ones(n), np.ones(n),
                        member_rank=np.array([0, 1]), num_mirrors=2)
    return SweepCase(name, raw, gt, np.zeros(len(gt), np.int64))


TINY_FP = np.array([40.0, 40.0, 41.0, 41.0])  # one pixel: a minimum size removes it, the object stays


def cases_with_tiny_false_positives(with_fp: int, total: int = 12) -> list[SweepCase]:
    """``total`` cases with their object found at 0.9; the first ``with_fp`` also hold a tiny false positive
    scored above it, that only a minimum object size removes."""
    return [views_case(f"c{i:02d}", [(GT[0], 0.9)] + ([(TINY_FP, 0.95)] if i < with_fp else []))
            for i in range(total)]


def planned_plans():
    plans = make_test_plans(dim=2, num_classes=1)
    plans.inference.min_score = 0.0
    return plans


def test_a_gain_from_one_case_of_twelve_keeps_the_planned_settings():
    cases = cases_with_tiny_false_positives(with_fp=1)
    result = sweep(cases, planned_plans(), "map", samples=300)
    decision = result.decision
    assert result.table[decision["candidate"]]["map"] > result.planned_value  # the best row looks better ...
    assert decision["gain"] > 0 and decision["interval"][0] <= 0  # ... but about a third of resamples lack that case
    assert decision["chosen"] == "planned" and result.value == result.planned_value
    assert result.chosen["min_size"] == planned_plans().inference.min_size
    assert "gain_interval" in result.table[decision["candidate"]]


def test_a_gain_on_every_case_replaces_the_planned_settings():
    cases = cases_with_tiny_false_positives(with_fp=12)
    result = sweep(cases, planned_plans(), "map", samples=300)
    assert result.decision["chosen"] == "swept" and result.decision["interval"][0] > 0
    assert result.chosen["min_size"] > 1.0 and result.value == pytest.approx(1.0)
    assert result.to_dict()["decision"]["interval"] == result.decision["interval"]  # written to sweep.json


def test_neighbours_fused_by_the_planned_wbc_are_parted_by_the_sweep():
    # two objects whose boxes share one pixel (IoU 0.005): WBC at the planned 1e-5 fuses their boxes into one
    # cluster in every case, WBC at 0.1 keeps both; the gain is on every case, so it holds
    gt = np.array([[10.0, 10.0, 20.0, 20.0], [19.0, 19.0, 29.0, 29.0]])
    cases = [views_case(f"c{i:02d}", [(gt[0], 0.9), (gt[1], 0.8)], gt=gt) for i in range(12)]
    plans = planned_plans()
    assert plans.inference.consolidation == "wbc" and plans.inference.wbc_iou < 0.005
    result = sweep(cases, plans, "map", samples=300)
    assert result.planned_value < 0.75  # one of the two objects lost in every case
    assert result.decision["chosen"] == "swept" and result.decision["interval"][0] > 0
    parted = result.chosen["wbc_iou"] if result.chosen["consolidation"] == "wbc" else result.chosen[
        "consolidation_nms_iou"]
    assert parted > 0.005 and result.value == pytest.approx(1.0)


def test_paired_bootstrap_interval():
    cases = cases_with_tiny_false_positives(with_fp=12)
    planned = [(c.raw.boxes[::4], c.raw.scores[::4], c.raw.labels[::4]) for c in cases]
    cleaned = [(b[:1], s[:1], lab[:1]) for b, s, lab in planned]  # without the false positive
    boot = paired_bootstrap("map", cleaned, planned, cases, 1, samples=200)
    assert boot["gain"] > 0 and 0 < boot["interval"][0] <= boot["gain"] <= boot["interval"][1]
    same = paired_bootstrap("map", planned, planned, cases, 1, samples=50)
    assert same["gain"] == 0 and same["interval"] == [0, 0]


def test_score_threshold_never_above_the_one_that_keeps_the_val_recall():
    # objects found at 0.3 only; false positives at 0.2 elsewhere: a threshold of 0.5 would lose every object
    cases = [views_case(f"c{i}", [(GT[0], 0.3), (np.array([40.0, 40, 50, 50]), 0.2)]) for i in range(6)]
    plans = planned_plans()
    result = sweep(cases, plans, "map", samples=100)
    preds = [(c.raw.boxes[::4], c.raw.scores[::4], c.raw.labels[::4]) for c in cases]
    assert recall_keeping_score(preds, cases, 1) == pytest.approx(0.3)
    assert result.decision["score_threshold_bound"] == pytest.approx(0.3, abs=1e-3)
    assert all(r["min_score"] <= 0.3 + 1e-6 for r in result.table if r["stage"] == "postprocess")
    assert any(r["min_score"] > 0 for r in result.table if r["stage"] == "postprocess")  # thresholds are tried


def test_cap_on_detections_never_below_the_planned_cap():
    cases = cases_with_tiny_false_positives(with_fp=3, total=6)
    plans = planned_plans()
    floor = plans.inference.max_detections
    result = sweep(cases, plans, "map", samples=100)
    assert floor >= 2  # the planner's cap: at least twice the most objects per case
    assert all(r["max_detections"] >= floor for r in result.table)
    assert result.decision["max_detections_floor"] == floor


def test_the_planned_ensemble_stays_unless_a_faster_one_is_asked_for():
    cases = cases_with_tiny_false_positives(with_fp=12, total=6)
    plans = planned_plans()
    result = sweep(cases, plans, "map", samples=100)
    assert {(r["checkpoints"], r["mirror"]) for r in result.table} == {(plans.inference.checkpoints,
                                                                        plans.inference.mirror)}
    faster = sweep(cases, plans, "map", samples=100, faster_ensemble=True)
    assert faster.decision["faster_ensemble"] is True
    assert {r["mirror"] for r in faster.table} == {True, False} and {r["checkpoints"] for r in faster.table} > {1}


# ------------------------------------------------------------------ the default path follows the project's choices
def test_the_pooled_sweep_is_used_for_any_of_its_folds(tmp_path):
    from retinaunet.inference.tune import write_sweep

    from retinaunet.model_folder import ModelFolder
    from tests.test_predict_cli import make_model_folder

    plans = make_test_plans(dim=2, num_classes=1)
    folder = ModelFolder(make_model_folder(tmp_path / "Task000_Test", plans))
    cases = cases_with_tiny_false_positives(with_fp=12, total=4)
    write_sweep(sweep(cases[:2], plans, "map", samples=50), [0], folder.fold(0).path)
    pooled = sweep(cases, plans, "map", samples=50)
    write_sweep(pooled, [0, 1], folder.path)
    for folds in ([0], [1], [0, 1], None):  # decided on the most cases that cover the folds predicted
        assert folder.tuned_plans(folds)[1] == folder.sweep_file
    assert folder.tuned_plans([2])[1] is None


def _consolidated_task(tmp_path, choice):
    import json

    from tests.test_predict_cli import make_model_folder, write_image

    task = tmp_path / "Task000_Test"
    a = make_test_plans(dim=2, num_classes=2)
    b = make_test_plans(dim=2, num_classes=2)
    b.plan_name = "2dwide"
    make_model_folder(task, a)
    make_model_folder(task, b)
    (task / "models" / "consolidation.json").write_text(json.dumps({"model": "retina_unet", "choice": choice,
                                                                      "why": "test"}))
    write_image(tmp_path / "images" / "a_0000.nii.gz", np.random.default_rng(0).normal(size=(64, 64)), (1, 1))
    return task


def test_rud_predict_without_plan_uses_the_consolidated_choice(tmp_path):
    import json

    from retinaunet.inference.cli import main as predict_main

    task = _consolidated_task(tmp_path, ["2dwide", "2d"])
    assert predict_main(["-t", str(task), "-i", str(tmp_path / "images"), "-o", str(tmp_path / "out"),
                         "--folds", "0", "--device", "cpu"]) == 0
    doc = json.loads((tmp_path / "out" / "a.json").read_text())  # the two configurations merged by WBC
    record = str(task / "models" / "consolidation.json")
    assert doc["settings"]["configuration_from"] == record
    assert [c["configuration_from"] for c in doc["settings"]["configurations"]] == [record, record]
    assert (tmp_path / "out" / "2dwide" / "a.json").exists() and (tmp_path / "out" / "2d" / "a.json").exists()


def test_a_stale_consolidated_choice_falls_back_to_the_default_configuration(tmp_path):
    import json

    from retinaunet.inference.cli import main as predict_main

    task = _consolidated_task(tmp_path, ["3d"])  # no such trained configuration
    assert predict_main(["-t", str(task), "-i", str(tmp_path / "images"), "-o", str(tmp_path / "out"),
                         "--folds", "0", "--device", "cpu", "--plan", "2d"]) == 0
    assert "configuration_from" not in json.loads((tmp_path / "out" / "a.json").read_text())["settings"]
    from retinaunet.inference.cli import consolidated_choice

    assert consolidated_choice(str(task), "retina_unet") == ([None], None)
