"""The conv-norm-activation helper that every model in betterconv is built from."""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]

InplaceReLU = partial(nn.ReLU, inplace=True)
InplaceReLU6 = partial(nn.ReLU6, inplace=True)
DarknetLeakyReLU = partial(nn.LeakyReLU, 0.1, inplace=True)  # darknet's "leaky"


def tf_same_pad(size: int, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding along one axis: output = ceil(size / stride), the extra pixel goes after."""
    effective = (kernel_size - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TensorFlow "SAME" padding (asymmetric for stride 2), needed by ported TF/TFLite weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = tf_same_pad(x.shape[-2], kh, sh, dh)
        left, right = tf_same_pad(x.shape[-1], kw, sw, dw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, with stable child names `.conv`, `.bn`, `.act`.

    `padding=None` keeps the spatial size at stride 1 (``dilation * (k - 1) // 2``); `padding="tf_same"` uses
    TensorFlow's "SAME" rule. The convolution has a bias only when there is no norm layer, unless `bias` says.
    `out_channels` is recorded so that blocks can be chained without repeating arithmetic.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | str | None = None,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        act_layer: ActLayer | None = InplaceReLU,
        bias: bool | None = None,
    ) -> None:
        if bias is None:
            bias = norm_layer is None
        if padding == "tf_same":
            conv: nn.Conv2d = Conv2dSame(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)
        else:
            if padding is None:
                padding = dilation * (kernel_size - 1) // 2
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv)
        if norm_layer is not None:
            layers["bn"] = norm_layer(out_channels)
        if act_layer is not None:
            layers["act"] = act_layer()
        super().__init__(layers)
        self.out_channels = out_channels
