from __future__ import annotations

import numpy as np
import pytest
import retinaunet.inference.raw as raw_module
import torch
from retinaunet.inference.predictor import Predictor, flip_boxes, mirror_views
from torch import nn

from retinaunet.models import Detections, build_model
from retinaunet.plans import make_test_plans


class FixedBoxDetector(nn.Module):
    """Always reports the same box in its own input frame."""

    def __init__(self, box, label=0, score=0.8):
        super().__init__()
        self.box, self.label, self.score = list(box), label, score

    def predict(self, images):
        n = images.shape[0]
        box = torch.tensor([self.box], dtype=torch.float32)
        return Detections([box.clone() for _ in range(n)], [torch.tensor([self.score])] * n,
                          [torch.tensor([self.label])] * n, None)


class SpotDetector(nn.Module):
    """A perfect detector: the bounding box of the voxels > 0.5 of channel 0, class 0, score 0.9,
    and the matching one-hot segmentation."""

    def predict(self, images):
        boxes, scores, labels = [], [], []
        dim = images.ndim - 2
        for img in images:
            idx = torch.nonzero(img[0] > 0.5)
            if len(idx):
                boxes.append(torch.cat([idx.min(0).values, idx.max(0).values + 1]).float()[None])
                scores.append(torch.tensor([0.9]))
                labels.append(torch.tensor([0]))
            else:
                boxes.append(torch.zeros((0, 2 * dim)))
                scores.append(torch.zeros(0))
                labels.append(torch.zeros(0, dtype=torch.long))
        fg = (images[:, :1] > 0.5).float()
        return Detections(boxes, scores, labels, torch.cat([1 - fg, fg], dim=1))


def record_consolidate(monkeypatch):
    calls = []
    original = raw_module.consolidate

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(raw_module, "consolidate", wrapper)
    return calls


def test_mirror_views_are_all_subsets():
    assert mirror_views([0, 1]) == [(), (0,), (1,), (0, 1)]
    assert len(mirror_views([0, 1, 2])) == 8


def test_flip_boxes_matches_a_flipped_mask_and_is_an_involution():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 7:11] = True
    box = torch.tensor([[2.0, 7.0, 5.0, 11.0]])
    flipped = np.flip(mask, axis=(0, 1))
    idx = np.argwhere(flipped)
    expected = np.concatenate([idx.min(0), idx.max(0) + 1])
    np.testing.assert_array_equal(flip_boxes(box, (0, 1), (10, 12))[0].numpy(), expected)
    np.testing.assert_array_equal(flip_boxes(flip_boxes(box, (1,), (10, 12)), (1,), (10, 12)), box)


def test_mirrored_views_flip_fixed_box_back_into_the_input_frame():
    plans = make_test_plans(dim=2, num_classes=1, patch_size=[16, 16])
    pred = Predictor([FixedBoxDetector([2, 3, 6, 10])], plans)
    dets, seg = pred._forward(torch.zeros(1, 1, 16, 16))
    boxes, scores, labels, views = dets[0]
    assert seg is None
    assert list(views) == [0, 1, 2, 3]
    # identity, flip y, flip x, flip both: the box a detector reports in a flipped frame, seen unflipped
    np.testing.assert_array_equal(boxes, [[2, 3, 6, 10], [10, 3, 14, 10], [2, 6, 6, 13], [10, 6, 14, 13]])


@pytest.mark.parametrize("consolidation", ["wbc", "nms"])
def test_perfect_detector_gives_exact_box_and_seg_over_tiles_views_and_members(monkeypatch, consolidation):
    plans = make_test_plans(dim=2, num_classes=1, patch_size=[16, 16])
    data = np.zeros((1, 40, 50), dtype=np.float32)
    data[0, 20:23, 30:34] = 1.0  # fully inside 2 x 2 of the tiles, touching no other
    calls = record_consolidate(monkeypatch)
    pred = Predictor([SpotDetector(), SpotDetector()], plans, consolidation=consolidation, batch_size=3,
                     keep_seg=True)
    out = pred.predict_case(data)
    np.testing.assert_allclose(out.boxes, [[20, 30, 23, 34]])
    np.testing.assert_allclose(out.scores, [0.9])
    assert list(out.labels) == [0]
    np.testing.assert_array_equal(out.seg, data[0] > 0.5)
    (args, kwargs), = calls
    views, expected = args[3], args[5]
    assert len(views) == 2 * 4 * 4 and len(np.unique(views)) == 32  # members x mirrorings x tiles
    np.testing.assert_allclose(expected, 32.0)


