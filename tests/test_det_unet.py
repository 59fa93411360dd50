"""DetU-Net: boxes from connected components of the segmentation, and it overfits toy patches."""

from __future__ import annotations

import numpy as np
import torch

from retinaunet.boxes import box_iou
from retinaunet.models import build_model
from retinaunet.models.det_unet import component_boxes
from retinaunet.plans import make_test_plans
from tests.test_overfit import OBJECTS, SIZE, toy_batch, train_steps


def _probs(shape, blobs, fg=0.55):
    """Softmax-like maps [3, *shape]: background 1 except in the blobs (class, slices, peak probability)."""
    probs = np.zeros((3, *shape), np.float32)
    probs[0] = 1.0
    for cls, sl, peak in blobs:
        region = (slice(None), *sl)
        probs[region] = (1 - fg) / 2
        probs[(cls + 1, *sl)] = fg
        corner = tuple(s.start for s in sl)
        probs[(cls + 1, *corner)] = peak  # the component's highest probability
        probs[(0, *corner)] = (1 - peak) / 2
        probs[(2 - cls, *corner)] = (1 - peak) / 2
    return probs


def test_component_boxes_2d_and_3d():
    blobs = [(0, (slice(2, 6), slice(3, 9)), 0.95), (0, (slice(10, 12), slice(10, 11)), 0.6),
             (1, (slice(12, 20), slice(0, 4)), 0.8)]
    boxes, scores, labels = component_boxes(_probs((24, 24), blobs), max_components=5)
    assert labels.tolist() == [0, 1, 0] and np.allclose(scores, [0.95, 0.8, 0.6])
    assert boxes.tolist() == [[2, 3, 6, 9], [12, 0, 20, 4], [10, 10, 12, 11]]  # half-open index boxes
    # only the largest components are kept (the 2-voxel one goes first), then the score floor applies
    boxes, scores, labels = component_boxes(_probs((24, 24), blobs), max_components=2)
    assert labels.tolist() == [0, 1] and boxes.tolist() == [[2, 3, 6, 9], [12, 0, 20, 4]]
    _, scores, _ = component_boxes(_probs((24, 24), blobs), max_components=5, min_score=0.7)
    assert np.allclose(scores, [0.95, 0.8])
    b3, s3, l3 = component_boxes(_probs((6, 10, 10), [(1, (slice(1, 3), slice(2, 5), slice(4, 8)), 0.7)]), 15)
    assert b3.tolist() == [[1, 2, 4, 3, 5, 8]] and l3.tolist() == [1] and np.allclose(s3, [0.7])
    empty = component_boxes(_probs((8, 8), []), 5)
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)


def test_det_unet_overfits_toy_patches():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        plans = make_test_plans(dim=2, num_classes=2, patch_size=[SIZE, SIZE])
        det = build_model("det_unet", plans)
        assert not any(n.startswith(("network.cls_head", "network.box_head")) for n, _ in det.named_parameters())
        images, boxes, labels, seg = toy_batch()
        history = train_steps(det, images, boxes, labels, seg, 120)
        assert set(history[-1]) == {"loss", "seg_ce", "seg_dice"}
        assert history[-1]["loss"] < 0.3 * history[0]["loss"]
        det.eval()
        dets = det.predict(images)
    finally:
        torch.set_num_threads(threads)
    for b in range(len(OBJECTS)):
        iou = box_iou(boxes[b], dets.boxes[b])
        for g in range(boxes[b].shape[0]):
            best = int(iou[g].argmax())
            assert iou[g, best] > 0.7, (b, g, iou[g].tolist())
            assert dets.labels[b][best] == labels[b][g] and dets.scores[b][best] > 0.5
