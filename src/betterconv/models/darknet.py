"""Darknet-19, the classifier behind YOLOv2 (Redmon & Farhadi, "YOLO9000: Better, Faster, Stronger", CVPR 2017,
§3 "Faster", Table 6; darknet19.cfg).

    type     filters                     size/stride          output (224 input)
    conv     32                          3x3                  224
    maxpool                              2x2/2                112
    conv     64                          3x3                  112
    maxpool                              2x2/2                56
    conv     128, 64, 128                3x3, 1x1, 3x3        56
    maxpool                              2x2/2                28
    conv     256, 128, 256               3x3, 1x1, 3x3        28
    maxpool                              2x2/2                14
    conv     512, 256, 512, 256, 512     3x3, 1x1, 3x3, ...   14
    maxpool                              2x2/2                7
    conv     1024, 512, 1024, 512, 1024  3x3, 1x1, 3x3, ...   7
    conv     1000                        1x1                  7     (linear, with bias, no batch norm)
    avgpool                              global               1000
    softmax

Every other convolution has batch norm and darknet's leaky ReLU (slope 0.1). The "5.58 billion operations" of
§3 at 224x224 are FLOPs: 2.79 G multiply-adds.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BetterConvError
from ..layers import ConvNormAct, DarknetLeakyReLU
from ._features import FeatureInfo
from ._registry import register_model
from .info import DARKNET_MEAN, DARKNET_STD, SGD_COSINE_RECIPE, ModelInfo

# (filters, kernel size) per convolution; every stage opens with a 2x2 stride-2 maxpool
DARKNET19_STAGES: list[list[tuple[int, int]]] = [
    [(64, 3)],
    [(128, 3), (64, 1), (128, 3)],
    [(256, 3), (128, 1), (256, 3)],
    [(512, 3), (256, 1), (512, 3), (256, 1), (512, 3)],
    [(1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)],
]


class DarknetMaxPool(nn.Module):
    """Darknet's maxpool: total padding ``size - 1``, ``padding // 2`` of it before, the rest after, with -inf.

    The output is ``(w - 1) // stride + 1``: half the size (rounded up) for 2x2 stride 2, the same
    size for tiny YOLOv2's 2x2 stride 1. Only the padding that a window actually reads is materialised.
    An explicit `padding` (a cfg's ``padding=``) follows the same rule with that total:
    the output is ``(w + padding - size) // stride + 1`` and ``padding // 2`` goes before.
    """

    def __init__(self, size: int = 2, stride: int = 2, padding: int | None = None) -> None:
        super().__init__()
        self.size, self.stride = size, stride
        self.padding = size - 1 if padding is None else padding

    def padding_for(self, n: int) -> tuple[int, int]:
        before = self.padding // 2
        out = (n + self.padding - self.size) // self.stride + 1
        return before, max((out - 1) * self.stride + self.size - n - before, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self.padding_for(x.shape[-2])
        left, right = self.padding_for(x.shape[-1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)

    def extra_repr(self) -> str:
        extra = "" if self.padding == self.size - 1 else f", padding={self.padding}"
        return f"size={self.size}, stride={self.stride}{extra}"


def darknet_conv(in_channels: int, out_channels: int, kernel_size: int) -> ConvNormAct:
    """darknet's ``[convolutional] batch_normalize=1 pad=1 activation=leaky``."""
    return ConvNormAct(in_channels, out_channels, kernel_size, act_layer=DarknetLeakyReLU)


def init_darknet_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Darknet(nn.Module):
    """A darknet body: a 3x3 stem convolution at full resolution, then stages that each open with a 2x2
    stride-2 maxpool. Each stage's output (its last convolution, before the next maxpool) is a feature.

    With `num_classes`, darknet's classifier follows: a linear 1x1 convolution with bias, then a global
    average pool, giving logits (no softmax).
    """

    def __init__(self, stages: Sequence[Sequence[tuple[int, int]]], stem_channels: int = 32,
                 num_classes: int | None = 1000, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise BetterConvError(f"darknet num_classes must be a positive integer or None, got {num_classes}")
        self.stem = darknet_conv(in_channels, stem_channels, 3)
        self.stages = nn.ModuleList()
        self.feature_info: list[FeatureInfo] = []
        channels, reduction = stem_channels, 1
        for i, convs in enumerate(stages):
            layers: list[nn.Module] = [DarknetMaxPool(2, 2)]
            for filters, size in convs:
                layers.append(darknet_conv(channels, filters, size))
                channels = filters
            reduction *= 2
            self.stages.append(nn.Sequential(*layers))
            self.feature_info.append(FeatureInfo(f"stage{i + 1}", channels, reduction))
        self.num_features = channels
        if num_classes is not None:
            self.head = ConvNormAct(channels, num_classes, 1, norm_layer=None, act_layer=None)
            self.pool = nn.AdaptiveAvgPool2d(1)
        else:
            self.head = self.pool = None
        self.num_classes = num_classes
        init_darknet_weights(self)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        features = {}
        for stage, info in zip(self.stages, self.feature_info):
            x = stage(x)
            features[info.name] = x
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("this Darknet was built without a classifier (num_classes=None)")
        x = self.forward_features(x)[self.feature_info[-1].name]
        return self.pool(self.head(x)).flatten(1)  # (B, num_classes)


class Darknet19(Darknet):
    def __init__(self, num_classes: int | None = 1000, in_channels: int = 3) -> None:
        super().__init__(DARKNET19_STAGES, 32, num_classes, in_channels)


# darknet feeds x / 255: its weights (darknet19_448.weights) expect no mean/std normalisation
@register_model(ModelInfo("classification", mean=DARKNET_MEAN, std=DARKNET_STD, recipe=SGD_COSINE_RECIPE))
def darknet19(*, num_classes: int | None = 1000) -> Darknet19:
    return Darknet19(num_classes=num_classes)
