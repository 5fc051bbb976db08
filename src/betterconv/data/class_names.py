"""Class-name lists of the standard label sets. (The normalisation each source of weights expects is in
`betterconv.models.info`.)"""
from __future__ import annotations

from functools import cache

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOC_SEGMENTATION_CLASSES = ("background",) + VOC_CLASSES



@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k names in the order torchvision's (and TensorFlow's, after "background") models use."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@cache
def coco_classes() -> tuple[str, ...]:
    """The 80 COCO detection classes in darknet's / YOLO's contiguous order."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return tuple(c for c in FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
                 if c not in ("__background__", "N/A"))


def default_class_names(num_classes: int) -> tuple[str, ...] | None:
    """The usual label set for a class count: ImageNet (1000, or 1001 with TensorFlow's background), VOC
    (20 detection / 21 segmentation classes), COCO (80); None for any other count."""
    return {1000: imagenet_classes, 1001: lambda: ("background",) + imagenet_classes(), 20: lambda: VOC_CLASSES,
            21: lambda: VOC_SEGMENTATION_CLASSES, 80: coco_classes}.get(num_classes, lambda: None)()
