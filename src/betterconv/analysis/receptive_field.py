"""Receptive field and cumulative stride of every tensor of a forward pass, through dilation and branches.

Per spatial axis, with r the receptive field and j the jump (input pixels between neighbouring outputs, i.e. the
cumulative stride), the usual arithmetic (Araujo et al., "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019):

    convolution / pooling, kernel k, stride s, dilation d:   r += (k - 1) d j,   j *= s
    transposed convolution (effective kernel k):               r += (ceil(k / s) - 1) j,   j /= s
    interpolation in -> out (taps: nearest 1, bilinear 2):     r += (taps - 1) j,   j *= in / out
    space-to-depth by s (darknet reorg, pixel_unshuffle):      r += (s - 1) j,   j *= s
    pooling to 1 or a mean over the axis:                      r = inf (global: the whole input)
    anything else (elementwise, add, cat, shuffles, ...):      the maximum over the inputs (branches)

Padding does not enter: the receptive field is the extent of input pixels that can affect an output, counted
as if the input were unbounded (FCN-VGG16's 404 at fc7 is larger than its 224 input). A reshape that folds the
spatial axes into features (`flatten` before a `Linear`) marks the tensor `flat`; a matrix product over a
flat tensor sees every position, so its output is global.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten

GLOBAL = math.inf  # receptive field of an output that depends on the whole input
Pair = tuple[float, float]


@dataclass(frozen=True)
class Field:
    rf: tuple[float, float] = (1, 1)  # (H, W), input pixels; GLOBAL when the whole axis is seen
    jump: tuple[float, float] = (1, 1)  # (H, W) cumulative stride
    flat: bool = False  # spatial axes folded into features

    @property
    def size(self) -> float:
        return max(self.rf)

    @property
    def stride(self) -> float:
        return max(self.jump)

    @staticmethod
    def merge(fields: Sequence[Field]) -> Field:
        return Field(tuple(max(f.rf[i] for f in fields) for i in range(2)),
                     tuple(max(f.jump[i] for f in fields) for i in range(2)), any(f.flat for f in fields))

    def kernel(self, k: Pair, stride: Pair, dilation: Pair = (1, 1)) -> Field:
        rf = tuple(r + (ki - 1) * di * j for r, ki, di, j in zip(self.rf, k, dilation, self.jump))
        return replace(self, rf=rf, jump=tuple(j * si for j, si in zip(self.jump, stride)))

    def transposed(self, k: Pair, stride: Pair, dilation: Pair) -> Field:
        rf = tuple(r + (math.ceil(((ki - 1) * di + 1) / si) - 1) * j
                   for r, ki, si, di, j in zip(self.rf, k, stride, dilation, self.jump))
        return replace(self, rf=rf, jump=tuple(j / si for j, si in zip(self.jump, stride)))

    def resample(self, size_in: Pair, size_out: Pair, taps: Pair) -> Field:
        rf = tuple(r + (t - 1) * j for r, t, j in zip(self.rf, taps, self.jump))
        return replace(self, rf=rf, jump=tuple(j * a / b for j, a, b in zip(self.jump, size_in, size_out)))

    def space_to_depth(self, s: int) -> Field:
        return replace(self.kernel((s, s), (s, s)), flat=False)

    def depth_to_space(self, s: int) -> Field:
        return replace(self, jump=tuple(j / s for j in self.jump), flat=False)

    def globalise(self, axes: Sequence[int] = (0, 1)) -> Field:
        return replace(self, rf=tuple(GLOBAL if i in axes else r for i, r in enumerate(self.rf)))


def _pair(values: Any, n: int, identity: int = 1) -> tuple:
    """Per-axis op arguments for the field's (H, W) axes: a single value applies to each of the input's `n`
    spatial axes, the trailing ones are H and W, and an axis the op does not have (a 1-d op's H) is untouched."""
    values = list(values) if isinstance(values, (list, tuple, torch.Size)) else [values]
    values = (values * n if len(values) == 1 else values)[-2:]
    return tuple([identity] * (2 - len(values)) + values)


_CONV = {aten.convolution, aten._convolution}
_MAX_POOL = {aten.max_pool1d, aten.max_pool2d, aten.max_pool3d, aten.max_pool2d_with_indices,
             aten.max_pool3d_with_indices}
_AVG_POOL = {aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d}
_ADAPTIVE = {aten._adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten.adaptive_avg_pool1d,
             aten._adaptive_avg_pool3d, aten.adaptive_max_pool1d, aten.adaptive_max_pool2d,
             aten.adaptive_max_pool3d}
_REDUCE = {aten.mean, aten.sum, aten.amax, aten.amin, aten.max, aten.min, aten.var, aten.std, aten.var_mean,
           aten.std_mean, aten.logsumexp, aten.prod}
_TAPS = {aten.upsample_nearest1d: 1, aten.upsample_nearest2d: 1, aten.upsample_nearest3d: 1,
         aten._upsample_nearest_exact1d: 1, aten._upsample_nearest_exact2d: 1, aten._upsample_nearest_exact3d: 1,
         aten.upsample_linear1d: 2, aten.upsample_bilinear2d: 2, aten.upsample_trilinear3d: 2,
         aten._upsample_bilinear2d_aa: 2, aten.upsample_bicubic2d: 4, aten._upsample_bicubic2d_aa: 4}
_MATMUL = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.matmul, aten.linear}
_RESHAPE = {aten.view, aten._unsafe_view, aten.reshape, aten.flatten, aten.unflatten}


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    value = args[i] if len(args) > i else kwargs.get(name, default)
    return default if value is None or (isinstance(value, (list, tuple)) and not value) else value