def test_missing_views_damp_the_wbc_score():
    plans = make_test_plans(dim=2, num_classes=1, patch_size=[16, 16])
    data = np.zeros((1, 16, 16), dtype=np.float32)
    # one member always finds a box, the other never: half the expected views are missing
    blind = FixedBoxDetector([0, 0, 1, 1], score=0.9)
    blind.predict = lambda images: Detections([torch.zeros((0, 4))] * len(images), [torch.zeros(0)] * len(images),
                                              [torch.zeros(0, dtype=torch.long)] * len(images))
    pred = Predictor([FixedBoxDetector([4, 4, 12, 12], score=0.9), blind], plans, mirror=False, keep_seg=False)
    out = pred.predict_case(data)
    np.testing.assert_allclose(out.boxes, [[4, 4, 12, 12]])
    np.testing.assert_allclose(out.scores, [0.45])  # 0.9 * 1 / (1 + 1 missing)
    assert out.seg is None


def test_boxes_are_shifted_by_the_tile_and_clipped_to_the_image():
    plans = make_test_plans(dim=2, num_classes=1, patch_size=[16, 16])
    data = np.zeros((1, 10, 16), dtype=np.float32)  # padded by 3 above and below
    pred = Predictor([FixedBoxDetector([0, 2, 5, 6])], plans, mirror=False, keep_seg=False, consolidation="nms")
    out = pred.predict_case(data)
    np.testing.assert_allclose(out.boxes, [[0, 2, 2, 6]])  # tile start -3 shifts [0, 5) to [-3, 2), clipped


def test_wrong_channels_or_dims_are_refused():
    plans = make_test_plans(dim=2, num_classes=1, patch_size=[16, 16])
    pred = Predictor([SpotDetector()], plans)
    with pytest.raises(ValueError, match="channels"):
        pred.predict_case(np.zeros((2, 16, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="cannot predict"):
        Predictor([SpotDetector()], make_test_plans(dim=3)).predict_case(np.zeros((1, 16, 16), dtype=np.float32))


def test_2d_plan_on_3d_data_predicts_slices_and_merges_them():
    plans = make_test_plans(dim=2, num_classes=1, patch_size=[16, 16])
    plans.data_dim = 3
    data = np.zeros((1, 9, 20, 16), dtype=np.float32)
    data[0, 3:6, 5:9, 4:7] = 1.0
    out = Predictor([SpotDetector()], plans, keep_seg=True).predict_case(data)
    assert out.boxes.shape == (1, 6)
    np.testing.assert_allclose(out.boxes[0], [3, 5, 4, 6, 9, 7])
    np.testing.assert_array_equal(out.seg, data[0] > 0.5)


def test_2dc_plan_feeds_context_slices_as_channels():
    plans = make_test_plans(dim=2, num_classes=1, patch_size=[16, 16], mode="2dc", in_channels=3)
    plans.context_slices = 1
    seen = []

    class Recorder(SpotDetector):
        def predict(self, images):
            seen.append(images.clone())
            return super().predict(images[:, 1:2])  # the centre slice

    data = np.arange(4, dtype=np.float32)[None, :, None, None] * np.ones((1, 4, 16, 16), dtype=np.float32)
    Predictor([Recorder()], plans, mirror=False, batch_size=4).predict_case(data)
    x = seen[0]
    assert x.shape == (4, 3, 16, 16)
    assert x[0, :, 0, 0].tolist() == [0, 0, 1] and x[3, :, 0, 0].tolist() == [2, 3, 0]


@pytest.mark.parametrize("dim,patch,shape", [(2, [64, 64], (1, 70, 100)), (3, [8, 32, 32], (1, 10, 40, 33))])
def test_real_tiny_model_predicts_a_whole_case(dim, patch, shape):
    torch.manual_seed(0)
    plans = make_test_plans(dim=dim, num_classes=2, patch_size=patch)
    plans.inference.decode_min_score = 0.0  # random weights: keep whatever comes out
    model = build_model("retina_unet", plans)
    torch.nn.init.zeros_(model.network.cls_head.out.bias)  # no foreground prior: random scores near 1/3
    out = Predictor([model], plans, mirror=dim == 2, batch_size=4, keep_seg=True).predict_case(
        np.random.default_rng(0).normal(size=shape).astype(np.float32))
    assert out.seg.shape == shape[1:] and out.seg.dtype == np.uint8 and out.seg.max() <= 2
    assert out.boxes.shape[1] == 2 * dim and len(out.boxes) == len(out.scores) == len(out.labels)
    assert len(out.boxes) > 0
    assert (out.boxes[:, :dim] >= 0).all() and (out.boxes[:, dim:] <= np.array(shape[1:])).all()
    assert set(out.labels.tolist()) <= {0, 1}
    assert np.all(np.diff(out.scores) <= 0)
