"""Fully Convolutional Networks (Long, Shelhamer & Darrell, CVPR 2015) on VGG16.

    VGG16 conv1-conv5 -> fc6 conv7x7 4096 -> fc7 conv1x1 4096 -> score_fr conv1x1 C        (stride 32)
    FCN-32s: upsample x32 (fixed bilinear)
    FCN-16s: upsample score_fr x2 (learned, bilinear init) + score_pool4 (1x1, zero init) -> upsample x16
    FCN-8s:  ... x2 (learned) + score_pool3 (1x1, zero init) -> upsample x8

As in §4.2 and §4.3 of the paper: the skip scores start at zero, the intermediate upsampling is learned from a
bilinear start, and the final upsampling is fixed bilinear interpolation. Instead of the reference's 100-pixel
padding and crops, inputs are zero-padded at the bottom/right to a multiple of 32, so every stride aligns
exactly, and the output is cropped back: any input size gives an output of the same size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BetterConvError
from ..layers import BilinearUpsample, ConvNormAct
from ._registry import register_model
from .vgg import VGG16_STAGES, VGG

SKIPS = {32: (), 16: ("pool4",), 8: ("pool4", "pool3")}


class FCN(nn.Module):
    def __init__(self, stride: int = 8, num_classes: int = 21, dropout: float = 0.5) -> None:
        super().__init__()
        if stride not in SKIPS:
            raise BetterConvError(f"FCN stride must be 32, 16 or 8, got {stride}")
        self.backbone = VGG(VGG16_STAGES, num_classes=None)
        channels = {info.name: info.channels for info in self.backbone.feature_info}
        self.fc6 = ConvNormAct(self.backbone.num_features, 4096, 7, norm_layer=None)
        self.fc7 = ConvNormAct(4096, 4096, 1, norm_layer=None)
        self.dropout = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        self.skips = SKIPS[stride]
        self.score_skips = nn.ModuleDict()
        self.upsample_skips = nn.ModuleDict()
        for name in self.skips:
            score = nn.Conv2d(channels[name], num_classes, 1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.score_skips[name] = score
            self.upsample_skips[name] = BilinearUpsample(num_classes, 2, learnable=True)
        self.upsample = BilinearUpsample(num_classes, stride, learnable=False)
        self.stride = stride
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 32, 0, -h % 32))  # bottom/right to a multiple of 32
        features = self.backbone.forward_features(x)
        y = self.dropout(self.fc7(self.dropout(self.fc6(features["pool5"]))))
        y = self.score_fr(y)  # (B, C, H/32, W/32)
        for name in self.skips:
            y = self.upsample_skips[name](y) + self.score_skips[name](features[name])  # (B, C, H/16 or H/8, ...)
        return self.upsample(y)[..., :h, :w]  # (B, C, H, W)


@register_model()
def fcn32s_vgg16(*, num_classes: int = 21, dropout: float = 0.5) -> FCN:
    return FCN(32, num_classes=num_classes, dropout=dropout)


@register_model()
def fcn16s_vgg16(*, num_classes: int = 21, dropout: float = 0.5) -> FCN:
    return FCN(16, num_classes=num_classes, dropout=dropout)


@register_model()
def fcn8s_vgg16(*, num_classes: int = 21, dropout: float = 0.5) -> FCN:
    return FCN(8, num_classes=num_classes, dropout=dropout)
