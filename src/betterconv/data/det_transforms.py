"""Joint image/box transforms for detection, on torchvision.transforms.v2.

A sample is `(image, target)` as `betterconv.data.detection` gives it: a `tv_tensors.Image` and a dict whose
`boxes` are `tv_tensors.BoundingBoxes`, so every geometric step moves the boxes with the pixels; `labels` and
`difficult` are dropped together with boxes that leave the image (SanitizeBoundingBoxes). The output image is
float32 in [0, 1]: darknet feeds x / 255 with no mean/std normalisation.

YOLOv2's training augmentation (darknet's `load_data_detection` of the YOLOv2 era, cfg `jitter`, `hue`,
`saturation`, `exposure`; yolov2-voc.cfg has jitter=.3, hue=.1, saturation=exposure=1.5):
    * jitter: each side of the image moves in or out by up to `jitter` of the width (left, right) or height
      (top, bottom), independently; the resulting window is cropped (outside the image: gray 127) and resized
      to the square network input. This gives random translation, aspect change and scale (each axis by
      1 - 2 * jitter .. 1 + 2 * jitter) in one step. `scale` adds an optional isotropic zoom of the window
      (not in darknet's YOLOv2; None by default);
    * horizontal flip with probability 1/2;
    * HSV distortion (darknet's `random_distort_image`): hue + U(-hue, hue) (fraction of the colour circle),
      saturation and value (exposure) each times U(1, s) or its inverse, with equal chance, then clipped to [0, 1].
Evaluation resizes to the square input (YOLOv2, `eval_transform`) or letterboxes (aspect kept, gray padding,
`letterbox`); `unletterbox_boxes` / `unresize_boxes` map predicted boxes back to the original image.

Multi-scale training: `DetectionTransform.size` can be changed between batches (every step that resizes reads
it), or use `betterconv.data.detection.MultiScaleBatchSampler`, which carries the size with each index so that
DataLoader worker processes see it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import BetterConvError

GRAY = 127  # the gray of darknet's letterbox padding (0.5) in uint8; also used for the jitter crop outside the image


def _pair(size: int | Sequence[int], what: str = "size", multiple: int = 1) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise BetterConvError(f"{what} must be a positive int or (height, width), got {size!r}")
    if any(s % multiple for s in pair):
        raise BetterConvError(f"{what} must be a multiple of {multiple}, got {size!r}")
    return pair


def _image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, tv_tensors.Image):
            height, width = F.get_size(inpt)
            return height, width
    for inpt in flat_inputs:
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return tuple(inpt.canvas_size)
    raise TypeError("no image among the transform's inputs")


def _fill(inpt: Any, fill: int) -> Any:
    if isinstance(inpt, torch.Tensor) and inpt.is_floating_point():
        return fill / 255
    return fill


def letterbox_params(original_size: tuple[int, int], size: int | Sequence[int]) -> tuple[int, int, int, int]:
    """(new_height, new_width, top, left) of an image of `original_size` (h, w) letterboxed into `size`: scaled
    to fit with its aspect ratio kept (the fitting side exactly, the other rounded down, as darknet's
    letterbox_image), then centred (padding split with the extra pixel at the bottom / right)."""
    (h, w), (out_h, out_w) = original_size, _pair(size)
    if out_w * h <= out_h * w:  # width limits
        new_w, new_h = out_w, max(1, h * out_w // w)
    else:
        new_h, new_w = out_h, max(1, w * out_h // h)
    return new_h, new_w, (out_h - new_h) // 2, (out_w - new_w) // 2


class Letterbox(v2.Transform):
    """Resize keeping the aspect ratio to fit `size` (h, w), pad the rest with gray; boxes follow."""

    def __init__(self, size: int | Sequence[int], fill: int = GRAY) -> None:
        super().__init__()
        self.size, self.fill = _pair(size), fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        new_h, new_w, top, left = letterbox_params((h, w), self.size)
        return {"resize": [new_h, new_w],
                "padding": [left, top, self.size[1] - new_w - left, self.size[0] - new_h - top]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.BoundingBoxes)):
            return inpt
        out = self._call_kernel(F.resize, inpt, params["resize"], antialias=True)
        if any(params["padding"]):
            out = self._call_kernel(F.pad, out, params["padding"], fill=_fill(inpt, self.fill))
        return out


class Resize(v2.Transform):
    """Resize to exactly `size` (h, w), aspect ratio not kept (YOLOv2's input); boxes follow. `size` may be
    changed between calls."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _pair(size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.BoundingBoxes)):
            return inpt
        return self._call_kernel(F.resize, inpt, list(self.size), antialias=True)


class DarknetJitter(v2.Transform):
    """Darknet's YOLOv2 crop: move each side by U(-jitter, jitter) of the image's width or height (an optional
    isotropic zoom by U(scale) about the window's centre), crop that window (gray outside the image) and resize
    it to `size` (h, w). Boxes follow; those cut off are clipped or dropped later (SanitizeBoundingBoxes)."""

    def __init__(self, size: int | Sequence[int], jitter: float = 0.3,
                 scale: tuple[float, float] | None = None, fill: int = GRAY) -> None:
        super().__init__()
        if not 0 <= jitter < 0.5:
            raise BetterConvError(f"jitter must be in [0, 0.5), got {jitter}")
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise BetterConvError(f"scale range must satisfy 0 < min <= max, got {scale}")
        self.size, self.jitter, self.scale, self.fill = _pair(size), float(jitter), scale, fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        dw, dh = int(w * self.jitter), int(h * self.jitter)
        left, right = (int(v) for v in torch.randint(-dw, dw + 1, (2,)))
        top, bottom = (int(v) for v in torch.randint(-dh, dh + 1, (2,)))
        crop_w, crop_h = w - left - right, h - top - bottom
        if self.scale is not None:
            s = float(torch.empty(()).uniform_(*self.scale))
            new_w, new_h = max(1, round(crop_w / s)), max(1, round(crop_h / s))
            left, top = left + (crop_w - new_w) // 2, top + (crop_h - new_h) // 2
            crop_w, crop_h = new_w, new_h
        padding = [max(0, -left), max(0, -top), max(0, left + crop_w - w), max(0, top + crop_h - h)]
        return {"padding": padding, "crop": (top + padding[1], left + padding[0], crop_h, crop_w)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.BoundingBoxes)):
            return inpt
        out = inpt
        if any(params["padding"]):
            out = self._call_kernel(F.pad, out, params["padding"], fill=_fill(inpt, self.fill))
        out = self._call_kernel(F.crop, out, *params["crop"])
        return self._call_kernel(F.resize, out, list(self.size), antialias=True)


