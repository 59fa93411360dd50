"""Anchor generation (count, order, strides, centres, sizes) and matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retinaunet.anchors import AnchorGenerator, Matcher
from retinaunet.boxes import box_iou, box_size

SCALES = [1.0, 2 ** (1 / 3), 2 ** (2 / 3)]
RATIOS = [0.5, 1.0, 2.0]


def test_anchors_2d_count_order_centres_sizes() -> None:
    gen = AnchorGenerator([4, 8, 16, 32], None, SCALES, RATIOS, dim=2)
    assert gen.num_anchors_per_location == 9
    feats = [(16, 12), (8, 6), (4, 3), (2, 2)]
    anchors = gen((64, 48), feats)
    assert anchors.shape == (sum(h * w for h, w in feats) * 9, 4)
    assert anchors.dtype == torch.float32

    # level P3, position (y=2, x=5): stride (8, 8), centre (20, 44)
    offset = 16 * 12 * 9
    block = anchors[offset + (2 * 6 + 5) * 9: offset + (2 * 6 + 6) * 9]
    centres = (block[:, :2] + block[:, 2:]) / 2
    assert torch.allclose(centres, torch.tensor([20.0, 44.0]).expand(9, 2))
    sizes = box_size(block)
    for i, r in enumerate(RATIOS):
        for j, s in enumerate(SCALES):
            h, w = sizes[i * 3 + j].tolist()
            assert h == pytest.approx(8 * s * math.sqrt(r), rel=1e-6)
            assert w == pytest.approx(8 * s / math.sqrt(r), rel=1e-6)
            assert h / w == pytest.approx(r, rel=1e-6)

    # the last level has stride (32, 24): non-square strides follow image / feature shape
    last = anchors[-9:]
    assert torch.allclose((last[:, :2] + last[:, 2:]) / 2, torch.tensor([48.0, 36.0]).expand(9, 2))


def test_anchors_order_matches_head_flattening() -> None:
    """Anchors reshaped [*S, n, 2d] -> [-1, 2d] line up with head outputs [n*K, *S] -> [*S, n, K]."""
    gen = AnchorGenerator([4], [2], [1.0, 2.0], [1.0], dim=3)
    image, feat = (4, 8, 8), (2, 4, 4)
    anchors = gen(image, [feat]).double()
    n = gen.num_anchors_per_location
    head = torch.arange(n * 2 * 4 * 4).reshape(1, n, *feat)  # a "head" output with K=1
    flat = head.permute(0, 2, 3, 4, 1).reshape(1, -1, 1)[0, :, 0]
    for row in range(0, anchors.shape[0], 7):
        a, pos = flat[row].item() // (2 * 4 * 4), flat[row].item() % (2 * 4 * 4)
        z, y, x = np.unravel_index(pos, feat)
        centre = (anchors[row, :3] + anchors[row, 3:]) / 2
        assert centre.tolist() == [(z + 0.5) * 2, (y + 0.5) * 2, (x + 0.5) * 2]
        assert box_size(anchors[row:row + 1])[0, 0].item() == pytest.approx(2 * [1.0, 2.0][a])


def test_anchors_3d_sizes() -> None:
    gen = AnchorGenerator([4, 8], [1, 2], SCALES, RATIOS, dim=3)
    anchors = gen((8, 32, 32), [(8, 8, 8), (4, 4, 4)])
    assert anchors.shape == ((8 * 8 * 8 + 4 * 4 * 4) * 9, 6)
    first = anchors[:9]
    assert torch.allclose((first[:, :3] + first[:, 3:]) / 2, torch.tensor([0.5, 2.0, 2.0]).expand(9, 3))
    sizes = box_size(anchors[-9:])
    for i, r in enumerate(RATIOS):
        for j, s in enumerate(SCALES):
            assert sizes[i * 3 + j].tolist() == pytest.approx([2 * s, 8 * s * math.sqrt(r), 8 * s / math.sqrt(r)],
                                                              rel=1e-6)
    iso = AnchorGenerator([4], None, [1.0], [1.0], dim=3)((4, 4, 4), [(1, 1, 1)])
    assert iso.tolist() == [[0.0, 0.0, 0.0, 4.0, 4.0, 4.0]]
    with pytest.raises(ValueError):
        gen((8, 32, 32), [(8, 8, 8)] * 3)


def test_matcher_thresholds() -> None:
    iou = torch.tensor([[0.05, 0.30, 0.60, 0.20, 0.5, 0.0],
                        [0.00, 0.35, 0.10, 0.09, 0.1, 0.0]])
    got = Matcher(0.1, 0.5, allow_low_quality=False)(iou)
    b, m = Matcher.BELOW_LOW, Matcher.BETWEEN
    assert got.tolist() == [b, m, 0, m, 0, b]  # high is inclusive, low is inclusive for BETWEEN
    got = Matcher(0.1, 0.5)(iou)
    assert got.tolist() == [b, 1, 0, m, 0, b]  # gt 1's best anchor (0.35) becomes positive
    assert Matcher(0.1, 0.5)(torch.zeros(0, 5)).tolist() == [b] * 5
    assert Matcher(0.1, 0.5)(torch.zeros(3, 0)).shape == (0,)


def test_matcher_shared_best_anchor() -> None:
    # anchor 0 is the best of both gts; gt 0 gets it (higher IoU), gt 1 falls back to anchor 1
    iou = torch.tensor([[0.40, 0.05, 0.0], [0.30, 0.20, 0.0]])
    got = Matcher(0.1, 0.5)(iou)
    assert got[0] == 0 and got[1] == 1 and got[2] == Matcher.BELOW_LOW


@pytest.mark.parametrize("dim", [2, 3])
def test_matcher_every_gt_matched(dim: int) -> None:
    rng = np.random.default_rng(dim)
    patch = (64, 64) if dim == 2 else (16, 32, 32)
    if dim == 2:
        gen = AnchorGenerator([4, 8, 16, 32], None, SCALES, RATIOS, dim=2)
    else:
        gen = AnchorGenerator([4, 8, 16, 32], [1, 2, 4, 8], SCALES, RATIOS, dim=3)
    feats = [[p // 2 ** k for p in patch] for k in range(2, 6)]
    feats = [[max(f, 1) for f in shape] for shape in feats]
    anchors = gen(patch, feats)
    sizes = np.array(patch, dtype=float)
    for low in (0.1, 0.01):
        extent = rng.uniform(2, sizes / 2, size=(12, dim))
        lo = rng.uniform(0, sizes - extent)
        gt = torch.from_numpy(np.concatenate([lo, lo + extent], axis=1)).float()
        iou = box_iou(gt, anchors)
        matches = Matcher(low, 0.5)(iou)
        assert set(matches[matches >= 0].tolist()) == set(range(len(gt)))
        best = iou.max(dim=0).values
        assert (matches[best < low] == Matcher.BELOW_LOW).all()
        assert (matches[best >= 0.5] >= 0).all()
        between = matches == Matcher.BETWEEN
        assert ((best[between] >= low) & (best[between] < 0.5)).all()
        pos = matches >= 0
        # a positive anchor is matched to its best gt, or it is the best anchor of its gt
        own = iou[matches[pos], torch.nonzero(pos).flatten()]
        assert ((own == best[pos]) | (own == iou.max(dim=1).values[matches[pos]])).all()
