"""The detection network: ResNet backbone -> (U-)FPN -> shared heads on the plan's head levels (P2..P5 unless
``network["head_levels"]`` names others) (+ segmentation on P0).

It holds all the weights; the detector around it only matches anchors and decodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from retinaunet.models.backbone import backbone_from_plans
from retinaunet.models.heads import ClassificationHead, RegressionHead, SegmentationHead
from retinaunet.models.ufpn import UFPN

HEAD_LEVELS = (2, 3, 4, 5)  # the paper's P2-P5; a plan may name others in network["head_levels"]


def head_levels(network: Mapping[str, Any]) -> tuple[int, ...]:
    """Pyramid levels the heads run on, finest first (the plans' network["head_levels"], else P2-P5)."""
    return tuple(int(k) for k in network.get("head_levels", HEAD_LEVELS))


@dataclass
class NetworkOutput:
    """Raw network outputs of one batch.

    cls_logits: Tensor[B, A, K+1]; box_deltas: Tensor[B, A, 2*dim] (A anchors over P2..P5 in
    AnchorGenerator order); seg_logits: Tensor[B, K+1, *S] or None; feature_shapes: spatial shapes of
    P2..P5.
    """

    cls_logits: Tensor
    box_deltas: Tensor
    seg_logits: Tensor | None
    feature_shapes: list[tuple[int, ...]]


class DetectionNetwork(nn.Module):
    """Backbone, feature pyramid, classification/regression heads and an optional segmentation head.

    Args:
        dim: 2 or 3; in_channels: input channels; num_classes: object classes (background excluded);
        num_anchors: anchors per position; network: the plans' "network" section (start_channels,
        max_channels, fpn_channels, head_channels, head_convs, block, blocks_per_stage, strides,
        optional norm); segmentation: build P1, P0 and the segmentation head (Retina U-Net);
        hard_negative_pool: pool factor of the classification loss's hard negative mining.
    """

    def __init__(
        self, dim: int, in_channels: int, num_classes: int, num_anchors: int, network: Mapping[str, Any],
        segmentation: bool = True, hard_negative_pool: int = 20,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.head_levels = head_levels(network)
        self.backbone = backbone_from_plans(dim, in_channels, network)
        fpn = int(network["fpn_channels"])
        self.fpn = UFPN(dim, self.backbone.channels, fpn, min_level=0 if segmentation else min(self.head_levels))
        head_ch, head_convs = int(network["head_channels"]), int(network["head_convs"])
        self.cls_head = ClassificationHead(dim, fpn, head_ch, head_convs, num_anchors, num_classes,
                                           hard_negative_pool=hard_negative_pool)
        self.box_head = RegressionHead(dim, fpn, head_ch, head_convs, num_anchors)
        self.seg_head = SegmentationHead(dim, fpn, num_classes) if segmentation else None

    def forward(self, images: Tensor) -> NetworkOutput:
        """images: Tensor[B, C_in, *S] -> NetworkOutput."""
        pyramid = self.fpn(self.backbone(images))
        levels = [pyramid[k] for k in self.head_levels]
        return NetworkOutput(
            cls_logits=self.cls_head(levels),
            box_deltas=self.box_head(levels),
            seg_logits=self.seg_head(pyramid[0]) if self.seg_head is not None else None,
            feature_shapes=[tuple(p.shape[2:]) for p in levels],
        )
