"""TensorFlow Lite files (MobileNetV2 and DeepLabv3-MobileNetV2) imported into betterconv's float models.

    tflite_model_config(path)  which builder and keywords fit the file, e.g.
                               ("mobilenet_v2", {"num_classes": 1001, "width_mult": 1.0, "padding": "tf_same"})
    load_tflite(model, path)   dequantised weights onto a model built with that config (in place)
    create_tflite_model(path)  both in one call; returns the model in eval mode

Reading the file is `betterconv.interop.tflite_file`'s part; its names stay importable from here:

    read_tflite(path)          the file's graph: tensors (with their quantisation) and operators in order
    tflite_input(path)         the input the file expects: size, quantisation, and the float tensor that betterconv's
                               model must be given for the *same* image as the interpreter's uint8/int8 input

How weights map. The file's weighted operators (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) are taken in graph
order and paired with the model's `nn.Conv2d` / `nn.Linear` modules in the order its forward pass runs them (a
shape-only pass on the meta device, at the file's input size). Each pair is checked — kernel shape, groups,
stride, dilation, the padding actually applied at that size, input/output shapes and the fused activation — and
the first disagreement raises `BetterConvError` naming the file, the tensor and the module.

Weights are dequantised as real = scale * (q - zero_point): uint8 per-tensor (TF1 quantisation-aware training)
and int8 per-channel along the tensor's quantized dimension (TF2 post-training quantisation); int32 biases use
their own scales; float32/float16 tensors are taken as they are. Batch norm is folded into these files, so the
folded kernel goes into the conv and the following BatchNorm becomes an exact identity plus the folded bias
(weight 1, bias b, running_mean 0, running_var 1 - eps, so that sqrt(var + eps) == 1 in float32).
TF DeepLab concatenates [image pooling, 1x1] while betterconv's ASPP concatenates its branches in the order it
runs them (1x1 first): the projection's input channels are permuted to match, found by tracing the
CONCATENATION's inputs back to the convolutions that produce them.

A corrupt file (bytes flipped or cut off) fails with one `BetterConvError` line naming it: the structure the
mapping relies on is checked first (`_check_graph`: every weighted operator with its input, a constant weight of
the right rank, a bias that fits it, options; weights and biases finite), and anything the graph still gets wrong
deeper in is reported as an inconsistent graph rather than a numpy traceback.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BetterConvError, first_line
from ..layers.conv import Conv2dSame, ConvNormAct, tf_same_pad
from ..models import create_model
from .tflite_file import PASS_THROUGH, TFLiteGraph, TFLiteInput, TFLiteOp, TFLiteTensor, read_tflite, tflite_input

__all__ = [
    "TFLiteGraph", "TFLiteInput", "TFLiteOp", "TFLiteTensor", "create_tflite_model", "load_tflite", "read_tflite",
    "tflite_input", "tflite_model_config",
]

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# operators whose meaning the model's structure already carries; anything else in a file is refused
SUPPORTED = WEIGHTED + ("ADD", "AVERAGE_POOL_2D", "MEAN", "RESIZE_BILINEAR", "CONCATENATION", "RESHAPE", "SQUEEZE",
                        "SOFTMAX", "ARG_MAX", "QUANTIZE", "DEQUANTIZE", "PAD", "RELU", "RELU6")
_SPATIAL_PASS = PASS_THROUGH + ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")  # keep the channels' meaning


# ----------------------------------------------------------------------------------------------------------------
# pairing the file's layers with the model's

@dataclass
class _Layer:
    name: str
    module: nn.Module  # nn.Conv2d or nn.Linear of the real model
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    bn: nn.BatchNorm2d | None
    act: str | None  # "NONE", "RELU", "RELU6", another class name, or None when unknown


def _activation_name(act: nn.Module | None) -> str:
    if act is None or isinstance(act, nn.Identity):
        return "NONE"
    if isinstance(act, nn.ReLU6):
        return "RELU6"
    if isinstance(act, nn.ReLU):
        return "RELU"
    if isinstance(act, nn.Hardtanh) and act.min_val == 0 and act.max_val == 6:
        return "RELU6"
    return type(act).__name__


def _trace(model: nn.Module, size: tuple[int, int, int], where: str) -> list[_Layer]:
    """The model's conv/linear modules in the order forward runs them, with their input and output shapes.

    Runs a copy on the meta device (shapes only), or on the CPU when some operation has no meta kernel."""
    h, w, c = size
    for device in ("meta", "cpu"):
        shadow = copy.deepcopy(model).eval().to(device)
        names = {m: n for n, m in shadow.named_modules()}
        seen: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

        def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen.append((names[mod], tuple(inputs[0].shape), tuple(output.shape)))

        handles = [m.register_forward_hook(hook) for m in shadow.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        try:
            with torch.no_grad():
                shadow(torch.zeros(1, c, h, w, device=device))
        except NotImplementedError:
            continue
        except Exception as e:
            raise BetterConvError(f"{where}: the model does not run at the file's input size {h}x{w}: {first_line(e)}"
                                  ) from None
        finally:
            for handle in handles:
                handle.remove()
        return _layers(model, seen)
    raise BetterConvError(f"{where}: cannot trace the model")  # pragma: no cover


def _layers(model: nn.Module, seen: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> list[_Layer]:
    layers = []
    for name, in_shape, out_shape in seen:
        module = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        bn, act = None, None
        if isinstance(parent, ConvNormAct) and child == "conv":
            bn = getattr(parent, "bn", None)
            act = _activation_name(getattr(parent, "act", None))
            if bn is not None and not isinstance(bn, nn.BatchNorm2d):
                bn = None
        elif isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and not isinstance(parent,
                                                                                                ConvNormAct)):
            act = "NONE" if isinstance(module, nn.Linear) or parent is model else None
        layers.append(_Layer(name, module, in_shape, out_shape, bn, act))
    return layers


def _torch_weight(g: TFLiteGraph, op: TFLiteOp) -> np.ndarray:
    w = g.constant(op.inputs[1])
    if w is None:
        raise BetterConvError(f"{g.where()}: operator {op.index} ({op.kind}) has a non-constant weight tensor "
                              f"{g.tensors[op.inputs[1]].name!r}")
    if op.kind == "CONV_2D":  # [O, KH, KW, I] -> [O, I, KH, KW]
        return w.transpose(0, 3, 1, 2)
    if op.kind == "DEPTHWISE_CONV_2D":  # [1, KH, KW, C * m] -> [C * m, 1, KH, KW]
        return w.transpose(3, 0, 1, 2)
    return w  # FULLY_CONNECTED: [O, I]


def _bias(g: TFLiteGraph, op: TFLiteOp) -> np.ndarray | None:
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return None
    b = g.constant(op.inputs[2])
    if b is None:
        raise BetterConvError(f"{g.where()}: operator {op.index} ({op.kind}) has a non-constant bias tensor "
                              f"{g.tensors[op.inputs[2]].name!r}")
    return b.reshape(-1)


def _model_pads(conv: nn.Conv2d, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) that `conv` applies to an h x w input."""
    if isinstance(conv, Conv2dSame):
        return (*tf_same_pad(h, conv.kernel_size[0], conv.stride[0], conv.dilation[0]),
                *tf_same_pad(w, conv.kernel_size[1], conv.stride[1], conv.dilation[1]))
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return 0, 0, 0, 0
        return (*tf_same_pad(h, conv.kernel_size[0], 1, conv.dilation[0]),
                *tf_same_pad(w, conv.kernel_size[1], 1, conv.dilation[1]))
    ph, pw = conv.padding
    return ph, ph, pw, pw


