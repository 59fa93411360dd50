"""Faster R-CNN+ / U-FRCNN+: RoIAlign against a linear field, and both overfit toy patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaunet.models import build_model
from retinaunet.models.two_stage import roi_align
from retinaunet.plans import make_test_plans
from tests.test_overfit import SIZE, assert_each_object_detected, toy_batch, train_steps


@pytest.mark.parametrize("dim", [2, 3])
def test_roi_align_samples_a_linear_field_exactly(dim):
    """Interpolation is exact for a linear function, so every bin holds the field at its centre."""
    image = (16, 48, 40)[-dim:]
    stride = (2, 4, 4)[-dim:]
    feat_shape = [s // k for s, k in zip(image, stride)]
    coef = torch.tensor([0.7, -1.3, 2.1][-dim:])
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in feat_shape], indexing="ij")
    # feature voxel j holds the field at its centre (j + 0.5) * stride in image coordinates
    field = sum(c * (g + 0.5) * k for c, g, k in zip(coef, grids, stride))
    features = torch.stack([field, 2 * field])[None].repeat(2, 1, *[1] * dim)  # [B=2, C=2, *F]
    features[1] *= -1
    rois = torch.tensor([[4.0, 9.0, 10.0, 11.5, 30.0, 27.0], [6.0, 12.0, 8.0, 10.0, 20.0, 30.0],
                         [3.0, 20.0, 5.0, 9.0, 40.0, 33.0]])
    rois = torch.cat([rois[:, 3 - dim:3], rois[:, 6 - dim:]], dim=1)
    batch_index = torch.tensor([1, 0, 1])  # unsorted, two rois in image 1
    out_size = (3, 5, 4)[-dim:]
    out = roi_align(features, rois, batch_index, image, out_size)
    assert out.shape == (3, 2, *out_size)
    for r in range(3):
        lo, hi = rois[r, :dim], rois[r, dim:]
        centres = [lo[d] + (torch.arange(out_size[d]) + 0.5) / out_size[d] * (hi[d] - lo[d]) for d in range(dim)]
        mesh = torch.meshgrid(*centres, indexing="ij")
        expected = sum(c * m for c, m in zip(coef, mesh)) * (1 if batch_index[r] == 0 else -1)
        torch.testing.assert_close(out[r, 0], expected, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(out[r, 1], 2 * expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("model", ["faster_rcnn", "u_faster_rcnn", "mask_rcnn"])
def test_two_stage_overfits_toy_patches(model):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        plans = make_test_plans(dim=2, num_classes=2, patch_size=[SIZE, SIZE])
        plans.override("anchors.base_sizes", [8.0, 16.0, 32.0, 64.0])
        det = build_model(model, plans)
        images, boxes, labels, seg = toy_batch()
        history = train_steps(det, images, boxes, labels, seg, 150)
        det.eval()
        dets = det.predict(images)
    finally:
        torch.set_num_threads(threads)
    first, last = history[0], history[-1]
    print(model, "first", first, "last", last)
    assert all(np.isfinite(h["loss"]) for h in history)
    assert {"rpn_cls", "rpn_box", "cls", "box"} <= set(last) and ("seg_ce" in last) == (model == "u_faster_rcnn")
    assert ("mask" in last) == (model == "mask_rcnn") and last.get("mask", 0.0) < 0.5 * first.get("mask", 1.0)
    assert np.mean([h["loss"] for h in history[-10:]]) < 0.3 * first["loss"]
    assert_each_object_detected(dets, boxes, labels, model)


@pytest.mark.parametrize("model", ["faster_rcnn", "u_faster_rcnn", "mask_rcnn"])
def test_two_stage_3d_step_and_predict(model):
    torch.manual_seed(0)
    plans = make_test_plans(dim=3, num_classes=2, patch_size=[16, 32, 32])
    plans.override("anchors.base_sizes", [4.0, 8.0, 16.0, 32.0])
    det = build_model(model, plans)
    images = torch.randn(2, 1, 16, 32, 32)
    seg = torch.zeros(2, 16, 32, 32, dtype=torch.long)
    seg[0, 4:10, 6:16, 8:20] = 1
    seg[1, 2:8, 10:22, 4:14] = 2
    boxes = [torch.tensor([[4.0, 6.0, 8.0, 10.0, 16.0, 20.0]]), torch.tensor([[2.0, 10.0, 4.0, 8.0, 22.0, 14.0]])]
    labels = [torch.tensor([0]), torch.tensor([1])]
    losses = det.compute_losses(images, boxes, labels, seg)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    # every weight is trained except P1's smoothing conv, whose output no head reads (as in Retina U-Net)
    assert all(p.grad is not None for n, p in det.named_parameters() if not n.startswith("network.fpn.smooth.1."))
    det.eval()
    dets = det.predict(images)
    assert len(dets.boxes) == 2 and all(b.shape[1] == 6 for b in dets.boxes)
    assert (dets.seg is not None) == (model == "u_faster_rcnn")
