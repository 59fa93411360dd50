"""The detector contract: built from plans, weights only in `self.network`, training and inference
each with their own method (`compute_losses`, `predict`), results as :class:`Detections`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from retinaunet.plans import Plans


@dataclass
class Detections:
    """Per-image detections of one batch in patch index coordinates.

    boxes: list of Tensor[K_i, 2*dim]; scores: list of Tensor[K_i]; labels: list of LongTensor[K_i]
    (classes from 0); seg: Tensor[B, num_classes+1, *S] softmax probabilities, or None.
    """

    boxes: list[Tensor]
    scores: list[Tensor]
    labels: list[Tensor]
    seg: Tensor | None = None

    def cpu(self) -> Detections:
        """A copy with every tensor on the CPU."""
        return Detections([b.cpu() for b in self.boxes], [s.cpu() for s in self.scores],
                          [lb.cpu() for lb in self.labels], None if self.seg is None else self.seg.cpu())


class Detector(nn.Module):
    """The contract every model of the registry keeps: built from plans, holding its weights in `network`.

    Args:
        plans: `Plans` (or its JSON object); the base reads dim, num_classes, ``inference.decode_min_score`` and
            ``training.seg_loss_weight``, and hands the plans to `build_network`.

    `compute_losses` is the training path (a dict of named losses with the weighted total under "loss"),
    `predict` the inference path (call `.eval()` first when the network uses batch norm). Anchor-based
    models derive from :class:`retinaunet.models.anchor_detector.AnchorDetector`; a model without anchors
    (DetU-Net) implements the three methods directly.
    """

    model_name = "detector"
    segmentation = False

    def __init__(self, plans: Mapping[str, Any] | Plans) -> None:
        super().__init__()
        plans = plans if isinstance(plans, Plans) else Plans.from_dict(plans)
        self.plans = plans
        self.dim = plans.dim
        self.num_classes = plans.num_classes
        self.min_score = plans.inference.decode_min_score
        self.seg_loss_weight = plans.training.seg_loss_weight
        self.build_parts(plans)
        self.network = self.build_network(plans)

    def build_parts(self, plans: Plans) -> None:
        """Helpers without weights the network needs to know of (anchors, matcher ...); none by default."""

    def build_network(self, plans: Plans) -> nn.Module:
        """The network this detector trains (all its weights)."""
        raise NotImplementedError

    def compute_losses(self, images: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor],
                       seg: Tensor | None = None) -> dict[str, Tensor]:
        """Training losses of one batch.

        images: Tensor[B, C, *S]; boxes[i]: Tensor[N_i, 2*dim] (patch index coords); labels[i]:
        LongTensor[N_i] (classes from 0); seg: LongTensor[B, *S] (0 background, c+1) or None.
        Returns {"loss": weighted total, plus the named terms}.
        """
        raise NotImplementedError

    def predict(self, images: Tensor, segmentation: bool = True) -> Detections:
        """Detections per image: images Tensor[B, C, *S] -> Detections (see the class).

        ``segmentation=False``: boxes only (``Detections.seg`` None), skipping what only the segmentation
        output needs; the boxes are those of a full pass.
        """
        raise NotImplementedError

    def loss_weight(self, name: str) -> float:
        """Weight of a loss term in the total."""
        return self.seg_loss_weight if name.startswith("seg") else 1.0

    def total_loss(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"loss": weighted sum, **terms}``."""
        return {"loss": sum(self.loss_weight(k) * v for k, v in terms.items()), **terms}
