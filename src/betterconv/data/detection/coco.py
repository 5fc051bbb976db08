"""COCO detection (Lin et al., ECCV 2014): annotations/instances_{split}.json, 80 categories with ids 1..90.

Boxes: [x, y, w, h] -> (x, y, x + w, y + h). Category ids become labels 0..C-1 in the json's order of
`categories` (`category_ids[label]` maps back); crowd annotations (iscrowd=1) are kept with difficult=True.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..dataset import read_coco_instances
from .base import DetectionDataset, DetectionRecord, Transform, bad_label, parse_all


class COCODetection(DetectionDataset):
    """COCO instances json: annotations/instances_{split}.json, images in images/{split}/, {split}/ or images/
    (split "train"/"val" also tries "train2017"/"val2017"). Classes are the json's categories in its order,
    `category_ids[label]` is the COCO id of a label; image_id is the COCO image id, as COCO result files need.
    Crowd annotations (iscrowd=1) are kept with difficult=True. Images without annotations are kept (N=0)."""

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 skip_bad: bool = False, json_path: str | Path | None = None,
                 image_dir: str | Path | None = None) -> None:
        root = Path(root).expanduser()
        coco = read_coco_instances(root, split, json_path, image_dir)
        json_path, image_dir = coco.json_path, coco.image_dir
        self.category_ids = [cid for cid, _ in coco.categories]
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}
        self.json_path, self.root, self.image_dir = json_path, root, image_dir

        def parse(info: dict) -> DetectionRecord:
            image, size, image_id = coco.image_path(info), coco.image_size(info), info["id"]
            boxes, labels, difficult, areas = [], [], [], []
            for ann in coco.annotations.get(image_id, []):
                where = f"annotation {ann.get('id')!r:.40} of image {info['file_name']}"
                cid = ann["category_id"]  # an int: read_coco_instances checked it
                if cid not in label_of:
                    raise bad_label(json_path, None, f"{where} has unknown category_id {cid!r}")
                bbox = ann.get("bbox")
                if not (isinstance(bbox, list) and len(bbox) == 4 and
                        all(type(v) in (int, float) and math.isfinite(v) for v in bbox)):
                    raise bad_label(json_path, None, f"{where} has a malformed bbox {bbox!r:.60}")
                x, y, w, h = bbox
                if w < 0 or h < 0:
                    raise bad_label(json_path, None, f"{where} has a negative width or height {bbox!r}")
                boxes.append((x, y, x + w, y + h))
                labels.append(label_of[cid])
                difficult.append(bool(ann.get("iscrowd", 0)))
                area = ann.get("area")  # the official COCO size rule reads it; the box area when absent
                areas.append(float(area) if type(area) in (int, float) and math.isfinite(area) and area >= 0
                             else float(w) * float(h))
            with np.errstate(over="ignore"):  # a huge float box becomes inf, then is clipped to the image
                boxes_array = np.array(boxes, np.float32).reshape(-1, 4)
            return DetectionRecord(image, json_path, image_id, boxes_array, np.array(labels, np.int64),
                                   np.array(difficult, bool), size, area=np.array(areas, np.float64))

        records, errors = parse_all(coco.images, parse)
        super().__init__(records, [name for _, name in coco.categories], transform, skip_bad, json_path, errors)
