"""Building blocks shared by 2D and 3D networks: conv/norm factories and ResNet blocks.

Every layer is chosen by `dim` (2 or 3) so one code path builds both networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

NORMS = ("instance", "batch", "group", "none")


def conv_nd(
    dim: int,
    in_ch: int,
    out_ch: int,
    kernel: int = 3,
    stride: int | Sequence[int] = 1,
    bias: bool = True,
) -> nn.Module:
    """A `dim`-D convolution with 'same' padding for odd kernels."""
    conv = {2: nn.Conv2d, 3: nn.Conv3d}[dim]
    stride = tuple(stride) if isinstance(stride, Sequence) else stride
    return conv(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=bias)


def norm_nd(dim: int, channels: int, norm: str) -> nn.Module:
    """Normalisation layer by name: 'instance' (affine), 'batch', 'group' (8 groups) or 'none'."""
    if norm == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dim](channels, affine=True)
    if norm == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim](channels)
    if norm == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")


class ConvNormAct(nn.Sequential):
    """conv -> norm -> ReLU."""

    def __init__(
        self, dim: int, in_ch: int, out_ch: int, kernel: int = 3, stride: int | Sequence[int] = 1,
        norm: str = "instance",
    ) -> None:
        super().__init__(
            conv_nd(dim, in_ch, out_ch, kernel, stride, bias=norm == "none"),
            norm_nd(dim, out_ch, norm),
            nn.ReLU(inplace=True),
        )


def _shortcut(dim: int, in_ch: int, out_ch: int, stride: Sequence[int], norm: str) -> nn.Module:
    """Identity when shapes agree, else a strided 1x1 projection."""
    if in_ch == out_ch and all(s == 1 for s in stride):
        return nn.Identity()
    return nn.Sequential(conv_nd(dim, in_ch, out_ch, 1, stride, bias=norm == "none"), norm_nd(dim, out_ch, norm))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet18/34 block)."""

    def __init__(self, dim: int, in_ch: int, out_ch: int, stride: Sequence[int], norm: str) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(dim, in_ch, out_ch, 3, stride, norm)
        self.conv2 = conv_nd(dim, out_ch, out_ch, 3, 1, bias=norm == "none")
        self.last_norm = norm_nd(dim, out_ch, norm)
        self.shortcut = _shortcut(dim, in_ch, out_ch, stride, norm)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.last_norm(self.conv2(self.conv1(x))) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, width = out_ch / 4 (ResNet50 block)."""

    expansion = 4

    def __init__(self, dim: int, in_ch: int, out_ch: int, stride: Sequence[int], norm: str) -> None:
        super().__init__()
        width = max(out_ch // self.expansion, 1)
        self.reduce = ConvNormAct(dim, in_ch, width, 1, 1, norm)
        self.conv = ConvNormAct(dim, width, width, 3, stride, norm)
        self.expand = conv_nd(dim, width, out_ch, 1, 1, bias=norm == "none")
        self.last_norm = norm_nd(dim, out_ch, norm)
        self.shortcut = _shortcut(dim, in_ch, out_ch, stride, norm)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.last_norm(self.expand(self.conv(self.reduce(x)))) + self.shortcut(x))


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_stage(
    dim: int, block: str, in_ch: int, out_ch: int, n_blocks: int, stride: Sequence[int], norm: str
) -> nn.Sequential:
    """`n_blocks` residual blocks; the first one applies `stride` and changes the channels."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose one of {sorted(BLOCKS)}")
    cls = BLOCKS[block]
    ones = [1] * dim
    layers = [cls(dim, in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else ones, norm)
              for i in range(max(n_blocks, 1))]
    return nn.Sequential(*layers)


def zero_last_norms(module: nn.Module) -> None:
    """Start each residual branch near identity (last norm weight 0) for stable early training."""
    for m in module.modules():
        if isinstance(m, (BasicBlock, Bottleneck)) and getattr(m.last_norm, "weight", None) is not None:
            torch.nn.init.zeros_(m.last_norm.weight)
