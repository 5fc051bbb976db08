"""Image-classification datasets: class folders (ImageNet layout) and IDX files (MNIST, Fashion-MNIST), with the
usual train / eval transforms.

Datasets used:
    ImageNet-style folders: `PATH/{split}/{class}/*.jpg`, or `PATH/{class}/*.jpg` split here 80/20 per class.
    Fashion-MNIST (Xiao et al., 2017): 60,000 train + 10,000 test 28x28 grayscale images of 10 clothing classes,
        in the IDX format of MNIST (LeCun et al., 1998). Debian's `dataset-fashion-mnist` package installs the four
        gzipped files in /usr/share/datasets/fashion-mnist.

Conventions (those of `betterconv.data.segmentation`):
    * a sample is `(image, label)`: `image` is a `tv_tensors.Image` uint8 (3, H, W) RGB, grayscale replicated to
      three channels so that every backbone takes it, passed through the optional `transform`; `label` an int in
      0..len(class_names)-1;
    * bad samples (missing or unreadable image file) raise BadSampleError (a BetterConvError naming the file) when
      loaded; `skip_bad=True` loads every sample at construction, drops the bad ones and lists them in `skipped`
      as (path, message) pairs. A bad IDX file (wrong magic number, truncated, counts that disagree) is an error
      at construction, naming the file: it has no per-sample files to skip.
"""
from __future__ import annotations

import gzip
import random
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor

from ..files import write_atomic
from ..errors import BetterConvError, first_line
from ..models.info import IMAGENET_MEAN, IMAGENET_STD
from .dataset import BaseDataset, read_lines
from .images import is_image_file, open_image

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
KINDS = ("folder", "fashion-mnist", "idx")
SPLIT_FOLDERS = ("train", "val", "test")
HELD_OUT = ("test", "val")  # the names of the held-out part of a derived split
# inputs up to this size are "small images" (CIFAR, MNIST): padded crops in training, no centre crop in evaluation
SMALL_INPUT = 64

Transform = Callable[[tv_tensors.Image], Any]


class ClassificationDataset(BaseDataset):
    """Base class: `load(index)` gives the untransformed `(image, label)`; `transform` takes the image alone;
    `labels` lists every sample's label."""

    joint_transform = False

    @property
    def labels(self) -> list[int]:
        raise NotImplementedError


