"""Semantic-segmentation datasets: PASCAL VOC 2012, its SBD "train_aug" extension, CamVid, COCO and plain folders.

Datasets used:
    PASCAL VOC 2012 (Everingham et al., IJCV 2010): 20 classes + background, palette PNGs, 255 = object boundary.
    SBD, Semantic Boundaries Dataset (Hariharan et al., ICCV 2011), as the usual 10,582-image "train_aug" set:
        grayscale PNGs in SegmentationClassAug/.
    CamVid (Brostow et al., PRL 2009) in SegNet's 11-class split (Badrinarayanan et al., TPAMI 2017): 367 train,
        101 val, 233 test; label 11 is "void".
    COCO (Lin et al., ECCV 2014): instance polygons / RLE rendered into semantic masks.

Conventions shared by every dataset here:
    * a sample is `(image, mask)`: `tv_tensors.Image` uint8 (3, H, W) RGB and `tv_tensors.Mask` int64 (H, W),
      then passed together through the optional joint `transform` (see `betterconv.data.transforms`);
    * labels are 0..len(class_names)-1 and the ignored label is always IGNORE_INDEX = 255: dataset-specific void
      labels (CamVid's 11, COCO crowd regions) are remapped to 255, so losses and metrics use ignore_index=255;
    * `files` lists (image_path, label_path) pairs (for COCO the label path is the annotation json);
    * bad samples (missing file, unreadable image, label value outside the classes, image/label size mismatch)
      raise BadSampleError (a BetterConvError naming the file) when loaded. `validate()` scans every sample and
      counts the problems; `skip_bad=True` runs it at construction and drops the bad samples from `files`, so a
      DataLoader only sees good ones, and records them in `skipped` as (path, message) pairs (the bookkeeping of
      `betterconv.data.dataset.BaseDataset`). For a file deleted after that, loading still raises.
    * paths read from list files and COCO `file_name`s stay inside the dataset root (checked lexically, so a
      symlink placed inside the root is followed; see `betterconv.data.dataset.path_inside`): one that leaves it is
      refused, naming the file and line or image;
    * EXIF orientation is not applied: label files are stored in the images' raw pixel order.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import BetterConvError, first_line
from .class_names import VOC_SEGMENTATION_CLASSES
from .dataset import (BaseDataset, check_samples, file_kind, first_existing, numbered_lines, path_inside,
                      read_coco_instances, read_lines)
from .images import IMAGE_EXTENSIONS, BadSampleError, is_image_file, open_image

__all__ = ["BadSampleError", "CAMVID_CLASSES", "CAMVID_VOID", "COCO_TO_VOC", "COCOSegmentation", "CamVid",
           "FolderSegmentation", "IGNORE_INDEX", "IMAGE_EXTENSIONS", "KINDS", "SBDSegmentation",
           "SegmentationDataset", "Transform", "VOCSegmentation", "check_samples", "coco_semantic_mask",
           "decode_rle", "read_label_png", "segmentation_dataset"]

IGNORE_INDEX = 255
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car", "pedestrian",
                  "bicyclist")
CAMVID_VOID = 11
# COCO category name -> VOC class name, for the 20 COCO categories that are VOC classes (the rest are identical)
COCO_TO_VOC = {"airplane": "aeroplane", "dining table": "diningtable", "motorcycle": "motorbike",
               "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor"}
KINDS = ("voc", "sbd", "camvid", "coco", "coco-all", "folder")

Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Any, Any]]


def read_label_png(path: Path) -> np.ndarray:
    """The raw values of a single-channel label image (palette indices for palette PNGs), as int64 (H, W)."""
    label = open_image(path, "label")
    if label.mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        raise BadSampleError("unreadable", path, f"label {path} is a {label.mode} image; expected a single-channel "
                                                 "(palette or grayscale) PNG of class indices")
    return np.asarray(label, dtype=np.int64)


class SegmentationDataset(BaseDataset):
    """Base class: (image, label) file pairs, class names, the remapping of void labels to IGNORE_INDEX."""

    ignore_index = IGNORE_INDEX
    void_labels: tuple[int, ...] = ()  # raw label values that mean "ignore", remapped to IGNORE_INDEX

    def __init__(self, files: Sequence[tuple[Path, Path]], class_names: Sequence[str],
                 transform: Transform | None = None, skip_bad: bool = False, source: str | Path = "",
                 errors: Sequence[BadSampleError] = ()) -> None:
        self.files = [(Path(image), Path(label)) for image, label in files]
        super().__init__(class_names, transform, skip_bad, source, errors)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The untransformed sample; raises BadSampleError naming the file when it is unusable."""
        image_path, label_path = self.files[index]
        image = open_image(image_path, "image", "RGB")
        raw = self.read_label(index, image.size)
        if raw.shape != (image.height, image.width):
            raise BadSampleError("size_mismatch", image_path,
                                 f"image {image_path} is {image.width}x{image.height} but its label {label_path} is "
                                 f"{raw.shape[1]}x{raw.shape[0]}")
        mask = self.remap(raw)
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != IGNORE_INDEX)
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            raise BadSampleError("bad_label", label_path,
                                 f"label {label_path} has values {shown} outside the {self.num_classes} classes "
                                 f"(0-{self.num_classes - 1}) and the ignore label {IGNORE_INDEX}")
        return tv_tensors.Image(pil_to_tensor(image)), tv_tensors.Mask(torch.from_numpy(mask))

    def read_label(self, index: int, image_size: tuple[int, int]) -> np.ndarray:
        """Raw label values (H, W) of sample `index`; `image_size` is the image's (width, height)."""
        return read_label_png(self.files[index][1])

    def remap(self, raw: np.ndarray) -> np.ndarray:
        if not self.void_labels:
            return raw
        return np.where(np.isin(raw, self.void_labels), IGNORE_INDEX, raw)

    def _prepare(self) -> None:
        if self.num_classes >= IGNORE_INDEX:
            raise BetterConvError(f"{type(self).__name__}: {self.num_classes} classes do not fit below the ignore "
                                  f"label {IGNORE_INDEX}")

    def _keep(self, indices: list[int]) -> None:
        self.files = [self.files[i] for i in indices]


