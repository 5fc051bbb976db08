"""Winograd convolution for inference: 3x3, stride-1 convolutions with fewer multiplications.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): F(m x m, 3 x 3) computes an m x m
output tile from an (m + 2) x (m + 2) input tile d as

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (their eq. 8; * is the element-wise product)

For a layer, the element-wise products over input channels become (m + 2)^2 independent matrix products
U[k] (C_out x C_in) @ V[k] (C_in x tiles), so the multiplications drop by 9 m^2 / (m + 2)^2: 2.25x for F(2x2, 3x3),
4x for F(4x4, 3x3). The filter transform U = G g G^T is computed once, when the module is made; the input and
output transforms are small matrix products (B^T ... B, A^T ... A) applied to every tile.

PyTorch's CPU convolution (oneDNN) runs fp32 3x3 convolutions directly, while OpenCV's DNN module uses
Winograd F(6x6, 3x3) by default (`Net.enableWinograd`; its effect on YOLOv2 is measured in docs/detection.md);
this module is how betterconv gets part of the same saving.
Which algorithm wins depends on the layer (the transforms cost memory traffic; a 13x13 map wastes part of its
last tiles), so `winograd_convolutions` times each eligible layer on an example input and keeps the fastest of
direct, F(2x2, 3x3) and F(4x4, 3x3) (`algorithms`), as `torch.backends.cudnn.benchmark` does for cuDNN's algorithms.

Numerics: F(2x2, 3x3) uses transform entries 0, +-1, 1/2 and is accurate to float rounding; F(4x4, 3x3) has
entries up to 8 and 1/24, and its error grows with C_in (relative error ~1e-5..1e-4 in float32, tested).
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BetterConvError

__all__ = ["WinogradConv2d", "winograd_convolutions", "winograd_eligible"]

# (B^T, G, A^T) of Lavin & Gray §4.1 (F(2x2,3x3)) and §4.2 (F(4x4,3x3), interpolation points 0, +-1, +-2, inf)
_MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def winograd_eligible(conv: nn.Module) -> bool:
    """A plain 3x3 convolution with stride 1, dilation 1, one group, zero padding 1 ("same")."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding == (1, 1)
            and conv.padding_mode == "zeros")


class WinogradConv2d(nn.Module):
    """`conv` (see `winograd_eligible`) computed with Winograd F(tile x tile, 3x3), float32, inference only."""

    def __init__(self, conv: nn.Conv2d, tile: int = 2) -> None:
        super().__init__()
        if not winograd_eligible(conv):
            raise BetterConvError(f"Winograd needs a 3x3, stride-1, padding-1, ungrouped convolution, got {conv}")
        if tile not in _MATRICES:
            raise BetterConvError(f"Winograd tile must be one of {sorted(_MATRICES)}, got {tile}")
        b_t, g, a_t = (torch.tensor(m, dtype=torch.float64) for m in _MATRICES[tile])
        self.tile, self.alpha = tile, tile + 2
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        w = conv.weight.detach().double()  # (O, C, 3, 3)
        u = g @ w @ g.T  # (O, C, a, a): G g G^T per filter, in float64 then rounded once
        # (a*a, O, C): one matrix product per position of the transformed tile
        self.register_buffer("u", u.permute(2, 3, 0, 1).reshape(self.alpha ** 2, conv.out_channels,
                                                                 conv.in_channels).float().contiguous())
        # vec(B^T d B) = (B^T kron B^T) vec(d) and vec(A^T M A) = (A^T kron A^T) vec(M): each transform is one matrix
        # product over all tiles (measured faster here than two passes with the small factors)
        self.register_buffer("input_transform", torch.kron(b_t, b_t).float())  # (a*a, a*a)
        self.register_buffer("output_transform", torch.kron(a_t, a_t).float())  # (m*m, a*a)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().float().clone())

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, F({self.tile}x{self.tile}, 3x3)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m, a = self.tile, self.alpha
        th, tw = math.ceil(h / m), math.ceil(w / m)
        # zero padding 1 on the top/left; bottom/right up to whole tiles
        xp = F.pad(x, (1, tw * m + 2 - w - 1, 1, th * m + 2 - h - 1))  # (N, C, th*m+2, tw*m+2)
        tiles = xp.unfold(2, a, m).unfold(3, a, m)  # (N, C, th, tw, a, a), overlapping views
        p = n * th * tw  # tiles
        d = tiles.permute(4, 5, 1, 0, 2, 3).reshape(a * a, c * p)  # (a*a, C*P): vec(d) of every tile, a copy
        v = (self.input_transform @ d).view(a * a, c, p)  # (a*a, C, P): B^T d B
        mm = torch.bmm(self.u, v)  # (a*a, O, P): the element-wise products summed over C
        o = self.out_channels
        if self.bias is None:
            y = self.output_transform @ mm.view(a * a, o * p)  # (m*m, O*P): A^T M A
        else:  # the bias joins the output transform's matrix product
            bias = self.bias.view(1, o, 1).expand(1, o, p).reshape(1, o * p)
            y = torch.addmm(bias, self.output_transform, mm.view(a * a, o * p))
        y = y.view(m, m, o, n, th, tw).permute(3, 2, 4, 0, 5, 1)  # (N, O, th, m, tw, m): y[row, col] of each tile
        return y.reshape(n, o, th * m, tw * m)[:, :, :h, :w]  # cropping the last tiles leaves a strided view


