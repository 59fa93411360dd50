"""All stages as a user runs them, on tiny toy tasks: plan -> preprocess -> train -> predict -> evaluate.

The 2D run asserts that training learns: the trained model's val mAP is 0.5 above an untrained one's,
both scored the same way with every box kept (no score threshold: an untrained detector's foreground prior,
0.01, lies below the plan's threshold, so thresholded it would output nothing and score 0 by construction),
and every held-out test image gets a box. The 3D and 2dc runs check that every stage works end to end.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

import inference.predictor
from inference.cli import main as rud_predict
from inference.models import load_checkpoint_model
from inference.wbc import consolidate
from planning.cli import main as rud_plan
from preprocessing.cli import main as rud_preprocess
from retinaunet.evaluation.ap import average_precision, mean_over_classes
from retinaunet.evaluation.cli import main as rud_evaluate
from retinaunet.io import read_json
from retinaunet.layout import TaskPaths
from retinaunet.models import build_model
from retinaunet.plans import load_plans
from retinaunet.toy import Toy2DConfig, Toy3DConfig, write_toy_task
from retinaunet.training.cli import main as rud_train
from retinaunet.training.trainer import ground_truth


def _val_map_all_boxes(paths: TaskPaths, model: torch.nn.Module, plans) -> tuple[float, int]:
    """Val mAP@0.1 of ``model`` with every box kept, and the number of val cases it gave no box.

    The model's own min_score must be 0 (build it from plans with inference.min_score=0); the
    consolidation's floor is lifted here, so scores of any size count, as for a trained model.
    """
    split = read_json(paths.splits)[0]
    pre = paths.preprocessed(plans.plan_name)
    predictor = inference.predictor.Predictor([model.eval()], plans, device="cpu", mirror=False)
    preds, gts = [], []
    for case in split["val"]:
        preds.append(predictor.predict_case(np.load(pre / f"{case}.npy")))
        gts.append(ground_truth(read_json(pre / f"{case}.json"), plans.data_dim))
    ap = average_precision([p.boxes for p in preds], [p.scores for p in preds], [p.labels for p in preds],
                           [g[0] for g in gts], [g[1] for g in gts], plans.num_classes)
    return float(np.nan_to_num(mean_over_classes(ap)[0])), sum(len(p.scores) == 0 for p in preds)


@pytest.mark.parametrize("model", ["retina_unet", "det_unet", "u_faster_rcnn"])
def test_2d_pipeline_learns(data_root, model, monkeypatch):
    # clearly visible toy 'scales' objects (radius 4 vs 8), small in a 96 x 96 image so that boxes placed
    # at random rarely reach IoU 0.1 (on 48 x 48 images with radius 5 vs 9 an untrained network scored val
    # mAP 0.46 with every box kept); seconds of CPU training
    cfg = Toy2DConfig(size=96, scale_radii=(4.0, 8.0), intensity=1.0, noise=0.5, num_train=40, num_test=8)
    task = write_toy_task("scales", data_root, number=11, name="E2E", config=cfg, progress=False)
    paths = TaskPaths(task)
    assert rud_plan(["-t", "11", "--override", "training.epochs=6", "training.batches_per_epoch=12",
                     "training.learning_rate=0.001", "batch_size=4"]) == 0
    assert rud_preprocess(["-t", "11", "--workers", "0"]) == 0
    plans = load_plans(paths.plans)
    assert rud_train(["0", "-t", "11", "--workers", "0", "--model", model]) == 0
    fold = paths.fold_dir(model, plans.plan_name, 0)
    best = json.loads((fold / "best_epochs.json").read_text())["epochs"]

    # like with like: the best epoch and an untrained network, both scored with every box kept
    all_boxes = plans.copy()
    all_boxes["inference"] = {**plans.inference, "min_score": 0.0}
    with monkeypatch.context() as patch:
        patch.setattr(inference.predictor, "consolidate", functools.partial(consolidate, min_score=-1.0))
        torch.manual_seed(0)
        untrained, untrained_empty = _val_map_all_boxes(paths, build_model(model, all_boxes), all_boxes)
        trained_net = load_checkpoint_model(fold / best[0]["file"], "cpu", all_boxes.inference)
        trained, trained_empty = _val_map_all_boxes(paths, trained_net, all_boxes)
    n_val = len(read_json(paths.splits)[0]["val"])
    report = (f"val mAP {trained:.3f} (empty cases {trained_empty}/{n_val}) vs untrained {untrained:.3f} "
              f"(empty cases {untrained_empty}/{n_val})")
    assert trained_empty == 0, report
    assert trained >= untrained + 0.5, report
    if model != "det_unet":  # a box head scores every anchor; DetU-Net's boxes need a foreground argmax
        assert untrained_empty == 0 and untrained > 0.0, report
    assert (fold / "curves.png").exists() and (fold / "test_evaluation" / "metrics.json").exists()

    out = task / "predictions" / "run"
    predict = ["-t", "11", "-i", str(paths.images_ts), "-o", str(out), "--folds", "0", "--model", model]
    assert rud_predict(predict) == 0
    cases = sorted(out.glob("case_*.json"))
    assert len(cases) == 8 and (out / "predictions.csv").exists()
    # every held-out image holds one object: with the plan's threshold the model must choose a box in each
    chose_nothing = [f.stem for f in cases if not json.loads(f.read_text())["boxes"]]
    assert not chose_nothing, f"no box at all in {chose_nothing}"
    assert rud_evaluate(["-t", "11", "-p", str(out), "-l", str(paths.labels_ts), "-o", str(out / "eval")]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["mAP"]["0.1"] >= untrained + 0.5, report
    # a second prediction into the same folder refuses to overwrite
    assert rud_predict(predict) != 0


@pytest.mark.parametrize("mode", ["3d", "2dc"])
def test_3d_toy_runs_every_stage(data_root, mode):
    cfg = Toy3DConfig(num_train=10, num_test=2, shape_min=(16, 40, 40), shape_max=(18, 48, 48))
    task = write_toy_task("spheres", data_root, number=12, name="E2E3D", config=cfg, progress=False)
    paths = TaskPaths(task)
    assert rud_plan(["-t", "12", "--mode", mode, "--override", "training.epochs=1",
                     "training.batches_per_epoch=2"]) == 0
    plans = load_plans(paths.plans)
    assert plans.mode == mode and plans.dim == (3 if mode == "3d" else 2)
    assert rud_preprocess(["-t", "12", "--workers", "0"]) == 0
    assert rud_train(["0", "-t", "12", "--workers", "0"]) == 0
    out = task / "predictions" / mode
    assert rud_predict(["-t", "12", "-i", str(paths.images_ts), "-o", str(out), "--folds", "0", "--no-tta"]) == 0
    for f in out.glob("case_*.json"):
        for box in json.loads(f.read_text())["boxes"]:
            assert len(box["box"]) == 6 and len(box["center_world"]) == 3
    assert rud_evaluate(["-t", "12", "-p", str(out), "-l", str(paths.labels_ts), "-o", str(out / "eval")]) == 0
    assert json.loads((out / "eval" / "metrics.json").read_text())["dim"] == 3
