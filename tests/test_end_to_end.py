"""All stages as a user runs them, on tiny toy tasks: plan -> preprocess -> train -> predict -> evaluate.

The 2D run asserts that training learns, comparing like with like: the trained model (its best epoch) and
untrained ones (three initialisations) predict the same cases, none of which chose the epoch (the fold's
test cases), with the same decoding and no score threshold, so the untrained models output boxes too. On
this toy an untrained network finds the bright objects by chance (class-agnostic AP 0.46-1.0 measured), but
cannot tell the two classes apart: class-aware mAP 0.43-0.53 (Retina U-Net), 0.23-0.33 (U-FRCNN+), against
1.0 and 0.88 trained. The 3D and 2dc runs check that every stage works end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from retinaunet.inference.cli import main as rud_predict
from retinaunet.inference.predictor import Predictor
from retinaunet.planning.cli import main as rud_plan
from retinaunet.preprocessing.cli import main as rud_preprocess

from retinaunet.evaluation.ap import average_precision, mean_over_classes
from retinaunet.evaluation.cli import main as rud_evaluate
from retinaunet.io import read_json
from retinaunet.layout import TaskPaths
from retinaunet.model_folder import FoldFolder, model_from_checkpoint
from retinaunet.models import build_model
from retinaunet.plans import load_plans
from retinaunet.store import ground_truth
from retinaunet.toy import Toy2DConfig, Toy3DConfig, write_toy_task
from retinaunet.training.cli import main as rud_train


def _split_map(paths: TaskPaths, model: torch.nn.Module, plans, split_name: str) -> float:
    """Class-aware mAP@0.1 of ``model`` on one split of fold 0, one view, with ``plans``' decoding."""
    split = read_json(paths.splits)[0]
    pre = paths.preprocessed(plans.plan_name)
    predictor = Predictor([model.eval()], plans, device="cpu", mirror=False)
    preds, gts = [], []
    for case in split[split_name]:
        preds.append(predictor.predict_case(np.load(pre / f"{case}.npy")))
        gts.append(ground_truth(read_json(pre / f"{case}.json"), plans.data_dim))
    ap = average_precision([p.boxes for p in preds], [p.scores for p in preds], [p.labels for p in preds],
                           [g[0] for g in gts], [g[1] for g in gts], plans.num_classes)
    return float(np.nan_to_num(mean_over_classes(ap)[0]))


@pytest.mark.parametrize("model", ["retina_unet", "det_unet", "u_faster_rcnn"])
def test_2d_pipeline_learns(data_root, model):
    # clearly visible 48 x 48 toy 'scales' images (radius 5 vs 9): small enough for seconds of CPU training;
    # 80 images give the fold 16 test cases, enough that one lucky box does not decide the comparison
    cfg = Toy2DConfig(size=48, scale_radii=(5.0, 9.0), intensity=1.0, noise=0.5, num_train=80, num_test=8)
    task = write_toy_task("scales", data_root, number=11, name="E2E", config=cfg, progress=False)
    paths = TaskPaths(task)
    assert rud_plan(["-t", "11", "--override", "training.epochs=8", "training.batches_per_epoch=25",
                     "training.learning_rate=0.001", "batch_size=4"]) == 0
    assert rud_preprocess(["-t", "11", "--workers", "0"]) == 0
    plans = load_plans(paths.plans)
    assert rud_train(["0", "-t", "11", "--workers", "0", "--model", model]) == 0
    fold = paths.fold_dir(model, plans.plan_name, 0)
    assert (fold / "curves.png").exists() and (fold / "test_evaluation" / "metrics.json").exists()

    open_plans = plans.copy()  # no score threshold: an untrained model's boxes are scored too
    open_plans.inference.decode_min_score = 0.0
    open_plans.inference.min_score = 0.0
    best = FoldFolder(fold).checkpoint_files()[0]
    trained = _split_map(paths, model_from_checkpoint(best, plans=open_plans), open_plans, "test")
    untrained = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        untrained.append(_split_map(paths, build_model(model, open_plans), open_plans, "test"))
    assert trained >= max(untrained) + 0.2 and trained >= np.mean(untrained) + 0.3, \
        f"test mAP {trained:.3f} trained vs untrained {[round(u, 3) for u in untrained]}"

    out = task / "predictions" / "run"
    predict = ["-t", "11", "-i", str(paths.images_ts), "-o", str(out), "--folds", "0", "--model", model]
    assert rud_predict(predict) == 0
    assert len(list(out.glob("case_*.json"))) == 8 and (out / "predictions.csv").exists()
    assert rud_evaluate(["-t", "11", "-p", str(out), "-l", str(paths.labels_ts), "-o", str(out / "eval")]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["mAP"]["0.1"] > np.mean(untrained) + 0.3
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
        if f.name.endswith(".mrk.json"):  # the Slicer markups beside each case's JSON
            continue
        for box in json.loads(f.read_text())["boxes"]:
            assert len(box["box"]) == 6 and len(box["center_world"]) == 3
    assert rud_evaluate(["-t", "12", "-p", str(out), "-l", str(paths.labels_ts), "-o", str(out / "eval")]) == 0
    assert json.loads((out / "eval" / "metrics.json").read_text())["dim"] == 3
