"""Detection and segmentation heads. Each head computes its own loss and returns named losses.

Detection heads are shared across the pyramid levels they run on (P2..P5); their outputs are flattened
level by level to [B, A, K] in the anchor order of `retinaunet.anchors.AnchorGenerator`
(spatial positions in C order, then anchor index).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from retinaunet.losses import box_regression_loss, classification_loss, segmentation_losses
from retinaunet.models.blocks import conv_nd


def flatten_level(x: Tensor, num_anchors: int) -> Tensor:
    """Tensor[B, n*K, *S] -> Tensor[B, prod(S)*n, K] (positions in C order, then anchor index)."""
    b, c = x.shape[:2]
    k = c // num_anchors
    x = x.view(b, num_anchors, k, *x.shape[2:])
    x = x.permute(0, *range(3, x.ndim), 1, 2)
    return x.reshape(b, -1, k)


class _SharedHead(nn.Module):
    """`num_convs` x (3x3 conv + ReLU) then an output conv, applied to every given level."""

    def __init__(
        self, dim: int, in_channels: int, channels: int, num_convs: int, num_anchors: int, out_per_anchor: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [conv_nd(dim, in_channels if i == 0 else channels, channels, 3), nn.ReLU(inplace=True)]
        self.tower = nn.Sequential(*layers)
        self.out = conv_nd(dim, channels if num_convs else in_channels, num_anchors * out_per_anchor, 3)
        self.num_anchors = num_anchors
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, levels: Sequence[Tensor]) -> Tensor:
        """levels: [Tensor[B, C, *S_l]] -> Tensor[B, A, out_per_anchor], levels concatenated in order."""
        outs = [flatten_level(self.out(self.tower(x)), self.num_anchors) for x in levels]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class ClassificationHead(_SharedHead):
    """Softmax classification over background + `num_classes` per anchor; logits Tensor[B, A, K+1].

    The output bias starts at a foreground prior: softmax gives each object class `prior` probability.
    """

    def __init__(
        self, dim: int, in_channels: int, channels: int, num_convs: int, num_anchors: int, num_classes: int,
        hard_negative_pool: int, prior: float = 0.01,
    ) -> None:
        super().__init__(dim, in_channels, channels, num_convs, num_anchors, num_classes + 1)
        self.num_classes = num_classes
        self.hard_negative_pool = hard_negative_pool
        prior = min(max(prior, 1e-6), 1.0 / (num_classes + 1))
        bias = self.out.bias.detach().view(num_anchors, num_classes + 1)
        bias.zero_()
        bias[:, 0] = math.log(max(1.0 / prior - num_classes, 1.0))

    def loss(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """logits: Tensor[B, A, K+1]; targets: LongTensor[B, A] (-1 ignore, 0 background, c+1) -> {"cls"}."""
        return {"cls": classification_loss(logits, targets, self.hard_negative_pool)}


class RegressionHead(_SharedHead):
    """Box deltas (2*dim per anchor, see `retinaunet.boxes.BoxCoder`); output Tensor[B, A, 2*dim]."""

    def __init__(self, dim: int, in_channels: int, channels: int, num_convs: int, num_anchors: int) -> None:
        super().__init__(dim, in_channels, channels, num_convs, num_anchors, 2 * dim)

    def loss(self, deltas: Tensor, target_deltas: Tensor, positive: Tensor) -> dict[str, Tensor]:
        """deltas: Tensor[B, A, 2d]; target_deltas: Tensor[P, 2d] for the True entries of
        positive: BoolTensor[B, A] (row-major order) -> {"box"}."""
        return {"box": box_regression_loss(deltas[positive], target_deltas)}


class SegmentationHead(nn.Module):
    """1x1 conv from P0 to `num_classes + 1` logits; loss = pixel CE + batch soft Dice."""

    def __init__(self, dim: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = conv_nd(dim, in_channels, num_classes + 1, 1)

    def forward(self, p0: Tensor) -> Tensor:
        """p0: Tensor[B, C, *S] -> logits Tensor[B, K+1, *S]."""
        return self.conv(p0)

    def loss(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """logits: Tensor[B, K+1, *S]; target: LongTensor[B, *S] -> {"seg_ce", "seg_dice"}."""
        return segmentation_losses(logits, target)
