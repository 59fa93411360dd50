"""A fold's earlier results are never replaced without --force, and --resume never restarts."""

from __future__ import annotations

import json

import pytest
import torch

from retinaunet.model_folder import load_checkpoint
from retinaunet.training.trainer import Trainer, TrainingError, TrainOptions, check_fold_dir
from tests.test_trainer import task as tiny_task  # noqa: F401 - fixture


def test_kept_epochs_without_last_checkpoint_block_a_new_run(tmp_path):
    fold = tmp_path / "fold0"
    (fold / "checkpoints").mkdir(parents=True)
    (fold / "checkpoints" / "epoch_7.pt").write_bytes(b"weights")
    with pytest.raises(TrainingError, match="--force"):
        check_fold_dir(fold, resume=False, force=False)
    with pytest.raises(TrainingError, match="nothing to resume"):
        check_fold_dir(fold, resume=True, force=False)
    with pytest.raises(TrainingError, match="nothing to resume"):
        check_fold_dir(fold, resume=True, force=True)
    check_fold_dir(fold, resume=False, force=True)  # only --force may start over


def test_a_log_alone_counts_as_a_run(tmp_path):
    fold = tmp_path / "fold1"
    fold.mkdir()
    (fold / "train.log").write_text("epoch 1\n")
    with pytest.raises(TrainingError, match="train.log"):
        check_fold_dir(fold, resume=False, force=False)


def test_empty_or_missing_fold_starts(tmp_path):
    check_fold_dir(tmp_path / "fold2", resume=False, force=False)
    (tmp_path / "fold3").mkdir()
    check_fold_dir(tmp_path / "fold3", resume=False, force=False)
    with pytest.raises(TrainingError, match="nothing to resume"):
        check_fold_dir(tmp_path / "fold3", resume=True, force=False)


def test_truncated_checkpoint_advice_loses_nothing(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(RuntimeError) as err:
        load_checkpoint(path)
    assert "delete" not in str(err.value) and "Nothing was changed" in str(err.value)


def test_run_with_kept_epochs_only_is_refused_by_the_trainer(tiny_task):  # noqa: F811 - the imported fixture
    paths, plans = tiny_task
    fold = paths.fold_dir("retina_unet", "2d", 0)
    (fold / "checkpoints").mkdir(parents=True)
    (fold / "checkpoints" / "epoch_2.pt").write_bytes(b"kept")
    for kw in ({}, {"resume": True}):
        with pytest.raises(TrainingError):
            Trainer(paths, plans, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False, **kw)).fit()
    assert (fold / "checkpoints" / "epoch_2.pt").read_bytes() == b"kept"


def test_preprocessed_cases_gone_from_the_raw_data_are_left_out(tiny_task):  # noqa: F811 - the imported fixture
    paths, plans = tiny_task
    paths.images_tr.mkdir(parents=True)
    for i in range(9):  # case09 was deleted from the raw data
        (paths.images_tr / f"case{i:02d}_0000.nii.gz").write_bytes(b"")
    trainer = Trainer(paths, plans, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False))
    trainer.prepare()
    splits = json.loads(paths.splits.read_text())
    assert all("case09" not in fold[k] for fold in splits for k in fold)
    assert sum(len(v) for v in trainer.split.values()) == 9