def _spatial(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape[2:]) if t.ndim >= 3 else ()


class FieldTracker(TorchDispatchMode):
    """Propagates a `Field` along every tensor produced while active; `track(x)` marks the input(s) first.

    `max_stride` is the largest cumulative stride of any feature map seen (a tensor with spatial axes that is
    neither flattened nor global).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fields: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.max_stride = 1.0

    def track(self, t: torch.Tensor, field: Field | None = None) -> None:
        field = field or Field()
        self.fields[t] = field
        if _spatial(t) and not field.flat and math.isfinite(field.size):
            self.max_stride = max(self.max_stride, field.stride)

    def get(self, t: Any) -> Field | None:
        return self.fields.get(t) if isinstance(t, torch.Tensor) else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [f for f in map(self.get, tree_leaves((args, kwargs))) if f is not None]
        if inputs:
            field = self._propagate(func.overloadpacket, args, kwargs, inputs, out)
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.track(t, field)
        return out

    def _propagate(self, op, args: tuple, kwargs: dict, inputs: list[Field], out: Any) -> Field:
        x, first = (args[0], self.get(args[0])) if args else (None, None)
        merged = Field.merge(inputs)
        n = len(_spatial(x)) if first is not None else 0
        if n == 0 or first.flat:  # e.g. addmm(bias, x, w), or an op after a flatten
            return merged.globalise() if op in _MATMUL and merged.flat else merged
        if op in _CONV:
            k, stride, dilation = (_pair(v, n) for v in (args[1].shape[2:], args[3], args[5]))
            return first.transposed(k, stride, dilation) if args[6] else first.kernel(k, stride, dilation)
        if op in _MAX_POOL or op in _AVG_POOL:
            k = _arg(args, kwargs, 1, "kernel_size")
            dilation = _arg(args, kwargs, 4, "dilation", 1) if op in _MAX_POOL else 1
            return first.kernel(_pair(k, n), _pair(_arg(args, kwargs, 2, "stride", k), n), _pair(dilation, n))
        if op in _ADAPTIVE:
            return self._adaptive(first, _pair(_spatial(x), n), _pair(_arg(args, kwargs, 1, "output_size"), n))
        if op in _REDUCE and not isinstance(_arg(args, kwargs, 1, "dim"), torch.Tensor):  # not max(x, y)
            dims = _arg(args, kwargs, 1, "dim", list(range(x.ndim)))
            dims = {d % x.ndim for d in ([dims] if isinstance(dims, int) else dims)}
            reduced = _pair([d in dims and x.shape[d] > 1 for d in range(2, x.ndim)], n, False)
            return merged.globalise([i for i in (0, 1) if reduced[i]])
        if op in _TAPS:
            return first.resample(_pair(_spatial(x), n), _pair(_spatial(out), n), _pair([_TAPS[op]] * n, n))
        if op is aten.pixel_unshuffle:
            return first.space_to_depth(args[1])
        if op is aten.pixel_shuffle:
            return first.depth_to_space(args[1])
        if op in _RESHAPE and math.prod(x.shape[-2:]) > 1 and x.shape[-2:] != out.shape[-2:]:
            return replace(merged, flat=True)
        return merged

    @staticmethod
    def _adaptive(field: Field, size_in: Pair, size_out: Pair) -> Field:
        """Adaptive pooling: windows [floor(i n/m), ceil((i+1) n/m)), i.e. the widest of them at stride n/m; an
        output of 1 over an axis longer than 1 is global."""
        for axis, (n, m) in enumerate(zip(size_in, size_out)):
            if m == 1 and n > 1:
                field = field.globalise((axis,))
            elif m != n:
                k = max(math.ceil((i + 1) * n / m) - (i * n) // m for i in range(m))
                rf, jump = list(field.rf), list(field.jump)
                rf[axis] += (k - 1) * jump[axis]
                jump[axis] *= n / m
                field = replace(field, rf=tuple(rf), jump=tuple(jump))
        return field
