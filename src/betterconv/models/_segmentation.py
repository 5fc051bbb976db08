"""What FCN-ResNet, DeepLabv3 and DeepLabv3+ share: a backbone read through `feature_info`, a dense head on its
last stage (DeepLabv3+: and on its reduction-4 stage), bilinear upsampling to the input size, and optionally an
auxiliary head on the stage before the last (as torchvision's reference models train with).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BetterConvError
from ..layers import ASPP, ConvNormAct
from ._features import FeatureInfo


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


class DeepLabV3PlusDecoder(nn.Module):
    """The decoder of DeepLabv3+ (Chen et al. 2018, §3.1 and Fig. 2; its widths chosen in §4.1):

        low-level features (reduction 4)  -> 1x1 conv-BN-ReLU to 48 channels
        encoder output (ASPP, 256 ch.)    -> bilinear upsampling to the low-level features' size
        concatenation (256 + 48 = 304)    -> two 3x3 conv-BN-ReLU of 256 -> 1x1 classifier

    The logits come out at the low-level features' size (reduction 4); the model upsamples them to the input.
    The paper upsamples the encoder output "by a factor of 4" (output stride 16); resizing it to the low-level map's
    size is the same when the input is a multiple of the output stride, and keeps the maps aligned at other sizes.
    """

    def __init__(self, low_channels: int, encoder_channels: int, num_classes: int, reduced_channels: int = 48,
                 channels: int = 256, align_corners: bool = False) -> None:
        super().__init__()
        self.reduce = ConvNormAct(low_channels, reduced_channels, 1)
        self.conv1 = ConvNormAct(encoder_channels + reduced_channels, channels, 3)
        self.conv2 = ConvNormAct(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.align_corners = align_corners

    def forward(self, encoder: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.reduce(low)  # (B, C_low, H/4, W/4) -> (B, 48, H/4, W/4)
        encoder = F.interpolate(encoder, size=low.shape[-2:], mode="bilinear",
                                align_corners=self.align_corners)  # (B, 256, H/os, W/os) -> (B, 256, H/4, W/4)
        y = torch.cat([encoder, low], dim=1)  # (B, 256 + 48, H/4, W/4)
        return self.classifier(self.conv2(self.conv1(y)))  # (B, classes, H/4, W/4)


class DeepLabV3PlusHead(nn.Module):
    """DeepLabv3+ (Chen et al. 2018, §3.1): DeepLabv3's ASPP as the encoder's last module (its 256-channel output,
    before any classifier), then the decoder on it and the backbone's reduction-4 features."""

    def __init__(self, in_channels: int, low_channels: int, num_classes: int, atrous_rates: Sequence[int],
                 image_pooling: bool = True, channels: int = 256, dropout: float = 0.1,
                 align_corners: bool = False) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, channels, atrous_rates, image_pooling, dropout)
        self.decoder = DeepLabV3PlusDecoder(low_channels, channels, num_classes, align_corners=align_corners)

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.aspp(x), low)


def deepest_stage(feature_info: Sequence[FeatureInfo], reduction: int) -> FeatureInfo:
    """The backbone's deepest stage at `reduction` (ResNet: layer1, not the stem, at 4), else a one-line error."""
    found = [info for info in feature_info if info.reduction == reduction]
    if not found:
        raise BetterConvError(f"the backbone has no stage at reduction {reduction} "
                              f"(its reductions: {', '.join(str(i.reduction) for i in feature_info)})")
    return found[-1]


class SegmentationModel(nn.Module):
    """`forward` gives logits at the input resolution (B, num_classes, H, W). With an auxiliary head, in training
    mode it gives the tuple (logits, aux_logits), as the auxiliary loss needs; `forward_aux` always does.

    With `skip_reduction` the head takes two feature maps, the last stage's and the deepest stage at that reduction
    (DeepLabv3+'s decoder: 4)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, num_classes: int, aux_head: bool = False,
                 align_corners: bool = False, skip_reduction: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_name = backbone.feature_info[-1].name
        self.skip_name = (None if skip_reduction is None
                          else deepest_stage(backbone.feature_info, skip_reduction).name)
        aux = backbone.feature_info[-2]
        self.aux_feature_name = aux.name
        self.aux_head = FCNHead(aux.channels, num_classes) if aux_head else None
        self.num_classes = num_classes
        self.align_corners = align_corners  # TensorFlow's DeepLab resizes logits with align_corners=True

    def _upsample(self, y: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners)

    def _head(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.skip_name is None:
            return self.head(features[self.feature_name])
        return self.head(features[self.feature_name], features[self.skip_name])

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = x.shape[-2:]
        features = self.backbone.forward_features(x)
        out = self._upsample(self._head(features), size)  # (B, classes, H, W)
        if self.aux_head is None:
            return out, None
        return out, self._upsample(self.aux_head(features[self.aux_feature_name]), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.aux_head is None:
            size = x.shape[-2:]
            return self._upsample(self._head(self.backbone.forward_features(x)), size)
        out, aux = self.forward_aux(x)
        return (out, aux) if self.training else out
