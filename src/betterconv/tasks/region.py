"""YOLOv2's region layer at inference: raw network output -> boxes and class scores (darknet's region_layer.c,
`forward_region_layer` followed by `get_region_boxes`).

For anchor a (width p_w, height p_h in grid cells) at grid cell (c_x, c_y) of an H x W grid, with raw outputs
t_x, t_y, t_w, t_h, t_o and class scores t_1..t_C (darknet's channel order: channel ``a * (5 + C) + k``):

    b_x = (c_x + sigmoid(t_x)) / W          b_w = p_w * exp(t_w) / W          (relative to the image)
    b_y = (c_y + sigmoid(t_y)) / H          b_h = p_h * exp(t_h) / H
    objectness = sigmoid(t_o)               P(class | object) = softmax(t_1..t_C)   (sigmoid each when softmax=0)
    score(class) = objectness * P(class | object)

`location="offset"` is the anchor-offset parametrisation YOLOv2 §2 started from (Faster R-CNN's RPN, "Direct
location prediction"): b_x = (c_x + 0.5 + t_x p_w) / W, unconstrained, so early in training a box may drift to any
part of the image; the paper's sigmoid keeps each centre in its cell. It exists for the ablation ladder.

The relative boxes are scaled to `image_size`: the network input, or the original image when it was resized
(not letterboxed) to the input, as darknet's YOLOv2 did. No thresholding or NMS happens here unless `thresh` is
given, which zeroes scores that are not above it, like darknet.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import BetterConvError
from ..models.yolov2 import LOCATIONS, check_location

__all__ = ["LOCATIONS", "RegionDetections", "cell_offsets", "decode_region"]



def cell_offsets(t_x: torch.Tensor, t_y: torch.Tensor, anchor_w: torch.Tensor, anchor_h: torch.Tensor,
                 location: str = "sigmoid") -> tuple[torch.Tensor, torch.Tensor]:
    """Box centre from its cell's top-left corner, in grid cells: (sigmoid(t_x), sigmoid(t_y)) for YOLOv2's
    direct location prediction, (0.5 + t_x p_w, 0.5 + t_y p_h) for anchor offsets."""
    if location == "sigmoid":
        return t_x.sigmoid(), t_y.sigmoid()
    return 0.5 + t_x * anchor_w, 0.5 + t_y * anchor_h


@dataclass(frozen=True)
class RegionDetections:
    """Decoded region-layer output. N = H * W * A, ordered as darknet's `get_region_boxes`: index
    ``(y * W + x) * A + a`` for grid cell (x, y) and anchor a."""

    boxes: torch.Tensor  # (B, N, 4) x1, y1, x2, y2 in pixels of image_size
    objectness: torch.Tensor  # (B, N)
    class_probs: torch.Tensor  # (B, N, C) P(class | object)
    scores: torch.Tensor  # (B, N, C) objectness * class_probs, zeroed where not above thresh


def decode_region(raw: torch.Tensor, anchors: torch.Tensor | Sequence[Sequence[float]], num_classes: int,
                  image_size: int | tuple[int, int], *, softmax: bool = True,
                  thresh: float | None = None, location: str = "sigmoid") -> RegionDetections:
    """Decode `raw`, the region layer's input ``(B, A * (5 + num_classes), H, W)``, with `anchors` ``(A, 2)``
    (width, height in grid cells) into boxes in pixels of `image_size` ((height, width), or one int for a square).
    `softmax` is the cfg's ``[region] softmax`` (YOLOv2's cfgs set 1); `location` see the module docstring."""
    check_location(location)
    anchors = torch.as_tensor(anchors, dtype=raw.dtype, device=raw.device)
    if anchors.dim() != 2 or anchors.shape[1] != 2 or anchors.shape[0] < 1:
        raise BetterConvError(f"region anchors must have shape (A, 2), got {tuple(anchors.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise BetterConvError(f"region num_classes must be a positive integer, got {num_classes!r}")
    a, c = anchors.shape[0], num_classes
    if raw.dim() != 4 or raw.shape[1] != a * (5 + c):
        raise BetterConvError(f"region input must be (B, {a * (5 + c)}, H, W) for {a} anchors and {c} classes, "
                              f"got {tuple(raw.shape)}")
    img_h, img_w = (image_size, image_size) if isinstance(image_size, int) else image_size
    b, _, h, w = raw.shape

    p = raw.reshape(b, a, 5 + c, h, w)  # (B, A*(5+C), H, W) -> (B, A, 5+C, H, W)
    p = p.permute(0, 3, 4, 1, 2)  # (B, A, 5+C, H, W) -> (B, H, W, A, 5+C)
    gy, gx = torch.meshgrid(torch.arange(h, device=raw.device, dtype=raw.dtype),
                            torch.arange(w, device=raw.device, dtype=raw.dtype), indexing="ij")  # (H, W) each
    off_x, off_y = cell_offsets(p[..., 0], p[..., 1], anchors[:, 0], anchors[:, 1], location)  # (B, H, W, A) each
    cx = (gx[:, :, None] + off_x) / w  # (H, W, 1) + (B, H, W, A) -> (B, H, W, A)
    cy = (gy[:, :, None] + off_y) / h  # (B, H, W, A)
    bw = p[..., 2].exp() * anchors[:, 0] / w  # (B, H, W, A) * (A,) -> (B, H, W, A)
    bh = p[..., 3].exp() * anchors[:, 1] / h  # (B, H, W, A)
    boxes = torch.stack([(cx - bw / 2) * img_w, (cy - bh / 2) * img_h,
                         (cx + bw / 2) * img_w, (cy + bh / 2) * img_h], dim=-1)  # (B, H, W, A, 4)
    objectness = p[..., 4].sigmoid()  # (B, H, W, A)
    logits = p[..., 5:]  # (B, H, W, A, C)
    probs = logits.softmax(dim=-1) if softmax else logits.sigmoid()  # (B, H, W, A, C)
    scores = objectness[..., None] * probs  # (B, H, W, A, 1) * (B, H, W, A, C) -> (B, H, W, A, C)
    if thresh is not None:
        scores = torch.where(scores > thresh, scores, torch.zeros_like(scores))
    n = h * w * a
    return RegionDetections(
        boxes=boxes.reshape(b, n, 4),  # (B, H, W, A, 4) -> (B, H*W*A, 4)
        objectness=objectness.reshape(b, n),  # (B, H, W, A) -> (B, H*W*A)
        class_probs=probs.reshape(b, n, c),  # (B, H, W, A, C) -> (B, H*W*A, C)
        scores=scores.reshape(b, n, c),  # (B, H, W, A, C) -> (B, H*W*A, C)
    )
