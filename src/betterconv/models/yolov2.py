"""YOLOv2 (Redmon & Farhadi, "YOLO9000: Better, Faster, Stronger", CVPR 2017, §2 "Better"), exactly as
yolov2-voc.cfg and yolov2-tiny-voc.cfg lay it out.

yolov2-voc.cfg, for a 416x416 input (A anchors, C classes):
    layers  type                                  output
    0-22    Darknet-19 without its classifier     13x13x1024  (layer 16: 26x26x512)
    23, 24  conv 1024 3x3, conv 1024 3x3          13x13x1024
    25      route 16                              26x26x512
    26      conv 64 1x1                           26x26x64
    27      reorg /2                              13x13x256
    28      route 27, 24                          13x13x1280
    29      conv 1024 3x3                         13x13x1024
    30      conv A*(5+C) 1x1, linear, bias        13x13x125
    31      region (decoding and loss; not part of forward)

yolov2-tiny-voc.cfg: conv 16 3x3, then five (maxpool 2x2/2, conv 3x3) with 32..512 filters, maxpool 2x2/1
(which keeps 13x13), conv 1024 3x3, conv 1024 3x3, conv A*(5+C) 1x1 linear.

The output is the region layer's input: per anchor x, y, w, h, objectness, then C class scores, raw. Anchors are
(width, height) in grid cells (units of 32 pixels), stored on the model as the buffer `anchors`.

`scales=2` (or `second_scale=True`) and `scales=3` are the survey's fix for YOLOv2's small-object weakness, as YOLOv3
(Redmon & Farhadi 2018, §2.3) does it (`PredictionPyramid`): the fused 13x13 features go through a 1x1 conv to 256
channels, are upsampled x2 and joined with the 26x26x512 stage, then a 3x3 conv (512) and a 1x1 prediction at stride
16; with 3 scales the same again (128, 256) with the 52x52x256 stage at stride 8. The anchors are split by area over
the scales, the smallest to the finest; forward then returns one output per scale, coarsest first, and
`head_anchors()` gives each output's anchors in its own grid units. `yolov2_mobilenet_v2` puts the same head on
MobileNetV2.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BetterConvError
from ..layers import Reorg
from ._features import FeatureInfo, make_divisible
from ._registry import register_model
from .info import DARKNET_MEAN, DARKNET_STD, IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD, DetRecipe, ModelInfo
from .darknet import DARKNET19_STAGES, Darknet, DarknetMaxPool, darknet_conv, init_darknet_weights
from .mobilenet_v2 import MobileNetV2

# how the head's t_x, t_y place a box (decoded in tasks.region): YOLOv2 §2's direct location prediction, or the
# anchor offsets it started from
LOCATIONS = ("sigmoid", "offset")


def check_location(location: str) -> str:
    if location not in LOCATIONS:
        raise BetterConvError(f"location must be one of {', '.join(LOCATIONS)}, got {location!r}")
    return location


# the input normalisations a MobileNetV2 backbone's ImageNet weights expect (in [0, 1] units)
INPUT_NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "tensorflow": (TF_MEAN, TF_STD)}
VOC_ANCHORS = ((1.3221, 1.73145), (3.19275, 4.00944), (5.05587, 8.09892), (9.47112, 4.84053), (11.2364, 10.0071))


# YOLOv2 §3 (darknet's yolov2-voc.cfg): SGD, lr 1e-3 after a 1000-step warm-up (burn_in), momentum 0.9, weight
# decay 5e-4, 160 epochs with the rate divided by 10 at epochs 60 and 90, batch 64.
YOLOV2_RECIPE = DetRecipe("sgd", 1e-3, 0.9, 5e-4, "step", 160, (60, 90), 64, 1000,
                          source="YOLOv2 (Redmon & Farhadi 2017) §3, yolov2-voc.cfg")
_NO_PEER = "torchvision has no YOLOv2"
TINY_VOC_ANCHORS = ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52))
TINY_STAGES = [[(32, 3)], [(64, 3)], [(128, 3)], [(256, 3)], [(512, 3)]]


def _anchor_tensor(name: str, anchors: Sequence[tuple[float, float]]) -> torch.Tensor:
    try:
        pairs = [tuple(map(float, a)) for a in anchors]
    except (TypeError, ValueError):
        pairs = []
    if not pairs or any(len(p) != 2 or not all(0 < v < math.inf for v in p) for p in pairs):
        got = " ".join(repr(anchors).split())
        raise BetterConvError(f"{name} anchors must be (width, height) pairs of positive numbers, got {got}")
    return torch.tensor(pairs, dtype=torch.float32)  # (A, 2)


class _YOLOv2Base(nn.Module):
    """Anchors, class count, the input-size check and the backbone's feature contract, shared by both models."""

    name = "yolov2"
    backbone: Darknet

    def __init__(self, num_classes: int, anchors: Sequence[tuple[float, float]], location: str = "sigmoid") -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise BetterConvError(f"{self.name} num_classes must be a positive integer, got {num_classes!r}")
        self.location = check_location(location)  # how the head's t_x, t_y place a box (tasks.region)
        self.register_buffer("anchors", _anchor_tensor(self.name, anchors))
        self.num_classes = num_classes
        self.num_anchors = len(self.anchors)
        self.out_channels = self.num_anchors * (5 + num_classes)

    def head_anchors(self) -> list[torch.Tensor]:
        """The anchors of each output of `forward`, in grid cells of that output."""
        return [self.anchors]

    @property
    def feature_info(self) -> list[FeatureInfo]:
        return self.backbone.feature_info

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone.forward_features(x)

    def _check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise BetterConvError(f"{self.name} needs height and width divisible by 32, got {h}x{w}")


