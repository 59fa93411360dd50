"""Model folders and their checkpoints: the one writer and reader of ``models/<model>_<plan>/``.

```
models/<model>_<plan>/
  plans.json, dataset.json        copies: the folder is self-contained
  fold<k>/
    checkpoint_last.pt            the last epoch, with optimiser, random states and history (resume)
    checkpoints/epoch_<E>.pt      the kept best epochs, listed best first in best_epochs.json
    best_epochs.json              {"epochs": [{"epoch", "val_ap", "file"}, ...]}
    train.log, curves.png
    val_raw/<case>.npz            every view's boxes of the val cases before consolidation (for rud_sweep)
    sweep.json, sweep_table.csv   the settings chosen on them, and every setting tried
    test_predictions/, test_evaluation/
  sweep.json                      settings chosen on the pooled folds (rud_sweep --folds ..., rud_consolidate)
```

The inference settings a prediction uses are the plans' ``inference`` section with the chosen values of a
sweep on top (:meth:`ModelFolder.tuned_plans`): the folder's pooled ``sweep.json`` when it covers the
folds predicted with, else the one fold's.

A checkpoint is ``{"model": name, "plans": plans.json's object, "state_dict": ..., "epoch": E, ...}``,
written atomically and read with ``weights_only=True``; it rebuilds its own network. The ``inference``
section of the folder's ``plans.json`` overrides the checkpoint's, so inference settings can be edited
without retraining. A fold without kept best epochs (trained without validation) contributes its last
checkpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from loguru import logger
from torch import nn

from retinaunet.io import atomic_path, read_json, write_json
from retinaunet.layout import CASE_NAMES, FOLD_NAME
from retinaunet.plans import Plans, load_plans, save_plans

__all__ = ["ModelFolder", "FoldFolder", "ModelFolderError", "save_checkpoint", "load_checkpoint",
           "checkpoint_state", "model_from_checkpoint"]

PLANS_FILE = "plans.json"
LAST_CHECKPOINT = "checkpoint_last.pt"
BEST_LIST = "best_epochs.json"
SWEEP_FILE = "sweep.json"
FOLD_PATTERN = re.compile(r"^fold(\d+)$")


class ModelFolderError(RuntimeError):
    """A model folder that cannot be used; the message names the path and the fix."""


# ------------------------------------------------------------------------------------------- checkpoints
def checkpoint_state(model_name: str, plans: Plans, network: nn.Module, epoch: int, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict: what rebuilds the network (name, plans, weights) plus ``extra`` entries."""
    return {"model": model_name, "plans": plans.to_dict(), "state_dict": network.state_dict(), "epoch": int(epoch),
            **extra}


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary name, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:  # torch reports a failed write (full disk ...) as RuntimeError
            raise OSError(f"{path}: cannot write the checkpoint ({str(err).strip().splitlines()[-1]}); is the "
                          "disk full?") from None
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint dict; ModelFolderError names the file when it is missing, broken or foreign."""
    path = Path(path)
    if not path.exists():
        raise ModelFolderError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ModelFolderError(f"{path}: cannot load the checkpoint ({type(err).__name__}); it may be truncated. "
                               "Nothing was changed: restore it from a backup, or rename its folder to keep the "
                               "other checkpoints and train into a new one") from None
    if not isinstance(ckpt, dict) or not {"model", "plans", "state_dict"} <= set(ckpt):
        raise ModelFolderError(f"{path}: not a checkpoint of this project (needs model, plans, state_dict)")
    return ckpt


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                          plans: Plans | None = None) -> nn.Module:
    """Rebuild one network from a checkpoint file, in eval mode on ``device``.

    ``plans``: when given, its ``inference`` section replaces the checkpoint's (editable settings).
    """
    from retinaunet.models import build_model

    ckpt = load_checkpoint(path)
    ckpt_plans = Plans.from_dict(ckpt["plans"], source=str(path))
    if plans is not None:
        ckpt_plans.inference = plans.inference
    model = build_model(ckpt["model"], ckpt_plans)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing:
        raise ModelFolderError(f"{path}: the checkpoint lacks {len(missing)} weight(s) of {ckpt['model']} "
                               f"(e.g. {missing[0]}); it was written by another model: retrain the fold")
    if unexpected:  # layers older versions built but no head read (e.g. the FPN's P1 smoothing)
        logger.debug(f"{path}: ignored {len(unexpected)} unused weight(s), e.g. {unexpected[0]}")
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------- folders
@dataclass(frozen=True)
class FoldFolder:
    """``fold<k>/`` of a model folder."""

    path: Path

    @property
    def fold(self) -> int:
        return int(FOLD_PATTERN.match(self.path.name).group(1))

    @property
    def last_checkpoint(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def best_list(self) -> Path:
        return self.path / BEST_LIST

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def test_predictions(self) -> Path:
        return self.path / "test_predictions"

    @property
    def val_raw(self) -> Path:
        return self.path / "val_raw"

    @property
    def sweep_file(self) -> Path:
        return self.path / SWEEP_FILE

    @property
    def test_evaluation(self) -> Path:
        return self.path / "test_evaluation"

    @staticmethod
    def epoch_file(epoch: int) -> str:
        """Name (relative to the fold) of a kept epoch's checkpoint."""
        return f"checkpoints/epoch_{int(epoch)}.pt"

    def has_checkpoint(self) -> bool:
        return self.best_list.exists() or self.last_checkpoint.exists()

    def read_best(self) -> list[dict[str, Any]]:
        """The kept best epochs, best first: ``[{"epoch", "val_ap", "file"}]`` (empty without a list)."""
        return list(read_json(self.best_list).get("epochs", [])) if self.best_list.exists() else []

    def write_best(self, best: Sequence[dict[str, Any]]) -> None:
        write_json({"epochs": list(best)}, self.best_list)

    def checkpoint_files(self) -> list[Path]:
        """Checkpoint files of this fold: the kept best epochs, else ``checkpoint_last.pt``."""
        files = []
        for entry in self.read_best():
            path = self.path / (entry.get("file") or self.epoch_file(entry["epoch"]))
            if not path.exists():
                raise ModelFolderError(f"{path}: listed in {self.best_list} but missing; retrain the fold or fix "
                                       "the list")
            files.append(path)
        if files:
            return files
        if self.last_checkpoint.exists():
            return [self.last_checkpoint]
        raise ModelFolderError(f"{self.path}: no checkpoints (no {BEST_LIST} entries, no {LAST_CHECKPOINT}); "
                               "train this fold first")


