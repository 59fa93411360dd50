"""The planner's crop rule: CT is cropped to the body, unless that would leave a training object out.

Air is -1000 HU, so cropping CT to its non-zero voxels keeps the whole scan: the air around the patient,
the table and the padding outside the scanner's circular field of view would be resampled, stored, sampled
for training and predicted in every case. For a task with a CT modality the fingerprint records each
training case's body box (:func:`retinaunet.crop.body_box`); the plan crops to it when every training
object lies inside those boxes. A dataset of CT regions without the body's outline (the lung alone, say)
has objects outside the largest component above the threshold, or cases with objects and no dominant
component, and keeps the non-zero crop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ct_channel", "choose_crop", "cropped_shape", "BODY_THRESHOLD_HU", "BODY_MARGIN_MM"]

BODY_THRESHOLD_HU = -500.0  # above: soft tissue, bone, table; below: air, lung, padding
BODY_MARGIN_MM = 5.0


def ct_channel(modalities: Mapping[Any, str]) -> int | None:
    """The first modality named CT (any case), or None."""
    for key in sorted(modalities, key=int):
        if str(modalities[key]).strip().upper() == "CT":
            return int(key)
    return None


def cropped_shape(case: Mapping[str, Any], method: str) -> list[int]:
    """A fingerprinted case's shape after the crop ``method`` (the non-zero crop where no body was found)."""
    if method == "body" and case.get("body_crop_shape"):
        return list(case["body_crop_shape"])
    return list(case["crop_shape"])


def choose_crop(fp: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The ``crop`` section of the plans and its reason, from the fingerprint's body boxes."""
    channel = fp.get("body_channel")
    nonzero = {"method": "nonzero"}
    if channel is None:
        return nonzero, "no CT modality: keep the voxels non-zero in any channel"
    cases = fp["cases"]
    outside = [c for c in cases if c.get("objects_outside_body", 0)]
    if outside:
        count = sum(c["objects_outside_body"] for c in outside)
        return nonzero, (f"modality {channel} is CT, but {count} training object(s) in {len(outside)} case(s) "
                         f"(e.g. {outside[0]['case']}) lie outside the body's box (the largest component above "
                         f"{BODY_THRESHOLD_HU:g} HU), so that crop would cut such objects at prediction: keep the "
                         "voxels non-zero in any channel")
    lost = [c for c in cases if c.get("num_objects", 0) and not c.get("body_crop_shape")]
    if lost:
        return nonzero, (f"modality {channel} is CT, but {len(lost)} case(s) with objects (e.g. {lost[0]['case']}) "
                         f"have no dominant component above {BODY_THRESHOLD_HU:g} HU, so there is no evidence that "
                         "the objects lie in one: keep the voxels non-zero in any channel")
    kept = [float(np.prod(cropped_shape(c, "body")) / max(1, np.prod(c["shape"]))) for c in cases]
    no_body = sum(1 for c in cases if not c.get("body_crop_shape"))
    objects = sum(int(c.get("num_objects", 0)) for c in cases)
    return ({"method": "body", "channel": channel, "threshold": BODY_THRESHOLD_HU, "margin_mm": BODY_MARGIN_MM},
            f"modality {channel} is CT: crop to the body (largest component above {BODY_THRESHOLD_HU:g} HU, "
            f"+{BODY_MARGIN_MM:g} mm), leaving out the air, a table apart from the body and the padding outside "
            f"the field of view; keeps {np.median(kept):.0%} of the voxels (median case, "
            f"{min(kept):.0%}-{max(kept):.0%}), all {objects} training objects inside"
            + (f"; {no_body} case(s) without voxels above the threshold keep the non-zero crop" if no_body else ""))