class PredictionPyramid(nn.Module):
    """YOLOv3's top-down path (Redmon & Farhadi 2018, §2.3 "Predictions Across Scales") on a YOLOv2 head: the
    fused stride-32 features predict the largest anchors; for each finer backbone stage in turn (stride 16, then 8)
    the previous level goes through a 1x1 conv (`laterals`), is upsampled x2 (nearest) and concatenated with the
    stage, a 3x3 conv mixes them (`fuses`) and a 1x1 conv predicts that level's anchors (`preds`).

    `anchors` are split by area over the levels, the smallest to the finest (`anchor_index[i]` are the indices of
    level i's anchors, level 0 = stride 32). The first level's prediction conv is `pred`.
    """

    def __init__(self, anchors: torch.Tensor, num_classes: int, channels: int, stage_channels: Sequence[int],
                 lateral: Sequence[int], fused: Sequence[int]) -> None:
        super().__init__()
        levels = 1 + len(stage_channels)
        if len(anchors) < levels:
            raise BetterConvError(f"{levels} prediction scales need at least {levels} anchors, got {len(anchors)}")
        by_area = (anchors[:, 0] * anchors[:, 1]).argsort(descending=True)  # largest first: stride 32 first
        sizes = [len(anchors) // levels + (i < len(anchors) % levels) for i in range(levels)]
        splits = torch.split(by_area, sizes)  # coarse levels take the extra anchors when A does not divide
        for i, index in enumerate(splits):
            self.register_buffer(f"anchor_index_{i}", index.sort().values, persistent=False)
        self.levels = levels
        self.pred = nn.Conv2d(channels, sizes[0] * (5 + num_classes), 1)
        self.laterals, self.fuses, self.preds = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        previous = channels
        for stage, lat, fuse, n in zip(stage_channels, lateral, fused, sizes[1:]):
            self.laterals.append(darknet_conv(previous, lat, 1))
            self.fuses.append(darknet_conv(lat + stage, fuse, 3))
            self.preds.append(nn.Conv2d(fuse, n * (5 + num_classes), 1))
            previous = fuse
        init_darknet_weights(self)

    def anchor_index(self, level: int) -> torch.Tensor:
        return getattr(self, f"anchor_index_{level}")

    def head_anchors(self, anchors: torch.Tensor) -> list[torch.Tensor]:
        """Each level's anchors in its own grid cells (a stride-16 cell is half a stride-32 one)."""
        return [anchors[self.anchor_index(i)] * 2 ** i for i in range(self.levels)]

    def forward(self, y: torch.Tensor, stages: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        outputs = [self.pred(y)]  # (B, A_0*(5+C), H/32, W/32)
        for lateral, fuse, pred, stage in zip(self.laterals, self.fuses, self.preds, stages):
            up = F.interpolate(lateral(y), scale_factor=2, mode="nearest")  # (B, lat, 2h, 2w)
            y = fuse(torch.cat([up, stage], dim=1))  # (B, lat + stage -> fuse, 2h, 2w)
            outputs.append(pred(y))  # (B, A_i*(5+C), H/2^(5-i), W/2^(5-i))
        return tuple(outputs)


def _build_head(model: _YOLOv2Base, channels: int, reorg_channels: int, passthrough: bool, scales: int,
                lateral: Sequence[int], fused: Sequence[int]) -> None:
    """yolov2-voc.cfg's head on `model.backbone`'s last two stages: two 3x3 convs on the stride-32 features, the
    passthrough (1x1 conv, reorg /2) of the last stride-16 stage, a 3x3 fusing conv, then the prediction pyramid
    (one 1x1 prediction conv when `scales=1`)."""
    if scales not in (1, 2, 3):
        raise BetterConvError(f"{model.name} scales must be 1, 2 or 3, got {scales!r}")
    fine, coarse = model.backbone.feature_info[-2:]
    model.head = nn.Sequential(darknet_conv(coarse.channels, channels, 3), darknet_conv(channels, channels, 3))
    model.passthrough = (nn.Sequential(darknet_conv(fine.channels, reorg_channels, 1), Reorg(2)) if passthrough
                         else None)
    model.fuse = darknet_conv(reorg_channels * 4 * passthrough + channels, channels, 3)
    model._fine, model._coarse = fine.name, coarse.name
    model.scales = scales
    stages = model.backbone.feature_info[-scales:-1][::-1]  # stride 16 (then 8)
    model._pyramid_stages = [f.name for f in stages]
    model.pyramid = PredictionPyramid(model.anchors, model.num_classes, channels, [f.channels for f in stages],
                                      lateral, fused)
    for m in (model.head, *([model.passthrough] if passthrough else []), model.fuse):
        init_darknet_weights(m)


class YOLOv2(_YOLOv2Base):
    def __init__(self, num_classes: int = 20, anchors: Sequence[tuple[float, float]] = VOC_ANCHORS,
                 second_scale: bool = False, passthrough: bool = True, location: str = "sigmoid",
                 width_mult: float = 1.0, scales: int = 1) -> None:
        super().__init__(num_classes, anchors, location)
        if not 0.1 <= width_mult <= 4:
            raise BetterConvError(f"yolov2 width_mult must be between 0.1 and 4, got {width_mult}")

        def width(c: int) -> int:  # multiples of 8 (as yolov2_tiny's width_mult): every cfg width at 1.0
            return make_divisible(c * width_mult)

        stages = [[(width(c), k) for c, k in stage] for stage in DARKNET19_STAGES]
        self.backbone = Darknet(stages, stem_channels=width(32), num_classes=None)  # Darknet-19 at width 1.0
        # passthrough=False: the ablation ladder's step before "passthrough" (YOLOv2 Table 2), fuse sees 1024 only
        _build_head(self, width(1024), width(64), passthrough, 2 if second_scale and scales == 1 else scales,
                    [width(256), width(128)], [width(512), width(256)])
        self.second_scale = self.scales == 2
        self._register_load_state_dict_pre_hook(_second_scale_names)

    def head_anchors(self) -> list[torch.Tensor]:
        return self.pyramid.head_anchors(self.anchors)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        self._check_size(x)
        features = self.forward_features(x)
        y = self.head(features[self._coarse])  # (B, 1024, H/32, W/32)
        if self.passthrough is not None:
            p = self.passthrough(features[self._fine])  # (B, 256, H/32, W/32)
            y = torch.cat([p, y], dim=1)  # route -1,-4: (B, 1280, H/32, W/32)
        y = self.fuse(y)  # (B, 1024, H/32, W/32)
        outputs = self.pyramid(y, [features[name] for name in self._pyramid_stages])
        return outputs[0] if self.scales == 1 else outputs  # (B, A*(5+C), H/32, W/32), ...


def _second_scale_names(state: dict, prefix: str, *args) -> None:
    """Weights saved before the prediction pyramid named the stride-32 prediction `pred` and the stride-16 path
    `fine_lateral`, `fine_fuse`, `fine_pred`: rename them to the pyramid's modules."""
    renames = {"pred.": "pyramid.pred.", "fine_lateral.": "pyramid.laterals.0.", "fine_fuse.": "pyramid.fuses.0.",
               "fine_pred.": "pyramid.preds.0."}
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in renames.items():
            if rest.startswith(old):
                state[prefix + new + rest[len(old):]] = state.pop(key)
                break


class YOLOv2MobileNetV2(_YOLOv2Base):
    """YOLOv2's head on the ImageNet MobileNetV2 backbone (Sandler et al. 2018), a detector a CPU can train: the
    stride-32 features (320 channels at width 1) go through two 3x3 convs, the passthrough reorganises the last
    stride-16 stage (96 channels) after a 1x1 conv to 32, a 3x3 conv fuses them and a 1x1 conv predicts, as
    yolov2-voc.cfg does on Darknet-19. `scales=3` adds YOLOv3's prediction across scales from the stride-16 and
    stride-8 stages (`PredictionPyramid`). `padding="tf_same"` matches TensorFlow's weights (the TFLite file)."""

    name = "yolov2_mobilenet_v2"

    def __init__(self, num_classes: int = 20, anchors: Sequence[tuple[float, float]] = VOC_ANCHORS,
                 scales: int = 1, passthrough: bool = True, width_mult: float = 1.0, head_channels: int = 256,
                 padding: str | None = None, location: str = "sigmoid", input_normalization: str = "imagenet"
                 ) -> None:
        super().__init__(num_classes, anchors, location)
        if input_normalization not in INPUT_NORMALIZATIONS:
            raise BetterConvError(f"{self.name} input_normalization must be one of "
                                  f"{', '.join(INPUT_NORMALIZATIONS)}, got {input_normalization!r}")
        # detectors take darknet's x / 255; the ImageNet backbone was trained on normalised input: a per-channel
        # affine map (a 1x1 depthwise conv, exact at any padding, mapped by every exporter), starting at the
        # backbone weights' normalisation and trained with the rest
        mean, std = (torch.tensor(v) for v in INPUT_NORMALIZATIONS[input_normalization])
        self.input_norm = nn.Conv2d(3, 3, 1, groups=3)
        with torch.no_grad():
            self.input_norm.weight.copy_((1 / std).reshape(3, 1, 1, 1))
            self.input_norm.bias.copy_(-mean / std)
        if isinstance(head_channels, bool) or not isinstance(head_channels, int) or head_channels < 8:
            raise BetterConvError(f"{self.name} head_channels must be an integer >= 8, got {head_channels!r}")
        self.backbone = MobileNetV2(num_classes=None, width_mult=width_mult, padding=padding)
        # stride 16: 96 channels at width 1, stride 32: 320
        _build_head(self, head_channels, make_divisible(32 * width_mult), passthrough, scales,
                    [head_channels // 2, head_channels // 4], [head_channels // 2, head_channels // 4])

    def head_anchors(self) -> list[torch.Tensor]:
        return self.pyramid.head_anchors(self.anchors)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone.forward_features(self.input_norm(x))  # x / 255 -> the backbone's normalisation

    forward = YOLOv2.forward


class TinyYOLOv2(_YOLOv2Base):
    name = "yolov2_tiny"

    def __init__(self, num_classes: int = 20, anchors: Sequence[tuple[float, float]] = TINY_VOC_ANCHORS,
                 width_mult: float = 1.0, location: str = "sigmoid") -> None:
        super().__init__(num_classes, anchors, location)
        if not 0.1 <= width_mult <= 4:
            raise BetterConvError(f"yolov2_tiny width_mult must be between 0.1 and 4, got {width_mult}")
        stages = [[(make_divisible(c * width_mult), k) for c, k in stage] for stage in TINY_STAGES]
        self.backbone = Darknet(stages, stem_channels=make_divisible(16 * width_mult), num_classes=None)
        head_channels = make_divisible(1024 * width_mult)
        self.head = nn.Sequential(DarknetMaxPool(2, 1), darknet_conv(self.backbone.num_features, head_channels, 3),
                                  darknet_conv(head_channels, head_channels, 3))
        self.pred = nn.Conv2d(head_channels, self.out_channels, 1)
        for m in (self.head, self.pred):
            init_darknet_weights(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        y = self.forward_features(x)[self.feature_info[-1].name]  # (B, 512, H/32, W/32)
        return self.pred(self.head(y))  # (B, A*(5+C), H/32, W/32)


@register_model(ModelInfo("detection", input_size=(416, 416), mean=DARKNET_MEAN, std=DARKNET_STD,
                          recipe=YOLOV2_RECIPE, backbone_classifier="darknet19", peer_note=_NO_PEER))
def yolov2(*, num_classes: int = 20, anchors: Sequence[tuple[float, float]] | None = None,
           second_scale: bool = False, passthrough: bool = True, location: str = "sigmoid",
           width_mult: float = 1.0, scales: int = 1) -> YOLOv2:
    """`scales=3`: predictions at strides 32, 16 and 8 (YOLOv3 §2.3, `PredictionPyramid`); `second_scale=True` is
    `scales=2` (strides 32 and 16). `passthrough=False` and `location="offset"` (anchor offsets instead of direct
    location prediction) are the earlier rungs of YOLOv2's Table 2, for the ablation ladder. `width_mult` scales
    every layer's channels (multiples of 8); 1.0 is yolov2-voc.cfg."""
    return YOLOv2(num_classes=num_classes, anchors=VOC_ANCHORS if anchors is None else anchors,
                  second_scale=second_scale, passthrough=passthrough, location=location, width_mult=width_mult,
                  scales=scales)


@register_model(ModelInfo("detection", input_size=(416, 416), mean=DARKNET_MEAN, std=DARKNET_STD,
                          recipe=YOLOV2_RECIPE, peer_note=_NO_PEER))
def yolov2_tiny(*, num_classes: int = 20, anchors: Sequence[tuple[float, float]] | None = None,
                width_mult: float = 1.0, location: str = "sigmoid") -> TinyYOLOv2:
    """`width_mult` scales every layer's channels (rounded to multiples of 8); 1.0 is yolov2-tiny-voc.cfg."""
    return TinyYOLOv2(num_classes=num_classes, anchors=TINY_VOC_ANCHORS if anchors is None else anchors,
                      width_mult=width_mult, location=location)


# the detection pipeline feeds every detector darknet's x / 255 (no mean/std), this one included
@register_model(ModelInfo("detection", input_size=(416, 416), mean=DARKNET_MEAN, std=DARKNET_STD, recipe=YOLOV2_RECIPE,
                          backbone_classifier="mobilenet_v2", peer_note=_NO_PEER))
def yolov2_mobilenet_v2(*, num_classes: int = 20, anchors: Sequence[tuple[float, float]] | None = None,
                        scales: int = 1, passthrough: bool = True, width_mult: float = 1.0, head_channels: int = 256,
                        padding: str | None = None, location: str = "sigmoid",
                        input_normalization: str = "imagenet") -> YOLOv2MobileNetV2:
    """YOLOv2's head on MobileNetV2 (`YOLOv2MobileNetV2`); `scales=3` predicts at strides 32, 16 and 8 (YOLOv3
    §2.3). `padding="tf_same"` and `input_normalization="tensorflow"` (x / 127.5 - 1) suit the TFLite MobileNetV2's
    backbone weights; "imagenet" (the default) suits torchvision's."""
    return YOLOv2MobileNetV2(num_classes=num_classes, anchors=VOC_ANCHORS if anchors is None else anchors,
                             scales=scales, passthrough=passthrough, width_mult=width_mult,
                             head_channels=head_channels, padding=padding, location=location,
                             input_normalization=input_normalization)
