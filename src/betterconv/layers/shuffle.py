"""ShuffleNet v1 (Zhang et al. 2018, §3.1-3.2): grouped 1x1 convolutions with a channel shuffle between them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import ConvNormAct, NormLayer, InplaceReLU


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, groups, c // groups, h, w)  # (B, g, C/g, H, W)
    x = x.transpose(1, 2)  # (B, C/g, g, H, W)
    return x.reshape(b, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleUnit(nn.Module):
    """The ShuffleNet unit of Fig. 2(b) (stride 1, residual add) and Fig. 2(c) (stride 2, concatenation with a
    3x3 average-pooled shortcut, so the branch produces `out_channels - in_channels` channels).

    The bottleneck has a quarter of the unit's output channels (§3.3). `group_first_conv=False` keeps the first
    1x1 dense, as the paper does for Stage 2's first unit whose input has only 24 channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        stride: int,
        group_first_conv: bool = True,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 ShuffleNet unit needs equal input and output channels")
        if stride == 2 and out_channels <= in_channels:
            raise ValueError("a stride-2 ShuffleNet unit concatenates its input, so it needs more output channels "
                             f"than input channels, got {in_channels}->{out_channels}")
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        bottleneck = out_channels // 4
        first_groups = groups if group_first_conv else 1
        if bottleneck % groups or branch_out % groups or in_channels % first_groups:
            raise ValueError(f"channels {in_channels}->{out_channels} cannot be split into {groups} groups")
        self.compress = ConvNormAct(in_channels, bottleneck, 1, groups=first_groups, norm_layer=norm_layer)
        self.shuffle = ChannelShuffle(groups) if first_groups > 1 else nn.Identity()
        self.depthwise = ConvNormAct(bottleneck, bottleneck, 3, stride, groups=bottleneck, norm_layer=norm_layer,
                                     act_layer=None)
        self.expand = ConvNormAct(bottleneck, branch_out, 1, groups=groups, norm_layer=norm_layer, act_layer=None)
        self.act = InplaceReLU()
        self.stride = stride
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.depthwise(self.shuffle(self.compress(x))))
        if self.stride == 1:
            return self.act(x + y)
        shortcut = F.avg_pool2d(x, 3, stride=2, padding=1)
        return self.act(torch.cat([shortcut, y], dim=1))  # (B, C_in + C_branch, H/2, W/2)
