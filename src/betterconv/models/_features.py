"""The feature contract every backbone publishes (after timm's `FeatureInfo`).

A backbone has `feature_info: list[FeatureInfo]`, one entry per stage in order of depth, with non-decreasing
reduction, and `forward_features(x) -> dict[str, Tensor]` returning those stages by name. FCN's skips,
DeepLab's output stride and the profiler read this contract instead of reaching into module names.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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


def stages_from_blocks(reductions: list[int], channels: list[int]) -> tuple[list[FeatureInfo], dict[int, str]]:
    """Group a flat sequence of blocks into stages, one per resolution, each ending at its last block.

    Takes each block's cumulative reduction and output channels; returns the `feature_info` and a map from the
    index of each stage's last block to the stage's name ("stage1", "stage2", ...).
    """
    infos: list[FeatureInfo] = []
    ends: dict[int, str] = {}
    for i, (reduction, c) in enumerate(zip(reductions, channels)):
        if infos and infos[-1].reduction == reduction:  # same resolution: the stage grows
            ends.pop(i - 1)
            name = infos.pop().name
        else:
            name = f"stage{len(infos) + 1}"
        infos.append(FeatureInfo(name, c, reduction))
        ends[i] = name
    return infos, ends


def run_blocks(x: torch.Tensor, blocks: nn.Sequential, stage_ends: dict[int, str]) -> dict[str, torch.Tensor]:
    """Run `blocks` in order, keeping the output of each stage's last block under the stage's name."""
    features = {}
    for i, block in enumerate(blocks):
        x = block(x)
        if i in stage_ends:
            features[stage_ends[i]] = x
    return features


def init_weights(module: nn.Module) -> None:
    """The torchvision convention: Kaiming-normal (fan-out) convolutions, unit batch norm, N(0, 0.01) linear."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
