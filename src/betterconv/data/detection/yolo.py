"""YOLO txt labels (darknet / Ultralytics): one `class cx cy w h` line per box, normalised to the image size, in a
labels/ folder next to images/; class names from a dataset yaml's `names:`, classes.txt or a darknet *.names file.

Boxes are the normalised centre and size, kept normalised in the records and multiplied by the image's width
and height when a sample is loaded. Dataset yaml files (Ultralytics' `path`, `train`, `val`, `test`, `names`)
are read with PyYAML's safe loader (`read_data_yaml`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ...errors import BetterConvError, first_line
from ..dataset import file_kind, first_existing, numbered_lines, path_inside, read_lines, read_text
from ..images import is_image_file
from .base import DetectionDataset, DetectionRecord, Transform, bad_label, class_index, finite_number, parse_all

_NULL_TAG = "tag:yaml.org,2002:null"


class _DataYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that resolves only null (`~`, `null`, an empty value): every other plain scalar stays
    the text it is written as, so `names: {0: person}` has the key "0" and a class named `no` or `on` stays a
    string instead of becoming a boolean. Aliases (`*name`) are refused: without them the data is a tree no larger
    than the text, so no "billion laughs" of nested aliases can blow up when it is walked or printed. Explicit tags
    other than those of plain data (`!!int x`, `!!timestamp ...`, `!!binary`, `!!set`) are refused too: their
    constructors are the ones that raise on odd values, and a dataset yaml has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a dataset yaml",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


_DataYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag == _NULL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_DataYamlLoader.yaml_constructors = {  # None: PyYAML's "could not determine a constructor" error for the rest
    tag: constructor for tag, constructor in yaml.SafeLoader.yaml_constructors.items()
    if tag in (None, _NULL_TAG, "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")}


def read_data_yaml(path: Path) -> dict[str, Any]:
    """A dataset yaml as a dict: Ultralytics' `path`, `train`, `val`, `test` (a folder, a list file or a list of
    them) and `names` (a list, or a mapping from class index to name). Scalars are strings, empty values None
    (see `_DataYamlLoader`); an empty file is {}. Invalid YAML (aliases, explicit tags other than !!str, !!seq,
    !!map and !!null, nesting deeper than Python's recursion limit included) is a one-line BetterConvError naming
    the file."""
    text = read_text(path, "dataset yaml")
    try:
        data = yaml.load(text, Loader=_DataYamlLoader)  # a SafeLoader: builds only plain Python data
    except RecursionError:
        raise BetterConvError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or first_line(e)
        raise BetterConvError(f"{path}: not valid YAML: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BetterConvError(f"{path}: expected 'key: value' lines (path, train, val, names, ...), got a "
                              f"{type(data).__name__}")
    return data


def _names_from_yaml(value: Any, path: Path) -> list[str]:
    """A yaml's `names`: a list of names, or a mapping from class index (0, 1, ... without gaps) to name."""
    if isinstance(value, list):
        names = list(value)
    elif isinstance(value, dict):
        try:
            indices = {int(k): v for k, v in value.items()}
        except (ValueError, TypeError):
            raise bad_label(path, None, "names: mapping keys must be class indices 0, 1, ...") from None
        if sorted(indices) != list(range(len(indices))):
            raise bad_label(path, None, f"names: class indices must be 0..{len(indices) - 1} without gaps")
        names = [indices[i] for i in range(len(indices))]
    else:
        raise bad_label(path, None, "names: expected a list or a mapping of class names")
    wrong = next((i for i, name in enumerate(names) if not isinstance(name, str)), None)
    if wrong is not None:
        raise bad_label(path, None, f"names: class {wrong} is {names[wrong]!r:.40}, not a name")
    return names


def read_class_names(path: Path) -> list[str]:
    """Class names from a yaml's `names:` or a text file with one name per line (classes.txt, darknet *.names)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        data = read_data_yaml(path)
        if "names" not in data:
            raise bad_label(path, None, "no 'names:' key")
        return _names_from_yaml(data["names"], path)
    return read_lines(path, "class names file", comments=False)


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
    if file_kind(path) is None:
        return DetectionRecord.empty(image, path, image_id, normalized=True)
    boxes, labels = [], []
    for number, line in enumerate(read_text(path, "label file").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise bad_label(path, number, f"expected 'class cx cy w h', got {line.strip()!r}")
        label = class_index(fields[0], path, number, num_classes)
        values = [finite_number(v, path, number, "coordinate") for v in fields[1:]]
        if max(abs(v) for v in values) > 2:
            raise bad_label(path, number, f"coordinates {' '.join(fields[1:5])} are not normalised to the image "
                                          "size (0-1)")
        if len(fields) == 5:
            cx, cy, w, h = values
            if w < 0 or h < 0:
                raise bad_label(path, number, f"negative width or height in {line.strip()!r}")
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        else:
            xs, ys = values[0::2], values[1::2]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
        labels.append(label)
    return DetectionRecord(image, path, image_id, np.array(boxes, np.float32).reshape(-1, 4),
                           np.array(labels, np.int64), np.zeros(len(labels), bool), None, normalized=True)


def _yaml_path_entry(config: dict[str, Any], key: str, path: Path) -> list[str]:
    """The paths a dataset yaml's `key` names: one path, or a list of them (`path` must be one)."""
    entry = config[key]
    items = entry if isinstance(entry, list) and key != "path" else [entry]
    if not all(isinstance(item, str) and item for item in items):
        raise BetterConvError(f"{path}: {key} must be a path{' or a list of paths' if key != 'path' else ''}, "
                              f"got {entry!r:.60}")
    return items


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and file_kind(p) == "file")


