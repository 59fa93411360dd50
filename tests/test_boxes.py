"""IoU, box coder, clipping and boxes of instance maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaunet.boxes import (
    BoxCoder,
    box_iou,
    box_iou_np,
    box_size,
    box_volume,
    boxes_from_instance_map,
    clip_boxes,
)


def reference_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            dim = len(p) // 2
            inter, vol_p, vol_q = 1.0, 1.0, 1.0
            for k in range(dim):
                inter *= max(0.0, min(p[dim + k], q[dim + k]) - max(p[k], q[k]))
                vol_p *= p[dim + k] - p[k]
                vol_q *= q[dim + k] - q[k]
            out[i, j] = inter / (vol_p + vol_q - inter)
    return out


def random_boxes(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    lo = rng.uniform(0, 30, size=(n, dim))
    return np.concatenate([lo, lo + rng.uniform(1, 15, size=(n, dim))], axis=1)


@pytest.mark.parametrize("dim", [2, 3])
def test_iou_matches_reference(dim: int) -> None:
    rng = np.random.default_rng(dim)
    a, b = random_boxes(rng, 40, dim), random_boxes(rng, 30, dim)
    expected = reference_iou(a, b)
    assert 0.05 < (expected > 0).mean() < 0.95  # both overlapping and disjoint pairs
    got_np = box_iou_np(a, b)
    assert got_np.dtype == np.float64 and got_np.shape == (40, 30)
    np.testing.assert_allclose(got_np, expected, rtol=1e-12, atol=1e-12)
    got_t = box_iou(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=1e-12, atol=1e-12)
    got_32 = box_iou(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert got_32.dtype == torch.float32
    np.testing.assert_allclose(got_32.numpy(), expected, atol=1e-5)


def test_iou_known_values_and_edge_cases() -> None:
    a = torch.tensor([[0, 0, 2, 2]])
    b = torch.tensor([[1, 1, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [0, 0, 0, 0]])
    expected = [[1 / 7, 1.0, 0.0, 0.0]]  # touching boxes do not overlap (half-open), empty box -> 0
    assert torch.allclose(box_iou(a, b), torch.tensor(expected))
    np.testing.assert_allclose(box_iou_np(a.numpy(), b.numpy()), expected)
    cube = np.array([[0, 0, 0, 2, 2, 2]])
    np.testing.assert_allclose(box_iou_np(cube, cube + np.array([1, 0, 0, 1, 0, 0])), [[4 / 12]])
    assert box_iou(torch.zeros(0, 6), torch.rand(3, 6)).shape == (0, 3)
    assert box_iou_np(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)
    with pytest.raises(ValueError):
        box_iou(torch.zeros(1, 4), torch.zeros(1, 6))


def test_size_and_volume() -> None:
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0, 7.0, 5.0], [0.0, 0.0, 0.0, 1.0, -1.0, 1.0]])
    assert box_size(boxes).tolist() == [[3.0, 5.0, 2.0], [1.0, -1.0, 1.0]]
    assert box_volume(boxes).tolist() == [30.0, 0.0]
    assert box_volume(boxes[:, [0, 1, 3, 4]]).tolist() == [15.0, 0.0]


@pytest.mark.parametrize("dim", [2, 3])
def test_coder_roundtrip(dim: int) -> None:
    rng = np.random.default_rng(10 + dim)
    anchors = torch.from_numpy(random_boxes(rng, 50, dim))
    gt = torch.from_numpy(random_boxes(rng, 50, dim))
    coder = BoxCoder(std_center=0.1, std_size=0.2)
    deltas = coder.encode(gt, anchors)
    assert deltas.shape == (50, 2 * dim)
    assert torch.allclose(coder.decode(deltas, anchors), gt, atol=1e-9)
    assert torch.allclose(coder.encode(anchors, anchors), torch.zeros_like(deltas))


def test_coder_values_and_clamp() -> None:
    anchor = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    gt = torch.tensor([[1.0, 0.0, 5.0, 8.0]])  # centre moved by (1, 2), size (4, 8)
    deltas = BoxCoder(0.1, 0.2).encode(gt, anchor)
    expected = torch.tensor([[0.25 / 0.1, 0.5 / 0.1, 0.0, float(np.log(2.0)) / 0.2]])
    assert torch.allclose(deltas, expected)
    huge = BoxCoder().decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), anchor)
    assert torch.isfinite(huge).all()
    assert torch.allclose(box_size(huge), torch.tensor([[4 * 1000 / 16, 4 * 1000 / 16]]))


def test_clip_boxes() -> None:
    boxes = torch.tensor([[-3.0, 2.0, 10.0, 5.0], [1.0, -1.0, 4.0, 12.0]])
    assert clip_boxes(boxes, (8, 9)).tolist() == [[0.0, 2.0, 8.0, 5.0], [1.0, 0.0, 4.0, 9.0]]
    boxes3 = torch.tensor([[-1.0, 0.0, 2.0, 3.0, 40.0, 9.0]])
    assert clip_boxes(boxes3, (2, 32, 8)).tolist() == [[0.0, 0.0, 2.0, 2.0, 32.0, 8.0]]
    assert boxes[0, 0] == -3.0  # input untouched
    with pytest.raises(ValueError):
        clip_boxes(boxes, (8, 9, 10))


def test_boxes_from_instance_map() -> None:
    inst = np.zeros((6, 7), dtype=np.int32)
    inst[2, 3] = 1  # one voxel at (2, 3) spans [2, 3) x [3, 4)
    inst[0:2, 4:7] = 3
    inst[5, 0] = 3  # same id elsewhere: the box covers both parts
    boxes = boxes_from_instance_map(inst)
    assert sorted(boxes) == [1, 3]
    assert boxes[1].tolist() == [2, 3, 3, 4]
    assert boxes[3].tolist() == [0, 0, 6, 7]
    assert boxes[1].dtype == np.int64

    vol = np.zeros((4, 5, 6), dtype=np.uint16)
    vol[1:3, 2, 0:6] = 7
    assert {k: v.tolist() for k, v in boxes_from_instance_map(vol).items()} == {7: [1, 2, 0, 3, 3, 6]}
    assert boxes_from_instance_map(np.zeros((3, 3))) == {}
    # matches a brute-force box per id
    rng = np.random.default_rng(0)
    inst = rng.integers(0, 5, size=(9, 8, 7)) * (rng.uniform(size=(9, 8, 7)) < 0.1)
    for index, box in boxes_from_instance_map(inst).items():
        where = np.argwhere(inst == index)
        assert box.tolist() == [*where.min(0).tolist(), *(where.max(0) + 1).tolist()]
