"""What every betterconv dataset shares: class names, the optional transform, and the bad-sample bookkeeping.

The segmentation, detection and classification datasets subclass `BaseDataset`. A subclass lists its samples,
then calls `BaseDataset.__init__`, which
    * raises the first of the bad samples found while listing (e.g. a malformed annotation), or with
      `skip_bad=True` records them all in `skipped` as (path, message) pairs;
    * refuses an empty dataset, naming where the samples were looked for;
    * runs the subclass's `_prepare()` (checks and fixes that need the whole list);
    * with `skip_bad=True`, runs `validate(drop=True)`: loads every sample, drops the ones that raise
      BadSampleError and records them in `skipped` too.
A sample that goes bad afterwards (a file deleted later) still raises BadSampleError, naming the file, when loaded.

Also here: the small file helpers the dataset modules share (`first_existing`, `read_text`, `read_lines`,
`read_coco_instances` for the COCO json of Lin et al., ECCV 2014) and `check_samples`, which loads samples in
threads and counts the outcomes.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import BetterConvError, first_line
from .images import BadSampleError


def check_samples(load: Callable[[int], Any], count: int, workers: int | None = None
                  ) -> tuple[Counter, list[BadSampleError | None]]:
    """Load samples 0..count-1 (in threads: PIL decodes with the GIL released) and count the outcomes: "ok" and one
    key per BadSampleError kind. Returns the counts and, per sample, its error or None."""
    def check(index: int) -> BadSampleError | None:
        try:
            load(index)
        except BadSampleError as e:
            return e
        return None

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        errors = list(pool.map(check, range(count)))
    counts = Counter(ok=sum(e is None for e in errors))
    counts.update(e.kind for e in errors if e is not None)
    return counts, errors


def first_existing(candidates: Iterable[Path], what: str) -> Path:
    """The first of `candidates` that exists; else a BetterConvError listing them all."""
    candidates = list(candidates)
    for path in candidates:
        if path.exists():
            return path
    raise BetterConvError(f"no {what}: looked for " + ", ".join(str(p) for p in candidates))


def read_text(path: Path, what: str) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped); BadSampleError "missing" or "unreadable" naming the
    file and `what` it is ("label file", "image list", ...) when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadSampleError("missing", path, f"missing {what} {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadSampleError("unreadable", path, f"cannot read {what} {path}: {first_line(e)}") from None


def read_lines(path: Path, what: str, comments: bool = True) -> list[str]:
    """The non-empty lines of a list file, stripped; with `comments`, lines starting with "#" are left out."""
    lines = (line.strip() for line in read_text(path, what).splitlines())
    return [line for line in lines if line and not (comments and line.startswith("#"))]


@dataclass
class COCOInstances:
    """A COCO instances json, read: where it and its images are, and its contents grouped for lookup."""

    json_path: Path
    image_dir: Path
    categories: list[tuple[int, str]]  # (id, name) in the json's order
    images: list[dict]  # the json's image entries, in its order
    annotations: dict[Any, list[dict]]  # image id -> its annotations, in the json's order


def read_coco_instances(root: Path, split: str, json_path: str | Path | None = None,
                        image_dir: str | Path | None = None) -> COCOInstances:
    """Read annotations/instances_{split}.json (or `json_path`) under `root`; the images are in images/{split}/,
    {split}/ or images/ (or `image_dir`). Split "train"/"val" also tries "train2017", "train2014", ... A file that
    is not a COCO instances json is a one-line BetterConvError naming it."""
    splits = [split] + ([f"{split}2017", f"{split}2014"] if split in ("train", "val") else [])
    if json_path is None:
        json_path = first_existing([root / "annotations" / f"instances_{s}.json" for s in splits],
                                   f"COCO {split} annotations")
    json_path = Path(json_path)
    split = json_path.stem.removeprefix("instances_")
    if image_dir is None:
        image_dir = first_existing([root / "images" / split, root / split, root / "images"], f"COCO {split} images")
    try:
        data = json.loads(json_path.read_text())
        categories = [(int(c["id"]), str(c["name"])) for c in data["categories"]]
        images = list(data["images"])
        annotations: dict[Any, list[dict]] = {}
        for ann in data.get("annotations", []):
            annotations.setdefault(ann["image_id"], []).append(ann)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BetterConvError(f"cannot read COCO annotations {json_path}: {first_line(e)}") from None
    return COCOInstances(json_path, Path(image_dir), categories, images, annotations)


class BaseDataset(Dataset):
    """Class names, the optional transform and the bad-sample bookkeeping (see the module).

    A subclass defines `__len__`, `load(index)` (the untransformed `(image, target)`, raising BadSampleError for an
    unusable sample) and `_keep(indices)` (keep only those samples, in that order), and sets its sample list
    before calling `__init__`. `transform` takes `(image, target)` and returns both, or takes the image alone
    when the class sets `joint_transform = False`.
    """

    joint_transform = True

    def __init__(self, class_names: Sequence[str], transform: Callable[..., Any] | None = None,
                 skip_bad: bool = False, source: str | Path = "", errors: Sequence[BadSampleError] = ()) -> None:
        self.class_names = tuple(class_names)
        self.transform = transform
        self.source = str(source)  # where the samples were listed from, for messages
        self.skipped: list[tuple[str, str]] = []  # (path, message) of the samples dropped by skip_bad
        self.problems: list[tuple[str, str]] = []  # those found by the last validate()
        if errors:
            if not skip_bad:
                raise errors[0]
            self.skipped.extend((e.path, str(e)) for e in errors)
        if not len(self):
            detail = f", the first bad one: {self.skipped[0][1]}" if self.skipped else ""
            raise BetterConvError(f"{type(self).__name__}: no samples in {self.source or 'the given files'}{detail}")
        self._prepare()
        if skip_bad:
            self.validate(drop=True)

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, index: int) -> tuple[Any, Any]:
        """The untransformed sample; raises BadSampleError naming the file when it is unusable."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.load(index)
        if self.transform is not None:
            if self.joint_transform:
                image, target = self.transform(image, target)
            else:
                image = self.transform(image)
        return image, target

    def validate(self, drop: bool = False, workers: int | None = None) -> Counter:
        """Load every sample and count the outcomes: "ok" and one key per BadSampleError kind. The bad samples
        are listed in `problems` as (path, message); with `drop` they are removed and added to `skipped`."""
        counts, errors = check_samples(self.load, len(self), workers)
        self.problems = [(e.path, str(e)) for e in errors if e is not None]
        if drop:
            self.skipped.extend(self.problems)
            self._keep([i for i, e in enumerate(errors) if e is None])
            if not len(self):
                raise BetterConvError(f"{type(self).__name__}: all {len(errors)} samples are bad, the first: "
                                      f"{self.problems[0][1]}")
        return counts

    def _prepare(self) -> None:
        """Checks and fixes over the listed samples, run once before skip_bad's validation."""

    def _keep(self, indices: list[int]) -> None:
        raise NotImplementedError

    def _describe(self) -> str:
        return f"{len(self)} samples"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self._describe()}, {self.num_classes} classes"
                + (f", {len(self.skipped)} skipped" if self.skipped else "") + ")")