def _image_list(path: Path, root: Path) -> list[Path]:
    """Images of a list file (one path per line; relative ones are relative to the list's folder), each inside the
    dataset root (see `betterconv.data.dataset.path_inside`)."""
    return [path_inside(root, line, path, number, base=path.parent)
            for number, line in numbered_lines(path, "image list")]


class YOLODetection(DetectionDataset):
    """YOLO txt labels (class cx cy w h, normalised), found from `root`:
        * a dataset yaml (Ultralytics: `path`, `train`, `val`, `test`, `names`), given or the only *.yaml in
          root: the `split` key is an image folder, a list file, or a list of them, relative to `path` (or to
          the yaml's folder);
        * a list file (.txt of image paths, darknet style; relative ones relative to its folder), whatever the
          split;
        * a folder with images/{split}/ (split "train"/"val" also tries "train2017"/"val2017") or images/.
    Labels are found by `yolo_label_path`; an image without a label file has no boxes. Class names: the
    `class_names` argument, else the yaml's `names`, else classes.txt or a single *.names file in the root, its
    parent or the labels folder, else "class_0".. up to the largest class id in the labels (then class ids are
    not range-checked). image_id = the image's file stem.

    The dataset root is the yaml's folder (or the list file's): `path`, the split entries and the lines of list
    files must stay inside it, absolute paths included, else the dataset is refused naming the file and line or
    entry (`betterconv.data.dataset.path_inside`: lexical, so a symlink placed inside the root is followed; put the
    yaml in the dataset's folder). `~` is not expanded in paths read from these files.
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
            config = read_data_yaml(yaml_path)
            base = root  # the yaml's folder: `path` is relative to it (or absolute), and stays inside it
            if config.get("path"):
                base = path_inside(root, _yaml_path_entry(config, "path", yaml_path)[0], yaml_path, what="path entry")
            if not config.get(split):
                raise BetterConvError(f"{yaml_path}: no {split!r} entry (has {', '.join(map(str, config))[:200]})")
            images = []
            for item in _yaml_path_entry(config, split, yaml_path):
                target = path_inside(root, item, yaml_path, base=base, what=f"{split} entry")
                kind = file_kind(target)
                if kind == "dir":
                    images += _images_in(target)
                    label_dirs.append((target, yolo_label_path(target / "x.jpg").parent))
                elif kind == "file":
                    images += _image_list(target, root)
                else:
                    raise BetterConvError(f"{yaml_path}: {split} entry {item!r} is neither a folder nor a list "
                                          f"file ({target})")
            if class_names is None and "names" in config:
                class_names = _names_from_yaml(config["names"], yaml_path)
            source = f"{yaml_path} {split}"
        elif root.is_file():
            images, source = _image_list(root, root.parent), str(root)
            root = root.parent
        else:
            splits = [split] + ([f"{split}2017"] if split in ("train", "val") else [])
            folder = first_existing([root / "images" / s for s in splits] + [root / "images"],
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
        records, errors = parse_all(images, lambda im: parse_yolo_txt(yolo_label_path(im), im, im.stem,
                                                                       num_classes))
        if class_names is None:
            largest = max((int(r.labels.max()) for r in records if len(r.labels)), default=0)
            class_names = [f"class_{i}" for i in range(largest + 1)]
        unlabelled = sum(file_kind(r.annotation) is None for r in records)
        if unlabelled:
            notes.append(f"{unlabelled} images without a label file (no boxes)")
        stems = {(im.parent, im.stem) for im in images}
        orphans = [p for image_dir, label_dir in label_dirs
                   if file_kind(label_dir) == "dir" and label_dir != image_dir
                   for p in sorted(label_dir.rglob("*.txt"))
                   if p.name != "classes.txt" and
                   (image_dir / p.parent.relative_to(label_dir), p.stem) not in stems]
        self.orphan_labels = orphans
        if orphans:
            notes.append(f"{len(orphans)} label files without an image, e.g. {orphans[0]}")
        super().__init__(records, class_names, transform, skip_bad, source, errors, notes)


