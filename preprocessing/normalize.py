"""Intensity normalisation per modality, as the plans' ``normalization`` entries say.

``{"scheme": "ct", "clip": [lo, hi], "mean": m, "std": s}``: clip to the dataset's object-voxel
percentiles, then standardise with the object voxels' mean and std (the same scale for every case).
``{"scheme": "zscore"}``: standardise each case by its own mean and std.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["normalize_channel", "normalize_image"]


def normalize_channel(x: np.ndarray, scheme: Mapping[str, Any]) -> np.ndarray:
    """One channel ``x: ndarray[*S]`` (any dtype) -> float32 ``[*S]`` (a new array)."""
    out = np.array(x, dtype=np.float32, copy=True)
    kind = scheme.get("scheme", "zscore")
    if kind == "ct":
        lo, hi = (float(v) for v in scheme["clip"])
        np.clip(out, lo, hi, out=out)
        out -= np.float32(scheme["mean"])
        out /= np.float32(max(float(scheme["std"]), 1e-8))
    elif kind == "zscore":
        mean, std = float(out.mean(dtype=np.float64)), float(out.std(dtype=np.float64))
        out -= np.float32(mean)
        out /= np.float32(max(std, 1e-8))
    elif kind != "none":
        raise ValueError(f"unknown normalisation scheme '{kind}'; use 'ct', 'zscore' or 'none' in plans.json")
    return out


def normalize_image(images: np.ndarray, schemes: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``images: ndarray[C, *S]`` -> float32 ``[C, *S]``, channel c normalised by ``schemes[c]``."""
    if len(schemes) != images.shape[0]:
        raise ValueError(f"plans have {len(schemes)} normalisation entries for {images.shape[0]} modalities")
    return np.stack([normalize_channel(ch, s) for ch, s in zip(images, schemes)])
