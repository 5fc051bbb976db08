"""VGG16 (Simonyan & Zisserman, ICLR 2015, Table 1 column D), the backbone of FCN.

    stage  layers                     channels  reduction
    1      conv3x3 x2, maxpool 2/2    64        2
    2      conv3x3 x2, maxpool 2/2    128       4
    3      conv3x3 x3, maxpool 2/2    256       8   <- FCN-8s skip (pool3)
    4      conv3x3 x3, maxpool 2/2    512       16  <- FCN-16s skip (pool4)
    5      conv3x3 x3, maxpool 2/2    512       32
    fc6 4096, fc7 4096, fc8 num_classes

fc6 sees a 7x7x512 window, so it is exactly a 7x7 convolution with 4096 filters and fc7/fc8 are 1x1
convolutions (FCN §3.1): `fc_as_conv=True` builds them that way, giving a map of class scores on larger inputs.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvNormAct
from ._features import FeatureInfo, init_weights
from ._registry import register_model
from .info import SGD_COSINE_RECIPE, ModelInfo

# channels of the 3x3 convolutions of each stage; every stage ends with a 2x2 max-pool
VGG16_STAGES = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]


class VGG(nn.Module):
    def __init__(
        self,
        stages: list[tuple[int, ...]] = VGG16_STAGES,
        num_classes: int | None = 1000,
        batch_norm: bool = False,
        dropout: float = 0.5,
        fc_as_conv: bool = False,
    ) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if batch_norm else None
        self.stage_widths, self.batch_norm = stages, batch_norm
        self.stages = nn.ModuleList()
        self.feature_info: list[FeatureInfo] = []
        in_channels = 3
        for i, widths in enumerate(stages, start=1):
            layers: list[nn.Module] = []
            for width in widths:
                layers.append(ConvNormAct(in_channels, width, 3, norm_layer=norm))
                in_channels = width
            layers.append(nn.MaxPool2d(2, 2))
            self.stages.append(nn.Sequential(*layers))
            self.feature_info.append(FeatureInfo(f"pool{i}", in_channels, 2 ** i))
        self.num_features = in_channels
        self.fc_as_conv = fc_as_conv
        self.avgpool = self.classifier = None
        if num_classes is not None:
            if fc_as_conv:
                self.classifier = nn.Sequential(
                    ConvNormAct(in_channels, 4096, 7, padding=0, norm_layer=None), nn.Dropout(dropout),  # fc6
                    ConvNormAct(4096, 4096, 1, norm_layer=None), nn.Dropout(dropout),  # fc7
                    nn.Conv2d(4096, num_classes, 1),  # fc8
                )
            else:
                self.avgpool = nn.AdaptiveAvgPool2d(7)
                self.classifier = nn.Sequential(
                    nn.Linear(in_channels * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
                    nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
                    nn.Linear(4096, num_classes),
                )
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        for info, stage in zip(self.feature_info, self.stages):
            x = stage(x)
            features[info.name] = x
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes); with `fc_as_conv`, a score map (B, num_classes, h, w), 1x1 at 224x224."""
        if self.classifier is None:
            raise RuntimeError("this VGG was built without a classifier (num_classes=None)")
        x = self.forward_features(x)[self.feature_info[-1].name]
        if self.fc_as_conv:
            return self.classifier(x)
        x = self.avgpool(x).flatten(1)  # (B, 512*7*7)
        return self.classifier(x)


@register_model(ModelInfo("classification", recipe=SGD_COSINE_RECIPE, torchvision="vgg16"))
def vgg16(*, num_classes: int | None = 1000, batch_norm: bool = False, dropout: float = 0.5,
          fc_as_conv: bool = False) -> VGG:
    return VGG(VGG16_STAGES, num_classes=num_classes, batch_norm=batch_norm, dropout=dropout,
               fc_as_conv=fc_as_conv)
