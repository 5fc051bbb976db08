"""ncnn export of betterconv models, checked against PyTorch with `NcnnModel` (`betterconv.deploy.ncnn_runtime`).

ncnn (Tencent, `pip install ncnn`) runs 3x3 stride-1 convolutions with Winograd F(6x6,3x3) / F(4x4,3x3) kernels
written for x86 (AVX2, AVX-512) and ARM (speed measurements: docs/detection.md, docs/deployment.md).

How a model becomes an ncnn graph
---------------------------------
The model (batch norm folded, as for ONNX) runs once on an example input while the exporter records what it
computes: the layers it knows (convolutions, linear layers, activations, pooling, darknet's reorg and max-pool,
`Normalize`) are recorded whole, as modules, and the operations between them (concatenation, residual addition,
flatten, interpolation) as functions, through a `TorchFunctionMode`. Python control flow in `forward` runs as
usual, so the graph is the one computed for the example's size (ncnn graphs have fixed shapes, like the ONNX
export's spatial size). An operation the exporter does not map raises `BetterConvError` naming it: the export
never writes a graph that computes something else.

Then an activation that is the only consumer of a convolution (or linear layer) is folded into it (ncnn's
`activation_type`), and a blob read by several layers gets ncnn's `Split` layer (ncnn frees a blob after its
consumer has read it). The weights are written in float32 (ncnn's converter, pnnx, writes float16 by default;
this exporter never does): each convolution / inner-product weight behind a zero 4-byte tag (raw float32), biases
raw. The runner (`NcnnModel`) switches off ncnn's float16 / bfloat16 storage and arithmetic, so the numbers are
float32 end to end.

Input contract: one float32 image (C, H, W) per call, at the export's size, normalised as the PyTorch model
expects (or in [0, 1] when `normalize` is given: the graph starts with ncnn's `Scale` layer, ``x / std - mean /
std``). Blobs are named ``in0`` and ``out0``, ``out1``, ... in the order of the model's outputs.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import BetterConvError, first_line
from ..layers.conv import Conv2dSame, tf_same_pad
from ..layers.reorg import Reorg
from ..layers.shuffle import ChannelShuffle
from ..models.darknet import DarknetMaxPool
from .checks import (ONNX_ATOL, Normalize, check_input_size, check_normalize, check_output, example_input,
                     reference_output, temporary_path)
from .export import prepare_for_export
from .ncnn_runtime import NcnnModel

__all__ = ["MAGIC", "export_ncnn"]

MAGIC = 7767517  # the first line of every ncnn .param file
_RAW_FLOAT32_TAG = b"\0\0\0\0"  # a weight blob's 4-byte tag: zero means raw float32 values follow


@dataclass
class _Layer:
    kind: str  # ncnn layer type
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, Any] = field(default_factory=dict)  # id -> int, float or list of floats (an array)
    weights: list[tuple[np.ndarray, bool]] = field(default_factory=list)  # (values, behind a 4-byte tag)


def _format_value(value: Any) -> str:
    # ncnn reads a value as a float only when it has a '.' or an exponent: repr(float) always has one
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _format_params(params: dict[int, Any]) -> str:
    items = []
    for key, value in params.items():
        if isinstance(value, (list, tuple)):  # an array: id -23300 - key, then its length and values
            items.append(f"{-23300 - key}={len(value)}," + ",".join(_format_value(float(v)) for v in value))
        else:
            items.append(f"{key}={_format_value(value)}")
    return " ".join(items)


def _activation(module: nn.Module) -> tuple[str, dict[int, Any]] | None:
    """The ncnn layer computing `module` as an activation, or None."""
    if type(module) is nn.ReLU:
        return "ReLU", {}
    if type(module) is nn.LeakyReLU:
        return "ReLU", {0: float(module.negative_slope)}
    if isinstance(module, nn.Hardtanh):  # ReLU6 included
        return "Clip", {0: float(module.min_val), 1: float(module.max_val)}
    if type(module) is nn.Sigmoid:
        return "Sigmoid", {}
    return None


def _fused_activation(layer: _Layer) -> dict[int, Any] | None:
    """`activation_type` (9) and `activation_params` (10) of a convolution computing `layer` after itself."""
    if layer.kind == "ReLU":
        slope = layer.params.get(0, 0.0)
        return {9: 1} if slope == 0 else {9: 2, 10: [slope]}
    if layer.kind == "Clip":
        return {9: 3, 10: [layer.params[0], layer.params[1]]}
    if layer.kind == "Sigmoid":
        return {9: 4}
    return None


_LEAVES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Hardtanh, nn.Sigmoid, nn.MaxPool2d,
           nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.BatchNorm2d, nn.Dropout, nn.Identity,
           nn.Flatten, DarknetMaxPool, Reorg, ChannelShuffle, Normalize)
_CAT = {torch.cat, torch.concat, torch.concatenate}
_ADD = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
        torch.Tensor.add_}
_MUL = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__}
_FLATTEN = {torch.flatten, torch.Tensor.flatten}
_SAME = {torch.Tensor.contiguous, torch.Tensor.clone, torch.Tensor.detach, torch.Tensor.float, torch.Tensor.to}
_FUNCTIONAL_ACTIVATIONS = {F.relu: ("ReLU", {}), torch.relu: ("ReLU", {}), torch.Tensor.relu: ("ReLU", {}),
                           F.relu6: ("Clip", {0: 0.0, 1: 6.0}), torch.sigmoid: ("Sigmoid", {}),
                           torch.Tensor.sigmoid: ("Sigmoid", {})}
_INTERP_MODES = {"nearest": 1, "bilinear": 2, "bicubic": 3}


class _Graph:
    """The layers recorded while the model runs; blobs are tracked by tensor identity."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.layers: list[_Layer] = []
        self.blob_of: dict[int, str] = {}
        self._keep: list[torch.Tensor] = []  # every tracked tensor stays alive, so no id is reused
        self._count = Counter()
        self.depth = 0  # > 0 inside a recorded module: its own operations are not recorded

    def unsupported(self, what: str) -> BetterConvError:
        return BetterConvError(f"ncnn export of {self.model_name}: {what} has no ncnn mapping in betterconv "
                               f"(export to ONNX instead)")

    def new_blob(self, tensor: torch.Tensor) -> str:
        name = f"b{len(self._keep)}"
        self._keep.append(tensor)
        self.blob_of[id(tensor)] = name
        return name

    def blob(self, tensor: Any, what: str) -> str:
        if not isinstance(tensor, torch.Tensor) or id(tensor) not in self.blob_of:
            raise self.unsupported(f"{what} on a tensor that does not come from the input (a constant)")
        return self.blob_of[id(tensor)]

    def tracked(self, value: Any) -> bool:
        if isinstance(value, torch.Tensor):
            return id(value) in self.blob_of
        if isinstance(value, (list, tuple)):
            return any(self.tracked(v) for v in value)
        if isinstance(value, dict):
            return any(self.tracked(v) for v in value.values())
        return False

    def add(self, kind: str, name: str, inputs: list[str], output: torch.Tensor, params: dict[int, Any] | None = None,
            weights: list[tuple[np.ndarray, bool]] | None = None) -> None:
        self._count[name] += 1
        unique = name if self._count[name] == 1 else f"{name}_{self._count[name] - 1}"
        self.layers.append(_Layer(kind, unique, inputs, [], params or {}, weights or []))
        # the blob is named after the layer is appended: an in-place op's output is its input tensor
        self.layers[-1].outputs.append(self.new_blob(output))

    def alias(self, source: torch.Tensor, output: torch.Tensor, what: str) -> None:
        self.blob_of[id(output)] = self.blob(source, what)
        self._keep.append(output)

    # --- modules
    def module(self, name: str, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
        src = self.blob(x, name or type(module).__name__)
        name = name or type(module).__name__.lower()
        act = _activation(module)
        if act is not None:
            self.add(act[0], name, [src], out, act[1])
        elif isinstance(module, nn.Conv2d):
            params, weights = self._convolution_params(module, x)
            self.add("Convolution" if module.groups == 1 else "ConvolutionDepthWise", name, [src], out, params,
                     weights)
        elif isinstance(module, nn.ConvTranspose2d):
            if module.padding_mode != "zeros":
                raise self.unsupported(f"a transposed convolution with padding_mode={module.padding_mode!r}")
            self._deconvolution(name, src, out, module.weight, module.bias, module.stride, module.padding,
                                module.output_padding, module.groups, module.dilation)
        elif isinstance(module, nn.Linear):
            bias = module.bias is not None
            self.add("InnerProduct", name, [src], out, {0: module.out_features, 1: int(bias),
                                                        2: module.weight.numel()}, _weights(module.weight, module.bias))
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, DarknetMaxPool)):
            self.add("Pooling", name, [src], out, self._pooling(module, x))
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and tuple(out.shape[-2:]) != (1, 1):
            (h, w), (oh, ow) = x.shape[-2:], out.shape[-2:]
            if h % oh or w % ow:  # windows of different sizes: no fixed kernel
                raise self.unsupported(f"{name} (adaptive pooling from {h}x{w} to {oh}x{ow})")
            kh, kw = h // oh, w // ow  # windows that tile the input: an ordinary pooling
            self.add("Pooling", name, [src], out, {0: int(isinstance(module, nn.AdaptiveAvgPool2d)), 1: kw, 11: kh,
                                                   2: kw, 12: kh, 5: 1})
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            pooled = out.detach().flatten(1)  # ncnn's global pooling gives a (C,) blob; made (C, 1, 1) again
            self.add("Pooling", name, [src], pooled, {0: int(isinstance(module, nn.AdaptiveAvgPool2d)), 4: 1})
            self.add("Reshape", f"{name}.keepdims", [self.blob_of[id(pooled)]], out,
                     {0: 1, 1: 1, 2: out.shape[1]})
        elif isinstance(module, Reorg):
            self._reorg(name, module.stride, x, out)
        elif isinstance(module, ChannelShuffle):  # ShuffleNet §3.1: (g, C/g) channels transposed, ncnn's order too
            self.add("ShuffleChannel", name, [src], out, {0: module.groups, 1: 0})
        elif isinstance(module, Normalize) and bool((module.mean == 0).all() and (module.std == 1).all()):
            self.alias(x, out, name)  # darknet's (0, 1): nothing to compute
        elif isinstance(module, Normalize):
            channels = x.shape[1]
            std = module.std.flatten().double().expand(channels)
            mean = module.mean.flatten().double().expand(channels)
            self.add("Scale", name, [src], out, {0: channels, 1: 1},
                     [(_f32(1 / std), False), (_f32(-mean / std), False)])
        elif isinstance(module, nn.BatchNorm2d):  # one that `fuse_batch_norm` could not fold into a convolution
            gamma = module.weight if module.weight is not None else torch.ones(module.num_features)
            beta = module.bias if module.bias is not None else torch.zeros(module.num_features)
            self.add("BatchNorm", name, [src], out, {0: module.num_features, 1: float(module.eps)},
                     [(_f32(v), False) for v in (gamma, module.running_mean, module.running_var, beta)])
        elif isinstance(module, nn.Flatten):
            self._flatten(name, x, out, module.start_dim, module.end_dim)
        else:  # Dropout (eval), Identity
            self.alias(x, out, name)

    def _convolution_params(self, conv: nn.Conv2d, x: torch.Tensor) -> tuple[dict, list]:
        if conv.padding_mode != "zeros":
            raise self.unsupported(f"a convolution with padding_mode={conv.padding_mode!r}")
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        if isinstance(conv, Conv2dSame):
            (top, bottom), (left, right) = (tf_same_pad(x.shape[-2], kh, sh, dh), tf_same_pad(x.shape[-1], kw, sw, dw))
        elif isinstance(conv.padding, str):  # "valid" or "same" (stride 1): the extra pixel goes after
            (top, bottom), (left, right) = ((0, 0), (0, 0)) if conv.padding == "valid" else \
                (tf_same_pad(x.shape[-2], kh, 1, dh), tf_same_pad(x.shape[-1], kw, 1, dw))
        else:
            (top, bottom), (left, right) = (conv.padding[0],) * 2, (conv.padding[1],) * 2
        bias = conv.bias is not None
        params = {0: conv.out_channels, 1: kw, 11: kh, 2: dw, 12: dh, 3: sw, 13: sh,
                  4: left, 15: right, 14: top, 16: bottom, 5: int(bias), 6: conv.weight.numel()}
        if conv.groups > 1:
            params[7] = conv.groups
        return params, _weights(conv.weight, conv.bias)

    def _pooling(self, pool: nn.Module, x: torch.Tensor) -> dict[int, Any]:
        if isinstance(pool, DarknetMaxPool):  # its own asymmetric -inf padding
            (top, bottom), (left, right) = pool.padding_for(x.shape[-2]), pool.padding_for(x.shape[-1])
            kh = kw = pool.size
            sh = sw = pool.stride
            return {0: 0, 1: kw, 11: kh, 2: sw, 12: sh, 3: left, 13: top, 14: right, 15: bottom, 5: 1}
        kh, kw = _pair(pool.kernel_size)
        sh, sw = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        ph, pw = _pair(pool.padding)
        params = {0: int(isinstance(pool, nn.AvgPool2d)), 1: kw, 11: kh, 2: sw, 12: sh, 3: pw, 13: ph, 14: pw, 15: ph,
                  5: 0 if pool.ceil_mode else 1}  # pad mode 0: caffe's "full" (ceil), 1: "valid" (floor)
        if isinstance(pool, nn.MaxPool2d) and _pair(pool.dilation) != (1, 1):
            raise self.unsupported("a dilated max pool")
        if isinstance(pool, nn.AvgPool2d):
            if pool.divisor_override is not None:
                raise self.unsupported("average pooling with divisor_override")
            params[6] = int(pool.count_include_pad)
        return params

    def _deconvolution(self, name: str, src: str, out: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       stride: Any, padding: Any, output_padding: Any, groups: int, dilation: Any) -> None:
        if isinstance(padding, str):
            raise self.unsupported(f"a transposed convolution with padding={padding!r}")
        (sh, sw), (ph, pw), (oh, ow), (dh, dw) = map(_pair, (stride, padding, output_padding, dilation))
        cin, cout_per_group, kh, kw = weight.shape  # PyTorch: (in, out / groups, kh, kw)
        # ncnn: (groups, out / groups, in / groups, kh, kw); both scatter each input pixel with the kernel unflipped
        w = weight.detach().reshape(groups, cin // groups, cout_per_group, kh, kw).transpose(1, 2)
        params = {0: cout_per_group * groups, 1: kw, 11: kh, 2: dw, 12: dh, 3: sw, 13: sh, 4: pw, 15: pw, 14: ph,
                  16: ph, 18: ow, 19: oh, 5: int(bias is not None), 6: weight.numel()}
        if groups > 1:
            params[7] = groups
        self.add("Deconvolution" if groups == 1 else "DeconvolutionDepthWise", name, [src], out, params,
                 _weights(w, bias))

    def _reorg(self, name: str, stride: int, x: torch.Tensor, out: torch.Tensor) -> None:
        # darknet's reorg (layers/reorg.py) reads the (c, h, w) buffer as (c/s^2, h*s, w*s), then space-to-depth
        # with output channel (dy*s + dx) * c/s^2 + c2 (ncnn's Reorg mode 1), and reads the result as
        # (c*s^2, h/s, w/s): three ncnn layers, two of them flat reshapes
        _, c, h, w = x.shape
        s = stride
        read = x.detach().reshape(1, c // (s * s), h * s, w * s)  # (1, c/s^2, h*s, w*s)
        self.add("Reshape", f"{name}.read", [self.blob(x, name)], read, {0: w * s, 1: h * s, 2: c // (s * s)})
        moved = read.reshape(1, c, h, w).clone()  # a new tensor, only its identity matters
        self.add("Reorg", name, [self.blob_of[id(read)]], moved, {0: s, 1: 1})
        self.add("Reshape", f"{name}.view", [self.blob_of[id(moved)]], out, {0: w // s, 1: h // s, 2: c * s * s})

    def _flatten(self, name: str, x: torch.Tensor, out: torch.Tensor, start: int, end: int) -> None:
        if start % x.dim() != 1 or end % x.dim() != x.dim() - 1:
            raise self.unsupported(f"{name} (flatten of dims {start}..{end}; ncnn flattens all but the batch)")
        self.add("Flatten", name, [self.blob(x, name)], out)

    # --- functions between modules
    def function(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        what = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
        name = getattr(func, "__name__", "op").strip("_")
        if not isinstance(out, torch.Tensor):
            raise self.unsupported(f"{what} (it returns {type(out).__name__})")
        if func in _CAT:
            tensors = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % out.dim()
            if dim != 1:
                raise self.unsupported(f"concatenation along dim {dim} (ncnn's blobs have no batch axis)")
            self.add("Concat", "cat", [self.blob(t, what) for t in tensors], out, {0: 0})
        elif func in _ADD or func in _MUL:
            a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
            if kwargs.get("alpha", 1) != 1:
                raise self.unsupported(f"{what} with alpha")
            op = 0 if func in _ADD else 2
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                if a.shape != b.shape:
                    raise self.unsupported(f"{what} of shapes {tuple(a.shape)} and {tuple(b.shape)} (broadcasting)")
                self.add("BinaryOp", name, [self.blob(a, what), self.blob(b, what)], out, {0: op})
            elif isinstance(b, (int, float)) or isinstance(a, (int, float)):
                tensor, scalar = (a, b) if isinstance(a, torch.Tensor) else (b, a)
                self.add("BinaryOp", name, [self.blob(tensor, what)], out, {0: op, 1: 1, 2: float(scalar)})
            else:
                raise self.unsupported(what)
        elif func in _FLATTEN:
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            self._flatten(name, args[0], out, start, end)
        elif func is F.interpolate:
            self._interpolate(args, kwargs, out)
        elif func is F.conv_transpose2d:  # FCN's fixed bilinear upsampling: the kernel is a constant
            names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
            given = {"bias": None, "stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1,
                     **dict(zip(names, args)), **kwargs}
            if self.tracked(given["weight"]) or self.tracked(given["bias"]):
                raise self.unsupported(f"{what} with weights computed from the input")
            self._deconvolution("conv_transpose2d", self.blob(given["input"], what), out, given["weight"],
                                given["bias"], given["stride"], given["padding"], given["output_padding"],
                                given["groups"], given["dilation"])
        elif func is F.pad:
            self._pad(args, kwargs, out, what)
        elif func is torch.Tensor.__getitem__:
            self._crop(args[0], args[1], out, what)
        elif func is F.avg_pool2d:  # as the module with the same arguments
            names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
            given = {**dict(zip(names, args)), **kwargs}
            x = given.pop("input")
            self.add("Pooling", "avg_pool2d", [self.blob(x, what)], out, self._pooling(nn.AvgPool2d(**given), x))
        elif func in _SAME and out.shape == args[0].shape and out.dtype == torch.float32:
            self.alias(args[0], out, what)
        elif func in _FUNCTIONAL_ACTIVATIONS:
            kind, params = _FUNCTIONAL_ACTIVATIONS[func]
            self.add(kind, name, [self.blob(args[0], what)], out, params)
        elif func is F.leaky_relu:
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            self.add("ReLU", name, [self.blob(args[0], what)], out, {0: float(slope)})
        else:
            raise self.unsupported(what)

    def _pad(self, args: tuple, kwargs: dict, out: torch.Tensor, what: str) -> None:
        given = {"mode": "constant", "value": None, **dict(zip(("input", "pad", "mode", "value"), args)), **kwargs}
        x, pad = given["input"], list(given["pad"]) + [0] * (4 - len(given["pad"]))
        if given["mode"] != "constant" or len(pad) != 4 or min(pad) < 0:
            raise self.unsupported(f"{what} (mode {given['mode']!r}, pads {tuple(given['pad'])}): only constant "
                                   f"padding of height and width")
        if not any(pad):
            self.alias(x, out, what)
            return
        left, right, top, bottom = pad
        self.add("Padding", "pad", [self.blob(x, what)], out,
                 {0: top, 1: bottom, 2: left, 3: right, 4: 0, 5: float(given["value"] or 0.0)})

    def _crop(self, x: torch.Tensor, index: Any, out: torch.Tensor, what: str) -> None:
        """``x[..., a:b, c:d]`` and other step-1 slices of channels, height and width (FCN's final crop)."""
        index = index if isinstance(index, tuple) else (index,)
        if any(i is not Ellipsis and not isinstance(i, slice) for i in index) or index.count(Ellipsis) > 1:
            raise self.unsupported(f"{what} with an index other than slices")
        if Ellipsis in index:
            k = index.index(Ellipsis)
            index = index[:k] + (slice(None),) * (x.dim() - len(index) + 1) + index[k + 1:]
        index = index + (slice(None),) * (x.dim() - len(index))
        ranges = [s.indices(n) for s, n in zip(index, x.shape)]  # (start, stop, step) per axis
        if x.dim() != 4 or any(step != 1 for _, _, step in ranges) or ranges[0][0] != 0 or out.shape[0] != x.shape[0]:
            raise self.unsupported(f"{what} (a slice of the batch, or with a step, or of a {x.dim()}-d tensor)")
        (_, c0, h0, w0) = (r[0] for r in ranges)
        self.add("Crop", "crop", [self.blob(x, what)], out, {0: w0, 1: h0, 2: c0, 3: out.shape[3], 4: out.shape[2],
                                                             5: out.shape[1]})

    def _interpolate(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        names = ("input", "size", "scale_factor", "mode", "align_corners")
        given = {**dict(zip(names, args)), **kwargs}
        mode = given.get("mode", "nearest")
        if mode not in _INTERP_MODES or given.get("antialias"):
            raise self.unsupported(f"interpolation mode {mode!r}")
        params = {0: _INTERP_MODES[mode], 3: out.shape[-2], 4: out.shape[-1]}  # the output size, as traced
        if given.get("align_corners"):
            params[6] = 1
        self.add("Interp", "interpolate", [self.blob(given["input"], "interpolate")], out, params)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy().ravel()


def _weights(weight: torch.Tensor, bias: torch.Tensor | None) -> list[tuple[np.ndarray, bool]]:
    # ncnn keeps PyTorch's (out, in / groups, kh, kw) and (out, in) orders
    return [(_f32(weight), True)] + ([(_f32(bias), False)] if bias is not None else [])


class _Recorder(TorchFunctionMode):
    def __init__(self, graph: _Graph) -> None:
        super().__init__()
        self.graph = graph

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # the mode is off while its handler runs: nested calls are not seen
        if not self.graph.depth and (self.graph.tracked(args) or self.graph.tracked(kwargs)):
            if isinstance(out, torch.Tensor):
                self.graph.function(func, args, kwargs, out)  # (the mode is off here: nothing is recorded twice)
            elif isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out):
                raise self.graph.unsupported(getattr(func, "__qualname__", repr(func)))
            # anything else (x.shape, x.dim(), ...) reads the tensor without computing a blob
        return out


def _trace(module: nn.Module, x: torch.Tensor, model_name: str) -> tuple[_Graph, list[str]]:
    graph = _Graph(model_name)
    names = {m: n for n, m in module.named_modules()}
    stack: list[tuple[nn.Module, torch.Tensor]] = []

    def before(m: nn.Module, inputs: tuple) -> None:
        if not graph.depth:
            if len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor):
                raise graph.unsupported(f"{names.get(m) or type(m).__name__} called with {len(inputs)} inputs")
            stack.append((m, inputs[0]))
        graph.depth += 1

    def after(m: nn.Module, inputs: tuple, out: Any) -> None:
        if graph.depth == 1:  # recorded while depth is still 1: the bookkeeping's own tensor calls are not seen
            _, x_in = stack.pop()
            if not isinstance(out, torch.Tensor):
                raise graph.unsupported(f"{names.get(m)} (it returns {type(out).__name__})")
            graph.module(names.get(m, ""), m, x_in, out)
        graph.depth -= 1

    handles = []
    for m in module.modules():
        if isinstance(m, _LEAVES):
            handles += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]
    graph.new_blob(x)
    try:
        with torch.no_grad(), _Recorder(graph):
            out = module(x)
    finally:
        for h in handles:
            h.remove()
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return graph, [graph.blob(o, "the output") for o in outs]


def _finish(graph: _Graph, outputs: list[str], input_shape: tuple[int, int, int]) -> list[_Layer]:
    """Input layer, activations folded into their convolution, `Split` for blobs with several readers, and the
    blob names in0 / out0.. of the input contract."""
    layers = graph.layers
    readers = Counter(b for layer in layers for b in layer.inputs) + Counter(outputs)
    producer = {layer.outputs[0]: layer for layer in layers}
    folded: list[_Layer] = []
    for layer in layers:
        src = producer.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
        fused = _fused_activation(layer)
        if (fused is not None and src is not None and src.kind in ("Convolution", "ConvolutionDepthWise",
                                                                   "InnerProduct")
                and 9 not in src.params and readers[layer.inputs[0]] == 1):
            src.params.update(fused)
            src.outputs = layer.outputs  # the activation's output is now the convolution's
            continue
        folded.append(layer)
    c, h, w = input_shape
    folded.insert(0, _Layer("Input", "input", [], ["b0"], {0: w, 1: h, 2: c}))
    rename = {"b0": "in0", **{b: f"out{i}" for i, b in enumerate(outputs)}}
    readers = Counter(b for layer in folded for b in layer.inputs) + Counter(outputs)
    result: list[_Layer] = []
    taken: Counter = Counter()
    for layer in folded:
        layer.inputs = [_split_name(b, readers, taken) for b in layer.inputs]
        result.append(layer)
        for b in layer.outputs:
            if readers[b] > 1:
                result.append(_Layer("Split", f"split_{b}", [b], [f"{b}_{i}" for i in range(readers[b])]))
    for b in outputs:  # an output that is also read by a layer is taken from its split too
        if readers[b] > 1:
            rename[f"{b}_{taken[b]}"] = rename.pop(b)
            taken[b] += 1
    for layer in result:
        layer.inputs = [rename.get(b, b) for b in layer.inputs]
        layer.outputs = [rename.get(b, b) for b in layer.outputs]
    return result


def _split_name(blob: str, readers: Counter, taken: Counter) -> str:
    if readers[blob] <= 1:
        return blob
    name = f"{blob}_{taken[blob]}"
    taken[blob] += 1
    return name


def _write(layers: list[_Layer], param: Path, weights: Path) -> None:
    blobs = {b for layer in layers for b in layer.inputs + layer.outputs}
    lines = [str(MAGIC), f"{len(layers)} {len(blobs)}"]
    for layer in layers:
        lines.append(f"{layer.kind:<24} {layer.name:<32} {len(layer.inputs)} {len(layer.outputs)} "
                     + " ".join(layer.inputs + layer.outputs)
                     + (f" {_format_params(layer.params)}" if layer.params else ""))
    with open(weights, "wb") as f:
        for layer in layers:
            for values, tagged in layer.weights:
                if tagged:
                    f.write(_RAW_FLOAT32_TAG)
                f.write(np.ascontiguousarray(values, dtype="<f4").tobytes())
    param.write_text("\n".join(lines) + "\n")


def export_ncnn(model: nn.Module, path: str | Path, input_size: Sequence[int] = (3, 224, 224), *,
                normalize: tuple[Sequence[float], Sequence[float]] | None = None, verify: bool = True,
                atol: float = ONNX_ATOL) -> float | None:
    """Export `model` to ncnn: `path` (the `.param` graph) and the weights beside it (`path` with suffix `.bin`).

    Batch norm is folded first; the graph has the fixed input size `input_size`. With `verify` (the default) the
    written files are loaded with ncnn, run on a random image and compared with the model as given, in eval mode;
    a difference above `atol` (scaled by the output's magnitude when it exceeds 1) raises `BetterConvError` and
    nothing is written. Returns the measured max |ncnn - PyTorch| over the outputs (None without `verify`)."""
    path = Path(path)
    weights_path = path.with_suffix(".bin")
    if weights_path == path:
        raise BetterConvError(f"{path}: the ncnn graph needs a name whose suffix is not .bin (it writes {path} "
                              f"and the weights beside it as .bin)")
    size = check_input_size(input_size)
    norm = check_normalize(normalize, size[0])
    module = prepare_for_export(model, normalize, size[0])
    x = example_input(size, 1, norm is not None)
    name = getattr(model, "model_name", type(model).__name__)
    try:
        graph, outputs = _trace(module, x.clone(), name)
    except BetterConvError:
        raise
    except Exception as e:
        raise BetterConvError(f"ncnn export of {name} failed: {first_line(e)}") from e
    layers = _finish(graph, outputs, size)
    with temporary_path(path) as tmp_param, temporary_path(weights_path) as tmp_weights:
        _write(layers, tmp_param, tmp_weights)
        diff = None
        if verify:
            references = reference_output(model, norm, x, several=True)
            outs = NcnnModel(tmp_param, tmp_weights)(x)
            outs = outs if isinstance(outs, tuple) else (outs,)
            diff = max(check_output(path, f"ncnn (output {i})", got, reference, atol)
                       for i, (got, reference) in enumerate(zip(outs, references, strict=True)))
        os.replace(tmp_weights, weights_path)
        os.replace(tmp_param, path)
    return diff
