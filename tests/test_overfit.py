"""A Retina U-Net and a Retina Net each overfit four toy patches (filled vs hollow circles) on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaunet.boxes import box_iou
from retinaunet.models import build_model
from retinaunet.plans import make_test_plans

SIZE = 64
# (centre y, centre x, radius, class) per patch; class 0 filled, class 1 hollow (hole cut from the mask)
OBJECTS = [
    [(20, 22, 10, 0), (44, 44, 9, 1)],
    [(32, 30, 11, 1)],
    [(18, 44, 9, 0), (46, 18, 10, 0)],
    [(40, 38, 12, 1), (14, 12, 8, 0)],
]
HOLE = 5


def toy_batch(seed: int = 0):
    """images Tensor[4, 1, 64, 64], boxes/labels per patch, seg LongTensor[4, 64, 64] (c+1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, seg, boxes, labels = [], [], [], []
    for objs in OBJECTS:
        img = np.zeros((SIZE, SIZE), np.float32)
        sm = np.zeros((SIZE, SIZE), np.int64)
        bx, lb = [], []
        for cy, cx, r, cls in objs:
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            mask = d2 <= r * r
            if cls == 1:
                mask &= d2 > HOLE * HOLE
            img[mask] = 1.0
            sm[mask] = cls + 1
            ys, xs = np.nonzero(mask)
            bx.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
            lb.append(cls)
        img += rng.normal(0.0, 0.1, img.shape).astype(np.float32)
        images.append(img[None])
        seg.append(sm)
        boxes.append(torch.tensor(bx, dtype=torch.float32))
        labels.append(torch.tensor(lb))
    return torch.from_numpy(np.stack(images)), boxes, labels, torch.from_numpy(np.stack(seg))


def train_steps(det, images, boxes, labels, seg, steps: int, lr: float = 1e-3) -> list[dict[str, float]]:
    """Adam steps on one fixed batch; the losses of every step."""
    opt = torch.optim.Adam(det.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        losses = det.compute_losses(images, boxes, labels, seg)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    return history


def assert_each_object_detected(dets, boxes, labels, model: str) -> None:
    """The best-scoring detection with IoU > 0.5 on every object has its class and a score above 0.5."""
    for b in range(len(boxes)):
        assert dets.boxes[b].shape[0] > 0
        iou = box_iou(boxes[b], dets.boxes[b])  # [G, D]
        for g in range(boxes[b].shape[0]):
            hits = torch.nonzero(iou[g] > 0.5).squeeze(1)
            assert hits.numel() > 0, f"{model}: object {g} of patch {b} missed, IoUs {iou[g].tolist()}"
            top = hits[dets.scores[b][hits].argmax()]
            print(model, b, g, "iou", round(iou[g, top].item(), 3), "score", round(dets.scores[b][top].item(), 3))
            assert dets.labels[b][top] == labels[b][g]
            assert dets.scores[b][top] > 0.5


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("model", ["retina_unet", "retina_net"])
def test_overfit_toy_patches(model, one_thread):
    torch.manual_seed(0)
    plans = make_test_plans(dim=2, num_classes=2, patch_size=[SIZE, SIZE])
    # anchors that fit the 17-25 px objects (the paper's code used 8..64), as the planner would choose
    plans.override("anchors.base_sizes", [8.0, 16.0, 32.0, 64.0])
    det = build_model(model, plans)
    images, boxes, labels, seg = toy_batch()
    history = train_steps(det, images, boxes, labels, seg, 200)
    first, last = history[0], history[-1]
    print(model, "first", first, "last", last)
    assert all(np.isfinite(h["loss"]) for h in history)
    assert np.mean([h["loss"] for h in history[-10:]]) < 0.3 * first["loss"]
    assert last["cls"] < 0.3 * first["cls"] and last["box"] < 0.5 * first["box"]

    det.eval()
    dets = det.predict(images)
    assert_each_object_detected(dets, boxes, labels, model)
    if model == "retina_unet":
        pred = dets.seg.argmax(1)
        fg_acc = (pred[seg > 0] == seg[seg > 0]).float().mean()
        assert fg_acc > 0.8
