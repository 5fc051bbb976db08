"""The one way betterconv opens an image file, and the one way it expands a user's image argument into files.

Every loader, command and tool goes through `open_image`, so a decoding error, a missing file or a decompression
bomb gives the same one-line `BadSampleError` naming the file, wherever it happens.
"""
from __future__ import annotations

import glob
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import BetterConvError, first_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class BadSampleError(BetterConvError):
    """A sample that cannot be used; `kind` is "missing", "unreadable", "bad_label" or "size_mismatch"."""

    def __init__(self, kind: str, path: Path | str, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.kind, self.path = kind, str(path)


def open_image(path: str | Path, what: str = "image", mode: str | None = None) -> Image.Image:
    """Decode `path` completely (a truncated file fails here, not later) and return it, converted to `mode`
    ("RGB", "L", ...) when given. PIL's decompression-bomb limit applies."""
    return _read(Path(path), what, mode, decode=True)


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels."""
    return _read(Path(path), what, None, decode=False).size


def _read(path: Path, what: str, mode: str | None, decode: bool) -> Image.Image:
    try:
        with Image.open(path) as im:
            if not decode:
                return im
            im.load()  # decode now; the pixels outlive the closed file
        return im.convert(mode) if mode and im.mode != mode else im
    except FileNotFoundError:
        raise BadSampleError("missing", path, f"missing {what} file {path}") from None
    except UnidentifiedImageError:
        raise BadSampleError("unreadable", path, f"cannot read {what} {path}: not an image file PIL knows") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadSampleError("unreadable", path, f"cannot read {what} {path}: {first_line(e)}") from None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_files(spec: str | Path, limit: int | None = None, option: str = "--calib") -> list[Path]:
    """The images that an image argument names: a folder (its image files, sorted), a glob pattern such as
    'images/*.jpg', one image file, or a text file listing image paths one per line (relative to the list's
    folder). At most `limit` of them, in sorted order. `option` names the argument in errors."""
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
    elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        files = [path]
    elif path.is_file():
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
        files = [p if p.is_absolute() else path.parent / p for p in map(Path, filter(None, lines))]
        absent = [str(p) for p in files if not p.is_file()]
        if absent:
            raise BetterConvError(f"{option} {spec}: listed image {absent[0]} does not exist"
                                  + (f" (+{len(absent) - 1} more)" if len(absent) > 1 else ""))
    elif glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
    else:
        raise BetterConvError(f"{option} {spec}: no such folder, image, list file or matching pattern")
    if not files:
        raise BetterConvError(f"{option} {spec}: no images found")
    return files[:limit] if limit else files
