"""One optimisation step, shared by the trainer and the distributed tests."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from retinaunet.training.distributed import DistContext, all_finite


class LossModule(nn.Module):
    """Wraps a detector so that ``forward`` returns its named losses (what DistributedDataParallel needs)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor, boxes: list[Tensor], labels: list[Tensor], seg: Tensor | None
                ) -> dict[str, Tensor]:
        return self.detector.compute_losses(images, boxes, labels, seg)


@dataclass
class StepResult:
    losses: dict[str, float]
    skipped: bool


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; nothing elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(module: nn.Module, optimizer: torch.optim.Optimizer, batch, device: torch.device,
               ctx: DistContext | None = None, amp: bool = False, max_grad_norm: float = 12.0) -> StepResult:
    """Forward, backward and update on one batch; a non-finite loss (on any rank) skips the update."""
    ctx = ctx or DistContext()
    images = batch.images.to(device, non_blocking=True)
    boxes = [b.to(device) for b in batch.boxes]
    labels = [lab.to(device) for lab in batch.labels]
    seg = batch.seg.to(device) if batch.seg is not None else None
    optimizer.zero_grad(set_to_none=True)
    with autocast_for(device, amp):
        losses = module(images, boxes, labels, seg)
    total = losses["loss"].float()
    if not all_finite(total.detach(), ctx):
        return StepResult({k: float("nan") for k in losses}, skipped=True)
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)
    if not torch.isfinite(norm):  # gradients are averaged over ranks, so every rank decides the same
        optimizer.zero_grad(set_to_none=True)
        return StepResult({k: float("nan") for k in losses}, skipped=True)
    optimizer.step()
    return StepResult({k: float(v.detach()) for k, v in losses.items()}, skipped=False)
