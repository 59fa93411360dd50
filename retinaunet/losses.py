"""Losses of Retina U-Net: classification with stochastic hard negative mining, smooth L1 on boxes,
segmentation cross-entropy plus soft Dice over the batch as one pseudo-volume (paper eq. 1).

Every function is finite on patches without objects: empty selections contribute zero, not NaN.
Anchor targets use the network's class numbering: -1 ignored, 0 background, c+1 for object class c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -1


def hard_negative_mining(
    fg_prob: Tensor, num_wanted: int, pool_factor: int = 20, generator: torch.Generator | None = None
) -> Tensor:
    """Stochastic hard negative mining over candidate negatives.

    fg_prob: Tensor[N] foreground probability of each negative anchor.
    Returns LongTensor[min(num_wanted, N)]: indices into fg_prob, drawn uniformly from the pool of the
    `pool_factor * num_wanted` negatives with the highest foreground probability.
    """
    n = fg_prob.numel()
    num_wanted = min(max(int(num_wanted), 0), n)
    if num_wanted == 0:
        return torch.zeros(0, dtype=torch.long, device=fg_prob.device)
    pool_size = min(n, max(int(pool_factor), 1) * num_wanted)
    pool = torch.topk(fg_prob, pool_size, sorted=False).indices
    pick = torch.randperm(pool_size, device=fg_prob.device, generator=generator)[:num_wanted]
    return pool[pick]


def sample_anchors(
    targets: Tensor, fg_prob: Tensor, pool_factor: int = 20, neg_per_pos: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Anchors that enter the classification loss of one image.

    targets: LongTensor[A] (-1 ignore, 0 background, >0 class); fg_prob: Tensor[A] (no grad needed).
    Returns (positive indices, sampled negative indices): all positives, and about
    `neg_per_pos` negatives per positive (at least one) by stochastic hard negative mining.
    """
    pos = torch.nonzero(targets > 0).squeeze(1)
    neg = torch.nonzero(targets == 0).squeeze(1)
    wanted = max(1, round(neg_per_pos * pos.numel()))
    picked = hard_negative_mining(fg_prob[neg], wanted, pool_factor, generator)
    return pos, neg[picked]


def classification_loss(
    logits: Tensor, targets: Tensor, pool_factor: int = 20, neg_per_pos: float = 1.0
) -> Tensor:
    """Softmax cross-entropy over positives and mined negatives, mined per image, averaged over the batch.

    logits: Tensor[B, A, K+1]; targets: LongTensor[B, A] (-1 ignore, 0 background, >0 class).
    """
    with torch.no_grad():
        fg_prob = 1.0 - torch.softmax(logits.detach().float(), dim=-1)[..., 0]
    rows, cols = [], []
    for b in range(logits.shape[0]):
        pos, neg = sample_anchors(targets[b], fg_prob[b], pool_factor, neg_per_pos)
        idx = torch.cat([pos, neg])
        rows.append(torch.full_like(idx, b))
        cols.append(idx)
    rows_t, cols_t = torch.cat(rows), torch.cat(cols)
    if rows_t.numel() == 0:  # no anchor at all (degenerate input): keep the graph, contribute zero
        return logits.sum() * 0.0
    return F.cross_entropy(logits[rows_t, cols_t].float(), targets[rows_t, cols_t])


def box_regression_loss(deltas: Tensor, target_deltas: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth L1 between predicted and target deltas of positive anchors, mean over elements.

    deltas, target_deltas: Tensor[P, 2*dim]. P == 0 gives a zero that keeps the graph.
    """
    if deltas.numel() == 0:
        return deltas.sum() * 0.0
    return F.smooth_l1_loss(deltas.float(), target_deltas.float(), beta=beta)


def soft_dice_loss(probs: Tensor, target: Tensor, smooth: float = 1e-5) -> Tensor:
    """1 - mean over classes of the soft Dice computed over the whole batch as one pseudo-volume.

    probs: Tensor[B, K+1, *S] softmax output; target: LongTensor[B, *S] class per voxel.
    """
    num_classes = probs.shape[1]
    one_hot = F.one_hot(target.long(), num_classes).movedim(-1, 1).to(probs.dtype)
    axes = [0, *range(2, probs.ndim)]
    inter = (probs * one_hot).sum(axes)
    denom = probs.sum(axes) + one_hot.sum(axes)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    return 1.0 - dice.mean()


def segmentation_losses(logits: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Pixel-wise cross-entropy and batch soft Dice (paper eq. 1, Dice shifted to be >= 0).

    logits: Tensor[B, K+1, *S]; target: LongTensor[B, *S] with 0 background, c+1 for class c.
    Returns {"seg_ce": ..., "seg_dice": ...}.
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, target.long())
    dice = soft_dice_loss(torch.softmax(logits, dim=1), target)
    return {"seg_ce": ce, "seg_dice": dice}
