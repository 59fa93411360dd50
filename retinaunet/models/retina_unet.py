"""Retina U-Net and its ablation Retina Net: the same detector, with and without segmentation supervision.

Retina U-Net extends the FPN to P1 and P0 (U-FPN) and trains a segmentation output on P0 with pixel
cross-entropy plus batch soft Dice. Retina Net drops P0/P1 and the segmentation loss; detection heads,
anchors, matching and decoding are identical, so the two differ only in segmentation supervision.
"""

from __future__ import annotations

from torch import Tensor

from retinaunet.models.anchor_detector import AnchorDetector
from retinaunet.models.network import NetworkOutput
from retinaunet.models.registry import register_model


@register_model("retina_unet")
class RetinaUNet(AnchorDetector):
    """Retina U-Net (paper section 3.1): detection on P2..P5 plus segmentation from P0."""

    segmentation = True

    def extra_losses(self, out: NetworkOutput, seg: Tensor | None) -> dict[str, Tensor]:
        """{"seg_ce", "seg_dice"} from the P0 logits; seg: LongTensor[B, *S] (0 background, c+1)."""
        if seg is None:
            raise ValueError("retina_unet needs segmentation targets (seg); train retina_net for boxes only")
        if out.seg_logits is None:
            raise RuntimeError("the network was built without its segmentation head")
        return self.network.seg_head.loss(out.seg_logits, seg.to(out.seg_logits.device))


@register_model("retina_net")
class RetinaNet(AnchorDetector):
    """Retina Net on P2..P5 (softmax classification), no segmentation; `seg` is accepted and ignored."""

    segmentation = False
