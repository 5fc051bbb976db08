"""ResNet-50/101 (He et al., CVPR 2016, Table 1) with DeepLab's atrous control (Chen et al. 2017, §3.2).

    stage   block                          ResNet-50  ResNet-101  channels  reduction
    stem    conv7x7/2, maxpool 3x3/2       -          -           64        4
    layer1  [1x1 64, 3x3 64, 1x1 256]      3          3           256       4
    layer2  [1x1 128, 3x3 128, 1x1 512]    4          4           512       8
    layer3  [1x1 256, 3x3 256, 1x1 1024]   6          23          1024      16
    layer4  [1x1 512, 3x3 512, 1x1 2048]   3          3           2048      32

The stride sits on the 3x3 convolution ("ResNet v1.5", as torchvision). `output_stride` 8 or 16 replaces the
strides of layer3/layer4 by dilation; the first block of a dilated stage keeps the dilation in force before it
(it is the layer that used to subsample). `multi_grid` (r1, r2, r3) multiplies layer4's dilation per block: at
output stride 16 the rates become 2 * (1, 2, 4) = (2, 4, 8), DeepLabv3 §3.2.

`dilation_pattern="hdc"` gives the dilated part (the blocks after the last stride, from the first dilated one,
layer3 and layer4 together at output stride 8) hybrid dilated convolution rates (Wang et al. WACV 2018 §3.2,
`_features.hdc_rates`): a sawtooth without holes and with the same sum of rates (or the closest), e.g. (2, 4, 8) ->
(9, 1, 3). Only the 3x3 convolutions' dilation and padding change: weight names and shapes stay.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import BetterConvError
from ..layers import ConvNormAct
from ._features import FeatureInfo, apply_dilation_pattern, check_dilation_pattern, dilated_strides, init_weights
from ._registry import register_model
from .info import SGD_COSINE_RECIPE, ModelInfo


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = ConvNormAct(in_channels, width, 1)
        self.conv2 = ConvNormAct(width, width, 3, stride, dilation=dilation)
        self.conv3 = ConvNormAct(width, out_channels, 1, act_layer=None)
        self.downsample = (ConvNormAct(in_channels, out_channels, 1, stride, act_layer=None)
                           if stride != 1 or in_channels != out_channels else None)
        self.act = nn.ReLU(inplace=True)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        out += shortcut  # in place, as torchvision: no fresh full-size tensor per block
        return self.act(out)


class ResNet(nn.Module):
    def __init__(
        self,
        layers: Sequence[int],
        num_classes: int | None = 1000,
        output_stride: int = 32,
        multi_grid: Sequence[int] | None = None,
        dilation_pattern: str = "plain",
    ) -> None:
        super().__init__()
        if multi_grid is not None and len(multi_grid) != layers[3]:
            raise BetterConvError(f"multi_grid needs one rate per layer4 block ({layers[3]}), got {tuple(multi_grid)}")
        check_dilation_pattern(dilation_pattern)
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvNormAct(3, 64, 7, 2))
        self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
        self.feature_info = [FeatureInfo("stem", 64, 4)]
        plan = dilated_strides([4, 1, 2, 2, 2], output_stride)[1:]
        # (stride, 3x3 dilation) of every block, layer1..layer4 in order, then the pattern over the whole sequence
        strides: list[int] = []
        dilations: list[int] = []
        for i, (n_blocks, (stride, dilation_before, dilation)) in enumerate(zip(layers, plan), start=1):
            for b in range(n_blocks):
                strides.append(stride if b == 0 else 1)
                if i == 4 and multi_grid is not None:
                    dilations.append(dilation * multi_grid[b])
                else:
                    dilations.append(dilation_before if b == 0 else dilation)
        dilations = apply_dilation_pattern(strides, dilations, dilation_pattern)
        in_channels, reduction, k = 64, 4, 0
        for i, (n_blocks, width, (stride, _, _)) in enumerate(zip(layers, (64, 128, 256, 512), plan), start=1):
            blocks = []
            for _ in range(n_blocks):
                blocks.append(Bottleneck(in_channels, width, strides[k], dilations[k]))
                in_channels, k = width * Bottleneck.expansion, k + 1
            reduction *= stride
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(f"layer{i}", in_channels, reduction))
        self.output_stride = output_stride
        self.dilation_pattern = dilation_pattern
        self.num_features = in_channels
        if num_classes is not None:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(in_channels, num_classes)
        else:
            self.pool = self.fc = None
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        features = {"stem": x}
        for info in self.feature_info[1:]:
            x = getattr(self, info.name)(x)
            features[info.name] = x
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            raise RuntimeError("this ResNet was built without a classifier (num_classes=None)")
        x = self.forward_features(x)["layer4"]
        return self.fc(self.pool(x).flatten(1))  # (B, 2048) -> (B, num_classes)


@register_model(ModelInfo("classification", recipe=SGD_COSINE_RECIPE, torchvision="resnet50"))
def resnet50(*, num_classes: int | None = 1000, output_stride: int = 32,
             multi_grid: Sequence[int] | None = None, dilation_pattern: str = "plain") -> ResNet:
    """`dilation_pattern`: "plain" (DeepLab's rates) or "hdc" (Wang et al. §3.2; see the module docstring)."""
    return ResNet((3, 4, 6, 3), num_classes=num_classes, output_stride=output_stride, multi_grid=multi_grid,
                  dilation_pattern=dilation_pattern)


@register_model(ModelInfo("classification", recipe=SGD_COSINE_RECIPE, torchvision="resnet101"))
def resnet101(*, num_classes: int | None = 1000, output_stride: int = 32,
              multi_grid: Sequence[int] | None = None, dilation_pattern: str = "plain") -> ResNet:
    """`dilation_pattern`: "plain" (DeepLab's rates) or "hdc" (Wang et al. §3.2; see the module docstring)."""
    return ResNet((3, 4, 23, 3), num_classes=num_classes, output_stride=output_stride, multi_grid=multi_grid,
                  dilation_pattern=dilation_pattern)
