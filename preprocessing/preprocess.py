"""Preprocess one case in memory: crop -> normalise -> resample.

The crop is the plans' ``crop`` (:func:`retinaunet.crop.case_crop`: the non-zero voxels, or for CT the body),
the same function for training cases and new images; a training case's crop holds all its labelled voxels.

The case properties record the crop and both spacings; :mod:`retinaunet.coordinates` maps boxes back to
the original image and to world coordinates from them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from retinaunet.preprocessing.normalize import normalize_channel
from retinaunet.preprocessing.resample import resample_array, resample_labels, resampled_shape

from retinaunet.boxes import boxes_from_instance_map
from retinaunet.crop import case_crop, crop_to_box
from retinaunet.io import Geometry, read_case
from retinaunet.plans import Plans

__all__ = ["preprocess_case", "preprocess_image_files"]


def preprocess_case(images: np.ndarray, geometry: Geometry, plans: Plans,
                    instance_map: np.ndarray | None = None, instances: Mapping[int, int] | None = None,
                    case: str = "") -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Crop, normalise and resample one case held in memory.

    images: ndarray[C, *S] (any dtype, array order), geometry: its `Geometry`; plans: needs
    ``target_spacing`` and ``normalization``; instance_map: int [*S] (0 background) with ``instances``
    {id: class}. Returns data float32 [C, *S'], seg int32 [*S'] (or None) and the case properties
    (the contract's ``<case>.json``: original geometry, crop box, spacing, shape, instances, boxes).
    """
    spacing = [float(s) for s in geometry.spacing]
    target = [float(t) for t in plans.target_spacing]
    if len(target) != images.ndim - 1:
        raise ValueError(f"{case}: image has {images.ndim - 1} spatial axes, plans' target spacing {len(target)}")
    c = plans.crop
    crop = case_crop(images, spacing, c.method, c.channel, c.threshold, c.margin_mm, labels=instance_map)
    cropped = crop_to_box(images, crop)
    out_shape = resampled_shape(cropped.shape[1:], spacing, target)
    schemes = plans.normalization
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
        if np.count_nonzero(inst_c) != np.count_nonzero(instance_map):  # case_crop's promise, kept honest
            raise RuntimeError(f"{case}: the crop {crop} cuts labelled voxels; report this as a bug")
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


def preprocess_image_files(files: Sequence[str | os.PathLike], plans: Plans, case: str = ""
                           ) -> tuple[np.ndarray, dict[str, Any]]:
    """A new image (one file per modality, in order) preprocessed for prediction: (data [C, *S'], props)."""
    images, geometry = read_case(files)
    data, _, props = preprocess_case(images, geometry, plans, case=case)
    return data, props