def _median_ms(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1000


@torch.no_grad()
def winograd_convolutions(model: nn.Module, example: torch.Tensor,
                          algorithms: tuple[str | int, ...] = ("direct", 2, 4),
                          repeats: int = 5) -> tuple[nn.Module, list[dict]]:
    """A copy of `model` (eval mode) in which each eligible 3x3 convolution is replaced by the fastest of
    `algorithms` ("direct": the convolution itself; an int t: `WinogradConv2d(tile=t)`), timed on the input it
    receives when `model` runs on `example`. With one algorithm nothing is timed and every eligible layer uses it.

    Returns the copy and one record per eligible layer (name, input shape, milliseconds per candidate, choice).
    Timings are for this machine and thread count; fold batch norm first (`fuse_batch_norm`) so that the
    Winograd layer carries the folded bias.
    """
    unknown = [a for a in algorithms if a != "direct" and a not in _MATRICES]
    if not algorithms or unknown:
        raise BetterConvError(f"algorithms must be 'direct' or Winograd tiles {sorted(_MATRICES)}, got {algorithms}")
    model = copy.deepcopy(model).eval()
    inputs: dict[str, torch.Tensor] = {}
    eligible = {name: m for name, m in model.named_modules() if winograd_eligible(m)}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args[0]))
             for name, m in eligible.items()]
    try:
        model(example)
    finally:
        for hook in hooks:
            hook.remove()
    report = []
    for name, conv in eligible.items():
        if name not in inputs:
            continue
        x = inputs[name].clone(memory_format=torch.preserve_format)  # as the layer sees it (channels-last or not)
        candidates = {"direct" if a == "direct" else f"F({a}x{a},3x3)": conv if a == "direct" else
                      WinogradConv2d(conv, int(a)) for a in algorithms}
        if len(candidates) > 1:
            ms: dict[str, float | None] = {key: round(_median_ms(lambda m=module: m(x), repeats), 3)
                                           for key, module in candidates.items()}
            choice = min(ms, key=lambda key: ms[key])
        else:  # one algorithm: nothing to time
            ms, choice = dict.fromkeys(candidates), next(iter(candidates))
        if choice != "direct":
            if name == "":  # the model is the convolution itself
                model = candidates[choice]
            else:
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, candidates[choice])
        report.append({"layer": name, "input": list(x.shape), "ms": ms, "choice": choice})
    return model, report