def _file_pads(g: TFLiteGraph, op: TFLiteOp, kernel: tuple[int, int]) -> tuple[tuple[int, int, int, int], int]:
    """(top, bottom, left, right) the file pads the conv's input with, and the tensor before any PAD op."""
    x = op.inputs[0]
    extra = (0, 0, 0, 0)
    pad = g.producing_op(x)
    if pad is not None and pad.kind == "PAD" and len(pad.inputs) > 1:
        p = g.constant(pad.inputs[1])
        if p is not None and p.shape == (4, 2):
            extra = (int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1]))
            x = pad.inputs[0]
    _, h, w, _ = g.tensors[op.inputs[0]].shape
    if op.options.get("padding") == "SAME":
        sh, sw = op.options["stride"]
        dh, dw = op.options["dilation"]
        t, b = tf_same_pad(h, kernel[0], sh, dh)
        left, r = tf_same_pad(w, kernel[1], sw, dw)
        pads = (t, b, left, r)
    else:
        pads = (0, 0, 0, 0)
    return tuple(a + e for a, e in zip(pads, extra)), x


class _Mismatch(BetterConvError):
    pass


def _check_pair(g: TFLiteGraph, op: TFLiteOp, layer: _Layer, n: int) -> np.ndarray:
    """Check one (operator, module) pair; returns the weight in torch layout for `layer.module`."""
    wname = g.tensors[op.inputs[1]].name.split(";")[0]  # converters join fused tensors' names with ";"
    here = f"{g.where()}: weighted layer {n} (tensor {wname!r}, {op.kind}) vs module {layer.name!r}"
    m = layer.module
    weight = _torch_weight(g, op)
    if isinstance(m, nn.Linear):
        if op.kind != "FULLY_CONNECTED":
            if weight.shape[2:] != (1, 1) or g.tensors[op.inputs[0]].shape[1:3] != (1, 1) or op.kind != "CONV_2D":
                raise _Mismatch(f"{here}: a {tuple(weight.shape)} convolution cannot load into a Linear layer")
            weight = weight.reshape(weight.shape[0], -1)
        if tuple(weight.shape) != tuple(m.weight.shape):
            raise _Mismatch(f"{here}: shape {tuple(weight.shape)} in the file, {tuple(m.weight.shape)} in the model")
    else:
        if op.kind == "FULLY_CONNECTED":
            raise _Mismatch(f"{here}: a FULLY_CONNECTED layer cannot load into a convolution")
        if tuple(weight.shape) != tuple(m.weight.shape):
            raise _Mismatch(f"{here}: shape {tuple(weight.shape)} (OIHW) in the file, {tuple(m.weight.shape)} in "
                            f"the model")
        groups = m.in_channels if op.kind == "DEPTHWISE_CONV_2D" else 1
        if m.groups != groups:
            raise _Mismatch(f"{here}: groups {groups} in the file, {m.groups} in the model")
        for key, ours in (("stride", tuple(m.stride)), ("dilation", tuple(m.dilation))):
            if tuple(op.options[key]) != ours:
                raise _Mismatch(f"{here}: {key} {tuple(op.options[key])} in the file, {ours} in the model (check "
                                f"output_stride)")
        pads, x = _file_pads(g, op, tuple(m.kernel_size))
        _, h, w, _ = g.tensors[x].shape
        ours = _model_pads(m, h, w)
        if pads != ours:
            hint = " (build with padding='tf_same')" if op.options.get("padding") == "SAME" else ""
            raise _Mismatch(f"{here}: the file pads a {h}x{w} input by {pads} (top, bottom, left, right), the model "
                            f"by {ours}{hint}")
        fin, fout = g.tensors[x].shape, g.tensors[op.outputs[0]].shape
        if (fin[1], fin[2]) != tuple(layer.in_shape[2:]) or (fout[1], fout[2]) != tuple(layer.out_shape[2:]):
            raise _Mismatch(f"{here}: maps {fin[1]}x{fin[2]} -> {fout[1]}x{fout[2]} in the file, "
                            f"{layer.in_shape[2]}x{layer.in_shape[3]} -> {layer.out_shape[2]}x{layer.out_shape[3]} "
                            f"in the model")
    act = op.options.get("activation", "NONE")
    if layer.act is not None and act != layer.act:
        raise _Mismatch(f"{here}: activation {act} in the file, {layer.act} in the model")
    return weight


