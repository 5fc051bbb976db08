"""Predictions drawn on an image tensor (3, H, W) uint8, with torchvision's drawing utilities: detections as boxes
labelled with class name and score (the class colour from PASCAL VOC's colour map), segmentations as the colour-map
overlay that `write_prediction` writes for an image."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from .segmentation import palette


def draw_detections(image: torch.Tensor, detections: Mapping[str, torch.Tensor], class_names: Sequence[str],
                    width: int = 3) -> torch.Tensor:
    """`image` (3, H, W) uint8 with each detection (`postprocess`'s boxes x1, y1, x2, y2 in its pixels, scores,
    labels) drawn as a box of its class colour labelled "name score"."""
    boxes = detections["boxes"].detach().float().cpu().reshape(-1, 4)  # (D, 4)
    if len(boxes) == 0:
        return image  # torchvision warns on an empty set of boxes
    colours = [tuple(int(c) for c in rgb) for rgb in palette(len(class_names) + 1)[1:]]  # class 0 is black
    labels = detections["labels"].cpu().tolist()
    scores = detections["scores"].float().cpu().tolist()
    return draw_bounding_boxes(image, boxes, labels=[f"{class_names[c]} {s:.2f}" for c, s in zip(labels, scores)],
                               colors=[colours[c] for c in labels], width=width)


def draw_segmentation(image: torch.Tensor, label: torch.Tensor, num_classes: int,
                      alpha: float = 0.5) -> torch.Tensor:
    """`image` (3, H, W) uint8 blended with the colour of each pixel's class in `label` (H, W) (PASCAL VOC's
    colour map, background black): colour * alpha + image * (1 - alpha) at every pixel."""
    classes = torch.arange(num_classes, device=label.device)
    masks = label[None] == classes[:, None, None]  # (C, H, W) bool, one mask per class
    colours = [tuple(int(c) for c in rgb) for rgb in palette(num_classes)]
    return draw_segmentation_masks(image, masks.to(image.device), alpha=alpha, colors=colours)
