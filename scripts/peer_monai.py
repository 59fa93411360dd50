"""MONAI's RetinaNet as a peer: trained on this project's preprocessed cases and split for a wall-clock budget,
with the recipe of MONAI's LUNA16 detection tutorial, then predicting raw images into this project's prediction
JSONs, so that ``rud_evaluate -t TASK -p OUT`` scores it exactly as it scores ``rud_predict``'s output.

    python scripts/peer_monai.py -t 104 --minutes 5 --fold 0 -o peer104
    rud_evaluate -t 104 -p peer104

The recipe (MONAI tutorials, ``detection/luna16_training.py`` and ``config/config_train_luna16_16g.json``):
``RetinaNetDetector`` on a 3D ResNet50 (bottleneck blocks 3-4-6-3, first convolution strided [2, 2, 1] with
kernel max(7, 2s+1)) and an FPN over layers 1 and 2 (``returned_layers [1, 2]``, three pyramid levels with the
max-pooled extra level); anchors of three shapes per location, [6, 8, 4], [8, 6, 5], [10, 10, 6] voxels (x, y, z)
at the finest level, doubled per level; ATSS matching (4 candidates per level, centre not required in the box);
the hard-negative sampler (64 anchors per image, 30% positives, pool 20, at least 16 negatives); the
detector's default losses (binary cross-entropy on the class logits, smooth L1 with beta 1/9 on the encoded box
offsets, weights 1:1); SGD, lr 1e-2, momentum 0.9, Nesterov, weight decay 3e-5; a linear warm-up over 10 of
300 epochs, then lr x 0.1 after 150 more; crops of an image: 4 per step, half of them holding a whole object
(``RandCropByPosNegLabeld`` on the boxes' extended mask, pos 1 : neg 1); augmentation: zoom 0.7-1.4 (p 0.2),
flips on each axis (p 0.5), in-plane rotations by 90 degrees (p 0.75), rotations of up to 30 degrees about each
axis through ellipse masks of the boxes (p 0.2, nearest), Gaussian noise (p 0.1, std 0.1), smoothing (p 0.1,
sigma 0.5-1), intensity scale (p 0.15, 0.25) and shift (p 0.15, 0.1), contrast gamma 0.7-1.5 (p 0.3); fp16
autocast with a grad scaler on CUDA; validation every 5 of 300 epochs, the best by mAP@0.1 kept; prediction of
the whole image (sliding windows of [512, 512, 208] voxels, overlap 0.25, Gaussian blending, when larger), score
above 0.02, the top 1000 boxes per level, NMS at IoU 0.22, at most 100 boxes per image; no test-time augmentation.

What changes, and why (everything else is the tutorial's):

- Data: this project's preprocessed cases of the plan (``preprocessed/<plan>/``: cropped, resampled to the plan's
  target spacing, normalised by the plan) and the fold of the task's ``splits.json`` (train cases to train, val
  cases to choose the best weights), instead of LUNA16 at 0.703 x 0.703 x 1.25 mm with HU scaled from
  [-1024, 300] to [0, 1]: both models learn from the same voxels.
- Axes: arrays here are (z, y, x) and MONAI's tutorial works on RAS arrays (x, y, z); the spatial axes are
  reversed at the boundary (:func:`to_monai_image`, :func:`to_monai_boxes`) so its per-axis settings keep their
  meaning (the unstrided axis is the slice axis).
- Spacing: the tutorial's sizes in voxels are kept in millimetres: the anchor shapes and the whole-image window
  are scaled by tutorial spacing / plan spacing per axis; the first convolution leaves an axis unstrided when its
  spacing is over 1.5x the finest (the tutorial's [2, 2, 1] at 1.25 vs 0.703 mm; isotropic data strides all).
- Patch and batch: the plan's patch size and batch size (crops per step) replace [192, 192, 80] and 4, so both
  models see the same patches; input channels and the number of classes are the task's; 2D tasks (plan mode
  2d on 2D images) use the 2D variant of every part (the x, y entries of the anchor shapes; rotations in-plane).
- Schedule: a wall-clock budget (``--minutes``) instead of 300 epochs: the learning rate follows the tutorial's
  schedule at the elapsed share of the budget (linear warm-up over the first 10/300, lr 1e-2 up to 160/300,
  then 1e-3); validations at ``--validations`` evenly spaced shares (default 10) instead of every 5/300; only
  training steps (sampling and augmentation included) count against the budget, as in ``rud_train``'s planned
  schedule; validations and prediction come on top.
- Crops: a positive crop is centred in the extended region of one random object (where a patch holds the whole
  object, as the tutorial's mask), a negative crop anywhere outside the objects' regions.
- Precision on a CPU: float32 (autocast and the grad scaler on CUDA only); the network is not TorchScript-compiled
  (no change to any number).
- Network size, only with ``--backbone plan`` (the default is the tutorial's): MONAI's ResNet and FPN at the sizes
  of the plan's own network (its block type and blocks per stage, channels from the plan's start channels
  doubling per stage up to its maximum, FPN and head width of the plan's FPN channels). On a CPU one step of the
  tutorial's ResNet50-FPN costs about 20 steps of the planner's CPU network at the same patch and batch, so in
  minutes it takes a handful of steps and finds nothing; at the plan's sizes the two recipes (anchors, ATSS,
  sampler, losses, SGD schedule, augmentation against this project's) are compared at one capacity. The model
  folder is then ``monai_retinanet_plansized_<plan>``.
- Output: boxes mapped to the original images' index coordinates (:class:`retinaunet.coordinates.CaseCoordinates`)
  and written as ``rud_predict`` writes them (``<case>.json`` per case, ``predictions.csv``), each image
  preprocessed exactly as ``rud_predict`` preprocesses it.

The trained network and a log (steps, seconds, validation mAP per check) go to
``<task>/models/monai_retinanet_<plan>/fold<k>/`` (``monai_retinanet_plansized_<plan>`` with ``--backbone plan``).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The recipe of MONAI's LUNA16 detection tutorial (its config and training script)
TUTORIAL_SPACING_XYZ = (0.703125, 0.703125, 1.25)
BASE_ANCHOR_SHAPES_XYZ = ((6, 8, 4), (8, 6, 5), (10, 10, 6))
RETURNED_LAYERS = (1, 2)
VAL_PATCH_XYZ = (512, 512, 208)
LR, MOMENTUM, WEIGHT_DECAY = 1e-2, 0.9, 3e-5
EPOCHS, WARMUP_EPOCHS, STEP_EPOCHS, GAMMA, VAL_INTERVAL = 300, 10, 150, 0.1, 5
ATSS_CANDIDATES = 4
SAMPLER = {"batch_size_per_image": 64, "positive_fraction": 0.3, "pool_size": 20, "min_neg": 16}
SELECTOR = {"score_thresh": 0.02, "topk_candidates_per_level": 1000, "nms_thresh": 0.22, "detections_per_img": 100}
WINDOW_OVERLAP = 0.25
UNSTRIDED_SPACING_RATIO = 1.5  # an axis this much coarser than the finest keeps stride 1 in the first convolution
MODEL_NAME = "monai_retinanet"
MODEL_NAMES = {"tutorial": MODEL_NAME, "plan": MODEL_NAME + "_plansized"}  # model folder per --backbone


class PeerError(RuntimeError):
    """Bad input; the message names the file and the fix."""


# ------------------------------------------------------------------------------------------- conversions
def to_monai_image(data: np.ndarray) -> np.ndarray:
    """This project's ``[C, Z, Y, X]`` (``[C, Y, X]``) -> MONAI's ``[C, X, Y, Z]`` (``[C, X, Y]``): spatial axes
    reversed, a view."""
    return np.transpose(data, (0, *range(data.ndim - 1, 0, -1)))


def to_monai_boxes(boxes: Any) -> np.ndarray:
    """Boxes ``[K, 2*dim]`` of this project (``[z0, y0, x0, z1, y1, x1]``, half-open, array order) -> MONAI's
    ``xyzxyz`` mode (``[x0, y0, z0, x1, y1, z1]``, half-open too: MONAI's ``TO_REMOVE`` is 0) on the array of
    :func:`to_monai_image`. Exact: only a permutation of the columns."""
    b = np.asarray(boxes, dtype=np.float64)
    dim = b.shape[-1] // 2
    rev = list(range(dim - 1, -1, -1))
    return b[..., rev + [dim + i for i in rev]]


def from_monai_boxes(boxes: Any) -> np.ndarray:
    """Inverse of :func:`to_monai_boxes` (reversing the axes twice is the identity)."""
    return to_monai_boxes(boxes)


def monai_spacing(target_spacing: Sequence[float]) -> list[float]:
    """The plan's spacing in MONAI's axis order (reversed)."""
    return [float(s) for s in reversed(list(target_spacing))]


def anchor_shapes(spacing_xyz: Sequence[float]) -> list[list[float]]:
    """The tutorial's anchor shapes (voxels at its spacing) in voxels of ``spacing_xyz``: the same millimetres."""
    dim = len(spacing_xyz)
    return [[round(a * t / s, 3) for a, t, s in zip(shape[:dim], TUTORIAL_SPACING_XYZ, spacing_xyz)]
            for shape in BASE_ANCHOR_SHAPES_XYZ]


def conv1_stride(spacing_xyz: Sequence[float]) -> list[int]:
    """Stride 2 per axis, 1 where the spacing exceeds 1.5x the finest (the tutorial's [2, 2, 1])."""
    finest = min(spacing_xyz)
    return [1 if s > UNSTRIDED_SPACING_RATIO * finest else 2 for s in spacing_xyz]


def window_size(spacing_xyz: Sequence[float]) -> list[int]:
    """The tutorial's whole-image window (512 x 512 x 208 voxels at its spacing) in voxels of ``spacing_xyz``."""
    return [int(round(v * t / s)) for v, t, s in zip(VAL_PATCH_XYZ, TUTORIAL_SPACING_XYZ, spacing_xyz)]


def learning_rate(share: float) -> float:
    """The tutorial's lr at ``share`` (0..1) of the schedule: warm-up by epoch (epoch e of 300 starts at
    e/10 x lr), lr up to epoch 160, then x 0.1."""
    epoch = min(EPOCHS, int(share * EPOCHS) + 1)  # the tutorial steps its scheduler at the start of epoch 1, 2, ...
    if epoch <= WARMUP_EPOCHS:
        return LR * epoch / WARMUP_EPOCHS
    return LR * (GAMMA if epoch > WARMUP_EPOCHS + STEP_EPOCHS else 1.0)


# ----------------------------------------------------------------------------------------------- network
class LayerGetter(torch.nn.ModuleDict):
    """The backbone's children up to the last returned layer, returning ``{name: output}`` of the returned ones
    (what torchvision's ``IntermediateLayerGetter`` does inside MONAI's ``BackboneWithFPN``; written here so the
    peer needs no torchvision)."""

    def __init__(self, backbone: torch.nn.Module, return_layers: dict[str, str]):
        wanted, layers = dict(return_layers), {}
        for name, module in backbone.named_children():
            layers[name] = module
            wanted.pop(name, None)
            if not wanted:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def fpn_extractor(backbone: Any, dim: int, returned_layers: list[int], layer_channels: Sequence[int],
                  out_channels: int = 256) -> torch.nn.Module:
    """MONAI's ``resnet_fpn_feature_extractor(backbone, dim, pretrained_backbone=False, returned_layers=...)``:
    every backbone layer trainable, an FPN of ``out_channels`` (the tutorial's 256) over the returned layers
    (``layer_channels``: the output channels of layer 1, 2, ...) plus a max-pooled level."""
    from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN
    from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

    class Extractor(BackboneWithFPN):  # its forward (body, then FPN); the body built without torchvision
        def __init__(self) -> None:
            torch.nn.Module.__init__(self)
            self.body = LayerGetter(backbone, {f"layer{k}": str(v) for v, k in enumerate(returned_layers)})
            self.fpn = FeaturePyramidNetwork(spatial_dims=dim,
                                             in_channels_list=[layer_channels[i - 1] for i in returned_layers],
                                             out_channels=out_channels, extra_blocks=LastLevelMaxPool(dim))
            self.out_channels = out_channels

    return Extractor()


def bind_torchvision_names() -> None:
    """MONAI's detector names torchvision's ``Matcher`` and ``BalancedPositiveNegativeSampler`` only to test which
    matcher and sampler are set; without torchvision those names are placeholders that raise when tested. Bound
    to empty classes then (nothing is an instance of them: the recipe's ATSS matcher and hard-negative sampler are
    MONAI's own), so the peer runs without torchvision."""
    from monai.apps.detection.networks import retinanet_detector
    from monai.utils import optional_import

    if not optional_import("torchvision")[1]:
        retinanet_detector.Matcher = type("Matcher", (), {})
        retinanet_detector.BalancedPositiveNegativeSampler = type("BalancedPositiveNegativeSampler", (), {})


def backbone_spec(plans: Any, backbone: str) -> dict[str, Any]:
    """The ResNet and FPN sizes: ``tutorial``, the tutorial's ResNet50 (bottleneck blocks 3-4-6-3 of 64-512 planes)
    and FPN of 256 channels; ``plan``, the plan's own network sizes in MONAI's ResNet (its block type, blocks per
    stage, channels from ``start_channels`` doubling per stage up to ``max_channels``, FPN of ``fpn_channels``)."""
    from monai.networks.nets import resnet

    if backbone == "tutorial":
        block, layers, planes, fpn = resnet.ResNetBottleneck, [3, 4, 6, 3], list(resnet.get_inplanes()), 256
    elif backbone == "plan":
        net = plans.network
        block = resnet.ResNetBottleneck if net.block == "bottleneck" else resnet.ResNetBlock
        layers = (list(net.blocks_per_stage) + [net.blocks_per_stage[-1]] * 4)[:4]
        planes = [min(net.start_channels * 2 ** k, net.max_channels) for k in range(4)]
        fpn = net.fpn_channels
        if fpn % 8:
            raise PeerError(f"--backbone plan: the plan's fpn_channels ({fpn}) must be a multiple of 8 (MONAI's "
                            "heads normalise in 8 groups); use --backbone tutorial")
    else:
        raise PeerError(f"--backbone {backbone}: choose tutorial or plan")
    return {"block": block, "layers": layers, "planes": planes, "fpn_channels": fpn,
            "layer_channels": [p * block.expansion for p in planes]}


def build_detector(plans: Any, device: torch.device, backbone: str = "tutorial") -> Any:
    """The tutorial's RetinaNetDetector for the plan (channels, classes, dims, spacing); ``backbone`` as
    :func:`backbone_spec`."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.networks.nets import resnet

    spec = backbone_spec(plans, backbone)
    bind_torchvision_names()
    dim = plans.dim
    spacing = monai_spacing(plans.target_spacing)
    stride = conv1_stride(spacing)
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=[2 ** k for k in range(len(RETURNED_LAYERS) + 1)],
                                             base_anchor_shapes=anchor_shapes(spacing))
    resnet_net = resnet.ResNet(block=spec["block"], layers=spec["layers"], block_inplanes=spec["planes"],
                               spatial_dims=dim, n_input_channels=plans.in_channels, conv1_t_stride=stride,
                               conv1_t_size=[max(7, 2 * s + 1) for s in stride])
    features = fpn_extractor(resnet_net, dim, list(RETURNED_LAYERS), spec["layer_channels"], spec["fpn_channels"])
    divisible = [s * 2 * 2 ** max(RETURNED_LAYERS) for s in features.body.conv1.stride]
    net = RetinaNet(spatial_dims=dim, num_classes=plans.num_classes,
                    num_anchors=anchors.num_anchors_per_location()[0], feature_extractor=features,
                    size_divisible=divisible)
    det = RetinaNetDetector(network=net, anchor_generator=anchors).to(device)
    det.set_atss_matcher(num_candidates=ATSS_CANDIDATES, center_in_gt=False)
    det.set_hard_negative_sampler(**SAMPLER)
    det.set_box_selector_parameters(**SELECTOR)
    det.set_sliding_window_inferer(roi_size=window_size(spacing), overlap=WINDOW_OVERLAP, sw_batch_size=1,
                                   mode="gaussian", device="cpu")
    return det


# ------------------------------------------------------------------------------------------------ crops
def extended_regions(boxes: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Per box, the region of crop centres whose patch holds the whole box (the tutorial's extended box mask):
    ``[K, 2*dim]`` integer, half-open."""
    dim = len(patch)
    start, stop = np.ceil(boxes[:, :dim]).astype(int), np.floor(boxes[:, dim:]).astype(int)
    half = np.asarray(patch) // 2
    lo = np.minimum(stop - half - 1, start)
    hi = np.maximum(lo + half, stop)
    return np.concatenate([lo, hi], axis=1)


def sample_crop(shape: Sequence[int], boxes: np.ndarray, patch: Sequence[int], positive: bool,
                rng: np.random.Generator) -> np.ndarray:
    """Corner of a crop of ``patch`` in an image of ``shape`` (preprocessed coordinates, this project's order)."""
    shape, patch = np.asarray(shape), np.asarray(patch)
    regions = extended_regions(boxes, patch) if len(boxes) else np.zeros((0, 2 * len(patch)), dtype=int)
    dim = len(patch)
    if positive and len(regions):
        r = regions[rng.integers(len(regions))]
        centre = np.array([rng.integers(max(0, r[a]), max(max(0, r[a]) + 1, min(shape[a], r[dim + a])))
                           for a in range(dim)])
    else:
        for _ in range(20):  # a centre outside every object's region (almost always the first draw)
            centre = np.array([rng.integers(0, s) for s in shape])
            if not any(np.all((centre >= r[:dim]) & (centre < r[dim:])) for r in regions):
                break
    corner = centre - patch // 2
    # keep the crop inside the image where the image is large enough (MONAI corrects crop centres the same way)
    return np.where(shape >= patch, np.clip(corner, 0, np.maximum(shape - patch, 0)), (shape - patch) // 2)


def crop_case(data: np.ndarray, boxes: np.ndarray, labels: np.ndarray, corner: np.ndarray,
              patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patch (zero outside the image) and its boxes, clipped to it; boxes left empty are dropped."""
    from retinaunet.store import read_region

    dim = len(patch)
    image = read_region(data, corner, patch).astype(np.float32)
    shifted = boxes - np.tile(corner, 2)
    clipped = np.clip(shifted, 0, np.tile(np.asarray(patch, dtype=np.float64), 2))
    keep = np.all(clipped[:, dim:] > clipped[:, :dim], axis=1)
    return image, clipped[keep], labels[keep]


def augmentation(dim: int) -> Any:
    """The tutorial's patch augmentation, from MONAI's own transforms, on keys image / box / label (MONAI layout)."""
    from monai.apps.detection.transforms.dictionary import (
        BoxToMaskd,
        ClipBoxToImaged,
        MaskToBoxd,
        RandFlipBoxd,
        RandRotateBox90d,
        RandZoomBoxd,
    )
    from monai.transforms import (
        Compose,
        DeleteItemsd,
        RandAdjustContrastd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    box = {"image_keys": ["image"], "box_keys": ["box"], "box_ref_image_keys": "image"}
    angle = math.pi / 6
    rotate = {"range_x": angle} if dim == 2 else {"range_x": angle, "range_y": angle, "range_z": angle}
    sigma = {f"sigma_{a}": (0.5, 1.0) for a in "xyz"[:dim]}
    return Compose([
        RandZoomBoxd(**box, prob=0.2, min_zoom=0.7, max_zoom=1.4, padding_mode="constant", keep_size=True),
        *[RandFlipBoxd(**box, prob=0.5, spatial_axis=a) for a in range(dim)],
        RandRotateBox90d(**box, prob=0.75, max_k=3, spatial_axes=(0, 1)),
        ClipBoxToImaged(box_keys="box", label_keys=["label"], box_ref_image_keys="image", remove_empty=True),
        BoxToMaskd(box_keys=["box"], label_keys=["label"], box_mask_keys=["box_mask"], box_ref_image_keys="image",
                   min_fg_label=0, ellipse_mask=True),
        RandRotated(keys=["image", "box_mask"], mode=["nearest", "nearest"], prob=0.2, keep_size=True,
                    padding_mode="zeros", **rotate),
        MaskToBoxd(box_keys=["box"], label_keys=["label"], box_mask_keys=["box_mask"], min_fg_label=0),
        DeleteItemsd(keys=["box_mask"]),
        RandGaussianNoised(keys=["image"], prob=0.1, mean=0, std=0.1),
        RandGaussianSmoothd(keys=["image"], prob=0.1, **sigma),
        RandScaleIntensityd(keys=["image"], prob=0.15, factors=0.25),
        RandShiftIntensityd(keys=["image"], prob=0.15, offsets=0.1),
        RandAdjustContrastd(keys=["image"], prob=0.3, gamma=(0.7, 1.5)),
    ])


class CropSampler:
    """Training inputs of one step: ``batch`` augmented crops of one random train case, in MONAI's layout."""

    def __init__(self, pre_dir: Path, cases: Sequence[str], plans: Any, seed: int):
        from retinaunet import store

        self.plans, self.rng = plans, np.random.default_rng(seed)
        self.cases = []
        for case in cases:
            data, props = store.load_case(pre_dir, case)
            boxes, labels = store.ground_truth(props, plans.dim)
            self.cases.append((data, boxes, labels))
        if not self.cases:
            raise PeerError(f"{pre_dir}: no training cases in this fold; check splits.json")
        self.transform = augmentation(plans.dim)
        self.transform.set_random_state(seed=seed)
        self.order: list[int] = []

    def step(self) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        if not self.order:  # an epoch: every train case once, shuffled (the tutorial's loader)
            self.order = list(self.rng.permutation(len(self.cases)))
        data, boxes, labels = self.cases[self.order.pop()]
        patch = self.plans.patch_size
        images, targets = [], []
        for _ in range(self.plans.batch_size):
            positive = bool(self.rng.random() < 0.5)  # pos 1 : neg 1
            corner = sample_crop(data.shape[1:], boxes, patch, positive, self.rng)
            image, b, lab = crop_case(data, boxes, labels, corner, patch)
            item = self.transform({"image": torch.from_numpy(np.ascontiguousarray(to_monai_image(image))),
                                   "box": torch.as_tensor(to_monai_boxes(b), dtype=torch.float32),
                                   "label": torch.as_tensor(lab, dtype=torch.long)})
            images.append(torch.as_tensor(item["image"]).float())
            targets.append({"boxes": torch.as_tensor(item["box"]).float().reshape(-1, 2 * self.plans.dim),
                            "labels": torch.as_tensor(item["label"]).long().reshape(-1)})
        return images, targets


# ------------------------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict_array(detector: Any, data: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``[K, 2*dim]`` (preprocessed coordinates, this project's order), scores and classes of one image."""
    detector.eval()
    image = torch.from_numpy(np.ascontiguousarray(to_monai_image(np.asarray(data, dtype=np.float32)))).to(device)
    windowed = image[0].numel() >= int(np.prod(detector.inferer.roi_size))
    with torch.autocast("cuda", enabled=device.type == "cuda"):
        out = detector([image], use_inferer=windowed)[0]
    boxes = out[detector.target_box_key].float().cpu().numpy()
    return (from_monai_boxes(boxes).reshape(-1, boxes.shape[-1] if boxes.size else 2 * detector.spatial_dims),
            out[detector.pred_score_key].float().cpu().numpy(), out[detector.target_label_key].cpu().numpy())


def validate(detector: Any, pre_dir: Path, cases: Sequence[str], plans: Any, device: torch.device) -> float:
    """mAP@0.1 (mean over classes) of the val cases, as ``rud_train`` scores its epochs."""
    from retinaunet import store
    from retinaunet.evaluation.ap import average_precision, mean_over_classes

    preds, gts = [], []
    for case in cases:
        data, props = store.load_case(pre_dir, case)
        preds.append(predict_array(detector, data, device))
        gts.append(store.ground_truth(props, plans.dim))
    detector.train()
    if not gts:
        return 0.0
    ap = average_precision([p[0] for p in preds], [p[1] for p in preds], [p[2] for p in preds],
                           [g[0] for g in gts], [g[1] for g in gts], plans.num_classes, (0.1,))
    value = float(mean_over_classes(ap)[0])
    return value if np.isfinite(value) else 0.0


# -------------------------------------------------------------------------------------------- training
def train(detector: Any, sampler: CropSampler, seconds: float, validations: int, val_fn: Any,
          device: torch.device) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train for ``seconds`` of steps; returns the best weights by validation and the log of the checks."""
    from loguru import logger
    from tqdm import tqdm

    from retinaunet.threads import recheck_threads

    net = detector.network
    optimizer = torch.optim.SGD(net.parameters(), LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    checks = [seconds * (k + 1) / validations for k in range(validations)] if validations else []
    log: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] | None = None
    spent, steps, sums = 0.0, 0, {"cls": 0.0, "box": 0.0}
    detector.train()
    bar = tqdm(total=round(seconds), desc="training (s)", leave=False, dynamic_ncols=True)
    while spent < seconds:
        recheck_threads()
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(spent / seconds)
        images, targets = sampler.step()
        images = [i.to(device) for i in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        for p in net.parameters():
            p.grad = None
        with torch.autocast("cuda", enabled=scaler is not None):
            losses = detector(images, targets)
            loss = losses[detector.cls_key] + losses[detector.box_reg_key]
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        steps += 1
        sums["cls"] += float(losses[detector.cls_key])
        sums["box"] += float(losses[detector.box_reg_key])
        dt = time.perf_counter() - t0
        spent += dt
        bar.update(min(round(spent) - bar.n, bar.total - bar.n))
        bar.set_postfix(steps=steps, cls=f"{sums['cls'] / steps:.3f}", box=f"{sums['box'] / steps:.3f}")
        while checks and spent >= checks[0]:
            checks.pop(0)
            v0 = time.perf_counter()
            value = val_fn(detector)
            entry = {"step": steps, "train_seconds": round(spent, 2), "val_map": value,
                     "val_seconds": round(time.perf_counter() - v0, 2), "lr": optimizer.param_groups[0]["lr"],
                     "cls_loss": sums["cls"] / steps, "box_loss": sums["box"] / steps}
            log.append(entry)
            logger.info(f"step {steps}, {spent:.0f} s of training: val mAP@0.1 {value:.4f}")
            if best is None or value > best[0]:
                best = (value, copy.deepcopy(net.state_dict()))
    bar.close()
    if best is None:  # no validation asked for: the last weights
        log.append({"step": steps, "train_seconds": round(spent, 2), "val_map": None})
        best = (float("nan"), copy.deepcopy(net.state_dict()))
    return best[1], log


# ---------------------------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="peer_monai.py",
        description="Train MONAI's RetinaNet with its LUNA16 tutorial's recipe on the task's preprocessed cases "
                    "(one fold of splits.json) for a wall-clock budget, then predict a folder of raw images into "
                    "prediction JSONs that rud_evaluate scores like rud_predict's. The changes to the recipe "
                    "and their reasons are in the script's docstring.")
    p.add_argument("-t", "--task", default=None, help="task number or name (default $RUD_TASK)")
    p.add_argument("--minutes", type=float, required=True,
                   help="wall-clock minutes of training steps (validations and prediction come on top)")
    p.add_argument("--fold", type=int, default=0, help="fold of splits.json: its train cases train, its val cases "
                                                         "choose the best weights")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, crops and augmentation")
    p.add_argument("--plan", default=None, help="configuration of plans.json (default: its default); 2d or 3d")
    p.add_argument("-i", "--input", default=None, help="raw images to predict (default: the task's imagesTs)")
    p.add_argument("-o", "--output", required=True, help="folder for <case>.json and predictions.csv")
    p.add_argument("--validations", type=int, default=10,
                   help="validations of the val cases at evenly spaced shares of the budget; the best is kept "
                        "(0: the last weights)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores not busy with other "
                                                              "work, as rud_train)")
    p.add_argument("--backbone", choices=("tutorial", "plan"), default="tutorial",
                   help="tutorial: its ResNet50-FPN; plan: MONAI's ResNet and FPN at the sizes of the plan's own "
                        "network (the rest of the recipe unchanged), for budgets where the tutorial's network "
                        "takes only a handful of steps")
    p.add_argument("--overwrite", action="store_true", help="replace existing prediction JSONs in the output")
    return p


def run(args: argparse.Namespace) -> Path:
    """Train, then predict; returns the output folder."""
    from loguru import logger
    from retinaunet.inference.cli import check_case_files, find_input_cases
    from retinaunet.inference.export import export_case, write_run_csv
    from retinaunet.inference.predictor import CasePrediction
    from retinaunet.preprocessing.preprocess import preprocess_case
    from tqdm import tqdm

    from retinaunet import store
    from retinaunet.io import read_case, write_json
    from retinaunet.layout import TaskPaths
    from retinaunet.plans import load_plans
    from retinaunet.threads import set_threads
    from retinaunet.training.splits import load_or_create_splits

    if args.minutes <= 0:
        raise PeerError(f"--minutes must be positive, got {args.minutes}")
    paths = TaskPaths.from_task(args.task)
    if not paths.plans.is_file():
        raise PeerError(f"{paths.plans}: not found; run rud_plan -t {paths.name} and rud_preprocess first")
    plans = load_plans(paths.plans, args.plan)
    if plans.dim != plans.data_dim:
        raise PeerError(f"{paths.plans}: plan '{plans.plan_name}' is {plans.mode} on {plans.data_dim}D images; "
                        "MONAI's RetinaNet runs on 2D images or 3D volumes: choose --plan 3d (or 2d for 2D images)")
    pre_dir = paths.preprocessed(plans.plan_name)
    classes = store.case_classes(pre_dir)
    if not classes:
        raise PeerError(f"{pre_dir}: no preprocessed cases; run rud_preprocess -t {paths.name}")
    splits = load_or_create_splits(paths, classes, seed=args.seed)
    if not 0 <= args.fold < len(splits):
        raise PeerError(f"{paths.splits}: fold {args.fold} does not exist (folds 0..{len(splits) - 1})")
    split = splits[args.fold]
    input_dir = Path(args.input) if args.input else paths.images_ts
    out = Path(args.output)
    cases = find_input_cases(input_dir, plans)
    for name, files in cases.items():
        check_case_files(name, files, plans)
    existing = [out / f"{c}.json" for c in cases if (out / f"{c}.json").exists()]
    if existing and not args.overwrite:
        raise PeerError(f"{existing[0]} exists; pass --overwrite to replace, or choose another -o")

    set_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    detector = build_detector(plans, device, args.backbone)
    model_name = MODEL_NAMES[args.backbone]
    sampler = CropSampler(pre_dir, split["train"], plans, args.seed)
    logger.info(f"MONAI RetinaNet ({args.backbone} backbone) on {paths.name} fold {args.fold}: "
                f"{len(split['train'])} train, {len(split['val'])} val cases; patch {plans.patch_size} x "
                f"{plans.batch_size}, {args.minutes:g} min on {device}")
    state, log = train(detector, sampler, 60.0 * args.minutes, args.validations,
                       lambda det: validate(det, pre_dir, split["val"], plans, device), device)
    detector.network.load_state_dict(state)
    model_dir = paths.model_dir(model_name, plans.plan_name) / f"fold{args.fold}"
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "plan": plans.plan_name, "fold": args.fold, "seed": args.seed},
               model_dir / "model_best.pt")
    best = max((e for e in log if e.get("val_map") is not None), key=lambda e: e["val_map"], default=log[-1])
    write_json({"minutes": args.minutes, "steps": log[-1]["step"] if log else 0, "checks": log, "best": best},
               model_dir / "training_log.json")

    out.mkdir(parents=True, exist_ok=True)
    settings = {"settings": {"model": model_name, "backbone": args.backbone, "model_folder": str(model_dir),
                             "minutes": args.minutes, "fold": args.fold, "seed": args.seed, **SELECTOR}}
    for name in tqdm(list(cases), desc="predicting", unit="case"):
        images, geometry = read_case(cases[name])
        data, _, props = preprocess_case(images, geometry, plans, case=name)
        props = {**props, "case": name}
        boxes, scores, labels = predict_array(detector, data, device)
        export_case(CasePrediction(boxes, scores, labels.astype(np.int64)), props, out,
                    class_names=plans.class_names, metadata=settings)
    write_run_csv(out)
    logger.info(f"{len(cases)} case(s) -> {out}; {log[-1]['step'] if log else 0} training steps; best val mAP@0.1 "
                f"{best.get('val_map')}")
    return out


def main(argv: list[str] | None = None) -> int:
    from retinaunet.cli_errors import run_command

    args = build_parser().parse_args(argv)
    return run_command("peer_monai.py", lambda: run(args) and None)


if __name__ == "__main__":
    sys.exit(main())
