"""Fully Convolutional Networks (Long, Shelhamer & Darrell, CVPR 2015), on VGG16 as in the paper or on any
backbone that publishes `feature_info`.

    VGG16 conv1-conv5 -> fc6 conv7x7 4096 -> fc7 conv1x1 4096 -> score_fr conv1x1 C        (stride 32)
    FCN-32s: upsample x32 (fixed bilinear)
    FCN-16s: upsample score_fr x2 (learned, bilinear init) + score_pool4 (1x1, zero init) -> upsample x16
    FCN-8s:  ... x2 (learned) + score_pool3 (1x1, zero init) -> upsample x8

As in §4.2 and §4.3 of the paper: the skip scores start at zero, the intermediate upsampling is learned from a
bilinear start, and the final upsampling is fixed bilinear interpolation. Instead of the reference's 100-pixel
padding and crops, inputs are zero-padded at the bottom/right to a multiple of 32, so every stride aligns
exactly, and the output is cropped back: any input size gives an output of the same size.

The skips are the last stages at reduction 16 and 8 of the backbone's `feature_info` (pool4 and pool3 on VGG16).
`fcn*_mobilenet_v2` put the same skip architecture on MobileNetV2 (no fc6/fc7: score_fr reads the 320-channel
last stage), so that 32s/16s/8s can be compared with an ImageNet backbone at a fraction of VGG16's cost.

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
from .info import ModelInfo, SegRecipe
from ._segmentation import FCNHead, SegmentationModel
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet
from .vgg import VGG16_STAGES, VGG

SKIP_REDUCTIONS = {32: (), 16: (16,), 8: (16, 8)}  # FCN-32s/16s/8s: the reductions their skips come from


class FCN(nn.Module):
    """`fc_channels` adds the paper's fc6 (7x7) and fc7 (1x1) convolutions with that width before score_fr;
    `None` scores the backbone's last stage directly."""

    def __init__(self, backbone: nn.Module, stride: int = 8, num_classes: int = 21, fc_channels: int | None = 4096,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if stride not in SKIP_REDUCTIONS:
            raise BetterConvError(f"FCN stride must be 32, 16 or 8, got {stride}")
        self.backbone = backbone
        last = backbone.feature_info[-1]
        if last.reduction != 32:
            raise BetterConvError(f"FCN needs a backbone at reduction 32, got {last.reduction}")
        self.last_name = last.name
        channels = backbone.num_features
        if fc_channels:
            self.fc6 = ConvNormAct(channels, fc_channels, 7, norm_layer=None)
            self.fc7 = ConvNormAct(fc_channels, fc_channels, 1, norm_layer=None)
            channels = fc_channels
        else:
            self.fc6 = self.fc7 = None
        self.dropout = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(channels, num_classes, 1)
        # the deepest stage at each skip's reduction (VGG16: pool4 at 16, pool3 at 8)
        stage_at = {info.reduction: info for info in backbone.feature_info}
        self.skips = tuple(stage_at[r].name for r in SKIP_REDUCTIONS[stride])
        self.score_skips = nn.ModuleDict()
        self.upsample_skips = nn.ModuleDict()
        for reduction, name in zip(SKIP_REDUCTIONS[stride], self.skips):
            score = nn.Conv2d(stage_at[reduction].channels, num_classes, 1)
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
        y = features[self.last_name]  # (B, C', H/32, W/32)
        if self.fc6 is not None:
            y = self.dropout(self.fc7(self.dropout(self.fc6(y))))
        y = self.score_fr(y)  # (B, C, H/32, W/32)
        for name in self.skips:
            y = self.upsample_skips[name](y) + self.score_skips[name](features[name])  # (B, C, H/16 or H/8, ...)
        return self.upsample(y)[..., :h, :w]  # (B, C, H, W)


# FCN §4.3: SGD, momentum 0.99, batch 1, lr 1e-10 on the per-pixel *sum*; with the mean over a 500x500 image the same
# step is 1e-10 * 250,000 = 2.5e-5. Weight decay 5e-4, fixed learning rate.
FCN_RECIPE = SegRecipe("sgd", 2.5e-5, 0.99, 5e-4, "constant", 1, 500, 50,
                       source="FCN (Long et al. 2015) §4.3, 'heavy' momentum 0.99, batch 1")
# torchvision's reference recipe for its fcn_resnet50/101 (references/segmentation: 8 GPUs x batch 4 at lr 0.02,
# momentum 0.9, weight decay 1e-4, poly decay power 0.9, 30 epochs, 480 crops, auxiliary loss weight 0.5)
TORCHVISION_FCN_RECIPE = SegRecipe("sgd", 0.02, 0.9, 1e-4, "poly", 32, 480, 30, aux_weight=0.5,
                                   source="torchvision references/segmentation (fcn_resnet50/101)")
FCN_INPUT_SIZE = (500, 500)  # FCN §4.3: PASCAL images, at most 500 x 500


def _fcn_info(backbone: str, recipe: SegRecipe = FCN_RECIPE, torchvision: str | None = None,
              torchvision_config: dict | None = None) -> ModelInfo:
    return ModelInfo("segmentation", input_size=FCN_INPUT_SIZE, recipe=recipe, backbone_classifier=backbone,
                     torchvision=torchvision, torchvision_config=torchvision_config or {})


def _fcn_vgg16(stride: int, num_classes: int, dropout: float) -> FCN:
    return FCN(VGG(VGG16_STAGES, num_classes=None), stride, num_classes, fc_channels=4096, dropout=dropout)


def _fcn_mobilenet_v2(stride: int, num_classes: int, width_mult: float, padding: str | None) -> FCN:
    backbone = MobileNetV2(num_classes=None, width_mult=width_mult, padding=padding)
    return FCN(backbone, stride, num_classes, fc_channels=None, dropout=0.0)


@register_model(_fcn_info("vgg16"))
def fcn32s_vgg16(*, num_classes: int = 21, dropout: float = 0.5) -> FCN:
    return _fcn_vgg16(32, num_classes, dropout)


@register_model(_fcn_info("vgg16"))
def fcn16s_vgg16(*, num_classes: int = 21, dropout: float = 0.5) -> FCN:
    return _fcn_vgg16(16, num_classes, dropout)


@register_model(_fcn_info("vgg16"))
def fcn8s_vgg16(*, num_classes: int = 21, dropout: float = 0.5) -> FCN:
    return _fcn_vgg16(8, num_classes, dropout)


@register_model(_fcn_info("mobilenet_v2"))
def fcn32s_mobilenet_v2(*, num_classes: int = 21, width_mult: float = 1.0, padding: str | None = None) -> FCN:
    return _fcn_mobilenet_v2(32, num_classes, width_mult, padding)


@register_model(_fcn_info("mobilenet_v2"))
def fcn16s_mobilenet_v2(*, num_classes: int = 21, width_mult: float = 1.0, padding: str | None = None) -> FCN:
    return _fcn_mobilenet_v2(16, num_classes, width_mult, padding)


@register_model(_fcn_info("mobilenet_v2"))
def fcn8s_mobilenet_v2(*, num_classes: int = 21, width_mult: float = 1.0, padding: str | None = None) -> FCN:
    return _fcn_mobilenet_v2(8, num_classes, width_mult, padding)


def _fcn_resnet(layers: tuple[int, ...], num_classes: int, output_stride: int, aux_head: bool) -> SegmentationModel:
    backbone = ResNet(layers, num_classes=None, output_stride=output_stride)
    return SegmentationModel(backbone, FCNHead(backbone.num_features, num_classes), num_classes, aux_head=aux_head)


@register_model(_fcn_info("resnet50", TORCHVISION_FCN_RECIPE, "fcn_resnet50", {"aux_head": True}))
def fcn_resnet50(*, num_classes: int = 21, output_stride: int = 8, aux_head: bool = False) -> SegmentationModel:
    return _fcn_resnet((3, 4, 6, 3), num_classes, output_stride, aux_head)


@register_model(_fcn_info("resnet101", TORCHVISION_FCN_RECIPE, "fcn_resnet101", {"aux_head": True}))
def fcn_resnet101(*, num_classes: int = 21, output_stride: int = 8, aux_head: bool = False) -> SegmentationModel:
    return _fcn_resnet((3, 4, 23, 3), num_classes, output_stride, aux_head)


def convolutionalize(classifier: nn.Module) -> VGG:
    """FCN §3.1: the same VGG16 classifier with fc6/fc7/fc8 as 7x7 and 1x1 convolutions and the same weights.

    At 224x224 it gives a 1x1 map equal to the classifier's logits; on a larger image, a map of class scores
    (8x8 at 448x448). Takes betterconv's `vgg16`; `betterconv.convolutionalize` also takes torchvision's `VGG`.
    """
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
