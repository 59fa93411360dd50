"""One prediction path: rud_predict, the trainer's validation and its test prediction all run their cases
through retinaunet.inference.pipeline.PredictionRun and the plans' ordered post-processing steps (the test prediction
of a fold is exercised end to end in test_end_to_end)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from retinaunet.inference import postprocess
from retinaunet.inference.cli import predict_folder
from retinaunet.inference.pipeline import PredictionRun

from retinaunet.models import Detections
from retinaunet.plans import PlansError, make_test_plans
from retinaunet.training.trainer import Trainer, TrainOptions
from tests.test_predict_cli import make_model_folder, write_image
from tests.test_trainer import task  # noqa: F401 - the fixture

SEEN: list[str] = []


@pytest.fixture
def recorder(monkeypatch):
    """A post-processing step that records the cases it sees, for the plans to name."""
    SEEN.clear()

    def record(pred, plans):
        SEEN.append(len(pred.scores))
        return pred

    monkeypatch.setitem(postprocess.STEPS, "record", record)
    return SEEN


class ThreeBoxes(torch.nn.Module):
    """Three disjoint boxes scoring 0.9, 0.8 and 0.7 in every tile, and no segmentation."""

    def predict(self, images):
        boxes = torch.tensor([[2.0, 2, 8, 8], [20, 20, 26, 26], [36, 4, 42, 10]])
        n = images.shape[0]
        return Detections([boxes] * n, [torch.tensor([0.9, 0.8, 0.7])] * n, [torch.zeros(3, dtype=torch.long)] * n)


def test_steps_run_in_the_plans_order(tmp_path):
    plans = make_test_plans(dim=2, patch_size=[64, 64])
    data = np.zeros((1, 64, 64), np.float32)
    props = {"case": "c", "shape": [64, 64], "original": {"shape": [64, 64], "spacing": [1.0, 1.0],
             "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0]}, "crop": [[0, 64], [0, 64]],
             "spacing": [1.0, 1.0]}
    assert len(PredictionRun([ThreeBoxes()], plans, predictor_options={"mirror": False}).case(data, props).scores) == 3
    plans.override("inference.max_detections", 2)
    plans.override("inference.postprocess", ["max_detections"])
    run = PredictionRun([ThreeBoxes()], plans, out_dir=tmp_path, predictor_options={"mirror": False})
    assert len(run.case(data, props).scores) == 2
    assert run.finish() == [tmp_path / "c.json"] and len(json.loads((tmp_path / "c.json").read_text())["boxes"]) == 2
    assert (tmp_path / "predictions.csv").exists()
    plans.override("inference.postprocess", ["no_such_step"])
    with pytest.raises(PlansError, match="inference.postprocess names unknown step"):
        PredictionRun([ThreeBoxes()], plans)


def test_rud_predict_runs_the_plans_steps(tmp_path, recorder):
    plans = make_test_plans(dim=2, num_classes=2)
    plans.override("inference.postprocess", ["record"])
    model_dir = make_model_folder(tmp_path / "Task000_Test", plans)
    for case in ("a", "b"):
        write_image(tmp_path / "images" / f"{case}_0000.nii.gz", np.random.default_rng(0).normal(size=(64, 64)),
                    (1, 1))
    predict_folder(model_dir, tmp_path / "images", tmp_path / "out", [1], mirror=False, progress=False)
    assert len(recorder) == 2


def test_trainer_validation_runs_the_plans_steps(task, recorder):  # noqa: F811
    paths, plans = task
    plans.override("inference.postprocess", ["record"])
    plans.override("training.epochs", 1)
    plans.override("training.batches_per_epoch", 1)
    trainer = Trainer(paths, plans, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False,
                                                 sweep=False))
    trainer.fit()
    assert len(recorder) == len(trainer.split["val"]) > 0
