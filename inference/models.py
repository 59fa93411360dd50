"""Loading a trained model folder: the ensemble of kept checkpoints of the chosen folds.

``<task>/models/<model>_<plan>/`` holds ``plans.json`` (a copy) and ``fold<k>/`` with
``best_epochs.json`` listing the kept best epochs (``checkpoints/epoch_E.pt``) and
``checkpoint_last.pt``. A fold without a best list (e.g. trained without validation) contributes its
last checkpoint. Each checkpoint rebuilds its own network (``build_model(ckpt["model"],
Plans(ckpt["plans"]))``); the ``inference`` section of the folder's ``plans.json`` overrides the
checkpoint's, so inference settings can be edited without retraining.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from loguru import logger
from torch import nn

from retinaunet.io import read_json
from retinaunet.models import build_model
from retinaunet.plans import Plans, load_plans

__all__ = ["ModelFolderError", "available_folds", "checkpoint_files", "load_models"]

FOLD_PATTERN = re.compile(r"^fold(\d+)$")


class ModelFolderError(RuntimeError):
    """A model folder that cannot be used; the message names the path and the fix."""


def available_folds(model_dir: str | os.PathLike) -> list[int]:
    """Folds of a model folder that hold a usable checkpoint (kept best epochs or the last one), sorted."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(f"{model_dir}: model folder not found; train with rud_train or check --model/--plan")
    folds = []
    for p in model_dir.iterdir():
        m = FOLD_PATTERN.match(p.name)
        if m and p.is_dir() and ((p / "best_epochs.json").exists() or (p / "checkpoint_last.pt").exists()):
            folds.append(int(m.group(1)))
    return sorted(folds)


def checkpoint_files(fold_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files of one fold: the kept best epochs, else ``checkpoint_last.pt``."""
    fold_dir = Path(fold_dir)
    best = fold_dir / "best_epochs.json"
    if best.exists():
        entries = read_json(best).get("epochs", [])
        files = []
        for entry in entries:
            name = entry.get("file") or f"checkpoints/epoch_{int(entry['epoch'])}.pt"
            path = fold_dir / name
            if not path.exists():
                raise ModelFolderError(f"{path}: listed in {best} but missing; retrain the fold or fix the list")
            files.append(path)
        if files:
            return files
    last = fold_dir / "checkpoint_last.pt"
    if last.exists():
        return [last]
    raise ModelFolderError(f"{fold_dir}: no checkpoints (no best_epochs.json entries, no checkpoint_last.pt); "
                           "train this fold first")


def load_checkpoint_model(path: str | os.PathLike, device: str | torch.device = "cpu",
                          inference: dict | None = None) -> nn.Module:
    """Rebuild one network from a checkpoint file, in eval mode on ``device``."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ModelFolderError(f"{path}: cannot load the checkpoint ({type(err).__name__}); "
                               "it may be truncated: retrain or copy it again") from None
    if not isinstance(ckpt, dict) or not {"model", "plans", "state_dict"} <= set(ckpt):
        raise ModelFolderError(f"{path}: not a checkpoint of this project (needs model, plans, state_dict)")
    plans = Plans(ckpt["plans"]).copy()
    if inference is not None:
        plans["inference"] = dict(inference)
    model = build_model(ckpt["model"], plans)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def load_models(model_dir: str | os.PathLike, folds: Sequence[int] | None = None,
                device: str | torch.device = "cpu") -> tuple[list[nn.Module], Plans]:
    """All kept checkpoints of the chosen ``folds`` (default: every trained fold) and the folder's plans."""
    model_dir = Path(model_dir)
    trained = available_folds(model_dir)
    if folds is None:
        folds = trained
        if not folds:
            raise ModelFolderError(f"{model_dir}: no trained fold (fold<k>/ with checkpoints); run rud_train first")
    missing = [f for f in folds if f not in trained]
    if missing:
        raise ModelFolderError(f"{model_dir}: fold(s) {missing} not trained (trained: {trained or 'none'}); "
                               "train them or choose --folds among the trained ones")
    files = [f for fold in folds for f in checkpoint_files(model_dir / f"fold{fold}")]
    plans_file = model_dir / "plans.json"
    plans = load_plans(plans_file) if plans_file.exists() else None
    if plans is None:
        plans = Plans(torch.load(files[0], map_location="cpu", weights_only=True)["plans"])
        logger.warning(f"{plans_file} missing: using the plans stored in {files[0]}")
    models = [load_checkpoint_model(f, device, plans.inference) for f in files]
    logger.info(f"loaded {len(models)} checkpoint(s) of fold(s) {list(folds)} from {model_dir}")
    return models, plans
