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

`second_scale=True` is the survey's fix for YOLOv2's small-object weakness, as YOLOv3 (Redmon & Farhadi 2018, §2.3)
does it: the fused 13x13 features go through a 1x1 conv to 256 channels, are upsampled x2 and joined with the
26x26x512 stage, then a 3x3 conv and a 1x1 prediction at stride 16. The smaller half of the anchors (by area) move
to that scale; forward then returns (stride-32 output, stride-16 output), and `head_anchors()` gives each output's
anchors in its own grid units.
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
from .info import DARKNET_MEAN, DARKNET_STD, DetRecipe, ModelInfo
from .darknet import DARKNET19_STAGES, Darknet, DarknetMaxPool, darknet_conv, init_darknet_weights

# how the head's t_x, t_y place a box (decoded in tasks.region): YOLOv2 §2's direct location prediction, or the
# anchor offsets it started from
LOCATIONS = ("sigmoid", "offset")


def check_location(location: str) -> str:
    if location not in LOCATIONS:
        raise BetterConvError(f"location must be one of {', '.join(LOCATIONS)}, got {location!r}")
    return location


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


class YOLOv2(_YOLOv2Base):
    def __init__(self, num_classes: int = 20, anchors: Sequence[tuple[float, float]] = VOC_ANCHORS,
                 second_scale: bool = False, passthrough: bool = True, location: str = "sigmoid",
                 width_mult: float = 1.0) -> None:
        super().__init__(num_classes, anchors, location)
        if not 0.1 <= width_mult <= 4:
            raise BetterConvError(f"yolov2 width_mult must be between 0.1 and 4, got {width_mult}")

        def width(c: int) -> int:  # multiples of 8 (as yolov2_tiny's width_mult): every cfg width at 1.0
            return make_divisible(c * width_mult)

        stages = [[(width(c), k) for c, k in stage] for stage in DARKNET19_STAGES]
        self.backbone = Darknet(stages, stem_channels=width(32), num_classes=None)  # Darknet-19 at width 1.0
        fine, coarse = self.backbone.feature_info[-2:]  # 26x26x512 (cfg layer 16), 13x13x1024 (layer 22)
        head = width(1024)
        self.head = nn.Sequential(darknet_conv(coarse.channels, head, 3), darknet_conv(head, head, 3))
        # passthrough=False: the ablation ladder's step before "passthrough" (YOLOv2 Table 2), fuse sees 1024 only
        reorg = width(64)
        self.passthrough = nn.Sequential(darknet_conv(fine.channels, reorg, 1), Reorg(2)) if passthrough else None
        self.fuse = darknet_conv(reorg * 4 * passthrough + head, head, 3)
        self._fine, self._coarse = fine.name, coarse.name
        self.second_scale = second_scale
        if second_scale:
            if self.num_anchors < 2:
                raise BetterConvError("yolov2 second_scale needs at least 2 anchors to split between the scales")
            by_area = (self.anchors[:, 0] * self.anchors[:, 1]).argsort()
            n_fine = self.num_anchors // 2
            self.register_buffer("fine_index", by_area[:n_fine].sort().values, persistent=False)
            self.register_buffer("coarse_index", by_area[n_fine:].sort().values, persistent=False)
            self.pred = nn.Conv2d(head, len(self.coarse_index) * (5 + num_classes), 1)
            self.fine_lateral = darknet_conv(head, width(256), 1)
            self.fine_fuse = darknet_conv(width(256) + fine.channels, width(512), 3)
            self.fine_pred = nn.Conv2d(width(512), n_fine * (5 + num_classes), 1)
            extra = (self.fine_lateral, self.fine_fuse, self.fine_pred)
        else:
            self.pred = nn.Conv2d(head, self.out_channels, 1)
            extra = ()
        for m in (self.head, *([self.passthrough] if passthrough else []), self.fuse, self.pred, *extra):
            init_darknet_weights(m)

    def head_anchors(self) -> list[torch.Tensor]:
        if not self.second_scale:
            return [self.anchors]
        return [self.anchors[self.coarse_index], 2 * self.anchors[self.fine_index]]  # stride-16 cells are half

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        self._check_size(x)
        features = self.forward_features(x)
        y = self.head(features[self._coarse])  # (B, 1024, H/32, W/32)
        if self.passthrough is not None:
            p = self.passthrough(features[self._fine])  # (B, 256, H/32, W/32)
            y = torch.cat([p, y], dim=1)  # route -1,-4: (B, 1280, H/32, W/32)
        y = self.fuse(y)  # (B, 1024, H/32, W/32)
        if not self.second_scale:
            return self.pred(y)  # (B, A*(5+C), H/32, W/32)
        up = F.interpolate(self.fine_lateral(y), scale_factor=2, mode="nearest")  # (B, 256, H/16, W/16)
        fine = self.fine_fuse(torch.cat([up, features[self._fine]], dim=1))  # (B, 768 -> 512, H/16, W/16)
        return self.pred(y), self.fine_pred(fine)  # (B, A32*(5+C), H/32, W/32), (B, A16*(5+C), H/16, W/16)


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
           width_mult: float = 1.0) -> YOLOv2:
    """`second_scale=True`: predictions at strides 32 and 16 (see the module docstring). `passthrough=False` and
    `location="offset"` (anchor offsets instead of direct location prediction) are the earlier rungs of
    YOLOv2's Table 2, for the ablation ladder. `width_mult` scales every layer's channels (multiples of 8); 1.0 is
    yolov2-voc.cfg."""
    return YOLOv2(num_classes=num_classes, anchors=VOC_ANCHORS if anchors is None else anchors,
                  second_scale=second_scale, passthrough=passthrough, location=location, width_mult=width_mult)


@register_model(ModelInfo("detection", input_size=(416, 416), mean=DARKNET_MEAN, std=DARKNET_STD,
                          recipe=YOLOV2_RECIPE, peer_note=_NO_PEER))
def yolov2_tiny(*, num_classes: int = 20, anchors: Sequence[tuple[float, float]] | None = None,
                width_mult: float = 1.0, location: str = "sigmoid") -> TinyYOLOv2:
    """`width_mult` scales every layer's channels (rounded to multiples of 8); 1.0 is yolov2-tiny-voc.cfg."""
    return TinyYOLOv2(num_classes=num_classes, anchors=TINY_VOC_ANCHORS if anchors is None else anchors,
                      width_mult=width_mult, location=location)
