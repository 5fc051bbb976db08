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
      the segmentation datasets do) and drops the bad ones too; all are recorded in `skipped` as (path, message).
    * `files` lists (image_path, annotation_path) pairs (for COCO the annotation path is the json), `image_ids`
      the matching ids, `records` the parsed annotations.
    * EXIF orientation is not applied: boxes are in the images' raw pixel order.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import BetterConvError
from .class_names import VOC_CLASSES
from .segmentation import IMAGE_EXTENSIONS, BadSampleError, _first_existing, _one_line, _open_image, check_samples

KINDS = ("voc", "coco", "yolo")
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

    @classmethod
    def empty(cls, image: Path, annotation: Path, image_id: str | int, size: tuple[int, int] | None = None,
              normalized: bool = False) -> DetectionRecord:
        return cls(image, annotation, image_id, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                   np.zeros(0, bool), size, normalized)


def _bad(path: Path | str, line: int | None, message: str) -> BadSampleError:
    where = f"{path}:{line}" if line is not None else str(path)
    return BadSampleError("bad_label", path, f"{where}: {message}")


def _finite(value: str, path: Path, line: int, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _bad(path, line, f"{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise _bad(path, line, f"{what} {value!r} is not a finite number")
    return number


def _class_index(value: str, path: Path, line: int, num_classes: int | None) -> int:
    number = _finite(value, path, line, "class id")
    if number != int(number):
        raise _bad(path, line, f"class id {value!r} is not an integer")
    index = int(number)
    if index < 0 or (num_classes is not None and index >= num_classes):
        bound = f"the {num_classes} classes (0-{num_classes - 1})" if num_classes else "the classes"
        raise _bad(path, line, f"class id {index} is outside {bound}")
    return index


class DetectionDataset(Dataset):
    """Base class: the parsed records, class names, clipping and the bad-sample bookkeeping."""

    def __init__(self, records: Sequence[DetectionRecord], class_names: Sequence[str],
                 transform: Transform | None = None, skip_bad: bool = False, source: str | Path = "",
                 errors: Sequence[BadSampleError] = (), notes: Sequence[str] = ()) -> None:
        self.class_names = tuple(class_names)
        self.transform = transform
        self.source = str(source)
        self.skipped: list[tuple[str, str]] = []  # (path, message) of the samples dropped by skip_bad
        self.problems: list[tuple[str, str]] = []  # those found by the last validate()
        if errors:
            if not skip_bad:
                raise errors[0]
            self.skipped.extend((e.path, str(e)) for e in errors)
        self.records = list(records)
        if not self.records:
            detail = f", the first bad one: {self.skipped[0][1]}" if self.skipped else ""
            raise BetterConvError(f"{type(self).__name__}: no samples in {source or 'the given files'}{detail}")
        self.clipped, self.dropped = self._clip_all()
        self._warn(notes)
        if skip_bad:
            self.validate(drop=True)

    # --- the Dataset interface ---

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def files(self) -> list[tuple[Path, Path]]:
        return [(r.image, r.annotation) for r in self.records]

    @property
    def image_ids(self) -> list[str | int]:
        return [r.image_id for r in self.records]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.load(index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def load(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """The untransformed sample; raises BadSampleError naming the file when it is unusable."""
        record = self.records[index]
        image = _open_image(record.image, "image")
        width, height = image.size
        if record.size is not None and record.size != (width, height):
            raise BadSampleError("size_mismatch", record.image,
                                 f"image {record.image} is {width}x{height} but {record.annotation} says "
                                 f"{record.size[0]}x{record.size[1]}")
        if image.mode != "RGB":
            image = image.convert("RGB")
        boxes = record.boxes * np.array([width, height, width, height], np.float32) if record.normalized \
            else record.boxes.copy()
        target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes.astype(np.float32, copy=False)),
                                                    format="XYXY", canvas_size=(height, width)),
                  "labels": torch.from_numpy(record.labels.copy()),
                  "difficult": torch.from_numpy(record.difficult.copy()),
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
        return clipped, dropped

    def _warn(self, notes: Sequence[str]) -> None:
        parts = list(notes)
        if self.clipped:
            parts.insert(0, f"clipped {self.clipped} boxes to their image")
        if self.dropped:
            parts.insert(1 if self.clipped else 0, f"dropped {self.dropped} boxes of zero width or height")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} samples with bad annotations")
        if parts:
            self.notes = "; ".join(parts)
            warnings.warn(f"{self.source or type(self).__name__}: {self.notes}", DataWarning, stacklevel=4)
        else:
            self.notes = ""

    def validate(self, drop: bool = False, workers: int | None = None) -> Counter:
        """Load every image and count the outcomes: "ok" and one key per BadSampleError kind. The bad samples
        are listed in `problems` as (path, message); with `drop` they are removed and added to `skipped`."""
        counts, errors = check_samples(self.load, len(self.records), workers)
        self.problems = [(e.path, str(e)) for e in errors if e is not None]
        if drop:
            self.skipped.extend(self.problems)
            self.records = [r for r, e in zip(self.records, errors) if e is None]
            if not self.records:
                raise BetterConvError(f"{type(self).__name__}: all {len(errors)} samples are bad, the first: "
                                      f"{self.problems[0][1]}")
        return counts

    def __repr__(self) -> str:
        boxes = sum(len(r.boxes) for r in self.records)
        return (f"{type(self).__name__}({len(self)} images, {boxes} boxes, {self.num_classes} classes"
                + (f", {len(self.skipped)} skipped" if self.skipped else "") + ")")


def _parse_all(items: Sequence[Any], parse: Callable[[Any], DetectionRecord]) \
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


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadSampleError("missing", path, f"missing {what} {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadSampleError("unreadable", path, f"cannot read {what} {path}: {_one_line(e)}") from None


# --- PASCAL VOC ------------------------------------------------------------------------------------------------

@dataclass
class _XMLNode:
    tag: str
    line: int
    text: str = ""
    children: list[_XMLNode] = field(default_factory=list)

    def find(self, tag: str) -> _XMLNode | None:
        return next((c for c in self.children if c.tag == tag), None)


def _parse_xml(path: Path) -> _XMLNode:
    """A tiny element tree that remembers each element's line, for error messages."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadSampleError("missing", path, f"missing annotation file {path}") from None
    except OSError as e:
        raise BadSampleError("unreadable", path, f"cannot read annotation {path}: {_one_line(e)}") from None
    parser = expat.ParserCreate()
    top = _XMLNode("", 0)
    stack = [top]

    def start(tag: str, attrs: dict) -> None:
        node = _XMLNode(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise _bad(path, e.lineno, f"malformed XML: {expat.ErrorString(e.code)}") from None
    if not top.children:
        raise _bad(path, None, "empty XML file")
    return top.children[0]


def _voc_number(node: _XMLNode | None, parent: _XMLNode, tag: str, path: Path) -> float:
    if node is None:
        raise _bad(path, parent.line, f"<{parent.tag}> has no <{tag}>")
    return _finite(node.text.strip(), path, node.line, f"<{tag}>")


def parse_voc_xml(path: Path, image: Path, image_id: str, class_names: Sequence[str]) -> DetectionRecord:
    """One VOC annotation file as a record; boxes (xmin - 1, ymin - 1, xmax, ymax)."""
    root = _parse_xml(path)
    index = {name: i for i, name in enumerate(class_names)}
    size = None
    size_node = root.find("size")
    if size_node is not None:
        width = _voc_number(size_node.find("width"), size_node, "width", path)
        height = _voc_number(size_node.find("height"), size_node, "height", path)
        if width > 0 and height > 0:
            size = (int(width), int(height))
    if size is None:  # some VOC-style tools write 0 or leave <size> out: read the image's header
        try:
            with Image.open(image) as im:
                size = im.size
        except FileNotFoundError:
            raise BadSampleError("missing", image, f"missing image file {image}") from None
        except OSError as e:
            raise BadSampleError("unreadable", image, f"cannot read image {image}: {_one_line(e)}") from None
    boxes, labels, difficult = [], [], []
    for obj in (c for c in root.children if c.tag == "object"):
        name_node = obj.find("name")
        if name_node is None:
            raise _bad(path, obj.line, "<object> has no <name>")
        name = name_node.text.strip()
        if name not in index:
            raise _bad(path, name_node.line, f"class {name!r} is not one of the {len(class_names)} classes")
        flag = obj.find("difficult")
        hard = flag is not None and flag.text.strip() not in ("", "0")
        if flag is not None and flag.text.strip() not in ("", "0", "1"):
            raise _bad(path, flag.line, f"<difficult> must be 0 or 1, got {flag.text.strip()!r}")
        box = obj.find("bndbox")
        if box is None:
            raise _bad(path, obj.line, "<object> has no <bndbox>")
        x1, y1, x2, y2 = (_voc_number(box.find(t), box, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:
            raise _bad(path, box.line, f"inverted box xmin={x1:g} ymin={y1:g} xmax={x2:g} ymax={y2:g}")
        boxes.append((x1 - 1, y1 - 1, x2, y2))
        labels.append(index[name])
        difficult.append(hard)
    return DetectionRecord(image, path, image_id, np.array(boxes, np.float32).reshape(-1, 4),
                           np.array(labels, np.int64), np.array(difficult, bool), size)


def to_voc_coordinates(boxes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """XYXY boxes in this module's convention -> VOC's 1-based (xmin, ymin, xmax, ymax), for VOC result files."""
    return boxes + (torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=boxes.dtype, device=boxes.device)
                    if isinstance(boxes, torch.Tensor) else np.array([1.0, 1.0, 0.0, 0.0], boxes.dtype))


def _voc_year_folders(root: Path) -> dict[str, Path]:
    """Year -> VOC20xx folder: root itself, or VOC20xx folders in root or root/VOCdevkit."""
    if (root / "Annotations").is_dir():
        match = re.search(r"(\d{4})$", root.name)
        return {match.group(1) if match else "": root}
    found = {}
    for base in (root, root / "VOCdevkit"):
        for folder in sorted(base.glob("VOC*")):
            match = re.fullmatch(r"VOC(\d{4})", folder.name)
            if match and (folder / "Annotations").is_dir():
                found.setdefault(match.group(1), folder)
    return found


class VOCDetection(DetectionDataset):
    """PASCAL VOC detection: ImageSets/Main/{split}.txt ids, Annotations/{id}.xml, JPEGImages/{id}.jpg.

    `root` is a VOC2007 / VOC2012 folder, a VOCdevkit or the folder above it. `split` is a list name
    ("trainval", "test", ...) when one year is there, or `YEAR_NAME` parts joined with "+", e.g.
    "2007_trainval+2012_trainval" (YOLOv2's VOC training set) or "2007_test". Difficult objects are kept with
    difficult=True. `class_names` defaults to the 20 VOC classes; other names in the XML are errors.
    """

    def __init__(self, root: str | Path, split: str = "trainval", transform: Transform | None = None,
                 skip_bad: bool = False, class_names: Sequence[str] = VOC_CLASSES) -> None:
        root = Path(root).expanduser()
        years = _voc_year_folders(root)
        if not years:
            raise BetterConvError(f"no VOC folder (with Annotations/) at {root}, in it or in {root / 'VOCdevkit'}")
        items = []
        for part in split.split("+"):
            part = part.strip()
            match = re.fullmatch(r"(\d{4})_(.+)", part)
            if match:
                year, name = match.groups()
                if year not in years:
                    raise BetterConvError(f"split {part!r}: no VOC{year} folder at {root} (found "
                                          f"{', '.join('VOC' + y for y in years if y) or 'one without a year'})")
                folder = years[year]
            elif len(years) == 1:
                folder, name = next(iter(years.values())), part
            else:
                raise BetterConvError(f"{root} has {', '.join('VOC' + y for y in years)}: name the year in the split, "
                                      f"e.g. {'+'.join(y + '_' + part for y in years)}")
            list_path = _first_existing([folder / "ImageSets" / "Main" / f"{name}.txt"], f"VOC {part} list")
            for line in list_path.read_text().splitlines():
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    items.append((folder, fields[0]))
        self.root, self.split = root, split

        def parse(item: tuple[Path, str]) -> DetectionRecord:
            folder, image_id = item
            return parse_voc_xml(folder / "Annotations" / f"{image_id}.xml", folder / "JPEGImages" / f"{image_id}.jpg",
                                 image_id, class_names)

        records, errors = _parse_all(items, parse)
        super().__init__(records, class_names, transform, skip_bad, f"VOC {split} at {root}", errors)


# --- COCO ------------------------------------------------------------------------------------------------------

class COCODetection(DetectionDataset):
    """COCO instances json: annotations/instances_{split}.json, images in images/{split}/, {split}/ or images/
    (split "train"/"val" also tries "train2017"/"val2017"). Classes are the json's categories in its order,
    `category_ids[label]` is the COCO id of a label; image_id is the COCO image id, as COCO result files need.
    Crowd annotations (iscrowd=1) are kept with difficult=True. Images without annotations are kept (N=0)."""

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 skip_bad: bool = False, json_path: str | Path | None = None,
                 image_dir: str | Path | None = None) -> None:
        root = Path(root).expanduser()
        splits = [split] + ([f"{split}2017", f"{split}2014"] if split in ("train", "val") else [])
        if json_path is None:
            json_path = _first_existing([root / "annotations" / f"instances_{s}.json" for s in splits],
                                        f"COCO {split} annotations")
        json_path = Path(json_path)
        split = json_path.stem.removeprefix("instances_")
        if image_dir is None:
            image_dir = _first_existing([root / "images" / split, root / split, root / "images"],
                                        f"COCO {split} images")
        image_dir = Path(image_dir)
        try:
            data = json.loads(json_path.read_text())
            categories = [(int(c["id"]), str(c["name"])) for c in data["categories"]]
            images = list(data["images"])
            annotations: dict[Any, list[dict]] = {}
            for ann in data.get("annotations", []):
                annotations.setdefault(ann["image_id"], []).append(ann)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BetterConvError(f"cannot read COCO annotations {json_path}: {_one_line(e)}") from None
        self.category_ids = [cid for cid, _ in categories]
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}
        self.json_path, self.root, self.image_dir = json_path, root, image_dir

        def parse(info: dict) -> DetectionRecord:
            name = info.get("file_name", info.get("id"))
            try:
                size = (int(info["width"]), int(info["height"]))
                image_id = info["id"]
                image = image_dir / info["file_name"]
            except (KeyError, TypeError, ValueError):
                raise _bad(json_path, None, f"image entry {name} lacks id, file_name, width or height") from None
            boxes, labels, difficult = [], [], []
            for ann in annotations.get(image_id, []):
                where = f"annotation {ann.get('id')} of image {info['file_name']}"
                cid = ann.get("category_id")
                if cid not in label_of:
                    raise _bad(json_path, None, f"{where} has unknown category_id {cid!r}")
                bbox = ann.get("bbox")
                if not (isinstance(bbox, list) and len(bbox) == 4 and
                        all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
                    raise _bad(json_path, None, f"{where} has a malformed bbox {bbox!r}")
                x, y, w, h = bbox
                if w < 0 or h < 0:
                    raise _bad(json_path, None, f"{where} has a negative width or height {bbox!r}")
                boxes.append((x, y, x + w, y + h))
                labels.append(label_of[cid])
                difficult.append(bool(ann.get("iscrowd", 0)))
            return DetectionRecord(image, json_path, image_id, np.array(boxes, np.float32).reshape(-1, 4),
                                   np.array(labels, np.int64), np.array(difficult, bool), size)

        records, errors = _parse_all(images, parse)
        super().__init__(records, [name for _, name in categories], transform, skip_bad, json_path, errors)


# --- YOLO txt --------------------------------------------------------------------------------------------------

def _yaml_scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _split_flow(text: str) -> list[str]:
    items, current, quote = [], "", None
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current)
    return [item.strip() for item in items if item.strip()]


def read_simple_yaml(path: Path) -> dict[str, Any]:
    """The top level of a YOLO dataset yaml without PyYAML: `key: scalar` lines, and block or flow lists and
    mappings (`names: [a, b]`, `names: {0: a}`, indented `- a` or `0: a` lines). Enough for Ultralytics' and
    darknet-style dataset files, not for yaml in general."""
    text = _read_text(path, "dataset yaml")
    out: dict[str, Any] = {}
    key = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():  # a top-level key
            name, sep, value = line.partition(":")
            if not sep:
                raise _bad(path, number, f"expected 'key: value', got {line.strip()!r}")
            key, value = name.strip(), value.strip()
            if value.startswith("[") and value.endswith("]"):
                out[key] = [_yaml_scalar(v) for v in _split_flow(value[1:-1])]
            elif value.startswith("{") and value.endswith("}"):
                out[key] = {_yaml_scalar(k): _yaml_scalar(v)
                            for k, _, v in (item.partition(":") for item in _split_flow(value[1:-1]))}
            else:
                out[key] = _yaml_scalar(value) if value else None
            continue
        if key is None:
            raise _bad(path, number, "indented line before any key")
        item = line.strip()
        if item.startswith("- ") or item == "-":
            if out[key] is None:
                out[key] = []
            if isinstance(out[key], list):
                out[key].append(_yaml_scalar(item[1:]))
                continue
        elif ":" in item:
            if out[key] is None:
                out[key] = {}
            if isinstance(out[key], dict):
                k, _, v = item.partition(":")
                out[key][_yaml_scalar(k)] = _yaml_scalar(v)
                continue
        raise _bad(path, number, f"cannot read {item!r} under {key!r} (only simple lists and mappings)")
    return out


def _names_from_yaml(value: Any, path: Path) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        try:
            indices = {int(k): str(v) for k, v in value.items()}
        except ValueError:
            raise _bad(path, None, "names: mapping keys must be class indices 0, 1, ...") from None
        if sorted(indices) != list(range(len(indices))):
            raise _bad(path, None, f"names: class indices must be 0..{len(indices) - 1} without gaps")
        return [indices[i] for i in range(len(indices))]
    raise _bad(path, None, "names: expected a list or a mapping of class names")


def read_class_names(path: Path) -> list[str]:
    """Class names from a yaml's `names:` or a text file with one name per line (classes.txt, darknet *.names)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        data = read_simple_yaml(path)
        if "names" not in data:
            raise _bad(path, None, "no 'names:' key")
        return _names_from_yaml(data["names"], path)
    return [line.strip() for line in _read_text(path, "class names file").splitlines() if line.strip()]


def yolo_label_path(image: Path) -> Path:
    """The label file of an image: the last `images` folder of its path replaced by `labels` (Ultralytics;
    darknet's `JPEGImages` too), else the image's own folder; the suffix becomes .txt."""
    parts = list(image.parts)
    for name in ("images", "JPEGImages"):
        if name in parts[:-1]:
            i = len(parts) - 2 - parts[:-1][::-1].index(name)
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_yolo_txt(path: Path, image: Path, image_id: str, num_classes: int | None) -> DetectionRecord:
    """One YOLO label file as a record of normalised XYXY boxes. Lines are `class cx cy w h`; Ultralytics'
    polygon lines `class x1 y1 x2 y2 x3 y3 ...` become their bounding box. A missing file means no boxes."""
    if not path.exists():
        return DetectionRecord.empty(image, path, image_id, normalized=True)
    boxes, labels = [], []
    for number, line in enumerate(_read_text(path, "label file").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise _bad(path, number, f"expected 'class cx cy w h', got {line.strip()!r}")
        label = _class_index(fields[0], path, number, num_classes)
        values = [_finite(v, path, number, "coordinate") for v in fields[1:]]
        if max(abs(v) for v in values) > 2:
            raise _bad(path, number, f"coordinates {' '.join(fields[1:5])} are not normalised to the image "
                                     "size (0-1)")
        if len(fields) == 5:
            cx, cy, w, h = values
            if w < 0 or h < 0:
                raise _bad(path, number, f"negative width or height in {line.strip()!r}")
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        else:
            xs, ys = values[0::2], values[1::2]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
        labels.append(label)
    return DetectionRecord(image, path, image_id, np.array(boxes, np.float32).reshape(-1, 4),
                           np.array(labels, np.int64), np.zeros(len(labels), bool), None, normalized=True)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _image_list(path: Path) -> list[Path]:
    """Images of a list file (one path per line; relative ones are relative to the list's folder)."""
    out = []
    for line in _read_text(path, "image list").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            image = Path(line).expanduser()
            out.append(image if image.is_absolute() else path.parent / image)
    return out


class YOLODetection(DetectionDataset):
    """YOLO txt labels (class cx cy w h, normalised), found from `root`:
        * a dataset yaml (Ultralytics: `path`, `train`, `val`, `test`, `names`), given or the only *.yaml in
          root: the `split` key is an image folder, a list file, or a list of them, relative to `path` (or to
          the yaml's folder);
        * a list file (.txt of image paths, darknet style), whatever the split;
        * a folder with images/{split}/ (split "train"/"val" also tries "train2017"/"val2017") or images/.
    Labels are found by `yolo_label_path`; an image without a label file has no boxes. Class names: the
    `class_names` argument, else the yaml's `names`, else classes.txt or a single *.names file in the root, its
    parent or the labels folder, else "class_0".. up to the largest class id in the labels (then class ids are
    not range-checked). image_id = the image's file stem.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 skip_bad: bool = False, class_names: Sequence[str] | None = None) -> None:
        root = Path(root).expanduser()
        yaml_path = None
        if root.is_file() and root.suffix.lower() in (".yaml", ".yml"):
            yaml_path, root = root, root.parent
        elif root.is_dir():
            yamls = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
            yaml_path = yamls[0] if len(yamls) == 1 else None
        elif not root.exists():
            raise BetterConvError(f"no YOLO dataset at {root}")
        notes: list[str] = []
        label_dirs: list[tuple[Path, Path]] = []  # (image folder, label folder) pairs, to find orphan labels
        if yaml_path is not None:
            config = read_simple_yaml(yaml_path)
            base = yaml_path.parent
            if config.get("path"):  # relative to the yaml's folder unless absolute
                base = base / Path(config["path"]).expanduser()
            entry = config.get(split)
            if not entry:
                raise BetterConvError(f"{yaml_path}: no {split!r} entry (has {', '.join(config)})")
            images = []
            for item in entry if isinstance(entry, list) else [entry]:
                target = base / item
                if target.is_dir():
                    images += _images_in(target)
                    label_dirs.append((target, yolo_label_path(target / "x.jpg").parent))
                elif target.is_file():
                    images += _image_list(target)
                else:
                    raise BetterConvError(f"{yaml_path}: {split} entry {item!r} is neither a folder nor a list "
                                          f"file ({target})")
            if class_names is None and "names" in config:
                class_names = _names_from_yaml(config["names"], yaml_path)
            source = f"{yaml_path} {split}"
        elif root.is_file():
            images, source = _image_list(root), str(root)
            root = root.parent
        else:
            splits = [split] + ([f"{split}2017"] if split in ("train", "val") else [])
            folder = _first_existing([root / "images" / s for s in splits] + [root / "images"],
                                     f"YOLO {split} images")
            images = _images_in(folder)
            label_dirs.append((folder, yolo_label_path(folder / "x.jpg").parent))
            source = str(folder)
        if not images:
            raise BetterConvError(f"YOLO dataset: no images in {source}")
        if class_names is None:
            candidates = [root / "classes.txt", root.parent / "classes.txt"] + \
                [d / "classes.txt" for _, d in label_dirs] + sorted(root.glob("*.names"))
            found = next((p for p in candidates if p.is_file()), None)
            if found is not None:
                class_names = read_class_names(found)
        self.root, self.yaml_path = root, yaml_path
        num_classes = len(class_names) if class_names is not None else None
        records, errors = _parse_all(images, lambda im: parse_yolo_txt(yolo_label_path(im), im, im.stem,
                                                                       num_classes))
        if class_names is None:
            largest = max((int(r.labels.max()) for r in records if len(r.labels)), default=0)
            class_names = [f"class_{i}" for i in range(largest + 1)]
        unlabelled = sum(not r.annotation.exists() for r in records)
        if unlabelled:
            notes.append(f"{unlabelled} images without a label file (no boxes)")
        stems = {(im.parent, im.stem) for im in images}
        orphans = [p for image_dir, label_dir in label_dirs if label_dir.is_dir() and label_dir != image_dir
                   for p in sorted(label_dir.rglob("*.txt"))
                   if p.name != "classes.txt" and
                   (image_dir / p.parent.relative_to(label_dir), p.stem) not in stems]
        self.orphan_labels = orphans
        if orphans:
            notes.append(f"{len(orphans)} label files without an image, e.g. {orphans[0]}")
        super().__init__(records, class_names, transform, skip_bad, source, errors, notes)


# --- factory, collate, multi-scale ------------------------------------------------------------------------------

def detection_dataset(spec: str, split: str, transform: Transform | None = None, skip_bad: bool = False,
                      **kwargs: Any) -> DetectionDataset:
    """A dataset from `KIND:PATH`, KIND one of voc, coco, yolo; e.g. `voc:/data/VOCdevkit` with split
    "2007_test", `coco:/data/coco` with "val2017", `yolo:/data/coco8/coco8.yaml` with "val". Extra keyword
    arguments go to the dataset class."""
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS or not path:
        raise BetterConvError(f"dataset must be KIND:PATH with KIND one of {', '.join(KINDS)}, got {spec!r}")
    cls = {"voc": VOCDetection, "coco": COCODetection, "yolo": YOLODetection}[kind]
    return cls(path, split, transform, skip_bad, **kwargs)


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack the images (all the same size: use a resizing transform) into (B, 3, H, W); targets stay a list."""
    images = [image for image, _ in batch]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise BetterConvError(f"images of a batch differ in size ({', '.join(sorted(map(str, shapes)))}): give "
                              "the dataset a transform that resizes them to one size")
    return torch.stack([image.as_subclass(torch.Tensor) for image in images]), [target for _, target in batch]