@dataclass(frozen=True)
class ModelFolder:
    """``models/<model>_<plan>/``: plans and dataset copies, and one :class:`FoldFolder` per fold."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def plans_file(self) -> Path:
        return self.path / PLANS_FILE

    def fold(self, k: int) -> FoldFolder:
        return FoldFolder(self.path / FOLD_NAME.format(int(k)))

    def available_folds(self) -> list[int]:
        """Folds that hold a usable checkpoint (kept best epochs or the last one), sorted."""
        if not self.path.is_dir():
            raise ModelFolderError(f"{self.path}: model folder not found; train with rud_train or check "
                                   "--model/--plan")
        return sorted(int(m.group(1)) for p in self.path.iterdir()
                      if (m := FOLD_PATTERN.match(p.name)) and p.is_dir() and FoldFolder(p).has_checkpoint())

    def load_plans(self) -> Plans:
        if not self.plans_file.exists():
            raise ModelFolderError(f"{self.plans_file}: missing; a model folder needs its copy of plans.json")
        return load_plans(self.plans_file)

    def write_plans(self, plans: Plans, dataset_file: Path) -> None:
        """Copy the plans, the dataset description and its case names in (the folder is self-contained).

        Refuses other plans than the folder's own, except for the sections that do not change the network
        (``training``, ``reasons``).
        """
        import shutil

        self.path.mkdir(parents=True, exist_ok=True)
        if self.plans_file.exists():
            old = {k: v for k, v in load_plans(self.plans_file).to_dict().items() if k not in ("training", "reasons")}
            new = {k: v for k, v in plans.to_dict().items() if k not in ("training", "reasons")}
            if old != new:
                raise ModelFolderError(
                    f"{self.plans_file} holds other plans than the task's: the task was planned again (or "
                    "--override changed the network); move that model folder away to train with the new plans, "
                    "or rerun rud_plan as before to continue the old ones")
        save_plans(plans, self.plans_file)
        shutil.copyfile(dataset_file, self.path / dataset_file.name)
        names = dataset_file.parent / CASE_NAMES  # a converted task's original case names travel with the model
        if names.is_file():
            shutil.copyfile(names, self.path / CASE_NAMES)

    @property
    def sweep_file(self) -> Path:
        return self.path / SWEEP_FILE

    def tuned_plans(self, folds: Sequence[int] | None = None) -> tuple[Plans, Path | None]:
        """The folder's plans with the values a sweep chose for ``folds`` (default: every trained fold) on top
        of their ``inference`` section, and the sweep file they came from (None: the planned values).

        The pooled sweep of the model folder (several folds' validation cases, the most to decide on) is used
        whenever its folds include ``folds``; else a single fold's own sweep."""
        plans = self.load_plans()
        folds = sorted(self.available_folds() if folds is None else folds)
        source = None
        if self.sweep_file.exists() and folds and set(folds) <= set(read_json(self.sweep_file).get("folds", [])):
            source = self.sweep_file
        elif len(folds) == 1 and self.fold(folds[0]).sweep_file.exists():
            source = self.fold(folds[0]).sweep_file
        elif len(folds) > 1 and any(self.fold(f).sweep_file.exists() for f in folds):
            logger.warning(f"{self.path}: folds {folds} were swept one by one but not together; using the planned "
                           "inference settings (run rud_consolidate to choose values for their ensemble)")
        if source is not None:
            for key, value in read_json(source)["chosen"].items():
                plans.override(f"inference.{key}", value, source=str(source))
        return plans, source

    def ensemble_files(self, folds: Sequence[int], checkpoints: int | None = None) -> tuple[list[Path], list[int]]:
        """Checkpoint files of ``folds`` (the first ``checkpoints`` of each, best first; None: all) and each
        one's rank within its fold."""
        files, ranks = [], []
        for fold in folds:
            found = self.fold(fold).checkpoint_files()[:checkpoints]
            files += found
            ranks += list(range(len(found)))
        return files, ranks

    def load_models(self, folds: Sequence[int] | None = None, device: str | torch.device = "cpu",
                    plans: Plans | None = None, with_ranks: bool = False) -> tuple:
        """The kept checkpoints of the chosen ``folds`` (default: every trained fold) and the plans.

        ``plans``: the plans to predict with (default: the folder's); their ``inference.checkpoints`` limits the
        checkpoints per fold and their ``inference`` section replaces the checkpoints'. ``with_ranks``: also
        return each model's rank within its fold (for raw predictions).
        """
        trained = self.available_folds()
        if folds is None:
            folds = trained
            if not folds:
                raise ModelFolderError(f"{self.path}: no trained fold (fold<k>/ with checkpoints); run rud_train "
                                       "first")
        missing = [f for f in folds if f not in trained]
        if missing:
            raise ModelFolderError(f"{self.path}: fold(s) {missing} not trained (trained: {trained or 'none'}); "
                                   "train them or choose --folds among the trained ones")
        files, ranks = self.ensemble_files(folds, None if plans is None else plans.inference.checkpoints)
        if plans is not None:
            pass
        elif self.plans_file.exists():
            plans = load_plans(self.plans_file)
        else:
            plans = Plans.from_dict(load_checkpoint(files[0])["plans"], source=str(files[0]))
            logger.warning(f"{self.plans_file} missing: using the plans stored in {files[0]}")
        models = [model_from_checkpoint(f, device, plans) for f in files]
        logger.info(f"loaded {len(models)} checkpoint(s) of fold(s) {list(folds)} from {self.path}")
        return (models, plans, ranks) if with_ranks else (models, plans)
