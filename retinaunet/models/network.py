"""The detection network: ResNet backbone -> (U-)FPN -> shared heads on the plan's head levels (P2..P5 unless
``network["head_levels"]`` names others) (+ segmentation on P0).

It holds all the weights; the detector around it only matches anchors and decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from retinaunet.models.backbone import backbone_from_plans
from retinaunet.models.heads import ClassificationHead, RegressionHead, SegmentationHead
from retinaunet.models.ufpn import UFPN
from retinaunet.plans import NetworkPlan

SEG_LEVEL = 0  # the level the segmentation head reads


def pyramid_levels(head_levels: Sequence[int], segmentation: bool) -> tuple[int, ...]:
    """The U-FPN levels a detection network reads: the heads' levels (the plans' ``network.head_levels``,
    P2-P5 by default), and P0 with a segmentation head."""
    return ((SEG_LEVEL,) if segmentation else ()) + tuple(int(k) for k in head_levels)


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
        self, dim: int, in_channels: int, num_classes: int, num_anchors: int, network: NetworkPlan,
        segmentation: bool, hard_negative_pool: int,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.head_levels = tuple(network.head_levels)
        self.backbone = backbone_from_plans(dim, in_channels, network)
        fpn = network.fpn_channels
        self.fpn = UFPN(dim, self.backbone.channels, fpn, pyramid_levels(self.head_levels, segmentation))
        head_ch, head_convs = network.head_channels, network.head_convs
        self.cls_head = ClassificationHead(dim, fpn, head_ch, head_convs, num_anchors, num_classes,
                                           hard_negative_pool=hard_negative_pool)
        self.box_head = RegressionHead(dim, fpn, head_ch, head_convs, num_anchors)
        self.seg_head = SegmentationHead(dim, fpn, num_classes) if segmentation else None

    def forward(self, images: Tensor, segmentation: bool = True) -> NetworkOutput:
        """images: Tensor[B, C_in, *S] -> NetworkOutput.

        ``segmentation=False`` leaves out the segmentation output and the pyramid levels only it reads (P0 at
        full resolution): the boxes are the same, at a fraction of the cost (inference of boxes only).
        """
        seg = segmentation and self.seg_head is not None
        pyramid = self.fpn(self.backbone(images), None if seg else self.head_levels)
        levels = [pyramid[k] for k in self.head_levels]
        return NetworkOutput(
            cls_logits=self.cls_head(levels),
            box_deltas=self.box_head(levels),
            seg_logits=self.seg_head(pyramid[SEG_LEVEL]) if seg else None,
            feature_shapes=[tuple(p.shape[2:]) for p in levels],
        )
