"""The feature contract every backbone publishes (after timm's `FeatureInfo`).

A backbone has `feature_info: list[FeatureInfo]`, one entry per stage in order of depth, with non-decreasing
reduction, and `forward_features(x) -> dict[str, Tensor]` returning those stages by name. FCN's skips,
DeepLab's output stride and the profiler read this contract instead of reaching into module names.

Also what the backbones share to lay out their strides and dilations: `dilated_strides` (DeepLabv3 §3.1) and the
hybrid dilated convolution rates of Wang et al. (WACV 2018, §3.2): `satisfies_hdc`, `covers_every_offset`,
`hdc_rates` and `apply_dilation_pattern` (`analysis.gridding` uses the same functions).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
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


# --- hybrid dilated convolution (Wang et al., "Understanding Convolution for Semantic Segmentation", WACV 2018) ----

DILATION_PATTERNS = ("plain", "hdc")
HDC_MAX_GROUP = 4  # Wang et al. repeat groups of 3 or 4 rates: (1, 2, 3), (1, 2, 5), (1, 2, 5, 9)


def check_dilation_pattern(pattern: str) -> str:
    """`pattern` if it is one of `DILATION_PATTERNS`, else a one-line `BetterConvError` naming the choices."""
    if pattern not in DILATION_PATTERNS:
        raise BetterConvError(f"dilation_pattern must be one of {', '.join(map(repr, DILATION_PATTERNS))}, "
                              f"got {pattern!r}")
    return pattern


def hdc_max_distances(rates: Sequence[int]) -> list[int]:
    """[M_1, ..., M_n] of Wang et al. §3.2: M_n = r_n, M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i),
    the largest distance between two non-zero values seen by layer i (the paper's formula, written for its 3 x 3
    kernels, is used as published for every kernel size)."""
    m = [0] * len(rates)
    m[-1] = rates[-1]
    for i in range(len(rates) - 2, -1, -1):
        nxt = m[i + 1]
        m[i] = max(nxt - 2 * rates[i], nxt - 2 * (nxt - rates[i]), rates[i])
    return m


def satisfies_hdc(rates: Sequence[int], kernel: int = 3) -> bool:
    """The hybrid dilated convolution condition (Wang et al. WACV 2018 §3.2) for rates r_1..r_n, input side first:
    the rates share no common factor above 1 (gcd of all rates is 1) and M_2 <= kernel (`hdc_max_distances`).

    Edge cases: with a single layer there is no M_2; the paper's goal (M_2 <= K, the distance the first layer must
    bridge) is read as M_1 = r_1 <= kernel, which together with the common-factor rule (gcd(r_1) = r_1) means a
    lone layer satisfies it only at rate 1 (a lone dilated layer always leaves holes). Unlike the holes of the
    receptive field (`covers_every_offset`), the condition depends on the order of the rates, and it does not
    decide them: (4, 3) satisfies it and leaves holes, (9, 1, 3, 12) fails it and leaves none."""
    rates = tuple(int(r) for r in rates)
    if not rates or math.gcd(*rates) != 1:
        return False
    m = hdc_max_distances(rates)
    return (m[1] if len(rates) >= 2 else m[0]) <= kernel


def covers_every_offset(rates: Sequence[int], kernel: int = 3) -> bool:
    """Whether a stack of stride-1 k x k convolutions with these dilation rates reaches every pixel of its receptive
    field (no holes). The 2-D reach is the outer product of the 1-D one, so the 1-D offsets decide; they are kept as
    the bits of one Python integer (an exact set of offsets, shifted per tap: no library computes this reach)."""
    half = (kernel - 1) // 2
    reached, span = 1, 0  # bit j is offset j - span
    for r in rates:
        grown = 0
        for t in range(kernel):  # taps at offsets (t - half) r, shifted so that offsets stay non-negative
            grown |= reached << (t * r)
        reached, span = grown, span + half * r
    return reached == (1 << (2 * span + 1)) - 1


def sawtooth(group: Sequence[int], n: int, phase: int = 0) -> tuple[int, ...]:
    """`n` rates repeating `group` from position `phase`: sawtooth((1, 2, 3), 5, 1) = (2, 3, 1, 2, 3)."""
    return tuple(group[(i + phase) % len(group)] for i in range(n))


def _increasing_groups(n: int, max_total: int, max_len: int):
    """Strictly increasing groups of 1..max_len rates whose repetition to `n` rates sums to at most `max_total`."""
    def extend(prefix: tuple[int, ...], size: int):
        if len(prefix) == size:
            yield prefix
            return
        v = prefix[-1] + 1 if prefix else 1
        while True:
            # the smallest completion of prefix + (v,) repeated to n rates must fit: v, v+1, ... fill the rest
            smallest = prefix + tuple(range(v, v + size - len(prefix)))
            if sum(sawtooth(smallest, n)) > max_total:
                return
            yield from extend(prefix + (v,), size)
            v += 1

    for size in range(1, min(n, max_len) + 1):
        yield from extend((), size)


@functools.lru_cache(maxsize=256)
def _hdc_rates(plain: tuple[int, ...], kernel: int) -> tuple[int, ...]:
    target, n = sum(plain), len(plain)
    # no answer sums to more than 2 * target: (2, 1, 2, 1, ...) qualifies and is nearer (1 for a single rate); nor
    # to more than (k^n - 1) / (k - 1): n layers of k taps reach at most k^n of the 1 + (k - 1) sum(r) offsets
    max_total = min(2 * target, (kernel ** n - 1) // (kernel - 1))
    candidates = []
    for group in _increasing_groups(n, max_total, HDC_MAX_GROUP):
        for phase in range(len(group)):
            rates = sawtooth(group, n, phase)
            total = sum(rates)
            if total <= max_total:
                candidates.append(((rates[0] == 1, abs(total - target), total < target, max(rates), len(group),
                                    phase, group), rates))
    for _, rates in sorted(candidates):
        if satisfies_hdc(rates, kernel) and covers_every_offset(rates, kernel):
            return rates
    raise AssertionError("unreachable: (1,) and (2, 1, 2, ...) qualify")


def hdc_rates(plain_rates: Sequence[int], kernel: int = 3) -> tuple[int, ...]:
    """The hybrid dilated convolution rates (Wang et al. WACV 2018 §3.2) that replace a run of stride-1 dilated
    k x k convolutions with rates `plain_rates`, input side first: a sawtooth, one strictly increasing group of at
    most four rates repeated over the whole run (`sawtooth`, possibly entered mid-group), that satisfies the HDC
    condition over the whole run (`satisfies_hdc`) and reaches every pixel of its receptive field
    (`covers_every_offset`), with the sum of the plain rates, so the same receptive field, 1 + (k - 1) sum(r).

    When no such sawtooth has that sum exactly, the closest sum is taken (a larger one on a tie): (2, 4, 8) becomes
    (9, 1, 3), sum 13 instead of 14; a single rate cannot satisfy HDC and becomes (1,). Among equally close
    sawtooths, the smallest largest rate wins (a large rate's taps fall off small feature maps, DeepLabv3 §3.3),
    then the shorter group, the earlier phase and the smaller group: the answer is deterministic. The first rate
    is above 1 whenever possible, so that the run still starts where the plain one did (its first block stays
    dilated). Wang et al.'s own ResNet-101 (github.com/TuSimple/TuSimple-DUC, `tusimple_duc/networks/resnet.py`)
    runs res4 at 2, 2, 5, 9, then 1, 2, 5, 9 repeated, and res5 at 5, 9, 17: one sawtooth across both stages."""
    plain = tuple(int(r) for r in plain_rates)
    if not plain:
        return ()
    if any(r < 1 for r in plain) or kernel < 3 or kernel % 2 == 0:
        raise BetterConvError(f"hdc_rates needs rates >= 1 and an odd kernel >= 3, got {plain} and {kernel}")
    return _hdc_rates(plain, int(kernel))


def apply_dilation_pattern(strides: Sequence[int], dilations: Sequence[int], pattern: str) -> list[int]:
    """The 3x3 dilation of each block, in order, for `pattern` ("plain" or "hdc"), given each block's 3x3 stride
    and plain dilation. "plain" returns `dilations` unchanged. "hdc" replaces the rates of the dilated part, the
    blocks after the last stride above 1 from the first one whose dilation is above 1, by `hdc_rates` of them."""
    check_dilation_pattern(pattern)
    dilations = list(dilations)
    if pattern == "plain":
        return dilations
    after = max((i + 1 for i, s in enumerate(strides) if s > 1), default=0)
    start = next((i for i in range(after, len(dilations)) if dilations[i] > 1), None)
    if start is not None:
        dilations[start:] = hdc_rates(dilations[start:])
    return dilations
