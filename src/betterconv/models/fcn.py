"""Fully Convolutional Networks (Long, Shelhamer & Darrell, CVPR 2015) on VGG16.

    VGG16 conv1-conv5 -> fc6 conv7x7 4096 -> fc7 conv1x1 4096 -> score_fr conv1x1 C        (stride 32)
    FCN-32s: upsample x32 (fixed bilinear)
    FCN-16s: upsample score_fr x2 (learned, bilinear init) + score_pool4 (1x1, zero init) -> upsample x16
    FCN-8s:  ... x2 (learned) + score_pool3 (1x1, zero init) -> upsample x8

As in §4.2 and §4.3 of the paper: the skip scores start at zero, the intermediate upsampling is learned from a
bilinear start, and the final upsampling is fixed bilinear interpolation. Instead of the reference's 100-pixel
padding and crops, inputs are zero-padded at the bottom/right to a multiple of 32, so every stride aligns
exactly, and the output is cropped back: any input size gives an output of the same size.

`fcn_resnet50/101` are torchvision's FCN variant: a ResNet at output stride 8 with a 3x3 `FCNHead` and
bilinear upsampling, optionally with an auxiliary head on layer3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BetterConvError
from ..layers import BilinearUpsample, ConvNormAct
from ._registry import register_model
from ._segmentation import FCNHead, SegmentationModel
from .resnet import ResNet
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


def _fcn_resnet(layers: tuple[int, ...], num_classes: int, output_stride: int, aux_head: bool) -> SegmentationModel:
    backbone = ResNet(layers, num_classes=None, output_stride=output_stride)
    return SegmentationModel(backbone, FCNHead(backbone.num_features, num_classes), num_classes, aux_head=aux_head)


@register_model()
def fcn_resnet50(*, num_classes: int = 21, output_stride: int = 8, aux_head: bool = False) -> SegmentationModel:
    return _fcn_resnet((3, 4, 6, 3), num_classes, output_stride, aux_head)


@register_model()
def fcn_resnet101(*, num_classes: int = 21, output_stride: int = 8, aux_head: bool = False) -> SegmentationModel:
    return _fcn_resnet((3, 4, 23, 3), num_classes, output_stride, aux_head)


def convolutionalize(classifier: nn.Module) -> VGG:
    """FCN §3.1: the same VGG16 classifier with fc6/fc7/fc8 as 7x7 and 1x1 convolutions and the same weights.

    At 224x224 it gives a 1x1 map equal to the classifier's logits; on a larger image, a map of class scores
    (8x8 at 448x448). Takes betterconv's `vgg16` or torchvision's `VGG` (16 layers).
    """
    import torchvision

    if isinstance(classifier, torchvision.models.VGG):
        from ..interop.torchvision import map_torchvision_state_dict

        converted = VGG(VGG16_STAGES, num_classes=classifier.classifier[-1].out_features)
        converted.load_state_dict(map_torchvision_state_dict(converted, classifier.state_dict(), "torchvision VGG"))
        converted.train(classifier.training)
        classifier = converted
    if not isinstance(classifier, VGG) or classifier.classifier is None:
        raise BetterConvError(f"convolutionalize takes a VGG classifier, got {type(classifier).__name__}")
    if classifier.fc_as_conv:
        return classifier
    fc6, fc7, fc8 = (m for m in classifier.classifier if isinstance(m, nn.Linear))
    dropout = next(m for m in classifier.classifier if isinstance(m, nn.Dropout)).p
    conv = VGG(classifier.stage_widths, num_classes=fc8.out_features, batch_norm=classifier.batch_norm,
               dropout=dropout, fc_as_conv=True)
    state = {k: v for k, v in classifier.state_dict().items() if k.startswith("stages.")}
    for (index, fc), kernel in zip(((0, fc6), (2, fc7), (4, fc8)), (7, 1, 1)):
        # (out, C*k*k) -> (out, C, k, k): Linear flattens (C, 7, 7) in the same order as the window it sees
        weight = fc.weight.detach().reshape(fc.out_features, -1, kernel, kernel)
        prefix = f"classifier.{index}.conv." if index < 4 else f"classifier.{index}."
        state[prefix + "weight"], state[prefix + "bias"] = weight, fc.bias.detach()
    conv.load_state_dict(state)
    conv.train(classifier.training)
    if hasattr(classifier, "model_name"):  # built by create_model: record how to rebuild the converted one
        conv.model_name = classifier.model_name
        conv.model_kwargs = {**classifier.model_kwargs, "fc_as_conv": True}
    return conv
