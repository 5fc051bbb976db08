"""Joint image/mask transforms for semantic segmentation, on torchvision.transforms.v2.

The image is a `tv_tensors.Image` and the mask a `tv_tensors.Mask`, so every geometric step applies the same
parameters to both, resizes masks with nearest-neighbour interpolation (pixel-centre aligned with the bilinear
image) and leaves them out of colour changes and normalisation. Masks stay int64 and keep the ignore label
(255); padding fills the mask with it and the image with the mean, which normalises to 0.

Mean and std are in [0, 1] units (ImageNet's by default, see `betterconv.data.class_names`).

The training recipe is the usual one of DeepLab (Chen et al., 2017, "Rethinking Atrous Convolution"): random
scale 0.5-2.0, pad to the crop size, random crop, horizontal flip; plus optional colour jitter.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import BetterConvError
from ..models.info import IMAGENET_MEAN, IMAGENET_STD
from .segmentation import IGNORE_INDEX


def _size_of(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)) or type(inpt) is torch.Tensor:
            height, width = F.get_size(inpt)
            return height, width
    raise TypeError("no image or mask among the transform's inputs")


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from `scale_range` (the same for height and width)."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise BetterConvError(f"scale range must satisfy 0 < min <= max, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _size_of(flat_inputs)
        scale = float(torch.empty(()).uniform_(*self.scale_range))
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # Masks take "nearest-exact" (pixel-centre) sampling: torchvision's default "nearest" for masks samples
        # floor(i / scale), which shifts the mask by half an input pixel against the bilinear image (a whole
        # output pixel at 2x).
        mode = v2.InterpolationMode.NEAREST_EXACT if isinstance(inpt, tv_tensors.Mask) else \
            v2.InterpolationMode.BILINEAR
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=mode, antialias=True)


class PadIfSmaller(v2.Transform):
    """Pad at the bottom and right up to `size` (h, w): the image with `mean` (so it normalises to 0), the mask
    with `ignore_index`."""

    def __init__(self, size: tuple[int, int], mean: Sequence[float] = IMAGENET_MEAN,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.size, self.mean, self.ignore_index = tuple(size), tuple(mean), ignore_index

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _size_of(flat_inputs)
        return {"padding": [0, 0, max(0, self.size[1] - width), max(0, self.size[0] - height)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        if isinstance(inpt, tv_tensors.Mask):
            fill: Any = self.ignore_index
        elif inpt.is_floating_point():
            fill = list(self.mean)
        else:
            fill = [round(m * 255) for m in self.mean]
        return self._call_kernel(F.pad, inpt, params["padding"], fill=fill)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise BetterConvError(f"crop size must be a positive int or (height, width), got {size!r}")
    return pair


def _to_float_normalized(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
            v2.ToDtype({tv_tensors.Mask: torch.int64, "others": None})]


def train_transform(crop_size: int | Sequence[int], scale_range: tuple[float, float] = (0.5, 2.0),
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    ignore_index: int = IGNORE_INDEX,
                    color_jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.0),
                    hflip: float = 0.5) -> v2.Compose:
    """Random scale, pad to `crop_size` (image with `mean`, mask with `ignore_index`), random crop, horizontal
    flip, colour jitter (brightness, contrast, saturation, hue; None for none), then float32 in [0, 1] and
    normalise. Called as `image, mask = t(image, mask)`; gives float32 (3, h, w) and int64 (h, w)."""
    crop = _pair(crop_size)
    steps: list[v2.Transform] = [RandomScale(scale_range), PadIfSmaller(crop, mean, ignore_index),
                                 v2.RandomCrop(crop)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if color_jitter:
        steps.append(v2.ColorJitter(*color_jitter))
    return v2.Compose(steps + _to_float_normalized(mean, std))


def eval_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Float32 in [0, 1] and normalise; no resizing, so predictions compare with the full-size mask."""
    return v2.Compose(_to_float_normalized(mean, std))
