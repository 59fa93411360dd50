"""DetU-Net, the paper's segmentation baseline (section 4.1, Figure 3e).

A U-Net-like network (the ResNet backbone with the U-FPN down to P0) trained with the segmentation loss
alone (pixel cross-entropy + batch soft Dice). Boxes come from the prediction: for every foreground class
the connected components of the argmax map, a box around each, scored with the component's highest
softmax probability of that class. To reduce noise only the largest components of an image are kept (5
in 2D, 15 in 3D as in the paper; ``inference.max_components`` in the plans overrides).

It plugs into the same trainer, predictor (tiles, mirroring, ensembles, WBC) and evaluation as the
anchor-based detectors: ``compute_losses`` and ``predict`` have the same signatures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from retinaunet.models.backbone import backbone_from_plans
from retinaunet.models.detector import Detections, Detector
from retinaunet.models.heads import SegmentationHead
from retinaunet.models.network import SEG_LEVEL
from retinaunet.models.registry import register_model
from retinaunet.models.ufpn import UFPN
from retinaunet.plans import NetworkPlan, Plans


class SegmentationNetwork(nn.Module):
    """Backbone -> U-FPN (P0..P5) -> 1x1 conv on P0: ``images Tensor[B, C, *S] -> logits Tensor[B, K+1, *S]``."""

    def __init__(self, dim: int, in_channels: int, num_classes: int, network: NetworkPlan) -> None:
        super().__init__()
        self.backbone = backbone_from_plans(dim, in_channels, network)
        fpn = network.fpn_channels
        self.fpn = UFPN(dim, self.backbone.channels, fpn, outputs=(SEG_LEVEL,))
        self.seg_head = SegmentationHead(dim, fpn, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.seg_head(self.fpn(self.backbone(images))[SEG_LEVEL])


def component_boxes(probs: np.ndarray, max_components: int, min_score: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of the connected components of the argmax map, per foreground class.

    probs: float[K+1, *S] softmax probabilities (channel 0 background). Returns boxes float[N, 2*dim]
    (half-open index coordinates), scores float[N] (the component's highest probability of its class) and
    labels int64[N] (classes from 0): the ``max_components`` largest components (by voxels) whose score
    exceeds ``min_score``, sorted by decreasing score.
    """
    dim = probs.ndim - 1
    argmax = probs.argmax(0)
    rows: list[tuple[int, float, int, list[int]]] = []  # (voxels, score, class, box)
    for c in range(1, probs.shape[0]):
        comps, n = ndimage.label(argmax == c)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:]
        scores = ndimage.maximum(probs[c], comps, index)
        for i, sl in enumerate(ndimage.find_objects(comps)):
            box = [s.start for s in sl] + [s.stop for s in sl]
            rows.append((int(sizes[i]), float(scores[i]), c - 1, box))
    rows = sorted(rows, key=lambda r: -r[0])[:max_components]
    rows = sorted((r for r in rows if r[1] > min_score), key=lambda r: -r[1])
    if not rows:
        return np.zeros((0, 2 * dim), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return (np.asarray([r[3] for r in rows], np.float32), np.asarray([r[1] for r in rows], np.float32),
            np.asarray([r[2] for r in rows], np.int64))


@register_model("det_unet")
class DetUNet(Detector):
    """DetU-Net: segmentation only, boxes from connected components (see the module docstring)."""

    segmentation = True

    def __init__(self, plans: Plans) -> None:
        super().__init__(plans)
        self.max_components = self.plans.inference.max_components

    def build_network(self, plans: Plans) -> SegmentationNetwork:
        return SegmentationNetwork(plans.dim, plans.in_channels, plans.num_classes, plans.network)

    def compute_losses(self, images: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor],
                       seg: Tensor | None = None) -> dict[str, Tensor]:
        """{"loss", "seg_ce", "seg_dice"} of one batch; boxes and labels are not used (the segmentation
        targets carry the classes)."""
        if seg is None:
            raise ValueError("det_unet needs segmentation targets (seg)")
        logits = self.network(images)
        terms = self.network.seg_head.loss(logits, seg.to(logits.device))
        return self.total_loss(terms)

    @torch.no_grad()
    def predict(self, images: Tensor, segmentation: bool = True) -> Detections:
        """Detections per image from the connected components of the predicted segmentation (computed either
        way; ``segmentation=False`` only leaves it out of the result)."""
        probs = torch.softmax(self.network(images).float(), dim=1)
        host = probs.cpu().numpy()
        out: list[list[Tensor]] = [[], [], []]
        for b in range(host.shape[0]):
            for i, arr in enumerate(component_boxes(host[b], self.max_components, self.min_score)):
                out[i].append(torch.from_numpy(arr).to(images.device))
        return Detections(out[0], out[1], out[2], probs if segmentation else None)
