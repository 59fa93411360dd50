"""Anchor-based detectors: the one-stage base of Retina U-Net and Retina Net (and the RPN of the two-stage
models). Anchor generation, matching and box coding are injected helpers built from the plans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from retinaunet.anchors import AnchorGenerator, Matcher, build_matcher
from retinaunet.boxes import BoxCoder, batched_nms, clip_boxes
from retinaunet.models.detector import Detections, Detector
from retinaunet.models.network import DetectionNetwork, NetworkOutput
from retinaunet.plans import Plans

__all__ = ["AnchorDetector", "top_nms"]


class AnchorDetector(Detector):
    """One-stage anchor-based detector on the plan's head levels (P2..P5 by default): features -> heads ->
    anchors -> losses or decoded boxes.

    Anchor generation, matching and box coding are helpers built from the plans' ``anchors``, ``matching``
    and ``inference`` sections (pre_nms_top_k, decode_min_score,
    nms_iou, decode_max_detections). Subclasses choose the network
    (`build_network`) and add their extra loss terms (`extra_losses`).
    """

    def build_parts(self, plans: Plans) -> None:
        anchors = plans.anchors
        self.anchor_generator = AnchorGenerator(
            list(anchors.base_sizes), anchors.z_base_sizes if self.dim == 3 else None,
            list(anchors.scales), list(anchors.ratios), self.dim,
        )
        self.matcher = build_matcher(plans.matching)
        self.box_coder = BoxCoder()
        self.pre_nms_top_k = plans.inference.pre_nms_top_k
        self.nms_iou = plans.inference.nms_iou
        self.max_detections = plans.inference.decode_max_detections

    # -- template hooks ---------------------------------------------------------------------------------
    def build_network(self, plans: Plans) -> DetectionNetwork:
        """The network this detector trains; Retina U-Net and Retina Net differ only in `segmentation`."""
        return DetectionNetwork(
            plans.dim, plans.in_channels, plans.num_classes, self.anchor_generator.num_anchors_per_location,
            plans.network, segmentation=self.segmentation,
            hard_negative_pool=plans.training.hard_negative_pool,
        )

    def extra_losses(self, out: NetworkOutput, seg: Tensor | None) -> dict[str, Tensor]:
        """Loss terms beyond classification and box regression (none in the base class)."""
        return {}

    # -- shared steps -----------------------------------------------------------------------------------
    def anchors(self, image_shape: Sequence[int], feature_shapes: Sequence[Sequence[int]],
                device: torch.device) -> Tensor:
        """Anchors of the head levels for one patch: Tensor[A, 2*dim] on `device`."""
        return self.anchor_generator(list(image_shape), [list(s) for s in feature_shapes], device=device)

    def anchors_per_level(self, feature_shapes: Sequence[Sequence[int]]) -> list[int]:
        """Number of anchors of each head level, in the order of :meth:`anchors`."""
        return [math.prod(s) * self.anchor_generator.num_anchors_per_location for s in feature_shapes]

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
        targets, positive, target_deltas = self.assign_targets(anchors, boxes, labels, images.shape[2:],
                                                               self.anchors_per_level(out.feature_shapes))
        terms: dict[str, Tensor] = {}
        terms.update(self.network.cls_head.loss(out.cls_logits, targets))
        terms.update(self.network.box_head.loss(out.box_deltas, target_deltas, positive))
        terms.update(self.extra_losses(out, seg))
        return self.total_loss(terms)

    @torch.no_grad()
    def predict(self, images: Tensor, segmentation: bool = True) -> Detections:
        """Detections per image: images Tensor[B, C, *S] -> Detections (see the class); ``segmentation=False``:
        boxes only, without the full-resolution P0 level and the segmentation head."""
        out = self.network(images, segmentation=segmentation)
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
