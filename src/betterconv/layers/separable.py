"""Depthwise separable convolution (MobileNetV1 §3.1): a k x k depthwise filter, then a 1x1 pointwise mix.

Cost per output pixel: d_i * k^2 + d_i * d_j MACs instead of d_i * d_j * k^2, i.e. a saving of
1/d_j + 1/k^2 — about k^2 when d_j is large, and nothing at all for k = 1.
"""
from __future__ import annotations

from torch import nn

from .conv import ActLayer, ConvNormAct, NormLayer, InplaceReLU


class DepthwiseSeparableConv(nn.Sequential):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        padding: int | str | None = None,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        act_layer: ActLayer | None = InplaceReLU,
    ) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                     groups=in_channels, norm_layer=norm_layer, act_layer=act_layer)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.out_channels = out_channels
