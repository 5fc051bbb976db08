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
`numbered_lines`, `read_coco_instances` for the COCO json of Lin et al., ECCV 2014), `path_inside`, and
`check_samples`, which loads samples in threads and counts the outcomes.

Paths read from a dataset's own files (list files, COCO `file_name`s, a data yaml's `path`/`train`/`val`, YOLO
image lists) go through `path_inside`: joined to the dataset root and normalised lexically (`os.path.normpath`, no
symlink resolution), they must stay inside the root, else the dataset is refused with one line naming the file and
line (or entry). A symlink the user placed inside the root is followed like any folder; `..` after it is resolved
against the link's name, not its target, and the path is opened in that normalised form, so what is checked is
what is opened. No file outside the root is touched, not even to test whether it exists.
"""
from __future__ import annotations

import json
import math
import os
import stat
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


def file_kind(path: Path) -> str | None:
    """"dir", "file" or "other" for what is at `path` (symlinks followed); None when nothing is there or the file
    system refuses the name (too long, a NUL character): paths read from dataset files can be anything, and
    Path.exists() raises on some of them."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def read_text(path: Path, what: str) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped); BadSampleError "missing" or "unreadable" naming the
    file and `what` it is ("label file", "image list", ...) when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadSampleError("missing", path, f"missing {what} {path}") from None
    except (OSError, ValueError) as e:  # ValueError: undecodable bytes, a NUL in the path
        raise BadSampleError("unreadable", path, f"cannot read {what} {path}: {first_line(e)}") from None


def numbered_lines(path: Path, what: str, comments: bool = True) -> list[tuple[int, str]]:
    """The non-empty lines of a list file, stripped, with their 1-based line numbers (for messages); with
    `comments`, lines starting with "#" are left out."""
    lines = ((number, line.strip()) for number, line in enumerate(read_text(path, what).splitlines(), 1))
    return [(number, line) for number, line in lines if line and not (comments and line.startswith("#"))]


def read_lines(path: Path, what: str, comments: bool = True) -> list[str]:
    """The non-empty lines of a list file, stripped; with `comments`, lines starting with "#" are left out."""
    return [line for _, line in numbered_lines(path, what, comments)]


