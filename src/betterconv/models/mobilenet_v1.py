"""MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications (Howard et al. 2017).

Table 1 of the paper; every "dw / s" row is a 3x3 depthwise convolution followed by a 1x1 pointwise one
(`DepthwiseSeparableConv`), each with batch norm and ReLU:
    input 224x224x3 -> conv 3x3, 32, stride 2
    c     n  s
    64    1  1
    128   1  2
    128   1  1
    256   1  2
    256   1  1
    512   1  2
    512   5  1
    1024  1  2
    1024  1  1
    -> avgpool 7x7 -> fc, k
At 224x224 with 1000 classes this is 4.23M parameters and 569M multiply-adds.

The width multiplier α (`width_mult`, §4.2) scales every layer's channels, rounded to the nearest multiple of 8
and never more than 10% down (`make_divisible`). For the published α = 1, 0.75, 0.5, 0.25 every width is
already a multiple of 8, so the network is exactly the one of TF-slim and Keras (`int(c * α)`).

`separable=False` is the paper's "Conv MobileNet" baseline (Table 4): every depthwise separable pair replaced by
one full 3x3 convolution, the same depth in blocks and widths: 29.3M parameters and 4866M multiply-adds.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import BetterConvError
from ..layers import ConvNormAct, DepthwiseSeparableConv
from ._features import dilated_strides, init_weights, make_divisible, run_blocks, stages_from_blocks
from ._registry import register_model
from .info import MOBILENET_RECIPE, ModelInfo

# c, n, s
DEPTHWISE_SEPARABLE_SETTING = [
    (64, 1, 1),
    (128, 1, 2),
    (128, 1, 1),
    (256, 1, 2),
    (256, 1, 1),
    (512, 1, 2),
    (512, 5, 1),
    (1024, 1, 2),
    (1024, 1, 1),
]


class MobileNetV1(nn.Module):
    """MobileNetV1 classifier and backbone.

    Features are published at the end of each resolution (`stage1` at 1/2 ... `stage5` at 1/32).
    `output_stride` 8 or 16 replaces the last strides by dilation; the stages that no longer reduce merge
    into the last one. `num_classes=None` builds the feature extractor alone.
    """

    def __init__(
        self,
        num_classes: int | None = 1000,
        width_mult: float = 1.0,
        output_stride: int = 32,
        dropout: float = 0.001,
        separable: bool = True,
    ) -> None:
        super().__init__()
        if not 0.1 <= width_mult <= 4:
            raise BetterConvError(f"mobilenet_v1 width_mult must be between 0.1 and 4, got {width_mult}")
        layers = [(c, s) for c, n, s in DEPTHWISE_SEPARABLE_SETTING for _ in range(n)]
        plan = dilated_strides([2] + [s for _, s in layers], output_stride)
        stem_channels = make_divisible(32 * width_mult)
        self.stem = ConvNormAct(3, stem_channels, 3, plan[0][0])
        blocks: list[nn.Module] = []
        reductions: list[int] = []
        in_channels, reduction = stem_channels, plan[0][0]
        for (c, _), (stride, dilation_before, _) in zip(layers, plan[1:]):
            out_channels = make_divisible(c * width_mult)
            # a single layer per step: the (formerly strided) depthwise conv keeps the dilation before it
            if separable:
                blocks.append(DepthwiseSeparableConv(in_channels, out_channels, 3, stride, dilation_before))
            else:
                blocks.append(ConvNormAct(in_channels, out_channels, 3, stride, dilation=dilation_before))
            in_channels, reduction = out_channels, reduction * stride
            reductions.append(reduction)
        self.blocks = nn.Sequential(*blocks)
        self.feature_info, self._stage_ends = stages_from_blocks(reductions, [b.out_channels for b in blocks])
        self.output_stride = output_stride
        self.num_features = in_channels
        if num_classes is not None:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, num_classes))
        else:
            self.pool = self.classifier = None
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return run_blocks(self.stem(x), self.blocks, self._stage_ends)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("this MobileNetV1 was built without a classifier (num_classes=None)")
        x = self.forward_features(x)[self.feature_info[-1].name]
        return self.classifier(self.pool(x).flatten(1))  # (B, 1024 * α) -> (B, num_classes)


@register_model(ModelInfo("classification", recipe=MOBILENET_RECIPE))
def mobilenet_v1(*, num_classes: int | None = 1000, width_mult: float = 1.0, output_stride: int = 32,
                 dropout: float = 0.001, separable: bool = True) -> MobileNetV1:
    """`dropout` 0.001 is the reference's (TF-slim `dropout_keep_prob=0.999`, Keras `dropout=1e-3`).
    `separable=False` gives the plain-convolution "Conv MobileNet" of the paper's Table 4."""
    return MobileNetV1(num_classes=num_classes, width_mult=width_mult, output_stride=output_stride,
                       dropout=dropout, separable=separable)
