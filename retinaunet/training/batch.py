"""Training batches: targets derived from the (augmented) instance map, and the torch batch the trainer gets.

Boxes are never carried through augmentation; they are recomputed from the instance map after it, so they
always match the image. Instances that left the patch vanish with their voxels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from batchgenerators.transforms.abstract_transforms import AbstractTransform

from retinaunet.boxes import boxes_from_instance_map


@dataclass
class TrainBatch:
    """One batch for ``det.compute_losses``.

    images: Tensor[B, C, *P] float32; boxes: list of Tensor[N_i, 2*dim] float32 (half-open, patch index
    coords); labels: list of LongTensor[N_i] (classes from 0); seg: LongTensor[B, *P] (0 background,
    class + 1); cases: the case of each patch.
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    seg: torch.Tensor
    cases: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainBatch:
        return TrainBatch(self.images.to(device, non_blocking=non_blocking),
                          [b.to(device, non_blocking=non_blocking) for b in self.boxes],
                          [x.to(device, non_blocking=non_blocking) for x in self.labels],
                          self.seg.to(device, non_blocking=non_blocking), list(self.cases))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def instance_targets(inst: np.ndarray, classes: Mapping[int, int], case: str = "?"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Semantic map, boxes and labels of one patch's instance map.

    inst: ndarray[*P] instance ids (0 background); classes: {id: class}. Returns (seg ndarray[*P] int16 with
    0 background and class + 1, boxes ndarray[N, 2*dim] float32, labels ndarray[N] int64), ids ascending.
    """
    inst = np.asarray(inst)
    if inst.dtype.kind == "f":
        inst = np.rint(inst).astype(np.int32)
    boxes = boxes_from_instance_map(inst)
    ids = sorted(boxes)
    missing = [i for i in ids if i not in classes]
    if missing:
        raise ValueError(f"case {case}: instance ids {missing} are not in its json 'instances'; "
                         "rerun rud_preprocess")
    dim = inst.ndim
    lut = np.zeros(max(ids, default=0) + 1, dtype=np.int16)
    for i in ids:
        lut[i] = classes[i] + 1
    seg = lut[np.clip(inst, 0, None)] if ids else np.zeros(inst.shape, dtype=np.int16)
    box_arr = np.stack([boxes[i] for i in ids]).astype(np.float32) if ids else np.zeros((0, 2 * dim), np.float32)
    labels = np.asarray([classes[i] for i in ids], dtype=np.int64)
    return seg, box_arr, labels


class TargetsTransform(AbstractTransform):
    """Last transform of the pipeline: instance map "seg" [B, 1, *P] -> "target_seg", "boxes", "labels".

    Reads the per-patch {id: class} dicts from "classes" and case names from "cases".
    """

    def __call__(self, **batch: Any) -> dict[str, Any]:
        inst = batch.pop("seg")
        segs, boxes, labels = [], [], []
        for b in range(inst.shape[0]):
            seg, box, lab = instance_targets(inst[b, 0], batch["classes"][b], batch["cases"][b])
            segs.append(seg)
            boxes.append(box)
            labels.append(lab)
        batch["target_seg"] = np.stack(segs)
        batch["boxes"] = boxes
        batch["labels"] = labels
        return batch


def to_train_batch(batch: Mapping[str, Any]) -> TrainBatch:
    """TrainBatch from a transformed batchgenerators dict (keys data, target_seg, boxes, labels, cases)."""
    return TrainBatch(
        images=torch.from_numpy(np.ascontiguousarray(batch["data"], dtype=np.float32)),
        boxes=[torch.from_numpy(np.asarray(b, dtype=np.float32)) for b in batch["boxes"]],
        labels=[torch.from_numpy(np.asarray(x, dtype=np.int64)) for x in batch["labels"]],
        seg=torch.from_numpy(np.asarray(batch["target_seg"])).long(),
        cases=list(batch.get("cases", [])),
    )
