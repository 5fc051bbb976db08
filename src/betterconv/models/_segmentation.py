"""What FCN-ResNet and DeepLabv3 share: a backbone read through `feature_info`, a dense head on its last stage,
bilinear upsampling to the input size, and optionally an auxiliary head on the stage before (as torchvision's
reference models train with).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ASPP, ConvNormAct


class FCNHead(nn.Sequential):
    """3x3 conv to a quarter of the channels, batch norm, ReLU, dropout, 1x1 classifier (torchvision's FCN head)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_channels, in_channels // 4, 3)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(in_channels // 4, num_classes, 1)


class DeepLabHead(nn.Sequential):
    """ASPP (DeepLabv3 §3.3), then optionally a 3x3 conv-BN-ReLU (torchvision's variant), then 1x1 logits."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int], image_pooling: bool = True,
                 channels: int = 256, dropout: float = 0.1, extra_conv: bool = False) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, channels, atrous_rates, image_pooling, dropout)
        if extra_conv:
            self.conv = ConvNormAct(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)


class SegmentationModel(nn.Module):
    """`forward` gives logits at the input resolution (B, num_classes, H, W). With an auxiliary head, in training
    mode it gives the tuple (logits, aux_logits), as the auxiliary loss needs; `forward_aux` always does."""

    def __init__(self, backbone: nn.Module, head: nn.Module, num_classes: int, aux_head: bool = False,
                 align_corners: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_name = backbone.feature_info[-1].name
        aux = backbone.feature_info[-2]
        self.aux_feature_name = aux.name
        self.aux_head = FCNHead(aux.channels, num_classes) if aux_head else None
        self.num_classes = num_classes
        self.align_corners = align_corners  # TensorFlow's DeepLab resizes logits with align_corners=True

    def _upsample(self, y: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = x.shape[-2:]
        features = self.backbone.forward_features(x)
        out = self._upsample(self.head(features[self.feature_name]), size)  # (B, classes, H, W)
        if self.aux_head is None:
            return out, None
        return out, self._upsample(self.aux_head(features[self.aux_feature_name]), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.aux_head is None:
            size = x.shape[-2:]
            return self._upsample(self.head(self.backbone.forward_features(x)[self.feature_name]), size)
        out, aux = self.forward_aux(x)
        return (out, aux) if self.training else out
