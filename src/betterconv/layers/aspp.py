"""Atrous Spatial Pyramid Pooling as in DeepLabv3 (Chen et al. 2017, §3.3).

One 1x1 convolution, one 3x3 atrous convolution per rate, and (optionally) image-level features — global
average pooling, a 1x1 convolution, bilinear upsampling back — each with batch norm, concatenated along
channels and fused by a 1x1 projection. With no rates and image pooling on, this is the "mobile" head of
MobileNetV2 §6.3 (ASPP off).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conv import ActLayer, ConvNormAct, NormLayer, InplaceReLU


class ImagePooling(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.proj(self.pool(x))  # (B, C, 1, 1)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        atrous_rates: Sequence[int] = (6, 12, 18),
        image_pooling: bool = True,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = InplaceReLU,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer,
                                                 act_layer=act_layer)]
        for rate in atrous_rates:
            branches.append(ConvNormAct(in_channels, out_channels, 3, dilation=rate, norm_layer=norm_layer,
                                        act_layer=act_layer))
        if image_pooling:
            branches.append(ImagePooling(in_channels, out_channels, norm_layer, act_layer))
        self.branches = nn.ModuleList(branches)
        self.project = ConvNormAct(len(branches) * out_channels, out_channels, 1, norm_layer=norm_layer,
                                   act_layer=act_layer)
        self.dropout = nn.Dropout(dropout)
        self.atrous_rates = tuple(atrous_rates)
        self.image_pooling = image_pooling
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([branch(x) for branch in self.branches], dim=1)  # (B, n_branches * C, H, W)
        return self.dropout(self.project(y))
