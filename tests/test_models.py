from __future__ import annotations

import math

import pytest
import torch

from retinaunet.models import Detections, Detector, available_models, build_model, get_model, register_model
from retinaunet.models.backbone import ResNetBackbone, feature_map_shapes
from retinaunet.models.heads import flatten_level
from retinaunet.plans import Plans, make_test_plans

STRIDES_3D_Z_KEPT = [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]

# (name, plans kwargs, batch)
CONFIGS = [
    ("2d_64", dict(dim=2, patch_size=[64, 64]), 2),
    ("2d_96x64", dict(dim=2, patch_size=[96, 64]), 1),
    ("2dc_64", dict(dim=2, patch_size=[64, 64], in_channels=7, mode="2dc"), 2),
    ("3d_16x32x64", dict(dim=3, patch_size=[16, 32, 64]), 1),
    ("3d_8x32x32", dict(dim=3, patch_size=[8, 32, 32], strides=STRIDES_3D_Z_KEPT), 2),
    ("3d_iso_32", dict(dim=3, patch_size=[32, 32, 64], strides=[[2, 2, 2]] * 4 + [[1, 1, 2]]), 1),
]


def _plans(**kw) -> Plans:
    torch.manual_seed(0)
    return make_test_plans(**kw)


def _level_shapes(plans: Plans) -> list[list[int]]:
    """Expected spatial shapes of C0..C5 / P0..P5."""
    shapes, cur = [], list(plans.patch_size)
    shapes.append(cur)
    for s in plans.network.strides:
        cur = [c // k for c, k in zip(cur, s)]
        shapes.append(cur)
    return shapes


def test_registry():
    assert {"retina_unet", "retina_net"} <= set(available_models())
    assert issubclass(get_model("retina_unet"), Detector)
    with pytest.raises(KeyError, match="available"):
        get_model("no_such_model")

    @register_model("test_dummy_detector")
    class Dummy(Detector):
        pass

    assert get_model("test_dummy_detector") is Dummy and Dummy.model_name == "test_dummy_detector"
    with pytest.raises(ValueError):
        register_model("retina_unet")(Dummy)


def test_flatten_level_matches_anchor_order():
    b, n, k, h, w = 2, 3, 4, 5, 6
    x = torch.randn(b, n * k, h, w)
    out = flatten_level(x, n)
    assert out.shape == (b, h * w * n, k)
    for (bi, hi, wi, a, ki) in [(0, 0, 0, 0, 0), (1, 4, 5, 2, 3), (0, 2, 3, 1, 2)]:
        assert out[bi, (hi * w + wi) * n + a, ki] == x[bi, a * k + ki, hi, wi]


@pytest.mark.parametrize("name,kw,batch", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_output_shapes(name, kw, batch):
    plans = _plans(**kw)
    dim, k = plans.dim, plans.num_classes
    det = build_model("retina_unet", plans)
    x = torch.randn(batch, plans.in_channels, *plans.patch_size)
    shapes = _level_shapes(plans)

    feats = det.network.backbone(x)
    assert [list(f.shape[2:]) for f in feats] == shapes
    assert feature_map_shapes(plans.patch_size, plans.network.strides) == shapes  # what the planner reads
    assert [f.shape[1] for f in feats] == det.network.backbone.channels
    pyramid = det.network.fpn(feats)
    assert sorted(pyramid) == [0, 2, 3, 4, 5]  # P1 is not computed: no head reads it
    assert all(p.shape[1] == plans.network.fpn_channels for p in pyramid.values())

    out = det.network(x)
    n_anchors = sum(math.prod(s) for s in shapes[2:]) * 9
    assert out.cls_logits.shape == (batch, n_anchors, k + 1)
    assert out.box_deltas.shape == (batch, n_anchors, 2 * dim)
    assert out.seg_logits.shape == (batch, k + 1, *plans.patch_size)
    assert [list(s) for s in out.feature_shapes] == shapes[2:]
    anchors = det.anchors(plans.patch_size, out.feature_shapes, x.device)
    assert anchors.shape == (n_anchors, 2 * dim)

    net = build_model("retina_net", plans)
    assert sorted(net.network.fpn(net.network.backbone(x))) == [2, 3, 4, 5]
    out_net = net.network(x)
    assert out_net.seg_logits is None and out_net.cls_logits.shape == out.cls_logits.shape


def test_resnet50_layout_and_bad_config():
    bb = ResNetBackbone(2, 1, 64, 2048, "bottleneck", [3, 4, 6, 3], [[2, 2]] * 5)
    assert bb.channels == [64, 128, 256, 512, 1024, 2048]
    assert [len(s) for s in bb.stages] == [3, 4, 6, 3]
    with pytest.raises(ValueError):
        ResNetBackbone(3, 1, 8, 64, "basic", [1, 1, 1, 1], [[2, 2]] * 5)  # 2D strides for a 3D net


def test_retina_net_differs_only_in_segmentation():
    plans = _plans(dim=2)
    unet, net = build_model("retina_unet", plans), build_model("retina_net", plans)
    p_unet = dict(unet.named_parameters())
    p_net = dict(net.named_parameters())
    assert set(p_net) < set(p_unet)
    extra = set(p_unet) - set(p_net)
    assert all(n.startswith(("network.fpn.lateral.0", "network.fpn.lateral.1", "network.fpn.smooth.0",
                             "network.fpn.smooth.1", "network.seg_head")) for n in extra)
    assert all(p_unet[n].shape == p_net[n].shape for n in p_net)


def test_classification_prior():
    plans = _plans(dim=2)
    det = build_model("retina_net", plans)
    out = det.network(torch.randn(2, 1, 64, 64))
    fg = torch.softmax(out.cls_logits, -1)[..., 1:]
    assert fg.mean().item() == pytest.approx(0.01, rel=0.2)


def _targets(plans: Plans, batch: int, empty: bool):
    dim, shape = plans.dim, plans.patch_size
    boxes, labels = [], []
    seg = torch.zeros(batch, *shape, dtype=torch.long)
    for b in range(batch):
        if empty:
            boxes.append(torch.zeros(0, 2 * dim))
            labels.append(torch.zeros(0, dtype=torch.long))
            continue
        lo = [s // 4 for s in shape]
        hi = [s // 4 + max(s // 4, 2) for s in shape]
        boxes.append(torch.tensor([lo + hi], dtype=torch.float32))
        labels.append(torch.tensor([b % plans.num_classes]))
        seg[(b, *[slice(a, c) for a, c in zip(lo, hi)])] = b % plans.num_classes + 1
    return boxes, labels, seg


@pytest.mark.parametrize("model", ["retina_unet", "retina_net"])
@pytest.mark.parametrize("empty", [True, False], ids=["empty", "objects"])
@pytest.mark.parametrize("kw", [dict(dim=2), dict(dim=2, in_channels=7, mode="2dc"),
                                dict(dim=3, patch_size=[8, 32, 32], strides=STRIDES_3D_Z_KEPT)],
                         ids=["2d", "2dc", "3d"])
def test_losses_finite_and_backward(model, empty, kw):
    plans = _plans(**kw)
    det = build_model(model, plans)
    x = torch.randn(2, plans.in_channels, *plans.patch_size)
    boxes, labels, seg = _targets(plans, 2, empty)
    losses = det.compute_losses(x, boxes, labels, seg)
    expected = {"loss", "cls", "box"} | ({"seg_ce", "seg_dice"} if model == "retina_unet" else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["cls"] > 0
    assert (losses["box"] == 0) == empty
    terms = sum(v for k, v in losses.items() if k != "loss")
    assert torch.allclose(losses["loss"], terms)
    losses["loss"].backward()
    grads = [p.grad for p in det.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert det.network.cls_head.out.weight.grad.abs().sum() > 0  # negatives are learned on empty patches


def test_retina_unet_needs_segmentation_targets():
    plans = _plans(dim=2)
    det = build_model("retina_unet", plans)
    boxes, labels, _ = _targets(plans, 1, empty=False)
    with pytest.raises(ValueError, match="seg"):
        det.compute_losses(torch.randn(1, 1, 64, 64), boxes, labels, None)


@pytest.mark.parametrize("kw", [dict(dim=2), dict(dim=3, patch_size=[8, 32, 32], strides=STRIDES_3D_Z_KEPT)],
                         ids=["2d", "3d"])
def test_predict_outputs(kw):
    plans = _plans(**kw)
    plans.override("inference.decode_min_score", 0.0)  # untrained: let everything through to exercise decoding
    det = build_model("retina_unet", plans).eval()
    x = torch.randn(2, plans.in_channels, *plans.patch_size)
    dets = det.predict(x)
    assert isinstance(dets, Detections) and len(dets.boxes) == len(dets.scores) == len(dets.labels) == 2
    size = torch.tensor(plans.patch_size, dtype=torch.float32)
    for boxes, scores, labels in zip(dets.boxes, dets.scores, dets.labels):
        assert 0 < boxes.shape[0] <= plans.inference.decode_max_detections
        assert boxes.shape[1] == 2 * plans.dim
        assert (boxes[:, : plans.dim] >= 0).all() and (boxes[:, plans.dim:] <= size).all()
        assert (boxes[:, plans.dim:] > boxes[:, : plans.dim]).all()
        assert (scores[:-1] >= scores[1:]).all()
        assert labels.dtype == torch.long and ((labels >= 0) & (labels < plans.num_classes)).all()
    assert dets.seg.shape == (2, plans.num_classes + 1, *plans.patch_size)
    assert torch.allclose(dets.seg.sum(1), torch.ones(1))
    # default threshold 0.1 on an untrained net with a 0.01 prior: nothing passes
    plans.override("inference.decode_min_score", 0.1)
    assert all(b.shape[0] == 0 for b in build_model("retina_net", plans).eval().predict(x).boxes)
    assert build_model("retina_net", plans).predict(x).seg is None


def test_checkpoint_round_trip():
    plans = _plans(dim=2)
    det = build_model("retina_unet", plans).eval()
    ckpt = {"model": det.model_name, "plans": plans.to_dict(), "state_dict": det.state_dict()}
    again = build_model(ckpt["model"], Plans.from_dict(ckpt["plans"])).eval()
    again.load_state_dict(ckpt["state_dict"])
    x = torch.randn(1, 1, 64, 64)
    assert torch.equal(det.network(x).cls_logits, again.network(x).cls_logits)


@pytest.mark.parametrize("name", ["retina_unet", "retina_net", "det_unet", "faster_rcnn", "mask_rcnn"])
def test_every_parameter_gets_a_gradient(name):
    # nothing is computed that no loss reads, so distributed training needs no find_unused_parameters
    plans = _plans(dim=2)
    det = build_model(name, plans)
    x = torch.randn(2, plans.in_channels, *plans.patch_size)
    seg = torch.zeros(2, *plans.patch_size, dtype=torch.long)
    seg[:, 10:30, 12:34] = 1
    boxes = [torch.tensor([[10.0, 12.0, 30.0, 34.0]])] * 2
    labels = [torch.tensor([0])] * 2
    det.compute_losses(x, boxes, labels, seg)["loss"].backward()
    unused = [n for n, p in det.named_parameters() if p.grad is None]
    assert not unused, unused


def test_top_nms_equals_full_nms_truncated():
    from retinaunet.boxes import batched_nms
    from retinaunet.models.anchor_detector import top_nms

    torch.manual_seed(0)
    lo = torch.rand(3000, 2) * 100
    boxes = torch.cat([lo, lo + 2 + torch.rand(3000, 2) * 20], 1)
    scores = torch.rand(3000)
    scores[:10] = scores[10:20]  # ties resolve like the full NMS
    classes = torch.randint(0, 3, (3000,))
    for k in (1, 10, 300, 5000):
        full = batched_nms(boxes, scores, classes, 0.1)[:k]
        assert torch.equal(top_nms(boxes, scores, classes, 0.1, k, chunk=64), full)


def test_targets_clipped_to_the_patch_and_empty_boxes_skipped():
    plans = _plans(dim=2)
    det = build_model("retina_net", plans)
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2)]
    anchors = det.anchors([64, 64], shapes, torch.device("cpu"))
    flat = torch.tensor([[10.0, 10.0, 10.0, 30.0]])  # no volume: would give log(0) size targets
    t, pos, deltas = det.assign_targets(anchors, [flat], [torch.tensor([0])], [64, 64])
    assert pos.sum() == 0 and (t >= 0).all() and deltas.shape == (0, 4)
    outside = torch.tensor([[50.0, 50.0, 90.0, 90.0]])  # half outside the patch
    t, pos, deltas = det.assign_targets(anchors, [outside], [torch.tensor([1])], [64, 64])
    clipped = det.box_coder.decode(deltas, anchors[pos[0]])
    assert pos.sum() > 0 and (t[pos] == 2).all()
    assert torch.allclose(clipped, torch.tensor([[50.0, 50.0, 64.0, 64.0]]).expand_as(clipped), atol=1e-3)
    losses = det.compute_losses(torch.randn(2, 1, 64, 64), [flat, outside],
                                [torch.tensor([0]), torch.tensor([1])])
    assert all(torch.isfinite(v) for v in losses.values())
