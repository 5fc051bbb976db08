"""What the detection formats share: the parsed annotation of an image (`DetectionRecord`), the base dataset
(loading, clipping, the one-line DataWarning, the bad-sample bookkeeping of `betterconv.data.dataset`), the
helpers that turn a bad annotation into a BadSampleError naming the file and line, and `collate_detection`.
The conventions are those of `betterconv.data.detection`.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor

from ...errors import BetterConvError
from ..dataset import BaseDataset
from ..images import BadSampleError, open_image

Transform = Callable[[tv_tensors.Image, dict], tuple[Any, Any]]


class DataWarning(UserWarning):
    """A one-line summary of what was fixed or left out while reading a dataset's annotations."""


@dataclass
class DetectionRecord:
    """The parsed annotation of one image."""

    image: Path
    annotation: Path
    image_id: str | int
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2: pixels, or fractions of the image size when `normalized`
    labels: np.ndarray  # (N,) int64
    difficult: np.ndarray  # (N,) bool
    size: tuple[int, int] | None = None  # (width, height) the annotation declares; None when it declares none
    normalized: bool = False
    # (N,) float64: each object's own area in pixels of the original image, as a COCO json stores it (the
    # segmentation's area, which decides COCO's small / medium / large); None for formats without one
    area: np.ndarray | None = None

    @classmethod
    def empty(cls, image: Path, annotation: Path, image_id: str | int, size: tuple[int, int] | None = None,
              normalized: bool = False) -> DetectionRecord:
        return cls(image, annotation, image_id, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                   np.zeros(0, bool), size, normalized)


# --- bad annotations -------------------------------------------------------------------------------------------

def bad_label(path: Path | str, line: int | None, message: str) -> BadSampleError:
    """A "bad_label" BadSampleError whose message starts with `path:line: ` (or `path: ` without a line)."""
    where = f"{path}:{line}" if line is not None else str(path)
    return BadSampleError("bad_label", path, f"{where}: {message}")


