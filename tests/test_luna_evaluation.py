"""The LUNA16 challenge's FROC/CPM on hand-computed cases, and rud_evaluate --luna on prediction JSONs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retinaunet.convert.luna16 import LunaNodule
from retinaunet.evaluation.cli import main as rud_evaluate
from retinaunet.evaluation.luna import Candidate, luna_froc


def _c(uid, xyz, p):
    return Candidate(uid, tuple(float(v) for v in xyz), float(p))


def _n(uid, xyz, d):
    return LunaNodule(uid, tuple(float(v) for v in xyz), float(d))


def test_repeated_hits_are_ignored_and_hits_use_the_radius():
    nodules = [_n("s1", (0, 0, 0), 10), _n("s2", (100, 0, 0), 6)]
    cands = [
        _c("s1", (1, 1, 1), 0.9),    # hits A (3 < 25)
        _c("s1", (2, 0, 0), 0.5),    # second hit on A: ignored, not a false positive
        _c("s1", (50, 0, 0), 0.8),   # FP
        _c("s2", (100, 2, 0), 0.6),  # hits B (4 < 9)
        _c("s2", (200, 0, 0), 0.7),  # FP
        _c("s2", (100, 3, 0), 0.3),  # distance 3 = radius: not below it, so a FP
    ]
    r = luna_froc(cands, nodules, ["s1", "s2"])
    # entries by probability: TP .9, FP .8, FP .7, TP .6, FP .3; 2 scans, 2 nodules
    # points: (0,0) (0,.5) (.5,.5) (1,.5) (1,1) (1.5,1)
    np.testing.assert_allclose(r.fps, [0, 0, 0.5, 1.0, 1.0, 1.5])
    np.testing.assert_allclose(r.sensitivity, [0, 0.5, 0.5, 0.5, 1.0, 1.0])
    # 1/8, 1/4, 1/2 -> .5; at exactly 1 FP/scan the point after all candidates of that rate -> 1; beyond -> 1
    np.testing.assert_allclose(r.at_rates, [0.5, 0.5, 0.5, 1, 1, 1, 1])
    assert r.cpm == pytest.approx(5.5 / 7)
    assert r.counts["ignored_repeated"] == 1 and r.counts["false_positives"] == 3 and r.counts["found"] == 2


def test_excluded_findings_are_ignored():
    nodules = [_n("s1", (0, 0, 0), 10)]
    excluded = [_n("s1", (30, 0, 0), -1)]  # no diameter: radius 5 mm
    cands = [_c("s1", (30, 4, 0), 0.9),    # on the excluded finding (16 < 25): ignored
             _c("s1", (30, 6, 0), 0.8),    # 36 > 25: FP
             _c("s1", (0, 0, 0), 0.7)]     # TP
    scans = ["s1", "s2", "s3"]             # three scans: one FP is 1/3 FP per scan
    r = luna_froc(cands, nodules, scans, excluded)
    np.testing.assert_allclose(r.fps, [0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(r.at_rates, [0, 0, 1, 1, 1, 1, 1])
    assert r.cpm == pytest.approx(5 / 7)
    assert r.counts["ignored_excluded"] == 1
    # without the excluded list the mark on it is a false positive: 2/3 FP per scan before the TP
    r2 = luna_froc(cands, nodules, scans)
    np.testing.assert_allclose(r2.at_rates, [0, 0, 0, 1, 1, 1, 1])
    assert r2.cpm == pytest.approx(4 / 7)


def test_a_mark_on_an_included_and_an_excluded_finding_is_a_true_positive():
    r = luna_froc([_c("s1", (1, 0, 0), 0.5)], [_n("s1", (0, 0, 0), 6)], ["s1"], [_n("s1", (2, 0, 0), 6)])
    assert r.counts["found"] == 1 and r.counts["ignored_excluded"] == 0 and r.cpm == pytest.approx(1.0)


def test_linear_interpolation_between_fp_rates():
    # 4 scans, 2 nodules; a TP and a FP tie at .6: the curve goes straight from (0, 0) to (.25, .5)
    nodules = [_n("a", (0, 0, 0), 10), _n("b", (0, 0, 0), 10)]
    cands = [_c("a", (0, 0, 0), 0.6), _c("c", (9, 9, 9), 0.6),
             _c("d", (9, 9, 9), 0.4), _c("d", (19, 9, 9), 0.4), _c("d", (29, 9, 9), 0.4),
             _c("b", (0, 1, 0), 0.2)]
    r = luna_froc(cands, nodules, ["a", "b", "c", "d"])
    # points: (0,0) (.25,.5) [tie] (1,.5) (1,1)
    np.testing.assert_allclose(r.fps, [0, 0.25, 1.0, 1.0])
    np.testing.assert_allclose(r.sensitivity, [0, 0.5, 0.5, 1.0])
    # 1/8 FP/scan lies half way along the first segment: .25 (a step function would say 0)
    np.testing.assert_allclose(r.at_rates, [0.25, 0.5, 0.5, 1, 1, 1, 1])
    assert r.cpm == pytest.approx(5.25 / 7)


def test_missed_nodules_count_and_more_than_100_marks_are_cut():
    nodules = [_n("s1", (0, 0, 0), 10), _n("s1", (50, 0, 0), 10)]
    cands = [_c("s1", (0, 0, 0), 0.01)] + [_c("s1", (100 + k, 0, 0), 0.5 + k / 1000) for k in range(100)]
    r = luna_froc(cands, nodules, ["s1"])
    # the hit has the lowest of 101 probabilities: cut; nothing found
    assert r.counts["candidates"] == 100 and r.counts["found"] == 0 and r.counts["missed"] == 2
    assert r.cpm == 0.0
    r = luna_froc(cands[:100], nodules, ["s1"])
    assert r.counts["found"] == 1
    # the TP comes after 99 FPs: 99 FP/scan > 8, so it never counts
    assert r.cpm == 0.0


def test_rud_evaluate_luna_writes_the_submission_with_seriesuids(tmp_path):
    task = tmp_path / "Task016_LUNA16"
    pred = task / "predictions" / "run"
    pred.mkdir(parents=True)
    (task / "dataset.json").write_text(json.dumps({"task": "Task016_LUNA16", "dim": 3, "labels": {"0": "nodule"},
                                                   "modalities": {"0": "CT"}}))
    (task / "case_names.json").write_text(json.dumps({"1_2_3": "1.2.3", "4_5_6": "4.5.6"}))
    for case, boxes in (("1_2_3", [{"box": [0] * 6, "score": 0.9, "class": 0, "center_world": [10, 20, 30]}]),
                        ("4_5_6", [])):
        (pred / f"{case}.json").write_text(json.dumps({"case": case, "boxes": boxes}))
    ann = tmp_path / "annotations.csv"
    ann.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,11,20,30,5\n4.5.6,0,0,0,8\n")
    assert rud_evaluate(["-t", str(task), "-p", str(pred), "--luna", "--annotations", str(ann)]) == 0
    rows = (pred / "luna_submission.csv").read_text().splitlines()
    assert rows[0] == "seriesuid,coordX,coordY,coordZ,probability"
    assert rows[1] == "1.2.3,10.0,20.0,30.0,0.9"
    metrics = json.loads((pred / "luna_metrics.json").read_text())
    assert metrics["counts"]["found"] == 1 and metrics["counts"]["missed"] == 1
    assert metrics["cpm"] == pytest.approx(0.5)
    assert rud_evaluate(["-t", str(task), "-p", str(pred), "--luna"]) == 1


def test_cv_pools_as_many_folds_as_splits_json_lists(tmp_path):
    from retinaunet.io import write_json
    from tests.test_evaluation import _toy_folders

    labels, preds = _toy_folders(tmp_path)  # a: TP .9 + FP .8, b: TP .7, c: no file
    task = tmp_path / "Task009_Toy"
    write_json({"task": task.name, "dim": 3, "labels": {"0": "lesion"}, "modalities": {"0": "CT"}},
               task / "dataset.json")
    (task / "raw_splitted").mkdir()
    labels.rename(task / "raw_splitted" / "labelsTr")
    tests = [["a"], ["b"], [], [], [], ["c"]]  # six folds: c is tested (and found) in the sixth
    write_json([{"train": ["x"], "val": [], "test": t} for t in tests], task / "splits.json")
    (preds / "c.json").write_text(json.dumps({"case": "c", "boxes": [{"box": [1, 2, 2, 3, 6, 6], "score": 0.6,
                                                                      "class": 0}]}))
    for k, t in enumerate(tests):
        fold = task / "models" / "retina_unet_3d" / f"fold{k}" / "test_predictions"
        fold.mkdir(parents=True)
        for case in t:
            (preds / f"{case}.json").rename(fold / f"{case}.json")
    assert rud_evaluate(["-t", str(task), "--cv", "--plan", "3d"]) == 0
    saved = json.loads((task / "models" / "retina_unet_3d" / "metrics.json").read_text())
    # TP .9, FP .8, TP .7, TP .6 of 3 objects: precision 1 up to recall 1/3 (34 points), then 3/4 (67 points);
    # had only five folds been read, c would count as missed: (34 + 33 * 2/3) / 101
    assert saved["num_cases"] == 3 and saved["mAP"]["0.1"] == pytest.approx((34 + 67 * 0.75) / 101)
