"""Two-stage baselines of the paper (section 4.1, Figure 3a/b/d): Mask R-CNN, Faster R-CNN+ and U-FRCNN+,
2D and 3D.

Stage one, a region proposal network (RPN) on P2..P5, scores the planned anchors as object vs background
and regresses them; its best boxes after NMS are the proposals. Stage two crops every proposal's
features from the pyramid level whose anchor size suits it with RoIAlign (``roi_align``: bilinear or
trilinear samples at the bin centres, the "+" of the names), and a head of two fully connected layers
classifies it (softmax over background + classes) and refines its box. U-FRCNN+ runs the same detector
on the U-FPN with the segmentation loss on P0 (as Retina U-Net does), Faster R-CNN+ without. Mask R-CNN
adds a mask head on the positive proposals (RoIAlign 14 x 14 (x 5 in 3D), four 3x3 convs, a stride-2
transposed conv, one logit map per class) trained with binary cross-entropy against the object's class
mask cropped the same way; the class mask comes from the semantic targets, so touching objects of one
class share it. Its masks only supervise training: outputs are boxes, like the other models'.

Training samples proposals (plus the ground-truth boxes) per image: positives from IoU 0.5 (0.3 in 3D, as
the paper's 3D Mask R-CNN) with a third of the sample at most, negatives below. Box regression of the head
is class-agnostic. Anchors, matching thresholds of the RPN, box coding and the RPN's loss (cross-entropy
with stochastic hard negative mining, smooth L1) are those of the one-stage detectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retinaunet.boxes import box_iou, clip_boxes, nms
from retinaunet.losses import box_regression_loss
from retinaunet.models.anchor_detector import AnchorDetector
from retinaunet.models.backbone import backbone_from_plans
from retinaunet.models.detector import Detections
from retinaunet.models.heads import ClassificationHead, RegressionHead, SegmentationHead
from retinaunet.models.network import pyramid_levels
from retinaunet.models.registry import register_model
from retinaunet.models.ufpn import UFPN
from retinaunet.plans import NetworkPlan, Plans

__all__ = ["FasterRCNN", "MaskRCNN", "UFasterRCNN", "roi_align", "TwoStageNetwork"]

POOL = {2: (7, 7), 3: (3, 7, 7)}  # RoIAlign output per axis (paper: 7 x 7 (x 3))
MASK_POOL = {2: (14, 14), 3: (5, 14, 14)}  # the mask head's RoIAlign (paper: 14 x 14 (x 5))


def roi_align(features: Tensor, rois: Tensor, batch_index: Tensor, image_shape: Sequence[int],
              output_size: Sequence[int]) -> Tensor:
    """Features of boxes sampled on a regular grid (one bilinear/trilinear sample per bin centre).

    features: Tensor[B, C, *F] of one level covering an image of ``image_shape`` (so the stride per axis is
    image / feature size); rois: Tensor[R, 2*dim] in image index coordinates (half-open); batch_index:
    LongTensor[R]. Returns Tensor[R, C, *output_size]. A feature voxel j covers the image's
    [j * stride, (j + 1) * stride) and holds the value of its centre.
    """
    dim = len(image_shape)
    num = rois.shape[0]
    if num == 0:
        return features.new_zeros((0, features.shape[1], *output_size))
    # pad each image's rois to the same count, so one grid_sample call serves the whole batch
    order = torch.argsort(batch_index, stable=True)
    counts = torch.bincount(batch_index, minlength=features.shape[0])
    slot = torch.arange(num, device=rois.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    per_image = int(counts.max())
    padded = rois.new_zeros((features.shape[0], per_image, 2 * dim), dtype=torch.float32)
    padded[batch_index[order], slot] = rois[order].float()
    lo, size = padded[..., :dim], padded[..., dim:] - padded[..., :dim]  # [B, R, dim]
    extent = torch.tensor([float(s) for s in image_shape], device=rois.device)
    norm = []
    for d in range(dim):
        centres = (torch.arange(output_size[d], device=rois.device, dtype=torch.float32) + 0.5) / output_size[d]
        pos = lo[..., d, None] + centres * size[..., d, None]  # [B, R, out_d] image coordinates
        norm.append(2.0 * pos / extent[d] - 1.0)  # align_corners=False: -1 and 1 are the image's outer edges
    mesh = torch.meshgrid(*[torch.arange(o, device=rois.device) for o in output_size], indexing="ij")
    grid = torch.stack([norm[d][:, :, mesh[d]] for d in reversed(range(dim))], dim=-1)  # [B, R, *out, dim]
    grid = grid.reshape(features.shape[0], per_image * output_size[0], *output_size[1:], dim)
    sampled = F.grid_sample(features, grid.to(features.dtype), mode="bilinear", padding_mode="border",
                            align_corners=False)  # [B, C, R * out_0, *out_rest]
    sampled = sampled.reshape(features.shape[0], features.shape[1], per_image, *output_size).transpose(1, 2)
    out = torch.empty((num, features.shape[1], *output_size), dtype=features.dtype, device=features.device)
    out[order] = sampled[batch_index[order], slot]
    return out


class TwoStageNetwork(nn.Module):
    """Backbone, (U-)FPN, RPN heads on P2..P5, a RoI box head and an optional segmentation head."""

    def __init__(self, dim: int, in_channels: int, num_classes: int, num_anchors: int, network: NetworkPlan,
                 segmentation: bool, hard_negative_pool: int, masks: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.backbone = backbone_from_plans(dim, in_channels, network)
        fpn = network.fpn_channels
        head = network.head_channels
        self.head_levels = tuple(network.head_levels)
        self.fpn = UFPN(dim, self.backbone.channels, fpn, pyramid_levels(self.head_levels, segmentation))
        self.rpn_cls = ClassificationHead(dim, fpn, head, 1, num_anchors, 1, hard_negative_pool=hard_negative_pool)
        self.rpn_box = RegressionHead(dim, fpn, head, 1, num_anchors)
        self.pool = POOL[dim]
        rep = max(256, 4 * head)
        self.roi_head = nn.Sequential(nn.Flatten(), nn.Linear(fpn * math.prod(self.pool), rep), nn.ReLU(inplace=True),
                                      nn.Linear(rep, rep), nn.ReLU(inplace=True))
        self.cls_out = nn.Linear(rep, num_classes + 1)
        self.box_out = nn.Linear(rep, 2 * dim)
        nn.init.normal_(self.cls_out.weight, std=0.01)
        nn.init.normal_(self.box_out.weight, std=0.001)
        nn.init.zeros_(self.cls_out.bias)
        nn.init.zeros_(self.box_out.bias)
        self.seg_head = SegmentationHead(dim, fpn, num_classes) if segmentation else None
        self.mask_pool = MASK_POOL[dim]
        self.mask_head = None
        if masks:
            conv, up = (nn.Conv2d, nn.ConvTranspose2d) if dim == 2 else (nn.Conv3d, nn.ConvTranspose3d)
            layers: list[nn.Module] = []
            for _ in range(4):
                layers += [conv(fpn, fpn, 3, padding=1), nn.ReLU(inplace=True)]
            stride = (2, 2) if dim == 2 else (1, 2, 2)
            layers += [up(fpn, fpn, stride, stride=stride), nn.ReLU(inplace=True), conv(fpn, num_classes, 1)]
            self.mask_head = nn.Sequential(*layers)

    def pyramid(self, images: Tensor) -> dict[int, Tensor]:
        return self.fpn(self.backbone(images))

    def rpn(self, pyramid: dict[int, Tensor]) -> tuple[Tensor, Tensor, list[tuple[int, ...]]]:
        levels = [pyramid[k] for k in self.head_levels]
        return self.rpn_cls(levels), self.rpn_box(levels), [tuple(p.shape[2:]) for p in levels]

    def classify(self, roi_features: Tensor) -> tuple[Tensor, Tensor]:
        """Tensor[R, C, *pool] -> (class logits Tensor[R, K+1], box deltas Tensor[R, 2*dim])."""
        x = self.roi_head(roi_features)
        return self.cls_out(x), self.box_out(x)


@register_model("faster_rcnn")
class FasterRCNN(AnchorDetector):
    """Faster R-CNN+ (see the module docstring); ``UFasterRCNN`` adds the U-FPN and segmentation loss."""

    segmentation = False
    masks = False
    rois_per_image = 64
    positive_share = 1 / 3
    pre_nms = {True: 2000, False: 1000}  # proposals before / after the RPN's NMS, training vs inference
    post_nms = {True: 300, False: 200}
    rpn_nms_iou = 0.7

    def __init__(self, plans: Plans) -> None:
        super().__init__(plans)
        self.roi_positive_iou = 0.3 if self.dim == 3 else 0.5
        base = list(self.plans.anchors.base_sizes)
        self.register_buffer("_log_base", torch.log(torch.tensor(base, dtype=torch.float32)), persistent=False)

    def build_network(self, plans: Plans) -> TwoStageNetwork:
        num_anchors = plans.anchors.per_position
        return TwoStageNetwork(plans.dim, plans.in_channels, plans.num_classes, num_anchors, plans.network,
                               self.segmentation, plans.training.hard_negative_pool, self.masks)

    # -- stage one ------------------------------------------------------------------------------------
    @torch.no_grad()
    def proposals(self, logits: Tensor, deltas: Tensor, anchors: Tensor, shape: Sequence[int]) -> list[Tensor]:
        """The RPN's boxes per image after top-k and NMS: list of Tensor[P_i, 2*dim] (detached)."""
        out = []
        fg = torch.softmax(logits.detach().float(), dim=-1)[..., 1]
        for b in range(fg.shape[0]):
            k = min(self.pre_nms[self.training], fg.shape[1])
            scores, idx = torch.topk(fg[b], k)
            boxes = clip_boxes(self.box_coder.decode(deltas[b, idx].detach().float(), anchors[idx]), shape)
            size = boxes[:, self.dim:] - boxes[:, :self.dim]
            ok = (size > 1e-2).all(dim=1)
            boxes, scores = boxes[ok], scores[ok]
            keep = nms(boxes, scores, self.rpn_nms_iou)[: self.post_nms[self.training]]
            out.append(boxes[keep])
        return out

    def level_of(self, rois: Tensor) -> Tensor:
        """Pyramid level index (0 = P2) whose anchor base size is closest (in log) to each roi's size."""
        size = (rois[:, self.dim:] - rois[:, :self.dim])[:, -2:].clamp(min=1e-3).float()
        log_size = torch.log(size).mean(dim=1)
        return (log_size[:, None] - self._log_base[None]).abs().argmin(dim=1)

    def roi_features(self, pyramid: dict[int, Tensor], rois: Tensor, batch_index: Tensor,
                     shape: Sequence[int], pool: Sequence[int] | None = None) -> Tensor:
        """RoIAlign of every roi from its level: Tensor[R, C, *pool] (default: the box head's pool)."""
        pool = tuple(pool or self.network.pool)
        levels = self.level_of(rois)
        ref = pyramid[self.network.head_levels[0]]
        out = ref.new_zeros((rois.shape[0], ref.shape[1], *pool))
        for i, k in enumerate(self.network.head_levels):
            sel = torch.nonzero(levels == i).squeeze(1)
            if sel.numel():
                out[sel] = roi_align(pyramid[k], rois[sel], batch_index[sel], shape, pool)
        return out

    def mask_loss(self, pyramid: dict[int, Tensor], rois: Tensor, batch_index: Tensor, targets: Tensor,
                  seg: Tensor, shape: Sequence[int]) -> Tensor:
        """Binary cross-entropy of the positive rois' masks of their class against the class mask."""
        if rois.shape[0] == 0:
            return sum(p.sum() for p in self.network.mask_head.parameters()) * 0.0
        logits = self.network.mask_head(self.roi_features(pyramid, rois, batch_index, shape, self.network.mask_pool))
        cls = targets - 1
        logits = logits[torch.arange(rois.shape[0], device=rois.device), cls]  # [P, *mask]
        one_hot = F.one_hot(seg.long(), self.num_classes + 1).movedim(-1, 1)[:, 1:].float()  # [B, K, *S]
        with torch.no_grad():
            crops = roi_align(one_hot, rois, batch_index, shape, logits.shape[1:])  # [P, K, *mask]
            target = (crops[torch.arange(rois.shape[0], device=rois.device), cls] > 0.5).float()
        return F.binary_cross_entropy_with_logits(logits.float(), target)

    # -- training -------------------------------------------------------------------------------------
    def sample_rois(self, proposals: list[Tensor], boxes: Sequence[Tensor], labels: Sequence[Tensor],
                    shape: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per image: proposals + gt boxes, a sample of positives (at most a third) and negatives.

        Returns rois Tensor[R, 2d], batch index LongTensor[R], class targets LongTensor[R] (0 background,
        c+1), positive mask BoolTensor[R] and target deltas Tensor[P, 2d] of the positives.
        """
        out_rois, out_b, out_t, out_d = [], [], [], []
        for b, (props, gt, lab) in enumerate(zip(proposals, boxes, labels)):
            gt = clip_boxes(gt.to(props), shape)
            valid = (gt[:, self.dim:] > gt[:, :self.dim]).all(dim=1)
            gt, lab = gt[valid], lab.to(props.device)[valid]
            rois = torch.cat([props, gt])
            targets = torch.zeros(rois.shape[0], dtype=torch.long, device=rois.device)
            matched = torch.zeros(rois.shape[0], dtype=torch.long, device=rois.device)
            if gt.shape[0]:
                best, matched = box_iou(gt, rois).max(dim=0)
                pos = best >= self.roi_positive_iou
                targets[pos] = lab.long()[matched[pos]] + 1
            pos_idx = torch.nonzero(targets > 0).squeeze(1)
            neg_idx = torch.nonzero(targets == 0).squeeze(1)
            n_pos = min(pos_idx.numel(), int(self.rois_per_image * self.positive_share))
            n_neg = min(neg_idx.numel(), self.rois_per_image - n_pos)
            pick = torch.cat([pos_idx[torch.randperm(pos_idx.numel(), device=rois.device)[:n_pos]],
                              neg_idx[torch.randperm(neg_idx.numel(), device=rois.device)[:n_neg]]])
            out_rois.append(rois[pick])
            out_b.append(torch.full((pick.numel(),), b, dtype=torch.long, device=rois.device))
            out_t.append(targets[pick])
            if n_pos:
                p = pick[:n_pos]
                out_d.append(self.box_coder.encode(gt[matched[p]], rois[p]))
        targets = torch.cat(out_t)
        deltas = torch.cat(out_d) if out_d else targets.new_zeros((0, 2 * self.dim), dtype=torch.float32)
        return torch.cat(out_rois), torch.cat(out_b), targets, targets > 0, deltas

    def compute_losses(self, images: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor],
                       seg: Tensor | None = None) -> dict[str, Tensor]:
        """{"loss", "rpn_cls", "rpn_box", "cls", "box"} (+ "mask" for Mask R-CNN, "seg_ce", "seg_dice" for
        U-FRCNN+)."""
        shape = list(images.shape[2:])
        pyramid = self.network.pyramid(images)
        logits, deltas, feature_shapes = self.network.rpn(pyramid)
        anchors = self.anchors(shape, feature_shapes, images.device)
        objectness = [torch.zeros_like(lab) for lab in labels]  # one class: any object
        targets, positive, target_deltas = self.assign_targets(anchors, boxes, objectness, shape,
                                                               self.anchors_per_level(feature_shapes))
        terms = {"rpn_cls": self.network.rpn_cls.loss(logits, targets)["cls"],
                 "rpn_box": self.network.rpn_box.loss(deltas, target_deltas, positive)["box"]}
        proposals = self.proposals(logits, deltas, anchors, shape)
        rois, batch_index, roi_targets, roi_pos, roi_deltas = self.sample_rois(proposals, boxes, labels, shape)
        cls_logits, box_deltas = self.network.classify(self.roi_features(pyramid, rois, batch_index, shape))
        terms["cls"] = F.cross_entropy(cls_logits.float(), roi_targets)
        terms["box"] = box_regression_loss(box_deltas[roi_pos], roi_deltas)
        if self.masks:
            if seg is None:
                raise ValueError(f"{self.model_name} needs segmentation targets (seg) for its masks")
            terms["mask"] = self.mask_loss(pyramid, rois[roi_pos], batch_index[roi_pos], roi_targets[roi_pos],
                                           seg.to(images.device), shape)
        if self.segmentation:
            if seg is None:
                raise ValueError(f"{self.model_name} needs segmentation targets (seg)")
            terms.update(self.network.seg_head.loss(self.network.seg_head(pyramid[0]), seg.to(images.device)))
        return self.total_loss(terms)

    # -- inference ------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: Tensor, segmentation: bool = True) -> Detections:
        """Detections per image (see the class); ``segmentation=False`` leaves out the segmentation head."""
        shape = list(images.shape[2:])
        pyramid = self.network.pyramid(images)
        logits, deltas, feature_shapes = self.network.rpn(pyramid)
        anchors = self.anchors(shape, feature_shapes, images.device)
        proposals = self.proposals(logits, deltas, anchors, shape)
        rois = torch.cat(proposals)
        batch_index = torch.cat([torch.full((p.shape[0],), b, dtype=torch.long, device=images.device)
                                 for b, p in enumerate(proposals)])
        cls_logits, box_deltas = self.network.classify(self.roi_features(pyramid, rois, batch_index, shape))
        probs = torch.softmax(cls_logits.float(), dim=-1)[:, 1:]
        # each image's rois play the anchors' part: the one-stage decoding (score floor, per-class NMS) applies
        dets = [self.postprocess(probs[sel], box_deltas[sel].float(), rois[sel], shape)
                for sel in (torch.nonzero(batch_index == b).squeeze(1) for b in range(images.shape[0]))]
        seg = None
        if self.segmentation and segmentation:
            seg = torch.softmax(self.network.seg_head(pyramid[0]).float(), dim=1)
        return Detections([d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets], seg)


@register_model("u_faster_rcnn")
class UFasterRCNN(FasterRCNN):
    """U-FRCNN+: Faster R-CNN+ on the U-FPN with the segmentation loss on P0."""

    segmentation = True


@register_model("mask_rcnn")
class MaskRCNN(FasterRCNN):
    """Mask R-CNN: Faster R-CNN+ with the mask head (see the module docstring)."""

    masks = True