def finite_number(value: str, path: Path, line: int, what: str) -> float:
    """`value` as a finite float; else a bad_label error naming `what` it is."""
    try:
        number = float(value)
    except ValueError:
        raise bad_label(path, line, f"{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise bad_label(path, line, f"{what} {value!r} is not a finite number")
    return number


# the most classes a label file may imply when no class names are given (ImageNet-21k has 21,841)
MAX_CLASSES = 65536


def class_index(value: str, path: Path, line: int, num_classes: int | None) -> int:
    """`value` as a class index in 0..num_classes-1 (0..MAX_CLASSES-1 when `num_classes` is None: the class names
    are then made up to the largest index, so an absurd one must not make a billion of them)."""
    number = finite_number(value, path, line, "class id")
    if number != int(number):
        raise bad_label(path, line, f"class id {value!r} is not an integer")
    index = int(number)
    bound = num_classes if num_classes is not None else MAX_CLASSES
    if index < 0 or index >= bound:
        where = f"the {bound} classes (0-{bound - 1})" if num_classes is not None else f"0-{MAX_CLASSES - 1}"
        raise bad_label(path, line, f"class id {index} is outside {where}")
    return index


def parse_all(items: Sequence[Any], parse: Callable[[Any], DetectionRecord]) \
        -> tuple[list[DetectionRecord], list[BadSampleError]]:
    """Parse every item (in threads: this is file reading); the good records in order and the errors."""
    def attempt(item: Any) -> DetectionRecord | BadSampleError:
        try:
            return parse(item)
        except BadSampleError as e:
            return e

    if len(items) > 64:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            results = list(pool.map(attempt, items))
    else:
        results = [attempt(item) for item in items]
    return ([r for r in results if isinstance(r, DetectionRecord)],
            [r for r in results if isinstance(r, BadSampleError)])


# --- the dataset -----------------------------------------------------------------------------------------------

class DetectionDataset(BaseDataset):
    """Base class: the parsed records, class names, clipping and the bad-sample bookkeeping.

    `errors` are the bad annotations found while parsing (raised, or skipped with `skip_bad`); `notes` are
    what the format reports besides clipping (e.g. images without a label file), joined into one DataWarning.
    """

    def __init__(self, records: Sequence[DetectionRecord], class_names: Sequence[str],
                 transform: Transform | None = None, skip_bad: bool = False, source: str | Path = "",
                 errors: Sequence[BadSampleError] = (), notes: Sequence[str] = ()) -> None:
        self.records = list(records)
        self.notes = ""  # the DataWarning's text, "" when there was nothing to say
        self._format_notes = list(notes)
        super().__init__(class_names, transform, skip_bad, source, errors)

    # --- the Dataset interface ---

    def __len__(self) -> int:
        return len(self.records)

    @property
    def files(self) -> list[tuple[Path, Path]]:
        return [(r.image, r.annotation) for r in self.records]

    @property
    def image_ids(self) -> list[str | int]:
        return [r.image_id for r in self.records]

    def load(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """The untransformed sample; raises BadSampleError naming the file when it is unusable."""
        record = self.records[index]
        image = open_image(record.image, "image", "RGB")
        width, height = image.size
        if record.size is not None and record.size != (width, height):
            raise BadSampleError("size_mismatch", record.image,
                                 f"image {record.image} is {width}x{height} but {record.annotation} says "
                                 f"{record.size[0]}x{record.size[1]}")
        boxes = record.boxes * np.array([width, height, width, height], np.float32) if record.normalized \
            else record.boxes.copy()
        target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes.astype(np.float32, copy=False)),
                                                    format="XYXY", canvas_size=(height, width)),
                  "labels": torch.from_numpy(record.labels.copy()),
                  "difficult": torch.from_numpy(record.difficult.copy()),
                  **({} if record.area is None else {"area": torch.from_numpy(record.area.copy())}),
                  "image_id": record.image_id,
                  "orig_size": (height, width)}
        return tv_tensors.Image(pil_to_tensor(image)), target

    # --- bookkeeping ---

    def box_sizes(self, include_difficult: bool = False) -> np.ndarray:
        """Width and height of every box as fractions of its image's width and height, float64 (N, 2): what
        dimension clusters are computed on (YOLOv2 resizes images to a square, so these scale with the input)."""
        out = []
        for record in self.records:
            boxes = record.boxes if include_difficult else record.boxes[~record.difficult]
            wh = boxes[:, 2:] - boxes[:, :2]
            if not record.normalized:
                if record.size is None:
                    raise BetterConvError(f"{record.annotation}: no image size to normalise the boxes with")
                wh = wh / np.array(record.size, np.float64)
            out.append(wh.astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, 2))

    def _prepare(self) -> None:
        """Clip the boxes to their images and say what was fixed or left out, in one DataWarning."""
        self.clipped, self.dropped = self._clip_all()
        parts = list(self._format_notes)
        if self.clipped:
            parts.insert(0, f"clipped {self.clipped} boxes to their image")
        if self.dropped:
            parts.insert(1 if self.clipped else 0, f"dropped {self.dropped} boxes of zero width or height")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} samples with bad annotations")
        self.notes = "; ".join(parts)
        if self.notes:
            # the frames: here, BaseDataset.__init__, DetectionDataset.__init__, the format's __init__, its caller
            warnings.warn(f"{self.source or type(self).__name__}: {self.notes}", DataWarning, stacklevel=5)

    def _clip_all(self) -> tuple[int, int]:
        clipped = dropped = 0
        for record in self.records:
            if not len(record.boxes):
                continue
            if record.normalized:
                limit, tolerance = np.array([1, 1, 1, 1], np.float32), 1e-3
            elif record.size is not None:
                limit, tolerance = np.array(record.size * 2, np.float32), 1.0
            else:
                continue
            boxes = record.boxes
            fixed = np.clip(boxes, 0, limit)
            keep = (fixed[:, 2] > fixed[:, 0]) & (fixed[:, 3] > fixed[:, 1])
            moved = (np.abs(fixed - boxes) > tolerance).any(axis=1)
            clipped += int((moved & keep).sum())
            dropped += int((~keep).sum())
            record.boxes, record.labels, record.difficult = fixed[keep], record.labels[keep], record.difficult[keep]
            if record.area is not None:
                record.area = record.area[keep]
        return clipped, dropped

    def _keep(self, indices: list[int]) -> None:
        self.records = [self.records[i] for i in indices]

    def _describe(self) -> str:
        return f"{len(self)} images, {sum(len(r.boxes) for r in self.records)} boxes"


# --- collate ---------------------------------------------------------------------------------------------------

def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack the images (all the same size: use a resizing transform) into (B, 3, H, W); targets stay a list."""
    images = [image for image, _ in batch]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise BetterConvError(f"images of a batch differ in size ({', '.join(sorted(map(str, shapes)))}): give "
                              "the dataset a transform that resizes them to one size")
    return torch.stack([image.as_subclass(torch.Tensor) for image in images]), [target for _, target in batch]
