"""A fold's earlier results are never replaced without --force, and --resume never restarts."""

from __future__ import annotations

import pytest
import torch

from retinaunet.training.checkpoint import load_checkpoint
from retinaunet.training.trainer import TrainingError, check_fold_dir


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