def _concat_order(g: TFLiteGraph, op: TFLiteOp, pair_of: dict[int, int]) -> list[tuple[int, int, int]] | None:
    """For an operator fed by a channel CONCATENATION: [(pair index of the producer, start, stop)] per input in the
    file's order, or None when the input is no concatenation or a part cannot be traced to a weighted layer."""
    _, cat = g.source(op.inputs[0])
    if cat is None or cat.kind != "CONCATENATION":
        return None
    rank = len(g.tensors[cat.outputs[0]].shape)
    if not rank or cat.options.get("axis", -1) % rank != rank - 1:
        return None
    parts, start = [], 0
    for t in cat.inputs:
        channels = g.tensors[t].shape[-1]
        _, producer = g.source(t, _SPATIAL_PASS)
        if producer is None or producer.index not in pair_of:
            return None
        parts.append((pair_of[producer.index], start, start + channels))
        start += channels
    return parts


# what numpy and indexing raise on a graph whose parts disagree with each other (a corrupt file)
_CORRUPT = (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError, AttributeError, RecursionError,
            OverflowError)


@contextlib.contextmanager
def _corrupt_as_error(g: TFLiteGraph) -> Iterator[None]:
    """Report what a corrupt graph breaks deeper in as one `BetterConvError` line naming the file."""
    try:
        yield
    except BetterConvError:
        raise
    except _CORRUPT as e:
        raise BetterConvError(f"{g.where()}: inconsistent TensorFlow Lite graph ({type(e).__name__}: "
                              f"{first_line(e, 120)})") from None


