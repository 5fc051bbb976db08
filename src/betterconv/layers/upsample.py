"""FCN's in-network upsampling: a transposed convolution initialised to bilinear interpolation (FCN §3.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The (2f, 2f) bilinear interpolation kernel for upsampling by an integer factor f."""
    size = 2 * factor
    center = factor - 0.5
    ramp = 1 - torch.abs(torch.arange(size, dtype=torch.float64) - center) / factor
    return torch.outer(ramp, ramp).float()


class BilinearUpsample(nn.Module):
    """Upsample by `factor` with a stride-f transposed convolution of kernel 2f and padding f/2.

    An input of size n gives exactly n * f, with pixel centres aligned (`align_corners=False`). When
    `learnable`, it is a full `nn.ConvTranspose2d` (channel i initialised to bilinear from channel i only),
    as FCN learns its intermediate upsampling; otherwise the bilinear kernel is a fixed buffer applied per
    channel, as FCN fixes its final upsampling.
    """

    def __init__(self, channels: int, factor: int, learnable: bool = True) -> None:
        super().__init__()
        if factor < 2 or factor % 2:
            raise ValueError(f"upsampling factor must be an even integer >= 2, got {factor}")
        self.channels, self.factor, self.learnable = channels, factor, learnable
        kernel = bilinear_kernel(factor)
        if learnable:
            self.deconv = nn.ConvTranspose2d(channels, channels, 2 * factor, factor, factor // 2, bias=False)
            with torch.no_grad():
                self.deconv.weight.zero_()
                for c in range(channels):
                    self.deconv.weight[c, c] = kernel
        else:
            self.deconv = None
            self.register_buffer("kernel", kernel.expand(channels, 1, -1, -1).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deconv is not None:
            return self.deconv(x)
        return F.conv_transpose2d(x, self.kernel.to(x.dtype), stride=self.factor, padding=self.factor // 2,
                                  groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, factor={self.factor}, learnable={self.learnable}"
