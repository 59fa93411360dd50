"""ResNet backbone (bottom-up path) for 2D and 3D with per-axis strides.

Levels: C0 (stem, full resolution), C1 (one strided conv), C2..C5 (residual stages).
Level k has cumulative stride prod(strides[:k]) and `channels(k)` feature maps.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from retinaunet.models.blocks import ConvNormAct, make_stage, zero_last_norms
from retinaunet.plans import NetworkPlan


def level_channels(start_channels: int, max_channels: int, num_levels: int = 6) -> list[int]:
    """Channels of C0..C5: start_channels * 2**k, capped by max_channels."""
    return [min(start_channels * 2**k, max_channels) for k in range(num_levels)]


def feature_map_shapes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial shapes of C0..C5 for an input of ``patch_size``: each strided 3x-conv with padding 1 gives
    ``ceil(n / stride)``. The planner's memory and compute model reads the network's shapes from here."""
    shapes = [[int(n) for n in patch_size]]
    for s in strides:
        shapes.append([-(-n // int(k)) for n, k in zip(shapes[-1], s)])
    return shapes


class ResNetBackbone(nn.Module):
    """ResNet encoder returning the feature maps [C0, C1, C2, C3, C4, C5].

    Args:
        dim: 2 or 3 spatial dims.
        in_channels: input channels (modalities, times context slices in 2Dc).
        start_channels / max_channels: C_k has min(start * 2**k, max) channels; with bottleneck blocks
            and start 64 this is ResNet50's 256..2048 for C2..C5.
        block: "basic" or "bottleneck".
        blocks_per_stage: residual blocks of C2..C5 ([3, 4, 6, 3] bottleneck = ResNet50).
        strides: 5 per-axis strides, C0->C1, C1->C2, ..., C4->C5 (e.g. [1, 2, 2] keeps z in 3D).
        norm: "instance", "batch", "group" or "none".
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        start_channels: int,
        max_channels: int,
        block: str,
        blocks_per_stage: Sequence[int],
        strides: Sequence[Sequence[int]],
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != 4:
            raise ValueError(f"blocks_per_stage needs 4 entries (C2..C5), got {list(blocks_per_stage)}")
        if len(strides) != 5 or any(len(s) != dim for s in strides):
            raise ValueError(f"strides needs 5 entries of {dim} values, got {list(strides)}")
        self.dim = dim
        self.strides = [list(map(int, s)) for s in strides]
        self.channels = level_channels(start_channels, max_channels)
        ch = self.channels
        self.stem = nn.Sequential(
            ConvNormAct(dim, in_channels, ch[0], 3, 1, norm),
            ConvNormAct(dim, ch[0], ch[0], 3, 1, norm),
        )
        self.c1 = ConvNormAct(dim, ch[0], ch[1], 3, self.strides[0], norm)
        self.stages = nn.ModuleList(
            make_stage(dim, block, ch[k], ch[k + 1], n, self.strides[k], norm)
            for k, n in enumerate(blocks_per_stage, start=1)
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        zero_last_norms(self)

    def cumulative_strides(self) -> list[list[int]]:
        """Per-axis stride of C0..C5 relative to the input."""
        out = [[1] * self.dim]
        for s in self.strides:
            out.append([a * b for a, b in zip(out[-1], s)])
        return out

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: Tensor[B, C_in, *S] -> [C0 .. C5], C_k: Tensor[B, channels[k], *S / stride_k]."""
        feats = [self.stem(x)]
        feats.append(self.c1(feats[-1]))
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


def backbone_from_plans(dim: int, in_channels: int, network: NetworkPlan) -> ResNetBackbone:
    """The backbone described by a plans' ``network`` section (widths, block, depths, strides, norm)."""
    return ResNetBackbone(
        dim, in_channels, network.start_channels, network.max_channels,
        network.block, network.blocks_per_stage, network.strides, norm=network.norm,
    )
