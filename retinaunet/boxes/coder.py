"""Encode boxes as regression targets relative to anchors and decode them back."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BoxCoder"]


class BoxCoder:
    """Centre/size box deltas, divided by fixed standard deviations (2D and 3D).

    For an anchor with centre ``c_a`` and size ``s_a`` and a box with centre ``c`` and size ``s`` the
    deltas are ``(c - c_a) / s_a / std_center`` (one per axis) followed by ``log(s / s_a) / std_size``
    (one per axis): ``Tensor[N, 2*dim]`` with the same column layout as the boxes.

    Args:
        std_center: divisor of the centre offsets (paper: 0.1).
        std_size: divisor of the log size ratios (paper: 0.2).
        max_log_ratio: decoding clamps the log size ratio at this value, so a wild prediction cannot
            overflow ``exp`` (default ``log(1000 / 16)``: at most 62.5 times the anchor size).

    Example:
        >>> coder = BoxCoder()
        >>> deltas = coder.encode(gt_boxes, anchors)      # both Tensor[N, 4] or Tensor[N, 6]
        >>> torch.allclose(coder.decode(deltas, anchors), gt_boxes)
    """

    def __init__(self, std_center: float = 0.1, std_size: float = 0.2,
                 max_log_ratio: float = math.log(1000.0 / 16)) -> None:
        self.std_center = float(std_center)
        self.std_size = float(std_size)
        self.max_log_ratio = float(max_log_ratio)

    @staticmethod
    def _center_size(boxes: Tensor) -> tuple[Tensor, Tensor]:
        dim = boxes.shape[-1] // 2
        lo, hi = boxes[..., :dim], boxes[..., dim:]
        return (lo + hi) * 0.5, hi - lo

    def encode(self, gt: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets of ``gt`` w.r.t. ``anchors``.

        gt: Tensor[N, 2*dim], anchors: Tensor[N, 2*dim] (row i of gt is matched to anchor i)
        -> Tensor[N, 2*dim] deltas in the dtype of ``anchors``.
        """
        if gt.shape != anchors.shape:
            raise ValueError(f"gt {tuple(gt.shape)} and anchors {tuple(anchors.shape)} must have one shape")
        gt = gt.to(anchors.dtype)
        c_a, s_a = self._center_size(anchors)
        c_g, s_g = self._center_size(gt)
        d_center = (c_g - c_a) / s_a / self.std_center
        d_size = torch.log(s_g / s_a) / self.std_size
        return torch.cat([d_center, d_size], dim=-1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from predicted deltas.

        deltas: Tensor[N, 2*dim], anchors: Tensor[N, 2*dim] -> boxes Tensor[N, 2*dim].
        """
        if deltas.shape != anchors.shape:
            raise ValueError(f"deltas {tuple(deltas.shape)} and anchors {tuple(anchors.shape)} "
                             "must have one shape")
        dim = anchors.shape[-1] // 2
        anchors = anchors.to(deltas.dtype)
        c_a, s_a = self._center_size(anchors)
        center = c_a + deltas[..., :dim] * self.std_center * s_a
        log_ratio = (deltas[..., dim:] * self.std_size).clamp(max=self.max_log_ratio)
        half = torch.exp(log_ratio) * s_a * 0.5
        return torch.cat([center - half, center + half], dim=-1)