class RandomHSV(v2.Transform):
    """Darknet's random_distort_image on float images in [0, 1]: hue shifted by U(-hue, hue) of the colour
    circle; saturation and value multiplied by U(1, s) or its inverse (equal chance), then clipped."""

    def __init__(self, hue: float = 0.1, saturation: float = 1.5, exposure: float = 1.5) -> None:
        super().__init__()
        if not 0 <= hue <= 0.5 or saturation < 1 or exposure < 1:
            raise BetterConvError(f"HSV needs 0 <= hue <= 0.5, saturation >= 1 and exposure >= 1, got {hue}, "
                                  f"{saturation}, {exposure}")
        self.hue, self.saturation, self.exposure = hue, saturation, exposure

    @staticmethod
    def _rand_scale(s: float) -> float:
        value = float(torch.empty(()).uniform_(1, s)) if s > 1 else 1.0
        return value if torch.rand(()) < 0.5 else 1 / value

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"hue": float(torch.empty(()).uniform_(-self.hue, self.hue)) if self.hue else 0.0,
                "saturation": self._rand_scale(self.saturation), "exposure": self._rand_scale(self.exposure)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        if not inpt.is_floating_point():
            raise TypeError("RandomHSV needs a float image in [0, 1]")
        x = inpt.as_subclass(torch.Tensor)
        value = x.amax(dim=-3, keepdim=True)  # HSV's V
        # scaling S with V fixed moves every channel towards / away from the largest one
        x = value - params["saturation"] * (value - x)
        x = (x * params["exposure"]).clamp_(0, 1)
        if params["hue"]:
            x = F.adjust_hue(x, params["hue"])
        return tv_tensors.wrap(x, like=inpt)


