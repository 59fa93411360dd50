"""Boxes-only inference: a pass without the segmentation output gives the boxes of today's full pass.

The detection heads read P1..P5 of the U-FPN, never P0, so leaving out P0 (full resolution) and the
segmentation head changes no operation the boxes depend on. The comparison still allows a small tolerance
(IoU > 0.9 per box, scores within 1e-4): oneDNN may choose another convolution algorithm for another set of
layers or batch, and float32 sums in another order differ in the last bits; a real difference in the path
(a missing or changed level) moves boxes by whole voxels and scores by far more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from retinaunet.inference.predictor import Predictor

from retinaunet.boxes import box_iou
from retinaunet.models import build_model
from retinaunet.plans import make_test_plans


class FullPass(torch.nn.Module):
    """Today's pass: the detector with its segmentation output computed in every pass."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def predict(self, images):
        return self.detector.predict(images, segmentation=True)


def _model(name: str, plans):
    torch.manual_seed(0)
    model = build_model(name, plans).eval()
    with torch.no_grad():  # a foreground prior of about 0.2, so every tile reports some boxes
        model.network.cls_head.out.bias.view(-1, plans.num_classes + 1)[:, 0] = 1.0
    return model


@pytest.mark.parametrize("name", ["retina_unet", "retina_net"])
def test_network_without_segmentation_gives_the_same_head_outputs(name):
    plans = make_test_plans(dim=3, num_classes=2, patch_size=[8, 16, 16])
    model = _model(name, plans)
    x = torch.randn(2, 1, 8, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full, boxes_only = model.network(x), model.network(x, segmentation=False)
    assert (full.seg_logits is not None) == (name == "retina_unet")
    assert boxes_only.seg_logits is None
    assert full.feature_shapes == boxes_only.feature_shapes
    torch.testing.assert_close(boxes_only.cls_logits, full.cls_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(boxes_only.box_deltas, full.box_deltas, rtol=1e-5, atol=1e-6)


def test_ufpn_refuses_a_level_it_does_not_output():
    plans = make_test_plans(dim=3, patch_size=[8, 16, 16])
    net = build_model("retina_net", plans).network
    feats = net.backbone(torch.zeros(1, 1, 8, 16, 16))
    with pytest.raises(ValueError, match="levels"):
        net.fpn(feats, levels=[0])


def test_boxes_only_predictor_gives_the_baseline_boxes_on_a_small_volume():
    plans = make_test_plans(dim=3, num_classes=2, patch_size=[8, 16, 16])
    model = _model("retina_unet", plans)
    data = np.random.default_rng(0).standard_normal((1, 12, 40, 36)).astype(np.float32)
    old = Predictor([FullPass(model)], plans, mirror=False).predict_case(data)
    new = Predictor([model], plans, mirror=False).predict_case(data)
    batched = Predictor([model], plans, mirror=False, batch_size=6).predict_case(data)
    assert len(old.boxes) >= 5  # the check means something only with boxes
    for pred in (new, batched):
        assert len(pred.boxes) == len(old.boxes)
        iou = box_iou(torch.as_tensor(old.boxes), torch.as_tensor(pred.boxes)).numpy()
        iou[old.labels[:, None] != pred.labels[None, :]] = 0.0
        best = iou.argmax(1)
        assert iou.max(1).min() > 0.9
        assert np.abs(old.scores - pred.scores[best]).max() < 1e-4
    assert new.seg is None


def test_the_segmentation_is_still_computed_when_kept():
    plans = make_test_plans(dim=3, num_classes=2, patch_size=[8, 16, 16])
    model = _model("retina_unet", plans)
    data = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)
    pred = Predictor([model], plans, mirror=False, keep_seg=True).predict_case(data)
    assert pred.seg is not None and pred.seg.shape == (8, 16, 16)
