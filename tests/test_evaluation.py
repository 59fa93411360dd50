"""Detection metrics: AP (hand cases and MONAI cross-check), FROC, patient level, the folder evaluator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retinaunet.evaluation.ap import (
    average_precision,
    interpolated_ap,
    iou_range,
    mean_over_classes,
    precision_recall_curve,
)
from retinaunet.evaluation.froc import FROC_RATES, froc_curve, froc_from_matches, sensitivity_at
from retinaunet.evaluation.matching import match_case, match_cases
from retinaunet.evaluation.patient import patient_level_ap

E = np.zeros((0, 6))


def box3(z, y, x, s=4.0):
    return [z, y, x, z + s, y + s, x + s]


def arr(*rows):
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


# ---------------------------------------------------------------- matching and AP by hand


def test_perfect_detection_gives_ap_one_in_2d_and_3d():
    g3 = arr(box3(0, 0, 0), box3(10, 10, 10))
    ap = average_precision([g3], [np.array([0.9, 0.8])], [np.array([0, 0])], [g3], [np.array([0, 0])], 1)
    assert ap.shape == (1, 1) and ap[0, 0] == pytest.approx(1.0)
    g2 = arr([0, 0, 5, 5])
    ap2 = average_precision([g2], [np.array([0.3])], [np.array([0])], [g2], [np.array([0])], 1, (0.1, 0.9))
    np.testing.assert_allclose(ap2[:, 0], [1.0, 1.0])


def test_no_detections_or_wrong_class_give_zero():
    g = arr(box3(0, 0, 0))
    assert average_precision([E], [np.zeros(0)], [np.zeros(0)], [g], [np.array([0])], 1)[0, 0] == 0.0
    ap = average_precision([g], [np.array([0.9])], [np.array([1])], [g], [np.array([0])], 2)
    assert ap[0, 0] == 0.0 and np.isnan(ap[0, 1])  # class 1 has no ground truth: NaN, not 0


def test_iou_threshold_is_inclusive_and_respected():
    g = arr([0, 0, 0, 10, 10, 10])
    p = arr([0, 0, 0, 10, 10, 1])  # IoU exactly 0.1
    ap = average_precision([p], [np.array([0.5])], [np.array([0])], [g], [np.array([0])], 1, (0.1, 0.11))
    np.testing.assert_allclose(ap[:, 0], [1.0, 0.0])


def test_known_partial_values():
    # ranks: TP, FP, TP with 2 objects -> precision 1, 1/2, 2/3 (non-increasing: 1, 2/3, 2/3)
    # recall points 0..0.5 (51 of them) read 1, points 0.51..1 (50) read 2/3
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert interpolated_ap(np.array([True, False, True]), 2) == pytest.approx(expected)
    # one of three objects found by the first detection: 34 points (0..0.33) with precision 1
    assert interpolated_ap(np.array([True, False]), 3) == pytest.approx(34 / 101)
    # same through boxes: two cases, pooled by score
    g1, g2 = arr(box3(0, 0, 0)), arr(box3(20, 20, 20))
    preds = [arr(box3(0, 0, 0), box3(40, 40, 40)), arr(box3(20, 20, 20))]
    scores = [np.array([0.9, 0.8]), np.array([0.7])]
    labels = [np.zeros(2, int), np.zeros(1, int)]
    ap = average_precision(preds, scores, labels, [g1, g2], [np.zeros(1, int)] * 2, 1)
    assert ap[0, 0] == pytest.approx(expected)


def test_exact_recall_points_reached():
    # 10 objects, recall 0.7 exactly at the 7th detection (rounded floats would miss that point)
    tp = np.array([True] * 7 + [False] * 3 + [True])
    # precision 1 up to recall 0.7 (71 points), then 8/11 up to recall 0.8 (10 points), 0 beyond
    assert interpolated_ap(tp, 10) == pytest.approx((71 + 10 * 8 / 11) / 101)


def test_greedy_matching_prefers_highest_iou_and_unmatched_gt():
    gts = arr([0, 0, 0, 10, 10, 10], [0, 0, 10, 10, 10, 20])
    preds = arr([0, 0, 4, 10, 10, 14], [0, 0, 2, 10, 10, 12])
    # detection 0: IoU 6/14 with gt 0, 4/16 with gt 1 -> gt 0; detection 1: gt 0 taken, IoU 2/18 with gt 1
    m = match_case(preds, np.array([0.9, 0.8]), gts, [0.1, 0.3])
    assert m.dt_matched.tolist() == [[True, True], [True, False]]
    assert m.gt_matched.tolist() == [[True, True], [True, False]]
    # equal IoU (1/3 each): the gt listed first
    tie = match_case(arr([0, 0, 5, 10, 10, 15]), np.array([0.5]), gts, [0.1])
    assert tie.gt_matched[0].tolist() == [True, False]


def test_duplicates_are_false_positives_and_max_detections_cap():
    g = arr(box3(0, 0, 0))
    preds = arr(*[box3(0, 0, 0)] * 3)
    m = match_case(preds, np.array([0.2, 0.9, 0.5]), g, [0.1])
    np.testing.assert_allclose(m.dt_scores, [0.9, 0.5, 0.2])
    assert m.dt_matched[0].tolist() == [True, False, False]
    capped = match_case(preds, np.array([0.2, 0.9, 0.5]), g, [0.1], max_detections=2)
    assert capped.num_dt == 2


def test_mean_over_classes_and_iou_range():
    np.testing.assert_allclose(mean_over_classes(np.array([[0.5, np.nan, 1.0], [np.nan] * 3])), [0.75, np.nan])
    np.testing.assert_allclose(iou_range(), [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5])


def test_precision_recall_curve_monotone():
    rec, prec = precision_recall_curve(np.array([False, True, True, False]), 4)
    np.testing.assert_allclose(rec, [0, 0.25, 0.5, 0.5])
    np.testing.assert_allclose(prec, [2 / 3, 2 / 3, 2 / 3, 0.5])


# ---------------------------------------------------------------- MONAI cross-check


def _random_set(rng, dim, num_classes, gt_counts, n_cases, many_dets=False):
    """Random cases with exactly gt_counts[c] objects of class c over all cases, plus noisy detections."""
    def rand_boxes(n):
        lo = rng.uniform(0, 64, (n, dim))
        return np.concatenate([lo, lo + rng.uniform(2, 20, (n, dim))], 1)

    gt_case = [rng.integers(0, n_cases, n) for n in gt_counts]
    pb, ps, pl, gb, gl = [], [], [], [], []
    for i in range(n_cases):
        labels = np.concatenate([np.full(int((gc == i).sum()), c) for c, gc in enumerate(gt_case)]).astype(int)
        g = rand_boxes(len(labels))
        hit = rng.integers(0, max(len(g), 1), 2 * len(g)) if len(g) else np.zeros(0, int)
        near = g[hit] + rng.normal(0, 3, (len(hit), 2 * dim)) if len(g) else np.zeros((0, 2 * dim))
        n_noise = int(rng.integers(120, 160)) if many_dets and i == 0 else int(rng.integers(0, 30))
        p = np.concatenate([near, rand_boxes(n_noise)])
        p[:, dim:] = np.maximum(p[:, dim:], p[:, :dim] + 0.5)
        noise_labels = np.zeros(n_noise, int) if many_dets and i == 0 else rng.integers(0, num_classes, n_noise)
        pb.append(p)
        ps.append(rng.uniform(0, 1, len(p)))
        pl.append(np.concatenate([labels[hit], noise_labels]).astype(int))
        gb.append(g)
        gl.append(labels)
    return pb, ps, pl, gb, gl


def _monai_ap(pb, ps, pl, gb, gl, num_classes):
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch
    from monai.data.box_utils import box_iou

    # MONAI's StandardMode is [mins..., maxes...] like ours (it calls the axes x, y, z; IoU does not care
    # about their order) with TO_REMOVE = 0, i.e. half-open extents; max_detections is per case and class.
    metric = COCOMetric(classes=[str(c) for c in range(num_classes)], iou_list=[0.1], iou_range=(0.1, 0.5, 0.05),
                        max_detection=[100], verbose=False)
    matched = matching_batch(box_iou, metric.iou_thresholds, pb, pl, ps, gb, gl, max_detections=100)
    values, _ = metric(matched)
    return values["AP_IoU_0.10_MaxDet_100"], values["mAP_IoU_0.10_0.50_0.05_MaxDet_100"]


@pytest.mark.parametrize("seed", range(8))
def test_matches_monai_coco_metric(seed):
    # gt counts coprime to 10, so no recall k/100 is hit exactly (see test_monai_difference_is_recall_rounding)
    rng = np.random.default_rng(seed)
    dim = 2 + seed % 2
    counts = [int(rng.choice([1, 3, 7, 9, 11, 13, 17])) for _ in range(3)]
    data = _random_set(rng, dim, 3, counts, n_cases=int(rng.integers(2, 7)), many_dets=seed % 4 == 0)
    ap = average_precision(*data, num_classes=3, iou_thresholds=iou_range())
    monai_ap10, monai_map = _monai_ap(*data, num_classes=3)
    assert abs(mean_over_classes(ap)[0] - monai_ap10) < 1e-6
    assert abs(mean_over_classes(ap).mean() - monai_map) < 1e-6


def test_monai_difference_is_recall_rounding(monkeypatch):
    """With any gt counts, MONAI differs only in reading recall from float32 (tp/num_gt rounded)."""
    import retinaunet.evaluation.ap as ap_module

    def float32_recall_ap(tp, num_gt, num_points=101):
        _, precision = precision_recall_curve(tp, num_gt)
        recall = np.cumsum(tp).astype(np.float32) / num_gt
        idx = np.searchsorted(recall, np.linspace(0, 1, num_points), side="left")
        return float(np.where(idx < len(tp), precision[np.minimum(idx, len(tp) - 1)], 0).mean()) if len(tp) else 0.0

    rng = np.random.default_rng(0)
    data = _random_set(rng, 2, 3, [4, 6, 10], n_cases=5)
    exact = mean_over_classes(average_precision(*data, num_classes=3))[0]
    monai_ap10, _ = _monai_ap(*data, num_classes=3)
    monkeypatch.setattr(ap_module, "interpolated_ap", float32_recall_ap)
    rounded = mean_over_classes(average_precision(*data, num_classes=3))[0]
    assert abs(rounded - monai_ap10) < 1e-6
    assert abs(exact - monai_ap10) > 1e-6  # this seed has such a tie; exact reading differs


# ---------------------------------------------------------------- FROC and patient level


def test_froc_hand_case():
    # 4 cases, 4 objects; sorted detections TP(0.9) FP(0.8) TP(0.7) FP(0.6) FP(0.5) TP(0.4)
    tp = np.array([1, 0, 1, 0, 0, 1], bool)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    fp, sens, thr = froc_curve(tp, scores, num_gt=4, num_cases=4)
    np.testing.assert_allclose(fp, [0, 0.25, 0.25, 0.5, 0.75, 0.75])
    np.testing.assert_allclose(sens, [0.25, 0.25, 0.5, 0.5, 0.5, 0.75])
    at = sensitivity_at(fp, sens)
    np.testing.assert_allclose(at, [0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75])
    # tied scores form one operating point
    fp2, sens2, thr2 = froc_curve(np.array([1, 0, 1], bool), np.array([0.9, 0.5, 0.5]), 2, 1)
    np.testing.assert_allclose(thr2, [0.9, 0.5])
    np.testing.assert_allclose(sens2, [0.5, 1.0])
    np.testing.assert_allclose(fp2, [0, 1])
    # a rate below the first point's false positives has sensitivity 0
    assert sensitivity_at(np.array([1.0]), np.array([1.0]), [0.5])[0] == 0.0


def test_froc_from_matches_cpm():
    g = [arr(box3(0, 0, 0)), arr(box3(0, 0, 0))]
    preds = [arr(box3(0, 0, 0)), arr(box3(30, 30, 30))]
    matches = match_cases(preds, [np.array([0.9]), np.array([0.8])], [np.zeros(1, int)] * 2, g,
                          [np.zeros(1, int)] * 2, 0, [0.1])
    result = froc_from_matches(matches)
    # operating points: (0 FP/case, 0.5), (0.5 FP/case, 0.5)
    assert result["rates"] == list(FROC_RATES)
    np.testing.assert_allclose(result["sensitivity"], [0.5] * 7)
    assert result["cpm"] == pytest.approx(0.5)


def test_patient_level_ap():
    # 4 patients; class 0 present in patients 0 and 2
    gt_labels = [np.array([0]), np.array([1]), np.array([0, 1]), np.zeros(0, int)]
    pred_scores = [np.array([0.3, 0.9]), np.array([0.8]), np.array([0.2]), np.array([0.5])]
    pred_labels = [np.array([0, 1]), np.array([0]), np.array([0]), np.array([1])]
    ap = patient_level_ap(pred_scores, pred_labels, gt_labels, num_classes=3)
    # class 0 ranking: p1 0.8 (neg), p0 0.3 (pos), p2 0.2 (pos) -> precision 0, 1/2, 2/3 -> 2/3 everywhere
    assert ap[0] == pytest.approx(2 / 3)
    # class 1 ranking: p0 0.9 (neg), p3 0.5 (neg); positives p1, p2 never flagged -> 0
    assert ap[1] == 0.0
    assert np.isnan(ap[2])


# ---------------------------------------------------------------- folders and the command


def _write_case(label_dir, pred_dir, case, objects, predictions, shape=(8, 16, 16)):
    """objects: [(class, slices)] painted as instances 1..; predictions: [(class, score, box)] or None."""
    from retinaunet.io import write_image, write_json

    inst = np.zeros(shape, np.int32)
    for i, (_, sl) in enumerate(objects, start=1):
        inst[sl] = i
    write_image(inst, None, label_dir / f"{case}.nii.gz")
    write_json({"instances": {str(i): c for i, (c, _) in enumerate(objects, start=1)}}, label_dir / f"{case}.json")
    if predictions is not None:
        boxes = [{"class": c, "score": s, "box": list(b)} for c, s, b in predictions]
        write_json({"case": case, "boxes": boxes}, pred_dir / f"{case}.json")


def _toy_folders(tmp_path):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    preds.mkdir()
    obj = (slice(1, 3), slice(2, 6), slice(2, 6))  # box [1, 2, 2, 3, 6, 6]
    _write_case(labels, preds, "a", [(0, obj)], [(0, 0.9, [1, 2, 2, 3, 6, 6]), (0, 0.8, [5, 10, 10, 7, 14, 14])])
    _write_case(labels, preds, "b", [(0, obj)], [(0, 0.7, [1, 2, 2, 3, 6, 6])])
    _write_case(labels, preds, "c", [(0, obj)], None)  # no prediction file: no detections
    return labels, preds


def test_evaluate_folder_writes_metrics_and_plots(tmp_path):
    from retinaunet.evaluation.evaluate import evaluate_folder

    labels, preds = _toy_folders(tmp_path)
    out = tmp_path / "out"
    metrics = evaluate_folder(preds, labels, [0.1, 0.5], out, class_names=["lesion", "other"])
    # ranks TP(0.9), FP(0.8), TP(0.7) with 3 objects: precision 1 to recall 1/3 (34 points), 2/3 to 2/3 (33)
    expected = (34 + 33 * 2 / 3) / 101
    assert metrics["AP"]["0.1"]["lesion"] == pytest.approx(expected)
    assert metrics["AP"]["0.5"]["lesion"] == pytest.approx(expected)
    assert metrics["AP"]["0.1"]["other"] is None and metrics["mAP"]["0.1"] == pytest.approx(expected)
    assert metrics["num_objects"] == {"lesion": 3, "other": 0} and metrics["dim"] == 3
    assert metrics["patient_AP"]["lesion"] == pytest.approx((34 + 33) / 101)  # a, b flagged; c missed
    # FROC: (0 FP, 1/3), (1/3 FP/case, 1/3), (1/3, 2/3) -> 1/3 at 1/8 and 1/4, 2/3 from 1/2 on
    assert metrics["FROC"]["sensitivity"]["lesion"] == pytest.approx([1 / 3] * 2 + [2 / 3] * 5)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["AP"]["0.1"]["other"] is None and saved["mAP_0.1:0.5"] == pytest.approx(expected)
    assert (out / "pr_curves.png").stat().st_size > 1000 and (out / "froc.png").stat().st_size > 1000


def test_malformed_prediction_names_the_file(tmp_path):
    from retinaunet.evaluation.evaluate import evaluate_folder
    from retinaunet.evaluation.io import EvaluationError

    labels, preds = _toy_folders(tmp_path)
    (preds / "b.json").write_text(json.dumps({"boxes": [{"box": [1, 2, 3, 4], "score": 1, "class": 0}]}))
    with pytest.raises(EvaluationError, match=r"b\.json.*4 coordinates"):
        evaluate_folder(preds, labels)
    (preds / "b.json").write_text("{not json")
    with pytest.raises(EvaluationError, match=r"b\.json"):
        evaluate_folder(preds, labels)


def test_cli_folder_and_cv(tmp_path, capsys):
    from retinaunet.evaluation.cli import main
    from retinaunet.io import write_json

    labels, preds = _toy_folders(tmp_path)
    assert main(["-p", str(preds), "-l", str(labels), "--iou", "0.1", "0.3"]) == 0
    assert "AP@0.3" in capsys.readouterr().out and (preds / "metrics.json").is_file()
    assert main(["-p", str(tmp_path / "nowhere"), "-l", str(labels)]) == 1
    assert "nowhere" in capsys.readouterr().err

    task = tmp_path / "Task009_Toy"
    write_json({"task": task.name, "dim": 3, "labels": {"0": "lesion"}, "modalities": {"0": "CT"}},
               task / "dataset.json")
    (task / "raw_splitted").mkdir()
    labels.rename(task / "raw_splitted" / "labelsTr")
    for k, case in enumerate(["a", "b"]):
        fold = task / "models" / "retina_unet_3d" / f"fold{k}" / "test_predictions"
        fold.mkdir(parents=True)
        (preds / f"{case}.json").rename(fold / f"{case}.json")
    assert main(["-t", str(task), "--cv", "--plan", "3d"]) == 0
    saved = json.loads((task / "models" / "retina_unet_3d" / "metrics.json").read_text())
    # folds 2-4 missing and no splits.json: only the predicted cases a and b are pooled
    assert saved["num_cases"] == 2 and saved["AP"]["0.1"]["lesion"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # all folds present and splits.json lists the test cases: c (in fold 2, no file) counts as no detections
    for k in range(2, 5):
        (task / "models" / "retina_unet_3d" / f"fold{k}" / "test_predictions").mkdir(parents=True)
    write_json([{"train": ["x"], "val": [], "test": t} for t in (["a"], ["b"], ["c"], [], [])], task / "splits.json")
    assert main(["-t", str(task), "--cv", "--plan", "3d", "-o", str(tmp_path / "cv")]) == 0
    saved = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert saved["num_cases"] == 3 and saved["AP"]["0.1"]["lesion"] == pytest.approx((34 + 33 * 2 / 3) / 101)
    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    assert help_exit.value.code == 0