def _labels_and_flags(inputs: Any) -> tuple[torch.Tensor, ...] | None:
    """What SanitizeBoundingBoxes drops together with the boxes: labels, difficult (and iscrowd, area if
    present)."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) and len(inputs) > 1 else inputs
    if not isinstance(target, dict):
        return None
    return tuple(target[k] for k in ("labels", "difficult", "iscrowd", "area")
                 if isinstance(target.get(k), torch.Tensor))


class DetectionTransform(v2.Compose):
    """A Compose whose `size` (h, w) is that of its resizing steps: set it to change the output size (multi-scale
    training), e.g. `transform.size = 352`; it must stay a multiple of `multiple`."""

    def __init__(self, transforms: Sequence[v2.Transform], multiple: int = 32) -> None:
        super().__init__(list(transforms))
        self.multiple = multiple

    @property
    def size(self) -> tuple[int, int]:
        return next(t.size for t in self.transforms if isinstance(t, (Resize, Letterbox, DarknetJitter)))

    @size.setter
    def size(self, value: int | Sequence[int]) -> None:
        value = _pair(value, "input size", self.multiple)
        for t in self.transforms:
            if isinstance(t, (Resize, Letterbox, DarknetJitter)):
                t.size = value


def _finish() -> list[v2.Transform]:
    return [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1, labels_getter=_labels_and_flags)]


def train_transform(size: int | Sequence[int] = 416, jitter: float = 0.3, scale: tuple[float, float] | None = None,
                    hflip: float = 0.5, hue: float = 0.1, saturation: float = 1.5, exposure: float = 1.5,
                    hsv: bool = True, fill: int = GRAY) -> DetectionTransform:
    """YOLOv2's augmentation (see the module doc) to a float32 (3, h, w) image in [0, 1] of `size` (a multiple of
    32); boxes clipped to the image and those under 1 pixel wide or high dropped with their labels."""
    steps: list[v2.Transform] = [DarknetJitter(_pair(size, "input size", 32), jitter, scale, fill)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if hsv:
        steps.append(RandomHSV(hue, saturation, exposure))
    return DetectionTransform(steps + _finish())


def eval_transform(size: int | Sequence[int] = 416, letterbox: bool = False, fill: int = GRAY) -> DetectionTransform:
    """Resize to `size` (YOLOv2, aspect not kept) or letterbox into it, then float32 in [0, 1]. Every box is kept
    (none leaves the image; tiny ones are not dropped), so metrics may use the transformed targets or, better, the
    dataset's originals with predictions mapped back by `unresize_boxes` / `unletterbox_boxes`."""
    size = _pair(size, "input size", 32)
    first = Letterbox(size, fill) if letterbox else Resize(size)
    return DetectionTransform([first, v2.ToDtype(torch.float32, scale=True)])


def letterbox(size: int | Sequence[int], fill: int = GRAY) -> DetectionTransform:
    """Letterbox to `size` (any size, no conversion to float)."""
    return DetectionTransform([Letterbox(size, fill)], multiple=1)


def resize(size: int | Sequence[int]) -> DetectionTransform:
    """Plain resize to `size` (any size, no conversion to float)."""
    return DetectionTransform([Resize(size)], multiple=1)


def unletterbox_boxes(boxes: torch.Tensor, original_size: tuple[int, int], size: int | Sequence[int],
                      clip: bool = True) -> torch.Tensor:
    """XYXY boxes in the letterboxed input of `size` -> pixels of the original image (h, w), clipped to it."""
    new_h, new_w, top, left = letterbox_params(original_size, size)
    h, w = original_size
    shift = torch.tensor([left, top, left, top], dtype=boxes.dtype, device=boxes.device)
    factor = torch.tensor([w / new_w, h / new_h, w / new_w, h / new_h], dtype=boxes.dtype, device=boxes.device)
    out = (boxes.as_subclass(torch.Tensor) - shift) * factor
    return _clip_xyxy(out, h, w) if clip else out


def unresize_boxes(boxes: torch.Tensor, original_size: tuple[int, int], size: int | Sequence[int],
                   clip: bool = True) -> torch.Tensor:
    """XYXY boxes in an input resized (aspect not kept) to `size` -> pixels of the original image (h, w)."""
    (h, w), (out_h, out_w) = original_size, _pair(size)
    factor = torch.tensor([w / out_w, h / out_h, w / out_w, h / out_h], dtype=boxes.dtype, device=boxes.device)
    out = boxes.as_subclass(torch.Tensor) * factor
    return _clip_xyxy(out, h, w) if clip else out


def _clip_xyxy(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), limit)