def _check_graph(g: TFLiteGraph) -> None:
    """The structure the mapping relies on, checked before anything is built or written: every weighted operator
    has its input, output and a constant weight of its rank (4-D for convolutions, whose activations are NHWC and
    whose options give stride, dilation and padding; 2-D for FULLY_CONNECTED), any bias has one value per output
    channel, and weights and biases are finite."""
    for op in g.ops:
        where = f"{g.where()}: operator {op.index} ({op.kind})"
        if op.kind == "RESIZE_BILINEAR" and "align_corners" not in op.options:
            raise BetterConvError(f"{where} has no options")
        if op.kind not in WEIGHTED:
            continue
        if len(op.inputs) < 2 or min(op.inputs[:2]) < 0 or not op.outputs:
            raise BetterConvError(f"{where} lacks its input, weight or output tensor")
        rank = 2 if op.kind == "FULLY_CONNECTED" else 4
        try:
            weight, bias = g.constant(op.inputs[1]), _bias(g, op)
        except ValueError as e:
            raise BetterConvError(f"{where}: {first_line(e, 160)}") from None
        name = g.tensors[op.inputs[1]].name.split(";")[0][:60]
        if weight is None or weight.ndim != rank or 0 in weight.shape:
            raise BetterConvError(f"{where}: weight tensor {name!r} is not a constant {rank}-D tensor")
        out = weight.shape[0] if op.kind != "DEPTHWISE_CONV_2D" else weight.shape[3]
        if bias is not None and bias.size != out:
            raise BetterConvError(f"{where}: {bias.size} bias values for {out} output channels")
        for what, values in (("weight", weight), ("bias", bias)):
            if values is not None and not np.isfinite(values).all():
                raise BetterConvError(f"{where}: the {what} of {name!r} holds NaN or infinite values")
        if op.kind != "FULLY_CONNECTED":
            if any(len(g.tensors[t].shape) != 4 for t in (op.inputs[0], op.outputs[0])):
                raise BetterConvError(f"{where}: its input and output are not NHWC tensors")
            opts = op.options
            if not {"padding", "stride", "dilation"} <= opts.keys() or min(*opts["stride"], *opts["dilation"]) < 1:
                raise BetterConvError(f"{where} has missing or invalid options ({opts})")


