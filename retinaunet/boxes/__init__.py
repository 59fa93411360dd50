"""Box operations for 2D and 3D boxes ``[min_0, .., min_{d-1}, max_0, .., max_{d-1}]`` (half-open)."""

from __future__ import annotations

from retinaunet.boxes.coder import BoxCoder
from retinaunet.boxes.iou import box_iou, box_iou_np, box_size, box_volume
from retinaunet.boxes.ops import boxes_from_instance_map, clip_boxes
from retinaunet.boxes.suppression import batched_nms, batched_nms_np, nms, nms_np

__all__ = [
    "BoxCoder",
    "batched_nms",
    "batched_nms_np",
    "box_iou",
    "box_iou_np",
    "box_size",
    "box_volume",
    "boxes_from_instance_map",
    "clip_boxes",
    "nms",
    "nms_np",
]
