"""U-FPN: the FPN top-down path P5..P2, optionally extended to P1 and P0 (paper Figure 2).

With `min_level=0` the pyramid resembles a U-Net decoder (Retina U-Net); with `min_level=2` it is the
plain FPN of Retina Net. Every output level has `fpn_channels` feature maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from retinaunet.models.blocks import conv_nd


class UFPN(nn.Module):
    """Top-down pathway with lateral (skip) connections.

    Args:
        dim: 2 or 3.
        in_channels: channels of the backbone levels C0..C5.
        fpn_channels: channels of every P level.
        min_level: lowest P level built (0 for U-FPN, 2 for FPN); the top level is always P5.
    """

    def __init__(self, dim: int, in_channels: Sequence[int], fpn_channels: int, min_level: int = 0) -> None:
        super().__init__()
        if not 0 <= min_level <= 2:
            raise ValueError(f"min_level must be 0, 1 or 2, got {min_level}")
        self.min_level = min_level
        self.max_level = len(in_channels) - 1
        levels = range(min_level, self.max_level + 1)
        self.lateral = nn.ModuleDict({str(k): conv_nd(dim, in_channels[k], fpn_channels, 1) for k in levels})
        self.smooth = nn.ModuleDict({str(k): conv_nd(dim, fpn_channels, fpn_channels, 3) for k in levels})
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> dict[int, Tensor]:
        """feats: [C0..C5] -> {k: P_k} for k = min_level..5, P_k: Tensor[B, fpn_channels, *shape(C_k)]."""
        top = self.lateral[str(self.max_level)](feats[self.max_level])
        out = {self.max_level: self.smooth[str(self.max_level)](top)}
        for k in range(self.max_level - 1, self.min_level - 1, -1):
            lat = self.lateral[str(k)](feats[k])
            top = lat + F.interpolate(top, size=lat.shape[2:], mode="nearest")
            out[k] = self.smooth[str(k)](top)
        return out