def _read_list(path: Path) -> list[tuple[int, list[str]]]:
    """The fields of each line of a list file, with the line's number."""
    return [(number, line.split()) for number, line in numbered_lines(path, "list file")]


def _voc_root(root: Path) -> Path:
    """VOCdevkit/VOC2012 given itself, VOCdevkit or the folder above."""
    root = Path(root).expanduser()
    for path in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (path / "JPEGImages").is_dir():
            return path
    raise BetterConvError(f"no VOC2012 folder (with JPEGImages/) at {root}, {root / 'VOC2012'} or "
                          f"{root / 'VOCdevkit' / 'VOC2012'}")


def _pair_from_list(root: Path, number: int, fields: list[str], label_dir: str, list_path: Path) -> tuple[Path, Path]:
    """The (image, label) pair of a VOC / SBD list line: an id, or two paths relative to the VOC2012 folder (a
    leading "/" included); both must stay inside it (see `path_inside`)."""
    if len(fields) == 1:
        pair = (f"JPEGImages/{fields[0]}.jpg", f"{label_dir}/{fields[0]}.png")
    elif len(fields) == 2:
        pair = (fields[0].lstrip("/"), fields[1].lstrip("/"))
    else:
        raise BetterConvError(f"list file {list_path}:{number}: expected an id or an 'image label' pair per line, "
                              f"got {' '.join(fields)!r}")
    image, label = (path_inside(root, name, list_path, number) for name in pair)
    return image, label


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation: ImageSets/Segmentation/{split}.txt ids, JPEGImages/*.jpg,
    SegmentationClass/*.png palette images whose indices are the labels (255 = boundary, ignored)."""

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 skip_bad: bool = False) -> None:
        root = _voc_root(Path(root))
        list_path = first_existing([root / "ImageSets" / "Segmentation" / f"{split}.txt"], f"VOC {split} list")
        files = [_pair_from_list(root, n, f, "SegmentationClass", list_path) for n, f in _read_list(list_path)]
        self.root = root
        super().__init__(files, VOC_SEGMENTATION_CLASSES, transform, skip_bad, list_path)


class SBDSegmentation(SegmentationDataset):
    """VOC 2012 augmented with SBD ("train_aug", 10,582 images): SegmentationClassAug/*.png grayscale labels.

    The list is `{split}.txt` in the VOC2012 folder, ImageSets/SegmentationAug/ or ImageSets/Segmentation/, with
    one id per line or `/JPEGImages/x.jpg /SegmentationClassAug/x.png` pairs relative to the VOC2012 folder.
    Split "train" means "train_aug" when that list exists.
    """

    def __init__(self, root: str | Path, split: str = "train_aug", transform: Transform | None = None,
                 skip_bad: bool = False) -> None:
        root = _voc_root(Path(root))
        names = ["train_aug", "train"] if split == "train" else [split]
        folders = (root, root / "ImageSets" / "SegmentationAug", root / "ImageSets" / "Segmentation")
        list_path = first_existing([folder / f"{name}.txt" for name in names for folder in folders],
                                   f"SBD {split} list")
        files = [_pair_from_list(root, n, f, "SegmentationClassAug", list_path) for n, f in _read_list(list_path)]
        self.root = root
        super().__init__(files, VOC_SEGMENTATION_CLASSES, transform, skip_bad, list_path)


class CamVid(SegmentationDataset):
    """CamVid, SegNet's 11-class version: `{split}.txt` lists `image label` paths relative to the root (absolute
    paths of SegNet's original lists are resolved by their last two components); a path that leaves the root is
    refused, naming the list's line. Void (11) becomes 255."""

    void_labels = (CAMVID_VOID,)

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 skip_bad: bool = False) -> None:
        root = Path(root).expanduser()
        list_path = first_existing([root / f"{split}.txt"], f"CamVid {split} list")
        files = []
        for number, fields in _read_list(list_path):
            if len(fields) != 2:
                raise BetterConvError(f"list file {list_path}:{number}: expected 'image label' per line, got "
                                      f"{' '.join(fields)!r}")
            files.append(tuple(self._resolve(root, f, list_path, number) for f in fields))
        self.root = root
        super().__init__(files, CAMVID_CLASSES, transform, skip_bad, list_path)

    @staticmethod
    def _resolve(root: Path, name: str, list_path: Path, number: int) -> Path:
        """A list entry relative to the root (a leading "/" included), else its last two components (SegNet's
        original lists hold absolute paths of its authors' machine); both stay inside the root (`path_inside`)."""
        path = path_inside(root, name.lstrip("/"), list_path, number)
        if file_kind(path) is None and len(Path(name).parts) > 2:
            tail = path_inside(root, os.path.join(*Path(name).parts[-2:]), list_path, number)
            if file_kind(tail) is not None:
                return tail
        return path


def _rle_counts(counts: str | list[int]) -> list[int]:
    """Run lengths of a COCO RLE. A string is pycocotools' compressed form: each count in 5-bit groups (+48, bit 6
    = more groups follow, sign-extended), from the fourth count on as the difference to the count two before.
    A malformed string (a count of more than 12 groups, or cut inside one) is a ValueError."""
    if not isinstance(counts, str):
        return list(counts)
    out: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos == len(counts) or shift > 55:  # 12 groups hold any count of a 2**60-pixel image
                raise ValueError("malformed compressed RLE counts")
            c = ord(counts[pos]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(out) > 2:
            value += out[-2]
        out.append(value)
    return out


def decode_rle(segmentation: dict, height: int, width: int) -> np.ndarray:
    """A COCO RLE ({"size": [h, w], "counts": ...}, column-major runs starting with zeros) as a bool (H, W) mask."""
    if "size" not in segmentation or "counts" not in segmentation:
        raise ValueError("an RLE object needs size and counts")
    h, w = segmentation["size"]
    if (h, w) != (height, width):
        raise ValueError(f"RLE size {w}x{h} differs from the image's {width}x{height}")
    flat = np.zeros(h * w, dtype=bool)
    pos = 0
    for i, run in enumerate(_rle_counts(segmentation["counts"])):
        if type(run) is not int or run < 0:
            raise ValueError(f"RLE run {run!r:.20} is not a count of pixels")
        if i % 2:
            flat[pos:pos + run] = True
        pos += run
    if pos != h * w:
        raise ValueError(f"RLE runs cover {pos} pixels, not {h * w}")
    return flat.reshape(w, h).T


def coco_semantic_mask(annotations: Iterable[dict], height: int, width: int, labels: dict[int, int],
                       ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Render COCO instance annotations into one int64 (H, W) label map.

    `labels` maps category ids to labels; other categories are left as background (0). Annotations are drawn
    largest area first, so smaller objects stay visible on top of the ones they overlap; crowd regions are drawn
    with `ignore_index` in the same order. Polygons are filled with PIL (boundary pixels included); polygons of
    fewer than three points are skipped. A segmentation that is neither an RLE object nor a list of polygons (lists
    of finite numbers) is a ValueError.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    kept = [a for a in annotations if a["category_id"] in labels]
    for ann in sorted(kept, key=lambda a: -a.get("area", 0)):  # stable: ties keep the json order
        value = ignore_index if ann.get("iscrowd") else labels[ann["category_id"]]
        segmentation = ann["segmentation"]
        if isinstance(segmentation, dict):
            region = Image.fromarray(decode_rle(segmentation, height, width).astype(np.uint8) * 255)
            canvas.paste(value, (0, 0), region)
        elif isinstance(segmentation, list):
            for polygon in segmentation:
                if not (isinstance(polygon, list) and
                        all(type(v) in (int, float) and math.isfinite(v) for v in polygon)):
                    raise ValueError(f"polygon {polygon!r:.40} is not a list of finite numbers")
                if len(polygon) >= 6:
                    draw.polygon(list(zip(polygon[0::2], polygon[1::2])), fill=value)
        else:
            raise ValueError(f"segmentation {segmentation!r:.40} is neither an RLE object nor a list of polygons")
    return np.asarray(canvas, dtype=np.int64)


class COCOSegmentation(SegmentationDataset):
    """COCO instances json rendered into semantic masks (see coco_semantic_mask).

    `categories="voc"`: the 20 COCO categories that are VOC classes, by name, + background (21 classes; other
    objects are background). `categories="all"`: background + every category of the json in id order (81 for
    COCO). Looks for annotations/instances_{split}.json and the images in images/{split}/ or {split}/; split
    "train"/"val" also tries "train2017"/"val2017". Images without annotations are kept (all background).
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 skip_bad: bool = False, categories: str = "voc") -> None:
        root = Path(root).expanduser()
        coco = read_coco_instances(root, split)
        json_path, names = coco.json_path, dict(coco.categories)
        self.annotations = coco.annotations
        self.images, self.sizes, files, errors = [], [], [], []  # entries with a usable file name and size
        for info in coco.images:
            try:
                image, size = coco.image_path(info), coco.image_size(info)
            except BadSampleError as e:
                errors.append(e)
                continue
            self.images.append(info)
            self.sizes.append(size)
            files.append((image, json_path))
        if categories == "voc":
            class_names = VOC_SEGMENTATION_CLASSES
            self.labels = {cid: class_names.index(COCO_TO_VOC.get(name, name)) for cid, name in names.items()
                           if COCO_TO_VOC.get(name, name) in class_names}
        elif categories == "all":
            class_names = ("background",) + tuple(names[cid] for cid in sorted(names))
            self.labels = {cid: i + 1 for i, cid in enumerate(sorted(names))}
        else:
            raise BetterConvError(f"COCO categories must be 'voc' or 'all', got {categories!r}")
        self.json_path, self.root, self.category_ids = json_path, root, set(names)
        super().__init__(files, class_names, transform, skip_bad, json_path, errors)

    def _keep(self, indices: list[int]) -> None:
        super()._keep(indices)
        self.images = [self.images[i] for i in indices]
        self.sizes = [self.sizes[i] for i in indices]

    def read_label(self, index: int, image_size: tuple[int, int]) -> np.ndarray:
        info = self.images[index]
        width, height = self.sizes[index]
        if image_size != (width, height):
            path = self.files[index][0]
            raise BadSampleError("size_mismatch", path, f"image {path} is {image_size[0]}x{image_size[1]} but "
                                                        f"{self.json_path} says {width}x{height}")
        anns = self.annotations.get(info["id"], [])
        unknown = {a["category_id"] for a in anns} - self.category_ids
        if unknown:
            raise BadSampleError("bad_label", self.json_path,
                                 f"{self.json_path}: annotations of image {info['file_name']} use unknown categories "
                                 f"{sorted(unknown)}")
        try:
            return coco_semantic_mask(anns, height, width, self.labels)
        except (ValueError, KeyError, TypeError, IndexError, OverflowError) as e:
            raise BadSampleError("bad_label", self.json_path,
                                 f"{self.json_path}: bad annotation of image {info['file_name']}: {first_line(e)}") \
                from None


class FolderSegmentation(SegmentationDataset):
    """Images and masks in two folders, matched by file stem: `root/images` + `root/masks`, or
    `root/{split}/images` + `root/{split}/masks`, or `root/images/{split}` + `root/masks/{split}`, or explicit
    `image_dir` / `mask_dir`. Masks are single-channel PNGs of class indices, 255 = ignore (`void_labels` adds
    other ignored values). Class names: `class_names`, else `classes.txt` (one per line) in the mask folder, the
    root or the image folder's parent, else "class_0".. up to the largest label found by scanning the masks.
    An image without a mask is a bad sample (its missing mask file is reported). Without split folders every
    split is the whole folder.
    """

    def __init__(self, root: str | Path | None = None, split: str | None = None,
                 transform: Transform | None = None, skip_bad: bool = False, *,
                 image_dir: str | Path | None = None, mask_dir: str | Path | None = None,
                 class_names: Sequence[str] | None = None, void_labels: Sequence[int] = ()) -> None:
        root = Path(root).expanduser() if root is not None else None
        if image_dir is None or mask_dir is None:
            if root is None:
                raise BetterConvError("folder dataset: give a root or both image_dir and mask_dir")
            layouts = [(root / split / "images", root / split / "masks"),
                       (root / "images" / split, root / "masks" / split)] if split else []
            layouts.append((root / "images", root / "masks"))
            found = next(((i, m) for i, m in layouts if i.is_dir() and m.is_dir()), None)
            if found is None:
                raise BetterConvError("folder dataset: no image and mask folders, looked for " +
                                      ", ".join(f"{i} + {m}" for i, m in layouts))
            image_dir = Path(image_dir) if image_dir is not None else found[0]
            mask_dir = Path(mask_dir) if mask_dir is not None else found[1]
        image_dir, mask_dir = Path(image_dir).expanduser(), Path(mask_dir).expanduser()
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise BetterConvError(f"folder dataset: {folder} is not a folder")
        masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if is_image_file(p)}
        files = [(p, masks.get(p.stem, mask_dir / f"{p.stem}.png")) for p in sorted(image_dir.iterdir())
                 if is_image_file(p)]
        self.void_labels = tuple(void_labels)
        self.image_dir, self.mask_dir = image_dir, mask_dir
        if class_names is None:
            candidates = [mask_dir / "classes.txt"] + ([root / "classes.txt"] if root else []) + \
                         [image_dir.parent / "classes.txt"]
            classes_txt = next((p for p in candidates if p.is_file()), None)
            if classes_txt is not None:
                class_names = read_lines(classes_txt, "class names file", comments=False)
            else:
                class_names = self._scan_classes(files)
        super().__init__(files, class_names, transform, skip_bad, image_dir)

    def _scan_classes(self, files: list[tuple[Path, Path]]) -> list[str]:
        largest = 0
        for _, mask_path in files:
            try:
                values = self.remap(read_label_png(mask_path))
            except BadSampleError:
                continue  # reported when the sample is loaded
            values = values[values != IGNORE_INDEX]
            if values.size:
                largest = max(largest, int(values.max()))
        return [f"class_{i}" for i in range(largest + 1)]


def segmentation_dataset(spec: str, split: str, transform: Transform | None = None, skip_bad: bool = False,
                         **kwargs: Any) -> SegmentationDataset:
    """A dataset from `KIND:PATH`, KIND one of voc, sbd, camvid, coco (VOC's 21 classes), coco-all (background +
    80), folder; e.g. `camvid:/data/CamVid`. Extra keyword arguments go to the dataset class.

    `split` may join list-file splits with "+" ("train+val": CamVid's and VOC's usual final-training set)."""
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS or not path:
        raise BetterConvError(f"dataset must be KIND:PATH with KIND one of {', '.join(KINDS)}, got {spec!r}")
    if "+" in split:
        if kind.startswith("coco"):
            raise BetterConvError(f"{spec}: COCO splits cannot be joined with '+', got {split!r}")
        first, *rest = (segmentation_dataset(spec, part, transform, skip_bad, **kwargs) for part in split.split("+"))
        for part in rest:  # same kind, root and classes: only the (image, label) pairs differ
            first.files += part.files
            first.skipped += part.skipped
        return first
    if kind in ("coco", "coco-all"):
        kwargs.setdefault("categories", "all" if kind == "coco-all" else "voc")
        return COCOSegmentation(path, split, transform, skip_bad, **kwargs)
    cls = {"voc": VOCSegmentation, "sbd": SBDSegmentation, "camvid": CamVid, "folder": FolderSegmentation}[kind]
    return cls(path, split, transform, skip_bad, **kwargs)