def _pair(model: nn.Module, g: TFLiteGraph) -> list[tuple[TFLiteOp, _Layer, np.ndarray]]:
    unsupported = sorted({op.kind for op in g.ops if op.kind not in SUPPORTED})
    if unsupported:
        raise BetterConvError(f"{g.where()}: unsupported operator(s) {', '.join(u[:40] for u in unsupported[:8])}")
    _check_graph(g)
    ops = [op for op in g.ops if op.kind in WEIGHTED]
    _, h, w, c = g.tensors[g.inputs[0]].shape
    layers = _trace(model, (h, w, c), g.where())
    pairs = []
    for n, (op, layer) in enumerate(zip(ops, layers)):
        pairs.append((op, layer, _check_pair(g, op, layer, n)))
    if len(ops) != len(layers):
        extra = (f"the first unmatched is tensor {g.tensors[ops[len(layers)].inputs[1]].name.split(';')[0]!r}"
                 if len(ops) > len(layers) else f"the first unmatched is module {layers[len(ops)].name!r}")
        raise _Mismatch(f"{g.where()}: the file has {len(ops)} weighted layers, the model {len(layers)}; {extra}")
    resizes = [op for op in g.ops if op.kind == "RESIZE_BILINEAR"]
    ours = getattr(model, "align_corners", None)
    if resizes and isinstance(ours, bool) and resizes[-1].options["align_corners"] != ours:
        theirs = resizes[-1].options["align_corners"]
        raise _Mismatch(f"{g.where()}: the file resizes its output with align_corners={theirs}, the model with "
                        f"align_corners={ours} (build with align_corners={theirs})")
    # a projection after a concatenation: put its input channels in the model's (execution) order
    pair_of = {op.index: n for n, (op, _, _) in enumerate(pairs)}
    for n, (op, layer, weight) in enumerate(pairs):
        parts = _concat_order(g, op, pair_of)
        if parts is None or weight.ndim < 2:
            continue
        ordered = sorted(parts)
        if ordered != parts:
            index = np.concatenate([np.arange(a, b) for _, a, b in ordered])
            pairs[n] = (op, layer, weight[:, index])
    return pairs


def load_tflite(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a .tflite file's dequantised weights into `model` in place (see the module's docstring); returns it.

    Build the model with `tflite_model_config(path)` (or use `create_tflite_model`). Nothing is written unless
    every layer matches."""
    g = read_tflite(path)
    with _corrupt_as_error(g):
        pairs = _pair(model, g)
        biases = [_bias(g, op) for op, _, _ in pairs]
    with torch.no_grad():
        for (op, layer, weight), bias in zip(pairs, biases):
            m = layer.module
            dev, dtype = m.weight.device, m.weight.dtype
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)).to(dev, dtype))
            if bias is None:
                bias = np.zeros(m.weight.shape[0], np.float32)
            b = torch.from_numpy(np.ascontiguousarray(bias)).to(dev, dtype)
            if layer.bn is not None:
                bn = layer.bn
                if m.bias is not None:
                    m.bias.zero_()
                bn.weight.fill_(1.0)
                bn.bias.copy_(b)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)  # sqrt(var + eps) == 1 exactly in float32
                if bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.zero_()
            elif m.bias is not None:
                m.bias.copy_(b)
            elif bool(np.any(bias)):
                raise BetterConvError(f"{g.where()}: tensor {g.tensors[op.inputs[2]].name!r} is a bias but module "
                                      f"{layer.name!r} has neither a bias nor a batch norm")
    return model


# ----------------------------------------------------------------------------------------------------------------
# which betterconv model fits a file

_MOBILENET_V2_DEPTHWISE = 17  # one per inverted residual block


def tflite_model_config(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The betterconv builder and keyword arguments whose model `load_tflite` fills from this file.

    Recognises MobileNetV2 classifiers (-> "mobilenet_v2") and DeepLabv3 on MobileNetV2 (->
    "deeplabv3_mobilenet_v2"); the width multiplier, output stride, classes, atrous rates, image pooling, padding
    and resize alignment are read from the graph, and the result is verified by building the model and pairing
    every layer. TF DeepLab rounds channels to multiples of 1 (not 8) below width 1: then the keywords carry
    `round_nearest=1`."""
    g = read_tflite(path)
    with _corrupt_as_error(g):
        return _model_config(g)


