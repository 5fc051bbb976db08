"""MobileNetV2's inverted residual with linear bottleneck (Sandler et al. 2018, §3.3 and Table 1).

    1x1 expand (d -> t*d, ReLU6) -> 3x3 depthwise (stride s, ReLU6) -> 1x1 project (t*d -> d', linear)

with an identity shortcut only when s = 1 and d = d'. The projection has no activation: §3.2 shows that a ReLU
on the low-dimensional bottleneck destroys information.
"""
from __future__ import annotations

import torch
from torch import nn

from .conv import ActLayer, ConvNormAct, NormLayer, InplaceReLU6


class InvertedResidual(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        dilation: int = 1,
        padding: int | str | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = InplaceReLU6,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = (ConvNormAct(in_channels, hidden, 1, norm_layer=norm_layer, act_layer=act_layer)
                       if expand_ratio != 1 else None)
        self.depthwise = ConvNormAct(hidden, hidden, 3, stride, padding, dilation, groups=hidden,
                                     norm_layer=norm_layer, act_layer=act_layer)
        self.project = ConvNormAct(hidden, out_channels, 1, norm_layer=norm_layer, act_layer=None)
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden, out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.use_residual else y
