"""Starting a training from another model's weights (``rud_train --pretrained MODEL_FOLDER``).

A small dataset gains from the weights of a model trained on a large one. Every weight of the new model
whose name and shape match one of the source checkpoint is loaded; the others (typically the heads of a
task with another number of classes, or the first layer for another number of modalities) keep their
fresh initialisation. The lists of loaded and initialised weights are returned and logged, so what was
transferred is never a guess.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loguru import logger
from torch import nn

from retinaunet.model_folder import ModelFolder, ModelFolderError, load_checkpoint

__all__ = ["find_checkpoint", "load_pretrained"]


def find_checkpoint(source: str | os.PathLike) -> Path:
    """A checkpoint file, or the best kept checkpoint of the first trained fold of a model folder."""
    source = Path(source)
    if source.is_file():
        return source
    folder = ModelFolder(source)
    folds = folder.available_folds()
    if not folds:
        raise ModelFolderError(f"{source}: no trained fold to take weights from; give a model folder "
                               "(models/<model>_<plan>) or a checkpoint file")
    return folder.fold(folds[0]).checkpoint_files()[0]


def load_pretrained(model: nn.Module, source: str | os.PathLike) -> dict[str, Any]:
    """Load the weights of ``source`` that fit ``model`` (same name and shape); returns what was loaded.

    Returns ``{"checkpoint", "loaded": [names], "initialised": [names], "unused": [names]}``.
    """
    path = find_checkpoint(source)
    weights = load_checkpoint(path)["state_dict"]
    own = model.state_dict()
    fits = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(fits, strict=False)
    report = {"checkpoint": str(path), "loaded": sorted(fits), "initialised": sorted(set(own) - set(fits)),
              "unused": sorted(set(weights) - set(fits))}
    logger.info(f"pretrained weights from {path}: {len(fits)} of {len(own)} tensors loaded; initialised afresh: "
                f"{', '.join(report['initialised'][:8]) or 'none'}"
                f"{' ...' if len(report['initialised']) > 8 else ''}")
    return report
