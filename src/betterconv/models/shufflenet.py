"""ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices (Zhang et al., CVPR 2018).

Table 1 of the paper, output channels per stage for g groups (the first unit of each stage has stride 2):
    input 224x224x3 -> conv1 3x3, 24, stride 2 -> maxpool 3x3, stride 2
    stage   units   g=1   g=2   g=3   g=4   g=8
    2       4       144   200   240   272   384
    3       8       288   400   480   544   768
    4       4       576   800   960   1088  1536
    -> global avgpool -> fc, k
Each unit is a `ShuffleUnit` whose bottleneck has a quarter of its output channels; Stage 2's first unit keeps
its first 1x1 dense because its input has only 24 channels. Complexity at 224x224 (multiply-adds, which the
paper calls FLOPs): 143M, 140M, 137M, 133M, 137M for g = 1, 2, 3, 4, 8.

"ShuffleNet s×" multiplies the stage channels by s (§4.1.1), rounded here to the nearest multiple of 4g so that
the bottleneck splits into g groups (halves round up; only g = 2 and 4 at s other than 1 and 2 move, by a few
channels).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ..errors import BetterConvError
from ..layers import ConvNormAct, ShuffleUnit
from ._features import FeatureInfo, init_weights
from ._registry import register_model
from .info import SGD_COSINE_RECIPE, ModelInfo

STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                  8: (384, 768, 1536)}
STAGE_UNITS = (4, 8, 4)


def shufflenet_channels(groups: int, scale: float) -> tuple[int, int, int, int]:
    """(stem, stage2, stage3, stage4) output channels of ShuffleNet `scale`× with `groups` groups."""
    if groups not in STAGE_CHANNELS:
        raise BetterConvError(f"shufflenet_v1 groups must be one of 1, 2, 3, 4, 8, got {groups}")
    if not (math.isfinite(scale) and scale > 0):
        raise BetterConvError(f"shufflenet_v1 scale must be a positive number, got {scale}")
    unit = 4 * groups
    stages = [max(unit, int(c * scale / unit + 0.5) * unit) for c in STAGE_CHANNELS[groups]]
    # The stem is not scaled like the stages. The authors' code (megvii-model/ShuffleNet-Series,
    # ShuffleNetV1/network.py, g = 3 and 8 only) uses 24 channels for 1.0x and 1.5x, 48 for 2.0x, and 24 * 0.5
    # rounded up to a multiple of g for 0.5x (12 for g=3, 16 for g=8: Stage 2's concatenated branch must split
    # into g groups). It has no 0.25x; the paper's 13M for 0.25x (Table 2) needs the 0.5x stem again (12
    # channels: 13.3M; a 6-channel stem gives 11.0M).
    stem_scale = max(0.5, scale) if scale < 1 else math.floor(scale)
    stem = math.ceil(24 * stem_scale / groups) * groups
    if not stem < stages[0] < stages[1] < stages[2]:
        raise BetterConvError(f"shufflenet_v1 scale {scale} is too small for {groups} groups: stage widths "
                              f"{stem}, {', '.join(map(str, stages))} do not grow")
    return stem, *stages


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 classifier and backbone; features "stem" (after the max pool, 1/4) and "stage2".."stage4"
    (1/8, 1/16, 1/32). `num_classes=None` builds the feature extractor alone."""

    def __init__(self, num_classes: int | None = 1000, groups: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        stem, *stages = shufflenet_channels(groups, scale)
        self.stem = nn.Sequential(OrderedDict(conv=ConvNormAct(3, stem, 3, 2), pool=nn.MaxPool2d(3, 2, padding=1)))
        self.feature_info = [FeatureInfo("stem", stem, 4)]
        in_channels = stem
        for i, (out_channels, n) in enumerate(zip(stages, STAGE_UNITS)):
            units = [ShuffleUnit(in_channels if j == 0 else out_channels, out_channels, groups, 2 if j == 0 else 1,
                                 group_first_conv=i > 0 or j > 0) for j in range(n)]
            name = f"stage{i + 2}"
            self.add_module(name, nn.Sequential(*units))
            self.feature_info.append(FeatureInfo(name, out_channels, 8 * 2 ** i))
            in_channels = out_channels
        self.groups, self.scale = groups, scale
        self.num_features = in_channels
        if num_classes is not None:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(in_channels, num_classes)
        else:
            self.pool = self.classifier = None
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        for info in self.feature_info:
            x = features[info.name] = getattr(self, info.name)(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("this ShuffleNetV1 was built without a classifier (num_classes=None)")
        x = self.forward_features(x)["stage4"]
        return self.classifier(self.pool(x).flatten(1))  # (B, C4) -> (B, num_classes)


@register_model(ModelInfo("classification", recipe=SGD_COSINE_RECIPE,
                          peer_note="torchvision has ShuffleNet v2 only, a different network"))
def shufflenet_v1(*, num_classes: int | None = 1000, groups: int = 3, scale: float = 1.0) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes, groups=groups, scale=scale)
