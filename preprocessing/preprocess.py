"""Preprocess one case in memory: crop -> normalise -> resample; and the exact way back for boxes.

Index mapping (exact, no rounding drift): along axis a with original spacing s_a and target spacing
t_a, a half-open box edge e in preprocessed coordinates is the edge ``crop_lo_a + e * t_a / s_a`` in
the original image (see `preprocessing.resample`). `box_to_original` applies it; `box_to_world` then
gives the box centre as a SimpleITK physical point and its size in mm.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from preprocessing.crop import crop_to_box, nonzero_box
from preprocessing.normalize import normalize_channel
from preprocessing.resample import resample_array, resample_labels, resampled_shape, scale_factors
from retinaunet.boxes import boxes_from_instance_map
from retinaunet.io import Geometry, read_case

__all__ = ["preprocess_case", "preprocess_image_files", "box_to_original", "box_to_preprocessed", "box_to_world",
           "original_geometry"]


def preprocess_case(images: np.ndarray, geometry: Geometry, plans: Mapping[str, Any],
                    instance_map: np.ndarray | None = None, instances: Mapping[int, int] | None = None,
                    case: str = "") -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Crop, normalise and resample one case held in memory.

    images: ndarray[C, *S] (any dtype, array order), geometry: its `Geometry`; plans: needs
    ``target_spacing`` and ``normalization``; instance_map: int [*S] (0 background) with ``instances``
    {id: class}. Returns data float32 [C, *S'], seg int32 [*S'] (or None) and the case properties
    (the contract's ``<case>.json``: original geometry, crop box, spacing, shape, instances, boxes).
    """
    spacing = [float(s) for s in geometry.spacing]
    target = [float(t) for t in plans["target_spacing"]]
    if len(target) != images.ndim - 1:
        raise ValueError(f"{case}: image has {images.ndim - 1} spatial axes, plans' target spacing {len(target)}")
    crop = nonzero_box(images)
    cropped = crop_to_box(images, crop)
    out_shape = resampled_shape(cropped.shape[1:], spacing, target)
    schemes = plans["normalization"]
    if len(schemes) != images.shape[0]:
        raise ValueError(f"{case}: {images.shape[0]} modalities but {len(schemes)} normalisation entries in plans")
    channels = []
    for c in range(images.shape[0]):  # one channel at a time keeps the peak memory low
        norm = normalize_channel(cropped[c], schemes[c])
        channels.append(resample_array(norm, spacing, target, order=3, shape=out_shape, overwrite=True))
        del norm
    data = channels[0][None] if len(channels) == 1 else np.stack(channels)
    del channels
    seg, inst_classes, boxes, restored = None, {}, {}, []
    if instance_map is not None:
        inst_c = np.ascontiguousarray(crop_to_box(instance_map, crop))
        seg, restored = resample_labels(inst_c, spacing, target, case=case)
        found = boxes_from_instance_map(seg)
        mapping = {int(k): int(v) for k, v in (instances or {}).items()}
        unknown = sorted(set(found) - set(mapping))
        if unknown and instances is not None:
            raise ValueError(f"{case}: instance ids {unknown} are in the label map but not in its json")
        inst_classes = {str(i): mapping.get(i, 0) for i in sorted(found)}
        boxes = {str(i): [int(v) for v in found[i]] for i in sorted(found)}
    props = {
        "case": case,
        "original": {"shape": list(geometry.shape), "spacing": spacing, "origin": list(geometry.origin),
                     "direction": list(geometry.direction)},
        "crop": crop,
        "spacing": target,
        "shape": list(data.shape[1:]),
        "instances": inst_classes,
        "boxes": boxes,
        "restored_instances": restored,
    }
    return data, seg, props


def preprocess_image_files(files: Sequence[str | os.PathLike], plans: Mapping[str, Any], case: str = ""
                           ) -> tuple[np.ndarray, dict[str, Any]]:
    """A new image (one file per modality, in order) preprocessed for prediction: (data [C, *S'], props)."""
    images, geometry = read_case(files)
    data, _, props = preprocess_case(images, geometry, plans, case=case)
    return data, props


def _factors(props: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    f = scale_factors(props["original"]["spacing"], props["spacing"])
    lo = np.asarray([c[0] for c in props["crop"]], dtype=np.float64)
    return f, lo


def box_to_original(box: Sequence[float] | np.ndarray, props: Mapping[str, Any]) -> np.ndarray:
    """Boxes ``[..., 2d]`` in preprocessed index coordinates -> original image index coordinates (exact)."""
    b = np.asarray(box, dtype=np.float64)
    f, lo = _factors(props)
    return b * np.concatenate([f, f]) + np.concatenate([lo, lo])


def box_to_preprocessed(box: Sequence[float] | np.ndarray, props: Mapping[str, Any]) -> np.ndarray:
    """Inverse of `box_to_original`: original index boxes ``[..., 2d]`` -> preprocessed coordinates."""
    b = np.asarray(box, dtype=np.float64)
    f, lo = _factors(props)
    return (b - np.concatenate([lo, lo])) / np.concatenate([f, f])


def original_geometry(props: Mapping[str, Any]) -> Geometry:
    """The original image's `Geometry` from a case's properties."""
    return Geometry.from_dict(props["original"])


def box_to_world(box_original: Sequence[float] | np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Centre (physical x, y, z mm, as SimpleITK) and size in mm (array order) of original-index boxes [..., 2d].

    A half-open box [lo, hi) covers voxel centres lo .. hi - 1, so its centre is the continuous index
    (lo + hi) / 2 - 0.5.
    """
    b = np.asarray(box_original, dtype=np.float64)
    d = b.shape[-1] // 2
    centre = (b[..., :d] + b[..., d:]) / 2 - 0.5
    return geometry.index_to_world(centre), (b[..., d:] - b[..., :d]) * np.asarray(geometry.spacing)
