"""How much of a 3x3 atrous filter still sees the feature map (DeepLabv3, Chen et al. 2017, §3.3 and Fig. 4).

With 'same' zero padding (padding = rate) a k x k filter of dilation rate r at an output position has k*k taps; the
taps that land in the padding weigh zeros. As r approaches the feature-map size more and more taps fall outside,
until only the centre tap is left and the filter degenerates to a 1x1 convolution, which is why DeepLabv3 adds
image-level features to ASPP. `valid_weights` gives the mean share of taps inside the map and the share of
positions where only the centre tap is inside, in closed form: a tap (a, b) is inside iff its row offset a is
inside along the rows and its column offset b along the columns, so both quantities factorise per axis.
`model_aspp_report` applies it to the atrous branches of a model's `ASPP` at the feature-map size an input gives.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BetterConvError
from ..layers import ASPP

ASPP_KERNEL = 3  # `ASPP` builds its atrous branches as 3x3 convolutions


def _check_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BetterConvError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_kernel(kernel: Any) -> int:
    """`kernel` as an odd integer >= 1, else a one-line `BetterConvError`."""
    kernel = _check_int(kernel, "the kernel size")
    if kernel % 2 == 0:
        raise BetterConvError(f"the kernel size must be odd, got {kernel}")
    return kernel


def feature_hw(feature_size: int | Sequence[int]) -> tuple[int, int]:
    """An int N (a square map) or (h, w) as (h, w), each >= 1, else a one-line `BetterConvError`."""
    if isinstance(feature_size, (int, np.integer)) and not isinstance(feature_size, bool):
        n = _check_int(feature_size, "the feature size")
        return n, n
    sizes = tuple(feature_size) if isinstance(feature_size, (tuple, list)) else ()
    if len(sizes) != 2:
        raise BetterConvError(f"the feature size must be N or (h, w), got {feature_size!r}")
    return _check_int(sizes[0], "the feature height"), _check_int(sizes[1], "the feature width")


def axis_counts(size: int, rate: int, kernel: int) -> tuple[int, int]:
    """Along one axis of `size` positions: (sum over positions of the taps inside, positions where only the centre
    tap is inside). Tap offset t*rate (|t| <= (kernel - 1) / 2) is inside at max(0, size - |t| rate) positions;
    only the centre is inside where both neighbours at +-rate are outside: rate - 1 >= i >= size - rate."""
    half = (kernel - 1) // 2
    offsets = np.abs(np.arange(-half, half + 1)) * rate
    inside = int(np.maximum(0, size - offsets).sum())
    if half == 0:
        return inside, size
    centre_only = max(0, min(rate - 1, size - 1) - max(size - rate, 0) + 1)
    return inside, centre_only


def valid_weights(feature_size: int | Sequence[int], rate: int, kernel: int = 3) -> dict[str, float]:
    """Over all output positions of a zero-padded (padding = rate, 'same' output) feature map of `feature_size`
    (N or (h, w)): `valid_weight_fraction`, the mean share of the kernel*kernel taps inside the map, and
    `center_only_fraction`, the share of positions where only the centre tap is inside."""
    h, w = feature_hw(feature_size)
    rate = _check_int(rate, "the atrous rate")
    kernel = check_kernel(kernel)
    inside_h, centre_h = axis_counts(h, rate, kernel)
    inside_w, centre_w = axis_counts(w, rate, kernel)
    return {"valid_weight_fraction": inside_h * inside_w / (h * w * kernel * kernel),
            "center_only_fraction": centre_h * centre_w / (h * w)}


def rate_rows(feature_size: int | Sequence[int], rates: Sequence[int], kernel: int) -> list[dict[str, Any]]:
    rates = list(rates)
    if not rates:
        raise BetterConvError("give at least one atrous rate")
    return [{"rate": _check_int(r, "the atrous rate"), **valid_weights(feature_size, r, kernel)} for r in rates]


def aspp_report(feature_size: int | Sequence[int], rates: Sequence[int], kernel: int = 3) -> dict[str, Any]:
    """{"feature_size": N (or [h, w]), "rates": [{"rate", "valid_weight_fraction", "center_only_fraction"}, ...]}."""
    h, w = feature_hw(feature_size)
    size: int | list[int] = h if isinstance(feature_size, (int, np.integer)) else [h, w]
    return {"feature_size": size, "rates": rate_rows((h, w), rates, kernel)}


def find_aspp(model: nn.Module) -> ASPP:
    """The model's (single) `ASPP` module, else a one-line `BetterConvError`."""
    found = [m for m in model.modules() if isinstance(m, ASPP)]
    if not found:
        raise BetterConvError(f"{type(model).__name__} has no ASPP module")
    if len(found) > 1:
        raise BetterConvError(f"{type(model).__name__} has {len(found)} ASPP modules; expected one")
    return found[0]


def aspp_input_size(model: nn.Module, aspp: nn.Module, input_size: Sequence[int]) -> tuple[int, int]:
    """The (h, w) of the feature map `aspp` sees for an input of `input_size` (H, W): measured by running the model
    on a zero image in eval mode (the training mode is restored)."""
    seen: list[tuple[int, int]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append((int(inputs[0].shape[-2]), int(inputs[0].shape[-1])))

    handle = aspp.register_forward_pre_hook(record)
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size))
    finally:
        handle.remove()
        model.train(training)
    if not seen:
        raise BetterConvError("the model's ASPP module did not run on the input")
    return seen[0]


def model_aspp_report(model: nn.Module, input_size: Sequence[int]) -> dict[str, Any]:
    """Per atrous branch of the model's `ASPP`, the valid-weight and centre-only fractions on the feature map an
    input of `input_size` (H, W) gives. The 1x1 branch and image pooling have no taps outside the map."""
    sizes = tuple(input_size)
    if len(sizes) != 2:
        raise BetterConvError(f"the input size must be (H, W), got {input_size!r}")
    input_hw = (_check_int(sizes[0], "the input height"), _check_int(sizes[1], "the input width"))
    aspp = find_aspp(model)
    h, w = aspp_input_size(model, aspp, input_hw)
    other = ["1x1 convolution (always fully inside)"]
    if aspp.image_pooling:
        other.append("image pooling (global average: the whole map)")
    return {"input_size": list(input_hw), "feature_size": [h, w],
            "kernel": ASPP_KERNEL,
            "rates": rate_rows((h, w), aspp.atrous_rates, ASPP_KERNEL) if aspp.atrous_rates else [],
            "other_branches": other}
