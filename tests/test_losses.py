from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retinaunet.losses import (
    box_regression_loss,
    classification_loss,
    hard_negative_mining,
    sample_anchors,
    segmentation_losses,
    soft_dice_loss,
)


def test_hard_negative_mining_draws_from_the_hardest_pool():
    torch.manual_seed(0)
    fg = torch.rand(1000)
    picked = hard_negative_mining(fg, num_wanted=3, pool_factor=20)
    assert picked.numel() == 3 and picked.unique().numel() == 3
    pool = set(torch.topk(fg, 60).indices.tolist())
    assert set(picked.tolist()) <= pool
    # pool factor 1: the pool is exactly the hardest negatives
    assert set(hard_negative_mining(fg, 5, pool_factor=1).tolist()) == set(torch.topk(fg, 5).indices.tolist())
    # stochastic: repeated draws do not always give the same negatives
    draws = {tuple(sorted(hard_negative_mining(fg, 3, 20).tolist())) for _ in range(10)}
    assert len(draws) > 1


def test_hard_negative_mining_edge_cases():
    assert hard_negative_mining(torch.rand(0), 4).numel() == 0
    assert hard_negative_mining(torch.rand(3), 10).numel() == 3  # fewer negatives than wanted
    assert hard_negative_mining(torch.rand(5), 0).numel() == 0


def test_sample_anchors_counts():
    torch.manual_seed(0)
    targets = torch.zeros(500, dtype=torch.long)
    targets[[3, 50, 77, 400, 401]] = torch.tensor([1, 2, 1, 1, 2])
    targets[100:200] = -1  # ignored (between thresholds)
    fg = torch.rand(500)
    fg[100:200] = 2.0  # ignored anchors look hardest but must never be picked
    pos, neg = sample_anchors(targets, fg, pool_factor=20)
    assert sorted(pos.tolist()) == [3, 50, 77, 400, 401]
    assert neg.numel() == 5
    assert (targets[neg] == 0).all()
    # no object: still one negative, so the background keeps being learned
    empty = torch.zeros(300, dtype=torch.long)
    pos, neg = sample_anchors(empty, torch.rand(300))
    assert pos.numel() == 0 and neg.numel() == 1
    # negative ratio
    _, neg = sample_anchors(targets, fg, neg_per_pos=3.0)
    assert neg.numel() == 15


def test_classification_loss_matches_cross_entropy_on_the_selection():
    torch.manual_seed(0)
    logits = torch.randn(2, 40, 3, requires_grad=True)
    targets = torch.zeros(2, 40, dtype=torch.long)
    targets[0, :20] = 1
    targets[0, 20:] = -1
    targets[1, :10] = 2
    targets[1, 10:30] = -1
    # image 0: 20 positives and no negatives; image 1: 10 positives and exactly 10 negatives -> deterministic
    loss = classification_loss(logits, targets, pool_factor=20)
    sel = torch.cat([logits[0, :20], logits[1, :10], logits[1, 30:]])
    tgt = torch.cat([targets[0, :20], targets[1, :10], targets[1, 30:]])
    assert torch.allclose(loss, F.cross_entropy(sel, tgt))
    loss.backward()
    assert logits.grad[0, 20:].abs().sum() == 0  # ignored anchors get no gradient


def test_classification_loss_finite_without_objects():
    torch.manual_seed(0)
    logits = torch.randn(3, 1000, 2, requires_grad=True)
    targets = torch.zeros(3, 1000, dtype=torch.long)
    loss = classification_loss(logits, targets)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum(-1) > 0).sum() == 3  # one mined negative per image
    # nothing to learn at all (every anchor ignored): zero, not NaN, graph kept
    zero = classification_loss(logits, torch.full((3, 1000), -1))
    assert zero.item() == 0.0 and zero.requires_grad


def test_box_regression_loss():
    pred = torch.tensor([[0.0, 0.0, 0.0, 3.0]], requires_grad=True)
    target = torch.zeros(1, 4)
    loss = box_regression_loss(pred, target, beta=1.0)
    assert loss.item() == pytest.approx((3.0 - 0.5) / 4)
    empty = box_regression_loss(torch.zeros(0, 6, requires_grad=True), torch.zeros(0, 6))
    assert empty.item() == 0.0 and empty.requires_grad


def test_soft_dice_over_the_batch_as_one_volume():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, 2:5, 2:5] = 1  # class 1 only in image 0, class 2 only in image 1
    target[1, 4:6, 4:7] = 2
    perfect = F.one_hot(target, 3).movedim(-1, 1).float()
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # a false positive of class 1 in image 1 is penalised although image 1 has no class 1
    fp = perfect.clone()
    fp[1, 1, 0:2, 0:2] = 1.0
    fp[1, 0, 0:2, 0:2] = 0.0
    assert soft_dice_loss(fp, target) > 0.01
    # the pseudo-volume formula: per class over all voxels of the batch
    probs = torch.softmax(torch.randn(2, 3, 8, 8), dim=1)
    inter = (probs * perfect).sum((0, 2, 3))
    den = probs.sum((0, 2, 3)) + perfect.sum((0, 2, 3))
    manual = 1 - ((2 * inter + 1e-5) / (den + 1e-5)).mean()
    assert torch.allclose(soft_dice_loss(probs, target), manual)


@pytest.mark.parametrize("shape", [(2, 16, 16), (2, 4, 8, 8)])
def test_segmentation_losses_finite_on_empty_patches(shape):
    logits = torch.randn(shape[0], 3, *shape[1:], requires_grad=True)
    target = torch.zeros(shape, dtype=torch.long)
    losses = segmentation_losses(logits, target)
    assert set(losses) == {"seg_ce", "seg_dice"}
    total = losses["seg_ce"] + losses["seg_dice"]
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