class FolderClassification(ClassificationDataset):
    """One folder per class, named by the class; the classes are sorted by name (a `classes.txt` in the root, one
    name per line, sets them and their order instead).

    Layouts: `root/{split}/{class}/*` (ImageNet: train/ and val/), or `root/{class}/*` with no split folders, in
    which case the split is derived: "train" takes a seeded `1 - holdout` of each class's files, "test" (or "val")
    the rest, "all" everything. The draw depends only on (seed, class name, file names), so it is the same on
    every machine and the two parts never overlap.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 skip_bad: bool = False, *, holdout: float = 0.2, seed: int = 0,
                 class_names: Sequence[str] | None = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise BetterConvError(f"folder dataset: {root} is not a folder")
        if not 0 < holdout < 1:
            raise BetterConvError(f"folder dataset: holdout must be between 0 and 1, got {holdout}")
        split_dirs = [root / s for s in SPLIT_FOLDERS if _has_subfolders(root / s)]
        if class_names is None and (root / "classes.txt").is_file():
            class_names = read_lines(root / "classes.txt", "class names file", comments=False)
        if split_dirs:
            if not (root / split).is_dir():
                raise BetterConvError(f"folder dataset: no split folder {root / split}; found "
                                      + ", ".join(d.name for d in split_dirs))
            found = sorted({d.name for s in split_dirs for d in s.iterdir() if d.is_dir()})
            names = list(class_names) if class_names is not None else found
            self.derived = False
            files = {c: _image_files(root / split / c) for c in names}
        else:
            found = sorted(d.name for d in root.iterdir() if d.is_dir())
            if not found:
                raise BetterConvError(f"folder dataset: {root} has no class folders (nor train/val/test folders)")
            names = list(class_names) if class_names is not None else found
            if split not in ("train", "all", *HELD_OUT):
                raise BetterConvError(f"folder dataset: {root} has no split folders, so the split must be train, "
                                      f"test (or val) or all, got {split!r}")
            self.derived = True
            files = {c: _derived_split(_image_files(root / c), c, split, holdout, seed) for c in names}
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise BetterConvError(f"folder dataset: class folders {', '.join(unknown[:5])} of {root} are not in "
                                  "its classes.txt")
        self.samples = [(path, label) for label, c in enumerate(names) for path in files[c]]
        if not self.samples:
            raise BetterConvError(f"folder dataset: no images in the {split} split of {root}")
        self.root, self.split = root, split
        super().__init__(names, transform, skip_bad, root)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def load(self, index: int) -> tuple[tv_tensors.Image, int]:
        path, label = self.samples[index]
        image = open_image(path, "image", "RGB")  # grayscale replicated, palette and alpha dropped
        return tv_tensors.Image(pil_to_tensor(image)), label

    def _keep(self, indices: list[int]) -> None:
        self.samples = [self.samples[i] for i in indices]


def _has_subfolders(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() for p in path.iterdir())


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _derived_split(files: list[Path], class_name: str, split: str, holdout: float, seed: int) -> list[Path]:
    if split == "all":
        return files
    order = list(files)
    random.Random(f"{seed}:{class_name}").shuffle(order)  # a string seed is hashed the same on every platform
    n_held = round(len(order) * holdout)
    part = order[:n_held] if split in HELD_OUT else order[n_held:]
    return sorted(part)


# --- IDX -----------------------------------------------------------------------------------------------------
_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST's format, gzipped or not): two zero bytes, a type byte (0x08 = uint8), the number of
    dimensions, each dimension as a big-endian uint32, then the values in row-major order, big-endian."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise BetterConvError(f"{path}: no such file") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise BetterConvError(f"{path}: cannot read it ({first_line(e)})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise BetterConvError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    ndim, dtype = raw[3], _IDX_TYPES[raw[2]]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BetterConvError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise BetterConvError(f"{path}: IDX data is {len(raw) - header} bytes, its header {dims} says {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file (gzipped when the name ends in .gz); the inverse of `read_idx`."""
    array = np.asarray(array)
    code = next((c for c, t in _IDX_TYPES.items() if t.kind == array.dtype.kind and t.itemsize == array.dtype.itemsize),
                None)
    if code is None or array.ndim == 0:
        raise BetterConvError(f"IDX cannot hold a {array.ndim}-d {array.dtype} array")
    data = (struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(_IDX_TYPES[code]).tobytes())
    write_atomic(Path(path), gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def _idx_file(root: Path, prefix: str, kind: str) -> Path:
    names = [f"{prefix}-{kind}", f"{prefix}-{kind}.gz", f"{prefix}-{kind.replace('-idx', '.idx')}",
             f"{prefix}-{kind.replace('-idx', '.idx')}.gz"]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise BetterConvError(f"IDX dataset: no {prefix} {kind.split('-')[0]} file in {root} (looked for "
                          f"{', '.join(names[:2])})")


class IDXClassification(ClassificationDataset):
    """MNIST-format files in `root`: `{train,t10k}-images-idx3-ubyte` and `-labels-idx1-ubyte`, optionally gzipped.
    Split "train" reads train-*, "test" (or "val", "t10k") t10k-*. The images stay in memory as uint8.
    Class names: `class_names`, else "0".."9" style numbers up to the largest label."""

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 skip_bad: bool = False, *, class_names: Sequence[str] | None = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise BetterConvError(f"IDX dataset: {root} is not a folder")
        prefix = {"train": "train", "test": "t10k", "val": "t10k", "t10k": "t10k"}.get(split)
        if prefix is None:
            raise BetterConvError(f"IDX dataset: split must be train or test, got {split!r}")
        image_path, label_path = _idx_file(root, prefix, "images-idx3-ubyte"), _idx_file(root, prefix,
                                                                                        "labels-idx1-ubyte")
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise BetterConvError(f"{image_path}: expected uint8 images (N, H, W), got {images.dtype} "
                                  f"{images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise BetterConvError(f"{label_path}: expected integer labels (N,), got {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise BetterConvError(f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels")
        if len(images) == 0:
            raise BetterConvError(f"{image_path}: no images")
        if class_names is None:
            class_names = [str(i) for i in range(int(labels.max()) + 1)]
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise BetterConvError(f"{label_path}: labels {int(labels.min())}..{int(labels.max())} are outside the "
                                  f"{len(class_names)} classes")
        self.images, self._labels = images, labels.astype(np.int64)
        self.root, self.split, self.files = root, split, (image_path, label_path)
        super().__init__(class_names, transform, skip_bad, image_path)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()

    def load(self, index: int) -> tuple[tv_tensors.Image, int]:
        gray = torch.from_numpy(self.images[index].copy())
        return tv_tensors.Image(gray.unsqueeze(0).expand(3, -1, -1).contiguous()), int(self._labels[index])

    def validate(self, drop: bool = False, workers: int | None = None) -> Counter:
        """Every sample is good: the files were checked whole when the dataset was built."""
        self.problems = []
        return Counter(ok=len(self))


def classification_dataset(spec: str, split: str, transform: Transform | None = None, skip_bad: bool = False,
                           **kwargs: Any) -> ClassificationDataset:
    """A dataset from `KIND:PATH`: `folder:PATH` (class folders, see FolderClassification), `fashion-mnist:PATH`
    (IDX files with Fashion-MNIST's class names; PATH may be empty for Debian's /usr/share/datasets/fashion-mnist)
    or `idx:PATH` (IDX files, numbered classes). Extra keyword arguments go to the dataset class."""
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "fashion-mnist" and sep and not path:
        path = str(FASHION_MNIST_DIR)
    if not sep or kind not in KINDS or not path:
        raise BetterConvError(f"dataset must be KIND:PATH with KIND one of {', '.join(KINDS)}, got {spec!r}")
    if kind == "folder":
        return FolderClassification(path, split, transform, skip_bad, **kwargs)
    if kind == "fashion-mnist":
        kwargs.setdefault("class_names", FASHION_MNIST_CLASSES)
    return IDXClassification(path, split, transform, skip_bad, **kwargs)


def held_out_split(spec: str) -> str:
    """The evaluation split of a dataset: "val" where a folder dataset has a val/ folder, else "test"."""
    kind, _, path = spec.partition(":")
    if kind.strip().lower() == "folder" and _has_subfolders(Path(path).expanduser() / "val"):
        return "val"
    return "test"


# --- transforms ----------------------------------------------------------------------------------------------
def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def train_transform(input_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    hflip: float = 0.5) -> v2.Compose:
    """Training augmentation on uint8 (3, H, W) images, giving float32 (3, input_size, input_size) normalised.

    Inputs above SMALL_INPUT: Inception's random-resized crop (8-100% of the area, aspect 3/4-4/3) and flip.
    Small inputs (CIFAR, MNIST): resize to the input size, pad by 1/8 of it (4 pixels at 32) with the mean colour
    and take a random crop, then flip."""
    if input_size <= 0:
        raise BetterConvError(f"input size must be positive, got {input_size}")
    if input_size <= SMALL_INPUT:
        fill = [round(m * 255) for m in mean]
        steps: list[v2.Transform] = [v2.Resize((input_size, input_size), antialias=True),
                                     v2.RandomCrop(input_size, padding=max(1, input_size // 8), fill=fill)]
    else:
        steps = [v2.RandomResizedCrop(input_size, scale=(0.08, 1.0), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    return v2.Compose(steps + _normalize(mean, std))


def eval_transform(input_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   crop_ratio: float | None = None) -> v2.Compose:
    """Resize the short side to input_size / crop_ratio, centre-crop input_size, normalise. `crop_ratio` defaults
    to 0.875 (224 of 256, the ImageNet convention) above SMALL_INPUT and 1 (the whole image) at or below it."""
    if input_size <= 0:
        raise BetterConvError(f"input size must be positive, got {input_size}")
    if crop_ratio is None:
        crop_ratio = 1.0 if input_size <= SMALL_INPUT else 0.875
    if not 0 < crop_ratio <= 1:
        raise BetterConvError(f"crop ratio must be in (0, 1], got {crop_ratio}")
    if crop_ratio == 1.0:
        steps: list[v2.Transform] = [v2.Resize((input_size, input_size), antialias=True)]
    else:
        steps = [v2.Resize(round(input_size / crop_ratio), antialias=True), v2.CenterCrop(input_size)]
    return v2.Compose(steps + _normalize(mean, std))
