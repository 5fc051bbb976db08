"""Darknet's passthrough "reorg" layer (YOLOv2 §2, "Fine-Grained Features").

Darknet's forward pass calls `reorg_cpu(input, w, h, c, batch, stride, forward=0, output)` with the *input's*
w, h, c. With forward=0 the loop reads `x[out_index]` and writes `out[in_index]`, so the input buffer is read
as if it had shape (c / s^2, h * s, w * s) and the result is written in (c, h, w) order, then reinterpreted
as the layer's declared output (c * s^2, h / s, w / s). The result holds the same values as a space-to-depth
but in a different channel order than `pixel_unshuffle`; weights trained in darknet need this exact order.
"""
from __future__ import annotations

import torch
from torch import nn


def darknet_reorg(x: torch.Tensor, stride: int = 2) -> torch.Tensor:
    b, c, h, w = x.shape
    s = stride
    if c % (s * s) or h % s or w % s:
        raise ValueError(f"reorg with stride {s} needs channels divisible by {s * s} and a spatial size "
                         f"divisible by {s}, got {tuple(x.shape[1:])}")
    oc = c // (s * s)
    # reorg_cpu reads the flat buffer as (oc, h*s, w*s) and indexes it as [c2, j*s + dy, i*s + dx]
    v = x.reshape(b, oc, h, s, w, s)  # (B, c2, j, dy, i, dx)
    # output channel k = (dy*s + dx) * oc + c2 at position (j, i), written in (c, h, w) order
    v = v.permute(0, 3, 5, 1, 2, 4)  # (B, dy, dx, c2, j, i)
    v = v.reshape(b, c, h, w)
    return v.reshape(b, c * s * s, h // s, w // s)  # darknet's declared output shape over the same buffer


class Reorg(nn.Module):
    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return darknet_reorg(x, self.stride)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"
