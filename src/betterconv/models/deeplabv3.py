"""DeepLabv3: Rethinking Atrous Convolution for Semantic Image Segmentation (Chen et al. 2017), and DeepLabv3+:
Encoder-Decoder with Atrous Separable Convolution (Chen et al., ECCV 2018).

    DeepLabv3
    backbone (output stride 8/16 by atrous convolution, §3.1; multi-grid in block4, §3.2)
    -> ASPP: 1x1, 3x3 atrous (6, 12, 18) at output stride 16 (doubled at 8), image pooling (§3.3) -> 256
    -> 1x1 conv to num_classes -> bilinear upsampling to the input size

    DeepLabv3+ (§3.1, Fig. 2): the same encoder (ASPP's 256-channel output, output stride 16 by default), then
    the decoder: the backbone's reduction-4 stage (ResNet: layer1; MobileNetV2: its 24-channel stage)
    -> 1x1 conv-BN-ReLU to 48; ASPP output bilinearly upsampled to that size; concatenated (304)
    -> two 3x3 conv-BN-ReLU of 256 -> 1x1 conv to num_classes -> bilinear upsampling to the input size

On MobileNetV2 (Sandler et al. §6.3) DeepLabv3's head drops the atrous branches ("ASPP off"), keeping the 1x1 and
image-pooling branches, on the 320-channel output of the last bottleneck. DeepLabv3+ has no MobileNetV2 setting in
its paper; `deeplabv3plus_mobilenet_v2` keeps the full ASPP of §3.1 by default.

ASPP's rates (6, 12, 18) at output stride 16 (12, 24, 36 at 8) were chosen for a 513x513 crop (a 33x33 map at
output stride 16). `aspp_crop_size=N` scales them to an N-pixel crop (`scaled_rates`): each rate of the output
stride times N / 513, rounded half up, at least 1 and each above the one before; N is the shorter side of the
training crop (360 for CamVid's 360x480 frames: rates 4, 8, 13 at output stride 16, 8, 17, 25 at 8). Given in
pixels of the input, the option means the same at every output stride, so evaluating at output stride 8 a model
trained at 16 doubles its rates as the paper does.

torchvision's `deeplabv3_resnet50/101` are a configuration of these builders: `output_stride=8,
multi_grid=None, extra_conv=True, aspp_dropout=0.5, aux_head=True` (rates 12/24/36 follow from output stride 8).
torchvision has no DeepLabv3+.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..errors import BetterConvError
from ._registry import register_model
from ._segmentation import DeepLabHead, DeepLabV3PlusHead, SegmentationModel, deepest_stage
from .info import ModelInfo, SegRecipe
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet

# DeepLabv3 §3.3: rates (6, 12, 18) at output stride 16, doubled at 8; halved at 32 for completeness
DEFAULT_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}
PAPER_CROP = 513  # DeepLabv3 §4.1 and DeepLabv3+ §4: the rates above are chosen for 513x513 crops
DECODER_REDUCTION = 4  # DeepLabv3+ §3.1: the decoder's low-level features ("Conv2" of ResNet-101), at stride 4


# DeepLabv3 §4.1: lr 0.007, poly power 0.9, momentum 0.9, weight decay 1e-4, crop 513, batch 16, batch norm trained,
# output stride 16 in training; evaluated at output stride 8 with scales 0.5-1.75 and left-right flips (§4.3).
DEEPLABV3_RECIPE = SegRecipe("sgd", 0.007, 0.9, 1e-4, "poly", 16, 513, 50, eval_output_stride=8,
                             eval_scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), eval_flip=True,
                             source="DeepLabv3 (Chen et al. 2017) §4.1, §4.3")
# DeepLabv3+ §4 trains with DeepLabv3's protocol (poly lr 0.007, crop 513, batch 16, batch norm fine-tuned at output
# stride 16, random scale 0.5-2.0 and flips) and evaluates at output stride 8 with multi-scale inputs and flips
# (Table 3); it gives no weight decay, so DeepLabv3's is kept.
DEEPLABV3PLUS_RECIPE = replace(DEEPLABV3_RECIPE, source="DeepLabv3+ (Chen et al. 2018) §4: DeepLabv3's protocol "
                                                        "(§4.1, §4.3 of DeepLabv3), weight decay from DeepLabv3")
# the builder keywords that give torchvision's deeplabv3_resnet50/101
TORCHVISION_CONFIG = {"output_stride": 8, "multi_grid": None, "extra_conv": True, "aspp_dropout": 0.5,
                      "aux_head": True}


def _deeplab_info(backbone: str, recipe: SegRecipe = DEEPLABV3_RECIPE, torchvision: str | None = None,
                  peer_note: str = "") -> ModelInfo:
    return ModelInfo("segmentation", input_size=(PAPER_CROP, PAPER_CROP), recipe=recipe, backbone_classifier=backbone,
                     torchvision=torchvision, torchvision_config=TORCHVISION_CONFIG if torchvision else {},
                     peer_note=peer_note)


def scaled_rates(crop_size: int, output_stride: int = 16) -> tuple[int, ...]:
    """The paper's ASPP rates for `output_stride` (`DEFAULT_RATES`, chosen for a `PAPER_CROP` = 513 crop) scaled to
    a `crop_size`-pixel crop: each rate r becomes r * crop_size / 513 rounded half up, raised to at least 1 and to
    one more than the rate before it (so the branches stay distinct). 513 gives the paper's rates at every output
    stride; 360 gives (4, 8, 13) at output stride 16 and (8, 17, 25) at 8."""
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
        raise BetterConvError(f"aspp_crop_size must be an integer >= 1, got {crop_size!r}")
    if output_stride not in DEFAULT_RATES:
        raise BetterConvError(f"output_stride must be one of {', '.join(map(str, DEFAULT_RATES))}, "
                              f"got {output_stride}")
    rates: list[int] = []
    for r in DEFAULT_RATES[output_stride]:
        scaled = (2 * r * crop_size + PAPER_CROP) // (2 * PAPER_CROP)  # round half up, in integers (no overflow)
        rates.append(max(scaled, rates[-1] + 1 if rates else 1))
    return tuple(rates)


def _rates(atrous_rates: Sequence[int] | None, output_stride: int,
           aspp_crop_size: int | None = None) -> tuple[int, ...]:
    """ASPP's atrous rates: None -> the paper's for the output stride (scaled to an `aspp_crop_size` crop when given);
    () -> no atrous branches."""
    if aspp_crop_size is not None:
        if atrous_rates is not None:
            raise BetterConvError(f"aspp_crop_size scales the paper's rates and needs atrous_rates=None, got "
                                  f"atrous_rates={tuple(atrous_rates)}")
        return scaled_rates(aspp_crop_size, output_stride)
    if atrous_rates is None:
        return DEFAULT_RATES[output_stride]
    if any(int(r) != r or r < 1 for r in atrous_rates):
        raise BetterConvError(f"atrous_rates must be positive integers, got {tuple(atrous_rates)}")
    return tuple(int(r) for r in atrous_rates)


def _deeplabv3_resnet(layers: tuple[int, ...], num_classes: int, output_stride: int,
                      multi_grid: Sequence[int] | None, atrous_rates: Sequence[int] | None, image_pooling: bool,
                      extra_conv: bool, aspp_dropout: float, aux_head: bool, aspp_crop_size: int | None,
                      dilation_pattern: str) -> SegmentationModel:
    backbone = ResNet(layers, num_classes=None, output_stride=output_stride, multi_grid=multi_grid,
                      dilation_pattern=dilation_pattern)
    head = DeepLabHead(backbone.num_features, num_classes, _rates(atrous_rates, output_stride, aspp_crop_size),
                       image_pooling, dropout=aspp_dropout, extra_conv=extra_conv)
    return SegmentationModel(backbone, head, num_classes, aux_head=aux_head)


@register_model(_deeplab_info("resnet50", torchvision="deeplabv3_resnet50"))
def deeplabv3_resnet50(*, num_classes: int = 21, output_stride: int = 16,
                       multi_grid: Sequence[int] | None = (1, 2, 4), atrous_rates: Sequence[int] | None = None,
                       image_pooling: bool = True, extra_conv: bool = False, aspp_dropout: float = 0.1,
                       aux_head: bool = False, aspp_crop_size: int | None = None,
                       dilation_pattern: str = "plain") -> SegmentationModel:
    """`atrous_rates=None` takes the paper's rates for the output stride (DeepLabv3 §3.3), scaled to an
    `aspp_crop_size`-pixel crop when given (`scaled_rates`); `()` switches ASPP's atrous branches off.
    `dilation_pattern` goes to the `ResNet` backbone."""
    return _deeplabv3_resnet((3, 4, 6, 3), num_classes, output_stride, multi_grid, atrous_rates, image_pooling,
                             extra_conv, aspp_dropout, aux_head, aspp_crop_size, dilation_pattern)


@register_model(_deeplab_info("resnet101", torchvision="deeplabv3_resnet101"))
def deeplabv3_resnet101(*, num_classes: int = 21, output_stride: int = 16,
                        multi_grid: Sequence[int] | None = (1, 2, 4), atrous_rates: Sequence[int] | None = None,
                        image_pooling: bool = True, extra_conv: bool = False, aspp_dropout: float = 0.1,
                        aux_head: bool = False, aspp_crop_size: int | None = None,
                        dilation_pattern: str = "plain") -> SegmentationModel:
    """`atrous_rates=None` takes the paper's rates for the output stride (DeepLabv3 §3.3), scaled to an
    `aspp_crop_size`-pixel crop when given (`scaled_rates`); `()` switches ASPP's atrous branches off.
    `dilation_pattern` goes to the `ResNet` backbone."""
    return _deeplabv3_resnet((3, 4, 23, 3), num_classes, output_stride, multi_grid, atrous_rates, image_pooling,
                             extra_conv, aspp_dropout, aux_head, aspp_crop_size, dilation_pattern)


# MobileNetV2 §6.3 trains DeepLabv3 on MobileNetV2 with weight decay 4e-5
@register_model(_deeplab_info("mobilenet_v2", replace(DEEPLABV3_RECIPE, weight_decay=4e-5), peer_note=(
    "torchvision has no DeepLabv3 on MobileNetV2 (its deeplabv3_mobilenet_v3_large is a different network)")))
def deeplabv3_mobilenet_v2(*, num_classes: int = 21, output_stride: int = 16, width_mult: float = 1.0,
                           atrous_rates: Sequence[int] | None = (), image_pooling: bool = True,
                           padding: str | None = None, align_corners: bool = False,
                           round_nearest: int = 8, aspp_crop_size: int | None = None,
                           dilation_pattern: str = "plain") -> SegmentationModel:
    """The mobile variant of MobileNetV2 §6.3 by default: `atrous_rates=()`, ASPP's atrous branches off (1x1 and
    image pooling only). As for every DeepLabv3, `atrous_rates=None` takes the paper's rates for the output stride,
    and `atrous_rates=None, aspp_crop_size=N` scales them to an N-pixel crop (`scaled_rates`).

    `padding="tf_same"` and `align_corners=True` reproduce TensorFlow's DeepLab for ported TF/TFLite weights.
    `dilation_pattern` goes to the `MobileNetV2` backbone."""
    backbone = MobileNetV2(num_classes=None, width_mult=width_mult, output_stride=output_stride, padding=padding,
                           round_nearest=round_nearest, dilation_pattern=dilation_pattern)
    head = DeepLabHead(backbone.num_features, num_classes, _rates(atrous_rates, output_stride, aspp_crop_size),
                       image_pooling)
    return SegmentationModel(backbone, head, num_classes, align_corners=align_corners)


# --- DeepLabv3+ -----------------------------------------------------------------------------------------------------
def _deeplabv3plus(backbone: ResNet | MobileNetV2, num_classes: int, atrous_rates: Sequence[int] | None,
                   image_pooling: bool, aspp_dropout: float, aspp_crop_size: int | None,
                   align_corners: bool) -> SegmentationModel:
    rates = _rates(atrous_rates, backbone.output_stride, aspp_crop_size)
    low = deepest_stage(backbone.feature_info, DECODER_REDUCTION)
    head = DeepLabV3PlusHead(backbone.num_features, low.channels, num_classes, rates, image_pooling,
                             dropout=aspp_dropout, align_corners=align_corners)
    return SegmentationModel(backbone, head, num_classes, align_corners=align_corners,
                             skip_reduction=DECODER_REDUCTION)


@register_model(_deeplab_info("resnet50", DEEPLABV3PLUS_RECIPE, peer_note="torchvision has no DeepLabv3+"))
def deeplabv3plus_resnet50(*, num_classes: int = 21, output_stride: int = 16,
                           multi_grid: Sequence[int] | None = (1, 2, 4), atrous_rates: Sequence[int] | None = None,
                           image_pooling: bool = True, aspp_dropout: float = 0.1,
                           aspp_crop_size: int | None = None, dilation_pattern: str = "plain",
                           align_corners: bool = False) -> SegmentationModel:
    """DeepLabv3+ (Chen et al. 2018, §3.1) on ResNet-50: DeepLabv3's encoder (the keywords of
    `deeplabv3_resnet50`) and the decoder on layer1. `dilation_pattern` goes to the `ResNet` backbone."""
    backbone = ResNet((3, 4, 6, 3), num_classes=None, output_stride=output_stride, multi_grid=multi_grid,
                      dilation_pattern=dilation_pattern)
    return _deeplabv3plus(backbone, num_classes, atrous_rates, image_pooling, aspp_dropout, aspp_crop_size,
                          align_corners)


# as deeplabv3_mobilenet_v2, MobileNetV2 §6.3's weight decay 4e-5
@register_model(_deeplab_info("mobilenet_v2", replace(DEEPLABV3PLUS_RECIPE, weight_decay=4e-5),
                              peer_note="torchvision has no DeepLabv3+"))
def deeplabv3plus_mobilenet_v2(*, num_classes: int = 21, output_stride: int = 16, width_mult: float = 1.0,
                               atrous_rates: Sequence[int] | None = None, image_pooling: bool = True,
                               aspp_dropout: float = 0.1, aspp_crop_size: int | None = None,
                               dilation_pattern: str = "plain", padding: str | None = None,
                               align_corners: bool = False, round_nearest: int = 8) -> SegmentationModel:
    """DeepLabv3+ (Chen et al. 2018, §3.1) on MobileNetV2: the full ASPP by default (`atrous_rates=None`, the
    paper's rates; `()` gives MobileNetV2 §6.3's head without atrous branches) and the decoder on the 24-channel
    (at width 1) reduction-4 stage. `padding`, `align_corners` and `round_nearest` as in `deeplabv3_mobilenet_v2`;
    `dilation_pattern` goes to the `MobileNetV2` backbone."""
    backbone = MobileNetV2(num_classes=None, width_mult=width_mult, output_stride=output_stride, padding=padding,
                           round_nearest=round_nearest, dilation_pattern=dilation_pattern)
    return _deeplabv3plus(backbone, num_classes, atrous_rates, image_pooling, aspp_dropout, aspp_crop_size,
                          align_corners)