def path_inside(root: str | Path, relative: str | Path, source: str | Path, where: int | str | None = None, *,
                base: str | Path | None = None, what: str = "path") -> Path:
    """`relative`, a path read from the dataset file `source`, joined to `base` (default: `root`) and normalised
    lexically with os.path.normpath; a BadSampleError ("bad_label", one line naming `source` and `where`: a line
    number or an entry such as "image 9") when it leaves `root`, is empty or holds a NUL character.

    Lexical on purpose: symlinks are not resolved, so a symlink the user placed inside the root is followed, while
    `..` cannot climb out of it; the normalised path is returned, so the file opened is the one checked. An
    absolute path is accepted when it lies inside the root. Nothing is read from the file system."""
    text = os.fspath(relative)
    location = f"{source}:{where}" if isinstance(where, int) else f"{source}: {where}" if where else str(source)
    if not text or "\0" in text:
        raise BadSampleError("bad_label", source, f"{location}: {what} {text!r} is empty or holds a NUL character")
    joined = os.path.normpath(os.path.join(os.fspath(base if base is not None else root), text))
    inside, candidate = os.path.abspath(root), os.path.abspath(joined)
    if candidate != inside and not candidate.startswith(inside.rstrip(os.sep) + os.sep):
        raise BadSampleError("bad_label", source, f"{location}: {what} {text!r} is outside the dataset root {root}")
    return Path(joined)


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _brief(value: Any, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters: values from a file, quoted in a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _positive_int(value: Any) -> int | None:
    """A JSON number that is an image side, a positive integer below 2**31 (640 or 640.0), as an int; None for
    anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 < value < 2**31 else None


@dataclass
class COCOInstances:
    """A COCO instances json, read and checked (see `read_coco_instances`): where it and its images are, and its
    contents grouped for lookup. `image_path` and `image_size` check the per-image fields and raise a one-line
    BadSampleError ("bad_label") naming the json and the image, so a dataset can skip that image."""

    json_path: Path
    image_dir: Path
    categories: list[tuple[int, str]]  # (id, name) in the json's order
    images: list[dict]  # the json's image entries, in its order: objects with a unique int or str "id"
    annotations: dict[int | str, list[dict]]  # image id -> its annotations (objects), in the json's order

    def image_path(self, info: dict) -> Path:
        """The image file of an entry: its `file_name`, inside `image_dir` (see `path_inside`)."""
        name = info.get("file_name")
        if not isinstance(name, str):
            raise BadSampleError("bad_label", self.json_path, f"{self.json_path}: image {_brief(info['id'])} has no "
                                                              f"file_name string (got {_brief(name)})")
        return path_inside(self.image_dir, name, self.json_path, f"image {_brief(info['id'])}", what="file_name")

    def image_size(self, info: dict) -> tuple[int, int]:
        """(width, height) an entry declares: positive integers."""
        width, height = _positive_int(info.get("width")), _positive_int(info.get("height"))
        if width is None or height is None:
            raise BadSampleError("bad_label", self.json_path,
                                 f"{self.json_path}: image {_brief(info['id'])} lacks a positive integer width and "
                                 f"height (got {_brief(info.get('width'))}, {_brief(info.get('height'))})")
        return width, height


def read_coco_instances(root: Path, split: str, json_path: str | Path | None = None,
                        image_dir: str | Path | None = None) -> COCOInstances:
    """Read annotations/instances_{split}.json (or `json_path`) under `root`; the images are in images/{split}/,
    {split}/ or images/ (or `image_dir`). Split "train"/"val" also tries "train2017", "train2014", ...

    A file that is not a COCO instances json is a one-line BetterConvError naming it and the first problem: not
    JSON (or nested too deeply); not an object with arrays `images` and `categories` (and `annotations`); a
    category that is not an object with an integer id and a name, or a repeated category id; an image entry that
    is not an object with an integer or string id, or a repeated image id (its annotations would be ambiguous); an
    annotation that is not an object, whose image_id no image has, or whose category_id is not an integer. What
    concerns one image only (its file_name, width, height, an unknown category, a bad box) is left to the dataset,
    which reports it for that image."""
    splits = [split] + ([f"{split}2017", f"{split}2014"] if split in ("train", "val") else [])
    if json_path is None:
        json_path = first_existing([root / "annotations" / f"instances_{s}.json" for s in splits],
                                   f"COCO {split} annotations")
    json_path = Path(json_path)
    split = json_path.stem.removeprefix("instances_")
    if image_dir is None:
        image_dir = first_existing([root / "images" / split, root / split, root / "images"], f"COCO {split} images")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise BetterConvError(f"cannot read COCO annotations {json_path}: {first_line(e)}") from None
    except RecursionError:
        raise BetterConvError(f"cannot read COCO annotations {json_path}: nested too deeply") from None

    def refuse(message: str) -> BetterConvError:
        return BetterConvError(f"{json_path}: {message}")

    if not isinstance(data, dict):
        raise refuse(f"expected a COCO instances object (images, categories, annotations), got {_json_type(data)}")
    for key, default in (("images", None), ("categories", None), ("annotations", [])):
        if not isinstance(data.get(key, default), list):
            raise refuse(f"{key} must be an array, got {_json_type(data.get(key))}")
    categories: list[tuple[int, str]] = []
    for i, c in enumerate(data["categories"]):
        if not (isinstance(c, dict) and type(c.get("id")) is int and isinstance(c.get("name"), (str, int))):
            raise refuse(f"categories[{i}] is not an object with an integer id and a name: {_brief(c)}")
        categories.append((c["id"], str(c["name"])))
    seen = [cid for cid, _ in categories]
    if len(set(seen)) != len(seen):
        repeated = next(cid for cid in seen if seen.count(cid) > 1)
        raise refuse(f"category id {repeated} appears twice")
    images: list[dict] = data["images"]
    first_index: dict[int | str, int] = {}
    for i, info in enumerate(images):
        if not isinstance(info, dict):
            raise refuse(f"images[{i}] is {_json_type(info)}, not an object: {_brief(info)}")
        image_id = info.get("id")
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            raise refuse(f"images[{i}] has no integer or string id (got {_brief(image_id)})")
        if image_id in first_index:
            raise refuse(f"image id {_brief(image_id)} appears twice (images[{first_index[image_id]}] and "
                         f"images[{i}]): its annotations would be given to both")
        first_index[image_id] = i
    annotations: dict[int | str, list[dict]] = {}
    for i, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            raise refuse(f"annotations[{i}] is {_json_type(ann)}, not an object: {_brief(ann)}")
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or image_id not in first_index:
            raise refuse(f"annotations[{i}] (id {_brief(ann.get('id'))}) refers to image id {_brief(image_id)}, "
                         "which no image entry has")
        if type(category_id) is not int:
            raise refuse(f"annotations[{i}] (id {_brief(ann.get('id'))}) has category_id {_brief(category_id)}, "
                         "not an integer")
        annotations.setdefault(image_id, []).append(ann)
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
