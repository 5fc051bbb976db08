"""DeepLabv3: Rethinking Atrous Convolution for Semantic Image Segmentation (Chen et al. 2017).

    backbone (output stride 8/16 by atrous convolution, §3.1; multi-grid in block4, §3.2)
    -> ASPP: 1x1, 3x3 atrous (6, 12, 18) at output stride 16 (doubled at 8), image pooling (§3.3) -> 256
    -> 1x1 conv to num_classes -> bilinear upsampling to the input size

On MobileNetV2 (Sandler et al. §6.3) the head drops the atrous branches ("ASPP off"), keeping the 1x1 and
image-pooling branches, on the 320-channel output of the last bottleneck.

torchvision's `deeplabv3_resnet50/101` are a configuration of these builders: `output_stride=8,
multi_grid=None, extra_conv=True, aspp_dropout=0.5, aux_head=True` (rates 12/24/36 follow from output stride 8).
"""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import BetterConvError
from dataclasses import replace

from ._registry import register_model
from .info import ModelInfo, SegRecipe
from ._segmentation import DeepLabHead, SegmentationModel
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet

# DeepLabv3 §3.3: rates (6, 12, 18) at output stride 16, doubled at 8; halved at 32 for completeness
DEFAULT_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}


# DeepLabv3 §4.1: lr 0.007, poly power 0.9, momentum 0.9, weight decay 1e-4, crop 513, batch 16, batch norm trained,
# output stride 16 in training; evaluated at output stride 8 with scales 0.5-1.75 and left-right flips (§4.3).
DEEPLABV3_RECIPE = SegRecipe("sgd", 0.007, 0.9, 1e-4, "poly", 16, 513, 50, eval_output_stride=8,
                             eval_scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), eval_flip=True,
                             source="DeepLabv3 (Chen et al. 2017) §4.1, §4.3")
# the builder keywords that give torchvision's deeplabv3_resnet50/101
TORCHVISION_CONFIG = {"output_stride": 8, "multi_grid": None, "extra_conv": True, "aspp_dropout": 0.5,
                      "aux_head": True}


def _deeplab_info(backbone: str, recipe: SegRecipe = DEEPLABV3_RECIPE, torchvision: str | None = None,
                  peer_note: str = "") -> ModelInfo:
    return ModelInfo("segmentation", input_size=(513, 513), recipe=recipe, backbone_classifier=backbone,
                     torchvision=torchvision, torchvision_config=TORCHVISION_CONFIG if torchvision else {},
                     peer_note=peer_note)


def _rates(atrous_rates: Sequence[int] | None, output_stride: int) -> tuple[int, ...]:
    """ASPP's atrous rates: None -> the paper's for the output stride; () -> no atrous branches."""
    if atrous_rates is None:
        return DEFAULT_RATES[output_stride]
    if any(int(r) != r or r < 1 for r in atrous_rates):
        raise BetterConvError(f"atrous_rates must be positive integers, got {tuple(atrous_rates)}")
    return tuple(int(r) for r in atrous_rates)


def _deeplabv3_resnet(layers: tuple[int, ...], num_classes: int, output_stride: int,
                      multi_grid: Sequence[int] | None, atrous_rates: Sequence[int] | None, image_pooling: bool,
                      extra_conv: bool, aspp_dropout: float, aux_head: bool) -> SegmentationModel:
    backbone = ResNet(layers, num_classes=None, output_stride=output_stride, multi_grid=multi_grid)
    head = DeepLabHead(backbone.num_features, num_classes, _rates(atrous_rates, output_stride), image_pooling,
                       dropout=aspp_dropout, extra_conv=extra_conv)
    return SegmentationModel(backbone, head, num_classes, aux_head=aux_head)


@register_model(_deeplab_info("resnet50", torchvision="deeplabv3_resnet50"))
def deeplabv3_resnet50(*, num_classes: int = 21, output_stride: int = 16,
                       multi_grid: Sequence[int] | None = (1, 2, 4), atrous_rates: Sequence[int] | None = None,
                       image_pooling: bool = True, extra_conv: bool = False, aspp_dropout: float = 0.1,
                       aux_head: bool = False) -> SegmentationModel:
    """`atrous_rates=None` takes the paper's rates for the output stride; `()` switches ASPP's atrous branches off."""
    return _deeplabv3_resnet((3, 4, 6, 3), num_classes, output_stride, multi_grid, atrous_rates, image_pooling,
                             extra_conv, aspp_dropout, aux_head)


@register_model(_deeplab_info("resnet101", torchvision="deeplabv3_resnet101"))
def deeplabv3_resnet101(*, num_classes: int = 21, output_stride: int = 16,
                        multi_grid: Sequence[int] | None = (1, 2, 4), atrous_rates: Sequence[int] | None = None,
                        image_pooling: bool = True, extra_conv: bool = False, aspp_dropout: float = 0.1,
                        aux_head: bool = False) -> SegmentationModel:
    """`atrous_rates=None` takes the paper's rates for the output stride; `()` switches ASPP's atrous branches off."""
    return _deeplabv3_resnet((3, 4, 23, 3), num_classes, output_stride, multi_grid, atrous_rates, image_pooling,
                             extra_conv, aspp_dropout, aux_head)


# MobileNetV2 §6.3 trains DeepLabv3 on MobileNetV2 with weight decay 4e-5
@register_model(_deeplab_info("mobilenet_v2", replace(DEEPLABV3_RECIPE, weight_decay=4e-5), peer_note=(
    "torchvision has no DeepLabv3 on MobileNetV2 (its deeplabv3_mobilenet_v3_large is a different network)")))
def deeplabv3_mobilenet_v2(*, num_classes: int = 21, output_stride: int = 16, width_mult: float = 1.0,
                           atrous_rates: Sequence[int] | None = (), image_pooling: bool = True,
                           padding: str | None = None, align_corners: bool = False,
                           round_nearest: int = 8) -> SegmentationModel:
    """The mobile variant of MobileNetV2 §6.3 by default: `atrous_rates=()`, ASPP's atrous branches off (1x1 and
    image pooling only). As for every DeepLabv3, `atrous_rates=None` takes the paper's rates for the output stride.

    `padding="tf_same"` and `align_corners=True` reproduce TensorFlow's DeepLab for ported TF/TFLite weights."""
    backbone = MobileNetV2(num_classes=None, width_mult=width_mult, output_stride=output_stride, padding=padding,
                           round_nearest=round_nearest)
    head = DeepLabHead(backbone.num_features, num_classes, _rates(atrous_rates, output_stride), image_pooling)
    return SegmentationModel(backbone, head, num_classes, align_corners=align_corners)
