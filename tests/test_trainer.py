"""The trainer: resume equals an uninterrupted run, NaN steps are skipped then stop training, best epochs kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retinaunet.layout import TaskPaths
from retinaunet.model_folder import load_checkpoint
from retinaunet.plans import make_test_plans, save_plans
from retinaunet.training.step import LossModule
from retinaunet.training.trainer import Trainer, TrainingError, TrainOptions
from tests.test_loader import write_case


@pytest.fixture
def task(data_root):
    """A task with 10 tiny preprocessed 2D cases (64 x 64, one disk each) and its plans."""
    root = data_root / "Task009_Tiny"
    pre = root / "preprocessed" / "2d"
    pre.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"task": root.name, "dim": 2, "labels": {"0": "a", "1": "b"},
                                                   "modalities": {"0": "CT"}}))
    rng = np.random.default_rng(0)
    for i in range(10):
        centre = tuple(int(v) for v in rng.integers(14, 50, 2))
        write_case(pre, f"case{i:02d}", (64, 64), [(centre, 7, i % 2)])
    plans = make_test_plans(dim=2, patch_size=[64, 64])
    plans.task = root.name
    plans.override("training.epochs", 2)
    plans.override("training.batches_per_epoch", 2)
    plans.override("training.learning_rate", 1e-3)
    paths = TaskPaths(root)
    save_plans(plans, paths.plans)
    return paths, plans


def _run(paths, plans, **kw):
    opts = TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False, **kw)
    return Trainer(paths, plans, opts).fit()


def test_resume_ends_like_an_uninterrupted_run(task, tmp_path):
    paths, plans = task
    _run(paths, plans)
    fold_dir = paths.fold_dir("retina_unet", "2d", 0)
    straight = load_checkpoint(fold_dir / "checkpoint_last.pt")
    assert straight["epoch"] == 2 and len(straight["history"]) == 2
    assert (fold_dir / "curves.png").stat().st_size > 0 and (fold_dir / "train.log").exists()
    kept = json.loads((fold_dir / "best_epochs.json").read_text())["epochs"]
    assert 1 <= len(kept) <= 2 and all((fold_dir / k["file"]).exists() for k in kept)

    with pytest.raises(TrainingError, match="--resume"):
        _run(paths, plans)  # an existing run is never overwritten silently

    short = plans.copy().override("training.epochs", 1)
    _run(paths, short, force=True)
    assert load_checkpoint(fold_dir / "checkpoint_last.pt")["epoch"] == 1
    _run(paths, plans, resume=True)
    resumed = load_checkpoint(fold_dir / "checkpoint_last.pt")
    assert resumed["epoch"] == 2
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), f"{k} differs after resume"
    assert [h["losses"] for h in resumed["history"]] == [h["losses"] for h in straight["history"]]


def test_nan_losses_are_skipped_then_stop_training(task, monkeypatch):
    paths, plans = task
    calls = {"n": 0}
    original = LossModule.forward

    def sometimes_nan(self, *args):
        calls["n"] += 1
        losses = original(self, *args)
        if calls["n"] == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(LossModule, "forward", sometimes_nan)
    summary = _run(paths, plans)
    assert sum(h["skipped"] for h in summary["history"]) == 1
    assert all(np.isfinite(v) for h in summary["history"] for v in h["losses"].values())

    def always_nan(self, *args):
        losses = original(self, *args)
        losses["loss"] = losses["loss"] * float("inf")
        return losses

    monkeypatch.setattr(LossModule, "forward", always_nan)
    with pytest.raises(TrainingError, match="NaN/inf loss: lower the learning rate"):
        _run(paths, plans.copy().override("training.batches_per_epoch", 4), force=True, max_nonfinite=3)


def test_missing_preprocessed_data_is_a_clear_error(task):
    paths, plans = task
    with pytest.raises(TrainingError, match="rud_preprocess"):
        _run(paths, plans.copy().override("plan_name", "3d"))
