"""U-FPN: the FPN top-down path P5..P2, optionally extended to P1 and P0 (paper Figure 2).

Extended down to P0 the pyramid resembles a U-Net decoder (Retina U-Net); stopping at P2 it is the
plain FPN of Retina Net. The top-down path runs down to the lowest requested level, but only the
requested levels get their 3x3 smoothing conv: nothing is computed that no head reads (P1 of Retina U-Net,
P1-P5 of DetU-Net), so every parameter gets a gradient. Every output level has `fpn_channels` maps.
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
        outputs: the P levels returned (e.g. 0, 2, 3, 4, 5 for Retina U-Net; 2..5 for FPN; 0 for DetU-Net).
    """

    def __init__(self, dim: int, in_channels: Sequence[int], fpn_channels: int, outputs: Sequence[int]) -> None:
        super().__init__()
        self.max_level = len(in_channels) - 1
        self.outputs = sorted({int(k) for k in outputs})
        if not self.outputs or not 0 <= self.outputs[0] <= self.outputs[-1] <= self.max_level:
            raise ValueError(f"outputs must be levels 0..{self.max_level}, got {list(outputs)}")
        self.min_level = self.outputs[0]
        levels = range(self.min_level, self.max_level + 1)
        self.lateral = nn.ModuleDict({str(k): conv_nd(dim, in_channels[k], fpn_channels, 1) for k in levels})
        self.smooth = nn.ModuleDict({str(k): conv_nd(dim, fpn_channels, fpn_channels, 3) for k in self.outputs})
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor], levels: Sequence[int] | None = None) -> dict[int, Tensor]:
        """feats: [C0..C5] -> {k: P_k} for k in ``outputs``, P_k: Tensor[B, fpn_channels, *shape(C_k)].

        ``levels``: only these of the outputs (the top-down path stops at the lowest of them), e.g. the
        detection heads' levels when no segmentation is wanted: P0, the full-resolution level, is then
        never computed. The levels returned are exactly those of a full pass.
        """
        wanted = self.outputs if levels is None else sorted({int(k) for k in levels})
        if not wanted or any(str(k) not in self.smooth for k in wanted):
            raise ValueError(f"levels must be among the outputs {self.outputs}, got {levels}")
        top = self.lateral[str(self.max_level)](feats[self.max_level])
        out = {}
        for k in range(self.max_level, wanted[0] - 1, -1):
            if k < self.max_level:
                lat = self.lateral[str(k)](feats[k])
                top = lat + F.interpolate(top, size=lat.shape[2:], mode="nearest")
            if k in wanted:
                out[k] = self.smooth[str(k)](top)
        return out
