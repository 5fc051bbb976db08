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

from ..layers import ConvNormAct, InvertedResidual, InplaceReLU6
from ._features import (apply_dilation_pattern, check_dilation_pattern, dilated_strides, init_weights, make_divisible,
                        run_blocks, stages_from_blocks)
from ._registry import register_model
from .info import MOBILENET_RECIPE, ModelInfo
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
    `padding="tf_same"` reproduces TensorFlow's padding for ported TF/TFLite weights. `dilation_pattern="hdc"`
    gives the depthwise 3x3 convolutions of the dilated part (the blocks after the last stride, from the first
    dilated one) hybrid dilated convolution rates (Wang et al. WACV 2018 §3.2, `_features.hdc_rates`): a sawtooth
    without holes and with the same sum of rates (or the closest), e.g. (2, 2, 2) -> (3, 1, 2). Only dilation and
    padding change: weight names and shapes stay.
    """

    def __init__(
        self,
        num_classes: int | None = 1000,
        width_mult: float = 1.0,
        output_stride: int = 32,
        round_nearest: int = 8,
        dropout: float = 0.2,
        padding: str | None = None,
        dilation_pattern: str = "plain",
    ) -> None:
        super().__init__()
        if not 0.1 <= width_mult <= 4:
            raise BetterConvError(f"mobilenet_v2 width_mult must be between 0.1 and 4, got {width_mult}")
        check_dilation_pattern(dilation_pattern)
        stem_channels = make_divisible(32 * width_mult, round_nearest)
        self.stem = ConvNormAct(3, stem_channels, 3, 2, padding=padding, act_layer=InplaceReLU6)
        # stage strides: stem, then one per row of the table
        plan = dilated_strides([2] + [s for *_, s in INVERTED_RESIDUAL_SETTING], output_stride)
        # (stride, depthwise dilation) of every block in order, then the pattern over the whole sequence
        strides = [stride if i == 0 else 1 for (*_, n, _), (stride, _, _) in zip(INVERTED_RESIDUAL_SETTING, plan[1:])
                   for i in range(n)]
        dilations = [before if i == 0 else dilation
                     for (*_, n, _), (_, before, dilation) in zip(INVERTED_RESIDUAL_SETTING, plan[1:]) for i in range(n)]
        dilations = apply_dilation_pattern(strides, dilations, dilation_pattern)
        blocks: list[nn.Module] = []
        reductions: list[int] = []
        in_channels, reduction = stem_channels, plan[0][0]
        for t, c, n, _ in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width_mult, round_nearest)
            for _ in range(n):
                k = len(blocks)
                reduction *= strides[k]
                blocks.append(InvertedResidual(in_channels, out_channels, strides[k], t, dilation=dilations[k],
                                               padding=padding))
                reductions.append(reduction)
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.feature_info, self._stage_ends = stages_from_blocks(reductions, [b.out_channels for b in blocks])
        self.output_stride = output_stride
        self.dilation_pattern = dilation_pattern
        self.num_features = in_channels
        if num_classes is not None:
            last_channels = make_divisible(1280 * max(1.0, width_mult), round_nearest)
            self.head = ConvNormAct(in_channels, last_channels, 1, padding=padding, act_layer=InplaceReLU6)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
            self.num_features = last_channels
        else:
            self.head = self.pool = self.classifier = None
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return run_blocks(self.stem(x), self.blocks, self._stage_ends)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("this MobileNetV2 was built without a classifier (num_classes=None)")
        x = self.forward_features(x)[self.feature_info[-1].name]
        x = self.pool(self.head(x)).flatten(1)  # (B, 1280)
        return self.classifier(x)


@register_model(ModelInfo("classification", recipe=MOBILENET_RECIPE, torchvision="mobilenet_v2"))
def mobilenet_v2(*, num_classes: int | None = 1000, width_mult: float = 1.0, output_stride: int = 32,
                 dropout: float = 0.2, padding: str | None = None, round_nearest: int = 8,
                 dilation_pattern: str = "plain") -> MobileNetV2:
    """`round_nearest=1` is TensorFlow DeepLab's channel rounding below width 1 (for its ported weights).
    `dilation_pattern`: "plain" (DeepLab's rates) or "hdc" (Wang et al. §3.2; see `MobileNetV2`)."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, output_stride=output_stride,
                       round_nearest=round_nearest, dropout=dropout, padding=padding,
                       dilation_pattern=dilation_pattern)
