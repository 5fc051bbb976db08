"""MobileNetV2: Inverted Residuals and Linear Bottlenecks (Sandler et al., CVPR 2018).

Table 2 of the paper, as (t expansion, c output channels, n repeats, s first stride):
    input 224x224x3 -> conv2d 3x3, 32, stride 2
    t  c    n  s
    1  16   1  1
    6  24   2  2
    6  32   3  2
    6  64   4  2
    6  96   3  1
    6  160  3  2
    6  320  1  1
    -> conv2d 1x1, 1280 -> avgpool 7x7 -> conv2d 1x1, k (a linear layer)
Channels are scaled by `width_mult` and rounded to multiples of 8; the last 1x1 layer keeps 1280 channels
for width_mult < 1 (§6.1).
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvNormAct, InvertedResidual, ReLU6
from ._features import FeatureInfo, dilated_strides, make_divisible
from ._registry import register_model
from ..errors import BetterConvError

# t, c, n, s
INVERTED_RESIDUAL_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier and backbone.

    `output_stride` 8 or 16 replaces the last strides by dilation (for DeepLabv3, §6.3). `num_classes=None` builds
    the feature extractor alone (no 1280-channel layer and no classifier), as segmentation heads use it.
    `padding="tf_same"` reproduces TensorFlow's padding for ported TF/TFLite weights.
    """

    def __init__(
        self,
        num_classes: int | None = 1000,
        width_mult: float = 1.0,
        output_stride: int = 32,
        round_nearest: int = 8,
        dropout: float = 0.2,
        padding: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.1 <= width_mult <= 4:
            raise BetterConvError(f"mobilenet_v2 width_mult must be between 0.1 and 4, got {width_mult}")
        stem_channels = make_divisible(32 * width_mult, round_nearest)
        self.stem = ConvNormAct(3, stem_channels, 3, 2, padding=padding, act_layer=ReLU6)
        # stage strides: stem, then one per row of the table
        plan = dilated_strides([2] + [s for *_, s in INVERTED_RESIDUAL_SETTING], output_stride)
        blocks: list[nn.Module] = []
        self.feature_info: list[FeatureInfo] = []
        self._stage_ends: dict[int, str] = {}
        in_channels, reduction = stem_channels, plan[0][0]
        for (t, c, n, _), (stride, dilation_before, dilation) in zip(INVERTED_RESIDUAL_SETTING, plan[1:]):
            out_channels = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                blocks.append(InvertedResidual(in_channels, out_channels, stride if i == 0 else 1, t,
                                               dilation=dilation_before if i == 0 else dilation,
                                               padding=padding))
                in_channels = out_channels
            reduction *= stride
            name = f"stage{len(self.feature_info) + 1}"
            if self.feature_info and self.feature_info[-1].reduction == reduction:
                self._stage_ends.pop(len(blocks) - n - 1)  # same resolution: the stage grows
                name = self.feature_info.pop().name
            self.feature_info.append(FeatureInfo(name, out_channels, reduction))
            self._stage_ends[len(blocks) - 1] = name
        self.blocks = nn.Sequential(*blocks)
        self.output_stride = output_stride
        self.num_features = in_channels
        if num_classes is not None:
            last_channels = make_divisible(1280 * max(1.0, width_mult), round_nearest)
            self.head = ConvNormAct(in_channels, last_channels, 1, padding=padding, act_layer=ReLU6)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
            self.num_features = last_channels
        else:
            self.head = self.pool = self.classifier = None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        features = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._stage_ends:
                features[self._stage_ends[i]] = x
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("this MobileNetV2 was built without a classifier (num_classes=None)")
        x = self.forward_features(x)[self.feature_info[-1].name]
        x = self.pool(self.head(x)).flatten(1)  # (B, 1280)
        return self.classifier(x)


@register_model()
def mobilenet_v2(*, num_classes: int | None = 1000, width_mult: float = 1.0, output_stride: int = 32,
                 dropout: float = 0.2, padding: str | None = None) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, output_stride=output_stride,
                       dropout=dropout, padding=padding)
