"""The cost formula of depthwise separable convolution (MobileNetV1 §3.1, MobileNetV2 §3.1), measured.

A standard k x k convolution from d_i to d_j channels on an h x w map costs h·w·d_i·d_j·k² MACs; its depthwise
separable replacement costs h·w·d_i·(k² + d_j): a saving of 1 / (1/d_j + 1/k²), about k² for wide layers and
nothing for k = 1 (where the "separable" version only adds a depthwise 1x1). This module sets the analytic count
beside what the profiler counts and what the CPU takes, to show where the k² survives in wall-clock time.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ..layers import DepthwiseSeparableConv


@dataclass
class ConvCostRow:
    kernel: int
    channels: int
    resolution: int
    standard_macs: int  # analytic h·w·d_i·d_j·k²
    separable_macs: int  # analytic h·w·d_i·(k² + d_j)
    standard_macs_counted: int  # torch.utils.flop_counter
    separable_macs_counted: int
    standard_ms: float  # median latency, batch 1
    separable_ms: float

    @property
    def mac_ratio(self) -> float:
        return self.standard_macs / self.separable_macs

    @property
    def time_ratio(self) -> float:
        return self.standard_ms / self.separable_ms


def _counted_macs(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


def _median_ms(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        module(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


# (channels, resolution) of MobileNet's stages at 224x224: each standard 3x3 layer there costs about the same
MOBILENET_SHAPES = ((32, 112), (128, 56), (256, 28), (512, 14), (1024, 7))


def conv_cost_table(kernels: Sequence[int] = (1, 3, 5, 7),
                    shapes: Sequence[tuple[int, int]] = MOBILENET_SHAPES, repeats: int = 10,
                    channels_last: bool = True, progress: bool = False) -> list[ConvCostRow]:
    """One row per kernel size and (channels d, resolution h): d -> d channels on an h x h map, stride 1, bare
    convolutions (no norm, no activation). `progress`: a progress bar on stderr, one step per row."""
    rows = []
    cases = [(k, d, h) for k in kernels for d, h in shapes]
    with tqdm(cases, desc="bench conv", unit="layer", disable=not progress, leave=False) as bar:
        for k, d, h in bar:
            bar.set_postfix_str(f"{k}x{k} {d}@{h}")
            standard = nn.Conv2d(d, d, k, padding=k // 2, bias=False).eval()
            separable = DepthwiseSeparableConv(d, d, k, norm_layer=None, act_layer=None).eval()
            x = torch.randn(1, d, h, h)
            if channels_last:
                standard, separable = (m.to(memory_format=torch.channels_last) for m in (standard, separable))
                x = x.contiguous(memory_format=torch.channels_last)
            rows.append(ConvCostRow(
                k, d, h, h * h * d * d * k * k, h * h * d * (k * k + d),
                _counted_macs(standard, x), _counted_macs(separable, x),
                _median_ms(standard, x, repeats), _median_ms(separable, x, repeats)))
    return rows


def format_conv_cost(rows: Sequence[ConvCostRow]) -> str:
    lines = ["k  d_i=d_j  h x w    standard MACs  separable MACs  MAC ratio  counted ratio  standard ms  "
             "separable ms  time ratio",
             "-" * 118]
    for r in rows:
        lines.append(f"{r.kernel}  {r.channels:7d}  {r.resolution:3d}x{r.resolution:<3d}  {r.standard_macs:13,d}  "
                     f"{r.separable_macs:14,d}  {r.mac_ratio:9.2f}  "
                     f"{r.standard_macs_counted / r.separable_macs_counted:13.2f}  {r.standard_ms:11.3f}  "
                     f"{r.separable_ms:12.3f}  {r.time_ratio:10.2f}")
    lines.append("MACs are multiply-accumulates (FLOPs = 2 x MACs); ratios are standard / separable, > 1 means the "
                 "separable layer is cheaper.")
    return "\n".join(lines)


def rows_to_dicts(rows: Sequence[ConvCostRow]) -> list[dict]:
    return [{**asdict(r), "mac_ratio": r.mac_ratio, "time_ratio": r.time_ratio} for r in rows]
