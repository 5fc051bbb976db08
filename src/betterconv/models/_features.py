"""The feature contract every backbone publishes (after timm's `FeatureInfo`).

A backbone has `feature_info: list[FeatureInfo]`, one entry per stage in order of depth, with non-decreasing
reduction, and `forward_features(x) -> dict[str, Tensor]` returning those stages by name. FCN's skips,
DeepLab's output stride and the profiler read this contract instead of reaching into module names.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BetterConvError


@dataclass(frozen=True)
class FeatureInfo:
    name: str  # key in forward_features' output
    channels: int
    reduction: int  # input size / feature size (the stage's output stride)


def dilated_strides(strides: list[int], output_stride: int, allowed: tuple[int, ...] = (8, 16, 32)
                    ) -> list[tuple[int, int, int]]:
    """Replace strides by dilation so that the network's total reduction stops at `output_stride`.

    Takes each stage's stride and returns (stride, dilation_before, dilation) per stage: stages that would push
    the reduction past `output_stride` get stride 1 and multiply the dilation by their stride (DeepLabv3 §3.1).
    `dilation_before` is the dilation in force before the stage, which its first (formerly strided) layer keeps.
    """
    if output_stride not in allowed:
        raise BetterConvError(f"output_stride must be one of {', '.join(map(str, allowed))}, got {output_stride}")
    out, reduction, dilation = [], 1, 1
    for s in strides:
        before = dilation
        if reduction * s > output_stride:
            dilation *= s
            s = 1
        reduction *= s
        out.append((s, before, dilation))
    return out


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to the nearest multiple of `divisor`, never more than 10% down (MobileNet reference code)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new
