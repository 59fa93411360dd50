"""NMS (torch and numba) against a plain sequential reference loop, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaunet.boxes import batched_nms, batched_nms_np, nms, nms_np
from retinaunet.boxes.suppression import _nms_torch


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    dim = len(a) // 2
    inter = 1.0
    for k in range(dim):
        inter *= max(min(a[dim + k], b[dim + k]) - max(a[k], b[k]), 0.0)
    vol_a = float(np.prod(np.maximum(a[dim:] - a[:dim], 0.0)))
    vol_b = float(np.prod(np.maximum(b[dim:] - b[:dim], 0.0)))
    union = vol_a + vol_b - inter
    return inter / union if union > 0 else 0.0


def reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, idxs: np.ndarray | None = None) -> list:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    keep: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= thr for j in keep if idxs is None or idxs[j] == idxs[i]):
            keep.append(i)
    return keep


def random_boxes(rng: np.random.Generator, n: int, dim: int, extent: float = 64.0) -> np.ndarray:
    """Boxes jittered around a few object centres, so that many of them overlap."""
    objects = rng.uniform(0, extent, size=(max(n // 20, 1), dim))
    centre = objects[rng.integers(0, len(objects), size=n)] + rng.normal(0, 3, size=(n, dim))
    size = rng.uniform(2, extent / 4, size=(n, dim))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("thr", [0.1, 0.5])
def test_nms_matches_reference(dim: int, thr: float) -> None:
    rng = np.random.default_rng(dim * 10 + int(thr * 10))
    n = 300
    boxes = random_boxes(rng, n, dim)
    scores = rng.integers(0, 40, size=n).astype(np.float64)  # many ties
    expected = reference_nms(boxes, scores, thr)
    assert 1 < len(expected) < n
    assert nms_np(boxes, scores, thr).tolist() == expected
    kept_t = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr)
    assert kept_t.dtype == torch.long
    assert kept_t.tolist() == expected


def test_nms_blocks_and_chains() -> None:
    """Several blocks, and a long suppression chain (boxes shifted step by step)."""
    rng = np.random.default_rng(3)
    chain = np.array([[i * 1.5, 0.0, i * 1.5 + 10.0, 10.0] for i in range(120)])
    boxes = np.concatenate([chain, random_boxes(rng, 600, 2, extent=200.0)])
    scores = np.concatenate([np.linspace(1.0, 0.9, 120), rng.uniform(0, 1, 600)])
    expected = reference_nms(boxes, scores, 0.3)
    assert len(expected) > 150

    for block in (32, 128):  # kept boxes of earlier blocks are compared in chunks of 4 * block
        got = _nms_torch(torch.from_numpy(boxes), torch.from_numpy(scores), None, 0.3, block=block)
        assert got.tolist() == expected
    assert nms_np(boxes, scores, 0.3).tolist() == expected


@pytest.mark.parametrize("dim", [2, 3])
def test_batched_nms_matches_reference(dim: int) -> None:
    rng = np.random.default_rng(7 + dim)
    n = 300
    boxes = random_boxes(rng, n, dim)
    scores = rng.uniform(0, 1, size=n)
    idxs = rng.integers(0, 3, size=n)
    expected = reference_nms(boxes, scores, 0.2, idxs)
    assert expected != reference_nms(boxes, scores, 0.2)  # groups matter here
    assert batched_nms_np(boxes, scores, idxs, 0.2).tolist() == expected
    got = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.2)
    assert got.tolist() == expected


def test_nms_edge_cases() -> None:
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long
    assert nms_np(np.zeros((0, 6)), np.zeros(0), 0.5).shape == (0,)
    # identical boxes and equal scores: the first one wins (stable order)
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 4], [10, 10, 12, 12]], dtype=np.float32)
    scores = np.array([0.5, 0.5, 0.1], dtype=np.float32)
    assert nms_np(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist() == [0, 2]
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold)
    half = np.array([[0, 0, 2, 2], [0, 0, 2, 1]], dtype=np.float64)
    assert nms_np(half, np.array([1.0, 0.5]), 0.5).tolist() == [0, 1]
    assert nms(torch.from_numpy(half), torch.tensor([1.0, 0.5]), 0.5).tolist() == [0, 1]
    assert nms(torch.from_numpy(half), torch.tensor([1.0, 0.5]), 0.49).tolist() == [0]
