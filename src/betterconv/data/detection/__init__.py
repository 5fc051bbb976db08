"""Object-detection datasets: PASCAL VOC XML, COCO json and YOLO txt labels.

Datasets used:
    PASCAL VOC 2007 / 2012 (Everingham et al., IJCV 2010): 20 classes, Annotations/*.xml with a `difficult` flag.
    COCO (Lin et al., ECCV 2014): annotations/instances_{split}.json, 80 categories with ids 1..90.
    YOLO txt (darknet / Ultralytics): one `class cx cy w h` line per box, normalised to the image size, in a
        labels/ folder next to images/; class names from a yaml `names:`, classes.txt or a darknet *.names file.

Conventions shared by every dataset here:
    * a sample is `(image, target)`: `tv_tensors.Image` uint8 (3, H, W) RGB and a dict with
        boxes      `tv_tensors.BoundingBoxes` XYXY float32 (N, 4), continuous pixel coordinates (pixel i spans
                   [i, i + 1)), canvas (H, W);
        labels     int64 (N,), 0..len(class_names)-1;
        difficult  bool (N,): objects to ignore (VOC `difficult`, COCO `iscrowd`): neither positives nor
                   negatives in training, left out of both recall and false positives by the metrics;
        image_id   the id to report predictions under: VOC file id (str), COCO image id (int), YOLO file stem (str);
        orig_size  (H, W) of the image as loaded, kept through transforms to map predictions back;
      then passed together through the optional joint `transform` (see `betterconv.data.det_transforms`).
      N = 0 is a valid sample (an image without objects).
    * VOC boxes: the XML holds 1-based inclusive pixel indices; they become (xmin - 1, ymin - 1, xmax, ymax), so
      width = xmax - xmin + 1. The VOC devkit's metric computes areas and overlaps on the raw XML numbers with +1,
      which gives exactly the plain IoU of the converted boxes; `to_voc_coordinates` converts predictions back for
      VOC result files. COCO boxes: [x, y, w, h] -> (x, y, x + w, y + h); category ids become 0..C-1 in the json's
      order of `categories` (`category_ids[label]` maps back). YOLO boxes: the normalised centre and size times the
      image's width and height.
    * annotations are read when the dataset is built, images when a sample is loaded. Boxes outside the image
      are clipped to it and boxes of zero width or height (after clipping) are dropped; both are counted in
      `clipped` and `dropped` (a box counts as clipped when it leaves the image by more than a pixel, 1/1000 for
      normalised YOLO boxes; smaller overshoots, e.g. rounding, are clipped silently) and reported in a single
      DataWarning line, as are YOLO images without a label file and label files without an image.
    * bad annotations (class id out of range or unknown class name, malformed line, non-numeric or inverted
      coordinates, unknown category) raise BadSampleError naming the file and line (COCO json: the annotation id);
      a missing or unreadable image raises BadSampleError naming it when the sample is loaded. `skip_bad=True`
      drops the samples with bad annotations while reading them, then runs `validate()` (loads every image, as
      every `betterconv.data.dataset.BaseDataset` does) and drops the bad ones too; all are recorded in `skipped`
      as (path, message).
    * `files` lists (image_path, annotation_path) pairs (for COCO the annotation path is the json), `image_ids`
      the matching ids, `records` the parsed annotations.
    * paths read from the dataset's files (VOC list ids, COCO `file_name`s, YOLO image lists, a data yaml's
      `path` / `train` / `val`) stay inside the dataset root, checked lexically so that a symlink placed inside
      the root is followed (`betterconv.data.dataset.path_inside`); one that leaves it is refused, naming the
      file and line or entry. A COCO json whose structure is broken (an image entry that is not an object, a
      repeated image id, an annotation of an unknown image) is refused as a whole, in one line.
    * EXIF orientation is not applied: boxes are in the images' raw pixel order.

Modules: `base` (the record, the base dataset, collate), `voc`, `coco`, `yolo` (one format each); the factory
`detection_dataset` is here.
"""
from __future__ import annotations

from typing import Any

from ...errors import BetterConvError
from ..dataset import check_samples
from ..images import IMAGE_EXTENSIONS, BadSampleError
from .base import DataWarning, DetectionDataset, DetectionRecord, Transform, collate_detection
from .coco import COCODetection
from .voc import VOCDetection, parse_voc_xml, to_voc_coordinates
from .yolo import YOLODetection, parse_yolo_txt, read_class_names, read_data_yaml, yolo_label_path

__all__ = ["BadSampleError", "COCODetection", "DataWarning", "DetectionDataset", "DetectionRecord", "FORMATS",
           "IMAGE_EXTENSIONS", "KINDS", "Transform", "VOCDetection", "YOLODetection", "check_samples",
           "collate_detection", "detection_dataset", "parse_voc_xml", "parse_yolo_txt", "read_class_names",
           "read_data_yaml", "to_voc_coordinates", "yolo_label_path"]

FORMATS: dict[str, type[DetectionDataset]] = {"voc": VOCDetection, "coco": COCODetection, "yolo": YOLODetection}
KINDS = tuple(FORMATS)


def detection_dataset(spec: str, split: str, transform: Transform | None = None, skip_bad: bool = False,
                      **kwargs: Any) -> DetectionDataset:
    """A dataset from `KIND:PATH`, KIND one of voc, coco, yolo; e.g. `voc:/data/VOCdevkit` with split
    "2007_test", `coco:/data/coco` with "val2017", `yolo:/data/coco8/coco8.yaml` with "val". Extra keyword
    arguments go to the dataset class."""
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS or not path:
        raise BetterConvError(f"dataset must be KIND:PATH with KIND one of {', '.join(KINDS)}, got {spec!r}")
    return FORMATS[kind](path, split, transform, skip_bad, **kwargs)
