"""Detector base class: features -> heads -> anchors -> losses (training) or decoded boxes (inference).

The detector holds no weights of its own beyond `self.network`; anchor generation, matching and box
coding are injected helpers built from the plans. Subclasses choose the network (`build_network`) and
add their extra loss terms (`extra_losses`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from retinaunet.anchors import AnchorGenerator, Matcher, build_matcher
from retinaunet.boxes import BoxCoder, batched_nms, clip_boxes
from retinaunet.models.network import DetectionNetwork, NetworkOutput
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
    """One-stage anchor-based detector on P2..P5 built from a plans dict.

    Args:
        plans: `Plans` (or a plain dict with the same keys): dim, in_channels, num_classes, network,
            anchors, matching, training (seg_loss_weight, hard_negative_pool) and inference
            (min_score, pre_nms_top_k, nms_iou, max_detections).

    `compute_losses` is the training path, `predict` the inference path (call `.eval()` first when the
    network uses batch norm).
    """

    model_name = "detector"
    segmentation = False

    def __init__(self, plans: Mapping[str, Any]) -> None:
        super().__init__()
        plans = plans if isinstance(plans, Plans) else Plans(plans)
        self.plans = plans
        self.dim = plans.dim
        self.num_classes = plans.num_classes
        anchors = plans.anchors
        z_sizes = anchors.get("z_base_sizes") if self.dim == 3 else None
        self.anchor_generator = AnchorGenerator(
            list(anchors["base_sizes"]), None if z_sizes is None else list(z_sizes),
            list(anchors["scales"]), list(anchors["ratios"]), self.dim,
        )
        self.matcher = build_matcher(dict(plans.matching))
        self.box_coder = BoxCoder()
        inference = plans.inference
        self.min_score = float(inference.get("min_score", 0.1))
        self.pre_nms_top_k = int(inference.get("pre_nms_top_k", 10000))
        self.nms_iou = float(inference.get("nms_iou", 0.1))
        self.max_detections = int(inference.get("max_detections", 10 if self.dim == 2 else 30))
        self.seg_loss_weight = float(plans.training.get("seg_loss_weight", 1.0))
        self.network = self.build_network(plans)

    # -- template hooks ---------------------------------------------------------------------------------
    def build_network(self, plans: Plans) -> DetectionNetwork:
        """The network this detector trains; Retina U-Net and Retina Net differ only in `segmentation`."""
        return DetectionNetwork(
            plans.dim, plans.in_channels, plans.num_classes, self.anchor_generator.num_anchors_per_location,
            plans.network, segmentation=self.segmentation,
            hard_negative_pool=int(plans.training.get("hard_negative_pool", 20)),
        )

    def extra_losses(self, out: NetworkOutput, seg: Tensor | None) -> dict[str, Tensor]:
        """Loss terms beyond classification and box regression (none in the base class)."""
        return {}

    def loss_weight(self, name: str) -> float:
        """Weight of a loss term in the total."""
        return self.seg_loss_weight if name.startswith("seg") else 1.0

    # -- shared steps -----------------------------------------------------------------------------------
    def anchors(self, image_shape: Sequence[int], feature_shapes: Sequence[Sequence[int]],
                device: torch.device) -> Tensor:
        """Anchors of P2..P5 for one patch: Tensor[A, 2*dim] on `device`."""
        return self.anchor_generator(list(image_shape), [list(s) for s in feature_shapes], device=device)

    def assign_targets(
        self, anchors: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor],
        image_shape: Sequence[int] | None = None, num_per_level: Sequence[int] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Match anchors to ground truth per image.

        anchors: Tensor[A, 2d]; boxes[i]: Tensor[N_i, 2d]; labels[i]: LongTensor[N_i] (classes from 0);
        image_shape: when given, boxes are clipped to the patch first. Boxes without volume are skipped
        (they would give infinite size targets). num_per_level: anchors per level (the adaptive matcher
        ranks candidates per level).
        Returns targets LongTensor[B, A] (-1 ignored, 0 background, c+1 class c), positive
        BoolTensor[B, A] and target deltas Tensor[P, 2d] of the positives in row-major order.
        """
        targets, deltas = [], []
        for gt, lab in zip(boxes, labels):
            t = torch.zeros(anchors.shape[0], dtype=torch.long, device=anchors.device)
            gt, lab = gt.to(anchors), lab.to(anchors.device)
            if image_shape is not None:
                gt = clip_boxes(gt, image_shape)
            valid = (gt[:, gt.shape[1] // 2:] > gt[:, : gt.shape[1] // 2]).all(dim=1)
            gt, lab = gt[valid], lab[valid]
            if gt.numel() == 0:
                targets.append(t)
                continue
            matched = self.matcher.match(gt, anchors, num_per_level)
            pos = matched >= 0
            t[pos] = lab.long()[matched[pos]] + 1
            t[matched == Matcher.BETWEEN] = -1
            targets.append(t)
            deltas.append(self.box_coder.encode(gt[matched[pos]], anchors[pos]))
        t_all = torch.stack(targets)
        d_all = torch.cat(deltas) if deltas else anchors.new_zeros((0, anchors.shape[1]))
        return t_all, t_all > 0, d_all

    def compute_losses(
        self, images: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor], seg: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Training losses of one batch.

        images: Tensor[B, C, *S]; boxes[i]: Tensor[N_i, 2*dim] (patch index coords); labels[i]:
        LongTensor[N_i] (classes from 0); seg: LongTensor[B, *S] (0 background, c+1) or None.
        Returns {"loss": weighted total, "cls": ..., "box": ..., plus the subclass's terms}.
        """
        if len(boxes) != images.shape[0] or len(labels) != images.shape[0]:
            raise ValueError(f"need boxes and labels for each of the {images.shape[0]} images, "
                             f"got {len(boxes)} and {len(labels)}")
        out = self.network(images)
        anchors = self.anchors(images.shape[2:], out.feature_shapes, images.device)
        per_level = [math.prod(s) * self.anchor_generator.num_anchors_per_location for s in out.feature_shapes]
        targets, positive, target_deltas = self.assign_targets(anchors, boxes, labels, images.shape[2:], per_level)
        terms: dict[str, Tensor] = {}
        terms.update(self.network.cls_head.loss(out.cls_logits, targets))
        terms.update(self.network.box_head.loss(out.box_deltas, target_deltas, positive))
        terms.update(self.extra_losses(out, seg))
        total = sum(self.loss_weight(k) * v for k, v in terms.items())
        return {"loss": total, **terms}

    @torch.no_grad()
    def predict(self, images: Tensor) -> Detections:
        """Detections per image: images Tensor[B, C, *S] -> Detections (see the class)."""
        out = self.network(images)
        shape = list(images.shape[2:])
        anchors = self.anchors(shape, out.feature_shapes, images.device)
        probs = torch.softmax(out.cls_logits.float(), dim=-1)[..., 1:]
        dets = [self.postprocess(probs[b], out.box_deltas[b].float(), anchors, shape)
                for b in range(images.shape[0])]
        seg = None if out.seg_logits is None else torch.softmax(out.seg_logits.float(), dim=1)
        return Detections([d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets], seg)

    def postprocess(
        self, probs: Tensor, deltas: Tensor, anchors: Tensor, image_shape: Sequence[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Decode one image: score threshold, pre-NMS top-k, per-class NMS, top `max_detections`.

        probs: Tensor[A, K] foreground probabilities; deltas: Tensor[A, 2d]; anchors: Tensor[A, 2d].
        Returns boxes Tensor[D, 2d] clipped to the patch, scores Tensor[D], labels LongTensor[D].
        """
        num_classes = probs.shape[1]
        flat = probs.reshape(-1)
        cand = torch.nonzero(flat > self.min_score).squeeze(1)
        if cand.numel() > self.pre_nms_top_k:
            cand = cand[torch.topk(flat[cand], self.pre_nms_top_k, sorted=False).indices]
        scores = flat[cand]
        anchor_idx = torch.div(cand, num_classes, rounding_mode="floor")
        classes = cand % num_classes
        boxes = self.box_coder.decode(deltas[anchor_idx], anchors[anchor_idx])
        boxes = clip_boxes(boxes, image_shape)
        dim = boxes.shape[1] // 2
        valid = ((boxes[:, dim:] - boxes[:, :dim]) > 1e-3).all(dim=1)
        boxes, scores, classes = boxes[valid], scores[valid], classes[valid]
        keep = top_nms(boxes, scores, classes, self.nms_iou, self.max_detections)
        return boxes[keep], scores[keep], classes[keep]


def top_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou: float, k: int, chunk: int = 1024) -> Tensor:
    """The first `k` indices of `batched_nms(boxes, scores, classes, iou)`, computed on score prefixes.

    Greedy NMS keeps a box depending only on higher-scoring boxes, so NMS over the `n` best boxes gives
    exactly the full result's kept boxes among them; the prefix grows until it holds `k` kept boxes.
    boxes: Tensor[N, 2d]; scores, classes: Tensor[N] -> LongTensor[<=k] sorted by decreasing score.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    n = order.numel()
    size = min(n, max(chunk, 4 * k))
    while True:
        idx = order[:size]
        keep = idx[batched_nms(boxes[idx], scores[idx], classes[idx], iou)]
        if keep.numel() >= k or size >= n:
            return keep[:k]
        size = min(n, size * 4)
