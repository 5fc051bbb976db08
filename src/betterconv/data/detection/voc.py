"""PASCAL VOC detection (Everingham et al., IJCV 2010): VOC 2007 / 2012, 20 classes, one XML file per image with
a `difficult` flag per object.

The XML holds 1-based inclusive pixel indices; boxes become (xmin - 1, ymin - 1, xmax, ymax), so
width = xmax - xmin + 1. The VOC devkit's metric computes areas and overlaps on the raw XML numbers with +1, which
gives exactly the plain IoU of the converted boxes; `to_voc_coordinates` converts predictions back for VOC result
files. The XML is parsed with defusedxml: entity declarations and external references are refused.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from xml.parsers.expat import ErrorString

import numpy as np
import torch
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from ...errors import BetterConvError, first_line
from ..class_names import VOC_CLASSES
from ..dataset import first_existing, numbered_lines, path_inside
from ..images import BadSampleError, image_size
from .base import DetectionDataset, DetectionRecord, Transform, bad_label, finite_number, parse_all


class _LineTreeBuilder(ET.TreeBuilder):
    """An element tree builder that remembers the line each element starts on, for error messages."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[ET.Element, int] = {}
        self.parser: DefusedXMLParser | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        element = super().start(tag, attrs)
        self.lines[element] = self.parser.parser.CurrentLineNumber
        return element


class _Annotation:
    """A parsed VOC XML file: its root element and the line of each element."""

    def __init__(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadSampleError("missing", path, f"missing annotation file {path}") from None
        except (OSError, ValueError) as e:  # ValueError: a NUL in the name
            raise BadSampleError("unreadable", path, f"cannot read annotation {path}: {first_line(e)}") from None
        builder = _LineTreeBuilder()
        builder.parser = parser = DefusedXMLParser(target=builder)
        try:
            parser.feed(data)
            self.root = parser.close()
        except ParseError as e:
            raise bad_label(path, e.position[0], f"malformed XML: {ErrorString(e.code)}") from None
        except DefusedXmlException as e:  # an entity declaration or external reference
            raise bad_label(path, None, f"refused XML ({first_line(e)}): entity declarations and external "
                                        "references are not allowed") from None
        self.path, self.lines = path, builder.lines

    def line(self, element: ET.Element) -> int:
        return self.lines[element]

    def number(self, parent: ET.Element, tag: str) -> float:
        """The number in `parent`'s child `tag`."""
        node = parent.find(tag)
        if node is None:
            raise bad_label(self.path, self.line(parent), f"<{parent.tag}> has no <{tag}>")
        return finite_number((node.text or "").strip(), self.path, self.line(node), f"<{tag}>")


def parse_voc_xml(path: Path, image: Path, image_id: str, class_names: Sequence[str]) -> DetectionRecord:
    """One VOC annotation file as a record; boxes (xmin - 1, ymin - 1, xmax, ymax). The size is the XML's <size>
    (positive integers below 2**31; anything else is a bad label), or the image's when <size> is missing or 0."""
    xml = _Annotation(path)
    index = {name: i for i, name in enumerate(class_names)}
    size = None
    size_node = xml.root.find("size")
    if size_node is not None:
        width, height = xml.number(size_node, "width"), xml.number(size_node, "height")
        if width > 0 and height > 0:
            if max(width, height) >= 2**31 or not (width.is_integer() and height.is_integer()):
                raise bad_label(path, xml.line(size_node), f"<size> {width:g}x{height:g} is not an image size")
            size = (int(width), int(height))
    if size is None:  # some VOC-style tools write 0 or leave <size> out: read the image
        size = image_size(image, "image")
    boxes, labels, difficult = [], [], []
    for obj in xml.root.findall("object"):
        name_node = obj.find("name")
        if name_node is None:
            raise bad_label(path, xml.line(obj), "<object> has no <name>")
        name = (name_node.text or "").strip()
        if name not in index:
            raise bad_label(path, xml.line(name_node), f"class {name!r} is not one of the {len(class_names)} classes")
        flag = obj.find("difficult")
        flag_text = (flag.text or "").strip() if flag is not None else ""
        if flag_text not in ("", "0", "1"):
            raise bad_label(path, xml.line(flag), f"<difficult> must be 0 or 1, got {flag_text!r}")
        box = obj.find("bndbox")
        if box is None:
            raise bad_label(path, xml.line(obj), "<object> has no <bndbox>")
        x1, y1, x2, y2 = (xml.number(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:
            raise bad_label(path, xml.line(box), f"inverted box xmin={x1:g} ymin={y1:g} xmax={x2:g} ymax={y2:g}")
        boxes.append((x1 - 1, y1 - 1, x2, y2))
        labels.append(index[name])
        difficult.append(flag_text == "1")
    with np.errstate(over="ignore"):  # a huge coordinate becomes inf, then is clipped to the image
        boxes_array = np.array(boxes, np.float32).reshape(-1, 4)
    return DetectionRecord(image, path, image_id, boxes_array, np.array(labels, np.int64),
                           np.array(difficult, bool), size)


def to_voc_coordinates(boxes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """XYXY boxes in this package's convention -> VOC's 1-based (xmin, ymin, xmax, ymax), for VOC result files."""
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
    image_id is the VOC file id (str). An id whose files would lie outside the VOC folder (`../x`) is refused,
    naming the list file and line (see `betterconv.data.dataset.path_inside`).
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
            list_path = first_existing([folder / "ImageSets" / "Main" / f"{name}.txt"], f"VOC {part} list")
            for number, line in numbered_lines(list_path, "list file"):
                image_id = line.split()[0]
                items.append((path_inside(folder, f"Annotations/{image_id}.xml", list_path, number),
                              path_inside(folder, f"JPEGImages/{image_id}.jpg", list_path, number), image_id))
        self.root, self.split = root, split

        def parse(item: tuple[Path, Path, str]) -> DetectionRecord:
            return parse_voc_xml(*item, class_names)

        records, errors = parse_all(items, parse)
        super().__init__(records, class_names, transform, skip_bad, f"VOC {split} at {root}", errors)
