"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict ``{"model": name, "plans": dict, "state_dict": ..., "epoch": E}``; the last
checkpoint of a fold also carries the optimiser, the random states and the metric history so that a
resumed run ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinaunet.io import atomic_path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary name, then rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:  # torch reports a failed write (full disk ...) as RuntimeError
            raise OSError(f"{path}: cannot write the checkpoint ({str(err).strip().splitlines()[-1]}); is the "
                          "disk full?") from None
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a broken file
        raise RuntimeError(f"{path}: cannot load the checkpoint ({type(err).__name__}); it may be truncated. "
                           "Nothing was changed: restore it from a backup, or rename its folder to keep the "
                           "other checkpoints and train into a new one") from None


def rng_state() -> dict[str, Any]:
    """Random states of torch, numpy and Python in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
