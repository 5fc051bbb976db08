"""The one way betterconv opens an image file, and the one way it expands a user's image argument into files.

Every loader, command and tool goes through `open_image`, so a decoding error, a missing file or a decompression
bomb gives the same one-line `BadSampleError` naming the file, wherever it happens. What it does:
    * decompression bombs: an image above PIL's `Image.MAX_IMAGE_PIXELS` is refused from its header, before any
      pixel is decoded: PIL's DecompressionBombWarning (above the limit) is an error here, like its
      DecompressionBombError (above twice the limit);
    * EXIF orientation is applied (`ImageOps.exif_transpose`) only with `exif=True`: dataset labels (masks, boxes)
      are in the raw pixel order, so the dataset loaders leave it off; photos given to predict on turn it on;
    * conversion to "RGB" or "L" of the modes PIL's plain `convert` gets wrong: 16-bit grayscale ("I;16") is scaled
      to 8 bits (value / 257), not clipped at 255; "I" (32-bit integer) and "F" (float) are read by their range
      (0-1 for "F": times 255; 0-255: as they are; 0-65535: / 257) and refused beyond it; alpha ("LA", "RGBA",
      "P" with transparency, ...) is dropped, as torchvision's and OpenCV's loaders do; CMYK goes through PIL's
      profile-less formula. Each lossy conversion says so in an `ImageWarning` naming the file; a conversion PIL
      cannot do is a BadSampleError.
"""
from __future__ import annotations

import glob
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BetterConvError, first_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class BadSampleError(BetterConvError):
    """A sample that cannot be used; `kind` is "missing", "unreadable", "bad_label" or "size_mismatch"."""

    def __init__(self, kind: str, path: Path | str, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.kind, self.path = kind, str(path)


class ImageWarning(UserWarning):
    """An image converted with a loss (bit depth, alpha, colour profile); the message names the file."""


# PIL reports a decompression bomb between its limit and twice it with a warning: the warnings filter that turns it
# into an error is process-wide, so the threads that open images take turns around Image.open (a header read).
_BOMB_CHECK = threading.Lock()
# what a corrupt file can make PIL's decoders and EXIF reader raise
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct.error,
                  Image.DecompressionBombError, Image.DecompressionBombWarning)
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")


def open_image(path: str | Path, what: str = "image", mode: str | None = None, *, exif: bool = False) -> Image.Image:
    """Decode `path` completely (a truncated file fails here, not later) and return it, converted to `mode`
    ("RGB", "L", ...) when given (see the module for the conversions and their ImageWarning). With `exif`, the
    EXIF orientation is applied (off by default: dataset labels are in the raw pixel order). Images above PIL's
    decompression-bomb limit are refused before decoding. Any failure is a one-line BadSampleError naming the
    file; `what` names its role ("image", "label")."""
    path = Path(path)
    image = _read(path, what, decode=True, exif=exif)
    return _convert(image, mode, path, what) if mode and image.mode != mode else image


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels (the decompression-bomb limit
    applies here too)."""
    return _read(Path(path), what, decode=False).size


def _read(path: Path, what: str, decode: bool, exif: bool = False) -> Image.Image:
    try:
        with _BOMB_CHECK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            limit, pixels = Image.MAX_IMAGE_PIXELS, max(1, im.width) * max(1, im.height)
            if limit and pixels > limit:  # PIL's own check, for the formats that change size after opening
                raise Image.DecompressionBombError(f"{im.width}x{im.height} = {pixels} pixels is above the "
                                                   f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")
            if not decode:
                return im
            im.load()  # decode now; the pixels outlive the closed file
        return ImageOps.exif_transpose(im) if exif else im
    except FileNotFoundError:
        raise BadSampleError("missing", path, f"missing {what} file {path}") from None
    except UnidentifiedImageError:
        raise BadSampleError("unreadable", path, f"cannot read {what} {path}: not an image file PIL knows") from None
    except _DECODE_ERRORS as e:
        raise BadSampleError("unreadable", path, f"cannot read {what} {path}: {first_line(e)}") from None


def _convert(image: Image.Image, mode: str, path: Path, what: str) -> Image.Image:
    """`image` in `mode`; to "RGB" or "L": 16-bit, integer and float images scaled to 8 bits, alpha dropped, with
    an ImageWarning naming the file for each loss. A conversion PIL cannot do is a BadSampleError."""
    source = image.mode
    try:
        if mode in ("RGB", "L"):
            if source in _HIGH_DEPTH:
                image = _eight_bits(image, path, what)
            elif source in _ALPHA or (source == "P" and "transparency" in image.info):
                image = image.convert("LA" if source == "La" else "RGBA" if source in ("P", "PA", "RGBa") else source)
                if image.getchannel("A").getextrema()[0] < 255:
                    warnings.warn(f"{what} {path} has transparent pixels: its alpha channel is dropped (the colour "
                                  "stored under them is kept)", ImageWarning, stacklevel=3)
            elif source == "CMYK":
                warnings.warn(f"{what} {path} is a CMYK image: converted to RGB without its colour profile",
                              ImageWarning, stacklevel=3)
        return image if image.mode == mode else image.convert(mode)
    except ValueError as e:
        raise BadSampleError("unreadable", path, f"cannot convert {what} {path} from {source} to {mode}: "
                                                 f"{first_line(e)}") from None


def _eight_bits(image: Image.Image, path: Path, what: str) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image as 8-bit "L" (see the module for the scaling)."""
    values = np.asarray(image)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise BadSampleError("unreadable", path, f"cannot convert {what} {path}: its {image.mode} values include "
                                                 "NaN or infinity")
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if image.mode.startswith("I;16"):
        scale, meaning = 255 / 65535, "16-bit values scaled to 8 bits"
    elif low < 0 or high > 65535:
        raise BadSampleError("unreadable", path, f"cannot convert {what} {path}: its {image.mode} values "
                                                 f"{low:g}..{high:g} are outside 0-65535, no 8-bit reading of them")
    elif values.dtype.kind == "f" and high <= 1:
        scale, meaning = 255, "values 0-1 scaled to 0-255"
    elif high <= 255:
        scale, meaning = 1, "values 0-255 kept"
    else:
        scale, meaning = 255 / 65535, "values 0-65535 scaled to 8 bits"
    warnings.warn(f"{what} {path} is a {image.mode} image: {meaning}", ImageWarning, stacklevel=4)
    eight = np.clip(np.rint(values.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(eight)  # uint8 (H, W): mode "L"


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