def _model_config(g: TFLiteGraph) -> tuple[str, dict[str, Any]]:
    _check_graph(g)
    ops = [op for op in g.ops if op.kind in WEIGHTED]
    depthwise = [i for i, op in enumerate(ops) if op.kind == "DEPTHWISE_CONV_2D"]
    stem = ops[0] if ops else None
    if (len(depthwise) != _MOBILENET_V2_DEPTHWISE or stem is None or stem.kind != "CONV_2D"
            or g.tensors[stem.inputs[1]].shape[1:] != (3, 3, 3) or tuple(stem.options["stride"]) != (2, 2)):
        raise BetterConvError(f"{g.where()}: not a MobileNetV2 graph that betterconv knows ({len(ops)} weighted "
                              f"layers, {len(depthwise)} depthwise)")
    backbone_end = depthwise[-1] + 1  # the last block's projection
    if backbone_end >= len(ops):
        raise BetterConvError(f"{g.where()}: a MobileNetV2 graph that ends in a depthwise convolution")
    last = ops[backbone_end]
    width_mult = round(g.tensors[last.inputs[1]].shape[0] / 320, 2)
    padding = "tf_same" if any(op.options.get("padding") == "SAME" for op in ops if op.kind != "FULLY_CONNECTED"
                               and max(g.tensors[op.inputs[1]].shape[1:3]) > 1) else None
    head = ops[backbone_end + 1:]
    kinds = {op.kind for op in g.ops}
    if not head:
        raise BetterConvError(f"{g.where()}: a MobileNetV2 backbone without a classifier or segmentation head")
    segmentation = bool(kinds & {"CONCATENATION", "RESIZE_BILINEAR", "ARG_MAX"}) or (
        head[-1].kind != "FULLY_CONNECTED" and g.tensors[head[-1].outputs[0]].shape[1:3] != (1, 1))
    num_classes = g.tensors[head[-1].inputs[1]].shape[0]
    if segmentation:
        output_stride = 2 ** sum(1 for op in ops[:backbone_end + 1] if tuple(op.options.get("stride", ())) == (2, 2))
        rates = tuple(op.options["dilation"][0] for op in head
                      if op.kind == "CONV_2D" and g.tensors[op.inputs[1]].shape[1] == 3)
        head_ops = g.ops[last.index + 1:]
        image_pooling = any(op.kind in ("AVERAGE_POOL_2D", "MEAN") for op in head_ops)
        resizes = [op for op in head_ops if op.kind == "RESIZE_BILINEAR"]
        align_corners = resizes[-1].options["align_corners"] if resizes else False
        name = "deeplabv3_mobilenet_v2"
        kwargs: dict[str, Any] = dict(num_classes=num_classes, output_stride=output_stride, width_mult=width_mult,
                                      atrous_rates=rates, image_pooling=image_pooling, padding=padding,
                                      align_corners=align_corners)
    else:
        name = "mobilenet_v2"
        kwargs = dict(num_classes=num_classes, width_mult=width_mult, padding=padding)
    errors = []
    for extra in ({}, {"round_nearest": 1}):  # TF's divisible_by=8, or 1 (DeepLab below width 1)
        candidate = {**kwargs, **extra}
        try:
            model = create_model(name, **candidate)
        except BetterConvError as e:
            raise BetterConvError(f"{g.where()}: the graph reads as {name} with {candidate}, which cannot be built "
                                  f"({e})") from None
        try:
            _pair(model, g)
        except _Mismatch as e:
            errors.append(str(e))
            continue
        return name, candidate
    raise BetterConvError(f"no betterconv model fits: {errors[0]}")


def create_tflite_model(path: str | Path) -> nn.Module:
    """Build the model that `tflite_model_config` names, load the file's weights, and return it in eval mode."""
    name, kwargs = tflite_model_config(path)
    return load_tflite(create_model(name, **kwargs), path).eval()
