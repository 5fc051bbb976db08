"""Darknet interop: build a model from a darknet ``.cfg`` file and read/write darknet ``.weights`` files.

`from_darknet(cfg, weights=None)` parses a cfg the way darknet's `read_cfg` does (all whitespace inside a line is
ignored, lines starting with ``#`` or ``;`` are comments, the first value of a repeated key wins, keys that darknet
uses only for training are ignored) and builds the layers that Darknet-19 and YOLOv2 use: ``[net]``,
``[convolutional]``, ``[maxpool]``, ``[avgpool]``, ``[route]``, ``[reorg]``, ``[softmax]`` and ``[region]``.
A key that would change the network but is not implemented (``dilation=2``, ``stride_x``, ``tree=``, ...) is an
error rather than something silently dropped. So is an absurd value: every integer option lies in [its minimum,
65536] (`MAX_OPTION`), and a network of more than 2**28 parameters (`MAX_PARAMS`, 1 GiB of float32) is refused
before anything is allocated. Every error is a one-line `BetterConvError` naming the cfg file and line.

What `DarknetModel.forward` returns:
  * a cfg ending in ``[region]`` (YOLOv2): the region layer's *input*, raw, ``(B, num * (5 + classes), H, W)`` in
    darknet's channel order (per anchor: x, y, w, h, objectness, class scores). Decode it with
    `betterconv.tasks.region.decode_region` using ``model.region``.
  * a cfg ending in ``[softmax]`` (a classifier such as darknet19.cfg): the input of the softmax, i.e. logits;
    ``(B, C)`` when the layer before the softmax is a global ``[avgpool]``, else that layer's 4-D output.
  * any other cfg: the last layer's output.

`.weights` files: int32 major, minor, revision, then ``seen`` as int64 when ``major * 10 + minor >= 2`` (and both
are below 1000), otherwise as int32 (a 20- or a 16-byte header); then, for every ``[convolutional]`` layer in cfg
order: biases (n), and with batch norm scales (n), rolling mean (n), rolling variance (n); then the weights
(n * c / groups * k * k, OIHW). All little-endian float32. `load_darknet_weights` fills a `from_darknet` model or the
native `darknet19`, `yolov2` and `yolov2_tiny` models (their convolutions in darknet order: `darknet_convolutions`);
`save_darknet_weights` writes the same format atomically, so that a load/save round trip is byte-identical. A file
of the wrong size (truncated, or longer than the model) and one holding NaN or infinite values are refused with one
line naming the file (and the tensor).

Batch-norm epsilon: darknet's CPU inference normalises with ``(x - mean) / (sqrt(var) + 1e-6)``, its GPU path (the
one the released weights were trained and evaluated with) with ``(x - mean) / sqrt(var + 1e-5)``. The models here
keep `nn.BatchNorm2d`'s eps = 1e-5, which is darknet's GPU formula exactly and the same as the native betterconv
models, so a `from_darknet` model and a native model loaded from the same file agree to float rounding. Against
darknet's CPU build the two formulas differ by a relative ``~5e-6 / sqrt(var)``: negligible unless a channel's
rolling variance is tiny.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..files import write_atomic
from ..errors import BetterConvError
from ..layers import ConvNormAct, DarknetLeakyReLU, InplaceReLU, Reorg
from ..models.darknet import Darknet, DarknetMaxPool, init_darknet_weights
from ..models import shorten
from ..models.yolov2 import TinyYOLOv2, YOLOv2

__all__ = [
    "MAX_OPTION", "MAX_PARAMS", "CfgSection", "DarknetHeader", "DarknetLayer", "DarknetModel", "DarknetRegion",
    "DarknetRoute", "darknet_convolutions", "from_darknet", "load_darknet_weights", "parse_darknet_cfg",
    "save_darknet_weights",
]

# --- cfg text -----------------------------------------------------------------------------------------------------

MAX_OPTION = 1 << 16  # the largest integer option value accepted (channels, filters, size, stride, classes, ...)
MAX_PARAMS = 1 << 28  # the most learnable parameters a cfg may describe

_ALIASES = {"network": "net", "conv": "convolutional", "max": "maxpool", "avg": "avgpool", "soft": "softmax"}


@dataclass(frozen=True)
class CfgSection:
    """One ``[section]`` of a cfg file: its canonical kind, the line of its header and its ``key=value`` options
    (each with its line)."""

    kind: str
    line: int
    options: dict[str, tuple[str, int]] = field(default_factory=dict)


def parse_darknet_cfg(path: str | Path) -> list[CfgSection]:
    """Sections of a darknet cfg, as darknet's `read_cfg` reads them (whitespace anywhere in a line is dropped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BetterConvError(f"cannot read darknet cfg {path}: {e}") from None
    sections: list[CfgSection] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3 or "]" in line[1:-1]:
                raise _cfg_error(path, number, f"malformed section header {shorten(line)!r}")
            name = line[1:-1].lower()
            sections.append(CfgSection(_ALIASES.get(name, name), number))
        else:
            key, eq, value = line.partition("=")
            if not eq or not key:
                raise _cfg_error(path, number, f"expected key=value or [section], got {shorten(line)!r}")
            if not sections:
                raise _cfg_error(path, number, f"option {key!r} comes before the first [section]")
            sections[-1].options.setdefault(key, (value, number))  # darknet's option_find: first one wins
    if not sections:
        raise BetterConvError(f"darknet cfg {path} has no sections")
    return sections


def _cfg_error(path: Path, line: int, problem: str) -> BetterConvError:
    return BetterConvError(f"darknet cfg {path}, line {line}: {problem}")


_REQUIRED = object()


class _Options:
    """Typed access to one section's options; errors name the file and the line of the key (or of the header)."""

    def __init__(self, path: Path, section: CfgSection) -> None:
        self.path, self.section = path, section

    def error(self, problem: str, key: str | None = None) -> BetterConvError:
        line = self.section.options[key][1] if key in self.section.options else self.section.line
        return _cfg_error(self.path, line, f"[{shorten(self.section.kind, 30)}] {problem}")

    def has(self, key: str) -> bool:
        return key in self.section.options

    def raw(self, key: str, default: object = _REQUIRED) -> str:
        if key in self.section.options:
            return self.section.options[key][0]
        if default is _REQUIRED:
            raise self.error(f"needs {key}=")
        return str(default)

    def integer(self, key: str, default: object = _REQUIRED, minimum: int | None = None,
                maximum: int = MAX_OPTION) -> int:
        text = self.raw(key, default)
        try:
            value = int(text)
        except ValueError:  # also for digits beyond Python's int-from-string limit
            raise self.error(f"{key}={shorten(text)} is not an integer", key) from None
        if minimum is not None and value < minimum:
            raise self.error(f"{key}={value} must be at least {minimum}", key)
        if value > maximum:
            raise self.error(f"{key}={shorten(text)} is larger than {maximum}", key)
        return value

    def number(self, key: str, default: object = _REQUIRED) -> float:
        text = self.raw(key, default)
        try:
            value = float(text)
        except ValueError:
            raise self.error(f"{key}={shorten(text)} is not a number", key) from None
        if not math.isfinite(value):
            raise self.error(f"{key}={shorten(text)} is not a finite number", key)
        return value

    def flag(self, key: str, default: int = 0) -> bool:
        value = self.integer(key, default)
        if value not in (0, 1):
            raise self.error(f"{key}={value} must be 0 or 1", key)
        return bool(value)

    def floats(self, key: str) -> list[float]:
        text = self.raw(key)
        try:
            values = [float(v) for v in text.split(",") if v]
        except ValueError:
            raise self.error(f"{key}={shorten(text)} is not a comma-separated list of numbers", key) from None
        if not all(math.isfinite(v) for v in values):
            raise self.error(f"{key}={shorten(text)} has a value that is not finite", key)
        return values

    def reject(self, unsupported: dict[str, str]) -> None:
        """Keys that darknet honours but this builder does not implement: an error unless at their default."""
        for key, default in unsupported.items():
            if key in self.section.options and self.section.options[key][0] != default:
                raise self.error(f"{key}={shorten(self.section.options[key][0])} is not supported", key)


# --- layers ---------------------------------------------------------------------------------------------------------

class DarknetRoute(nn.Module):
    """darknet's ``[route]``: the outputs of earlier layers (absolute indices), concatenated along channels."""

    def __init__(self, index: int, layers: Sequence[int]) -> None:
        super().__init__()
        self.index, self.layers = index, tuple(layers)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if len(inputs) == 1:
            return inputs[0]
        sizes = {tuple(t.shape[-2:]) for t in inputs}
        if len(sizes) > 1:
            got = ", ".join(f"{tuple(t.shape[-2:])}" for t in inputs)
            raise BetterConvError(f"darknet [route] layer {self.index} joins layers {list(self.layers)} whose "
                                  f"spatial sizes differ for this input: {got}")
        return torch.cat(inputs, dim=1)

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}"


@dataclass(frozen=True)
class DarknetRegion:
    """The ``[region]`` section of a YOLOv2 cfg. Anchors are (width, height) in grid cells."""

    anchors: tuple[tuple[float, float], ...]
    classes: int
    num: int
    coords: int = 4
    softmax: bool = False
    thresh: float = 0.5
    options: dict[str, str] = field(default_factory=dict)  # every key as written, training keys included


@dataclass(frozen=True)
class DarknetLayer:
    """One cfg layer as built: darknet's layer index, section kind, cfg line, output (C, H, W) at the cfg's input
    size, learnable parameters and multiply-adds (convolutions only, like darknet's BFLOPs count)."""

    index: int
    kind: str
    line: int
    out_shape: tuple[int, int, int]
    params: int = 0
    macs: int = 0


class _Built(NamedTuple):
    module: nn.Module | None  # None for the final [region] / [softmax], which forward stops before
    shape: tuple[int, int, int]
    params: int = 0
    macs: int = 0
    region: DarknetRegion | None = None
    softmax_groups: int | None = None


class _State(NamedTuple):
    index: int  # this layer's darknet index
    shape: tuple[int, int, int]  # (C, H, W) of the previous layer's output
    shapes: list[tuple[int, int, int]]  # every earlier layer's output
    params: int = 0  # learnable parameters of the earlier layers


_ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "leaky": DarknetLeakyReLU, "linear": None, "relu": InplaceReLU, "logistic": nn.Sigmoid,
}


def _build_convolutional(opt: _Options, state: _State) -> _Built:
    opt.reject({"stride_x": "-1", "stride_y": "-1", "dilation": "1", "binary": "0", "xnor": "0", "cbn": "0",
                "antialiasing": "0", "share_index": "-1000000000", "sway": "0", "rotate": "0", "stretch": "0",
                "stretch_sway": "0"})
    c, h, w = state.shape
    n = opt.integer("filters", minimum=1)
    size = opt.integer("size", minimum=1)
    stride = opt.integer("stride", 1, minimum=1)
    groups = opt.integer("groups", 1, minimum=1)
    padding = size // 2 if opt.flag("pad") else opt.integer("padding", 0, minimum=0)
    bn = opt.flag("batch_normalize")
    activation = opt.raw("activation", "logistic")  # darknet's default
    if activation not in _ACTIVATIONS:
        raise opt.error(f"activation={shorten(activation)} is not supported (supported: {', '.join(_ACTIVATIONS)})",
                        "activation")
    if c % groups or n % groups:
        raise opt.error(f"groups={groups} must divide both the input channels ({c}) and filters={n}", "groups")
    oh, ow = (h + 2 * padding - size) // stride + 1, (w + 2 * padding - size) // stride + 1
    if oh < 1 or ow < 1:
        raise opt.error(f"a {size}x{size} kernel with padding {padding} does not fit its {h}x{w} input")
    total = state.params + n * (c // groups) * size * size + (2 * n if bn else n)
    if total > MAX_PARAMS:  # checked before allocating: filters=60000 would ask for gigabytes
        raise opt.error(f"filters={n}, size={size} on {c} input channels take the network to {total:,} parameters, "
                        f"more than {MAX_PARAMS:,}", "filters")
    module = ConvNormAct(c, n, size, stride, padding, groups=groups, norm_layer=nn.BatchNorm2d if bn else None,
                         act_layer=_ACTIVATIONS[activation])
    weights = n * (c // groups) * size * size
    return _Built(module, (n, oh, ow), weights + (2 * n if bn else n), weights * oh * ow)


def _build_maxpool(opt: _Options, state: _State) -> _Built:
    opt.reject({"stride_x": opt.raw("stride", "1"), "stride_y": opt.raw("stride", "1"), "maxpool_depth": "0",
                "antialiasing": "0"})
    if not (opt.has("size") or opt.has("stride")):
        raise opt.error("needs size= or stride=")
    c, h, w = state.shape
    stride = opt.integer("stride", 1, minimum=1)
    size = opt.integer("size", stride, minimum=1)
    padding = opt.integer("padding", size - 1, minimum=0)  # darknet's default: size - 1
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    if oh < 1 or ow < 1:
        raise opt.error(f"a {size}x{size} window with padding {padding} does not fit its {h}x{w} input")
    return _Built(DarknetMaxPool(size, stride, padding), (c, oh, ow))


def _build_avgpool(opt: _Options, state: _State) -> _Built:
    return _Built(nn.AdaptiveAvgPool2d(1), (state.shape[0], 1, 1))  # darknet's avgpool is global


def _build_route(opt: _Options, state: _State) -> _Built:
    opt.reject({"groups": "1", "group_id": "0"})
    text = opt.raw("layers")
    try:
        given = [int(v) for v in text.split(",")]
    except ValueError:
        raise opt.error(f"layers={shorten(text)} is not a comma-separated list of integers", "layers") from None
    layers = [state.index + i if i < 0 else i for i in given]
    for i, j in zip(given, layers):
        if not 0 <= j < state.index:
            raise opt.error(f"layers={shorten(text)}: {i} does not name an earlier layer (this is layer {state.index})",
                            "layers")
    shapes = [state.shapes[j] for j in layers]
    if len({s[1:] for s in shapes}) > 1:
        got = ", ".join(f"layer {j}: {s[1]}x{s[2]}" for j, s in zip(layers, shapes))
        raise opt.error(f"layers={shorten(text)} have different spatial sizes ({got})", "layers")
    return _Built(DarknetRoute(state.index, layers), (sum(s[0] for s in shapes), *shapes[0][1:]))


def _build_reorg(opt: _Options, state: _State) -> _Built:
    opt.reject({"reverse": "0", "flatten": "0", "extra": "0"})
    stride = opt.integer("stride", minimum=1)
    c, h, w = state.shape
    if c % (stride * stride) or h % stride or w % stride:
        raise opt.error(f"stride={stride} needs channels divisible by {stride * stride} and a spatial size divisible "
                        f"by {stride}, got {c}x{h}x{w}", "stride")
    return _Built(Reorg(stride), (c * stride * stride, h // stride, w // stride))


def _build_softmax(opt: _Options, state: _State) -> _Built:
    opt.reject({"temperature": "1", "tree": "", "spatial": "0"})
    return _Built(None, state.shape, softmax_groups=opt.integer("groups", 1, minimum=1))


def _build_region(opt: _Options, state: _State) -> _Built:
    opt.reject({"tree": "", "map": "", "background": "0"})
    classes = opt.integer("classes", minimum=1)
    num = opt.integer("num", minimum=1)
    coords = opt.integer("coords", 4)
    if coords != 4:
        raise opt.error(f"coords={coords} is not supported (only 4)", "coords")
    values = opt.floats("anchors")
    if len(values) != 2 * num or not all(v > 0 for v in values):
        raise opt.error(f"anchors= must be {2 * num} positive numbers for num={num}, got {len(values)} values",
                        "anchors")
    c = state.shape[0]
    if c != num * (coords + 1 + classes):
        raise opt.error(f"its input has {c} channels but num={num}, classes={classes} need "
                        f"num * ({coords} + 1 + classes) = {num * (coords + 1 + classes)}")
    region = DarknetRegion(
        anchors=tuple(zip(values[::2], values[1::2])), classes=classes, num=num, coords=coords,
        softmax=opt.flag("softmax"), thresh=opt.number("thresh", 0.5),
        options={k: v for k, (v, _) in opt.section.options.items()})
    return _Built(None, state.shape, region=region)


# section name -> builder; [net] is read separately and must come first
_BUILDERS: dict[str, Callable[[_Options, _State], _Built]] = {
    "convolutional": _build_convolutional,
    "maxpool": _build_maxpool,
    "avgpool": _build_avgpool,
    "route": _build_route,
    "reorg": _build_reorg,
    "softmax": _build_softmax,
    "region": _build_region,
}


# --- the model ----------------------------------------------------------------------------------------------------

class DarknetModel(nn.Module):
    """A network built from a darknet cfg. ``layers[i]`` is darknet's layer ``i`` (so state-dict names read
    ``layers.24.conv.weight``); a final ``[region]`` or ``[softmax]`` is kept as `region` / `softmax_groups`, not run.

    Costs at the cfg's input size, from the cfg's arithmetic: `num_params` (learnable parameters: weights, biases,
    batch-norm scales) and `macs` (convolution multiply-adds; darknet's printed BFLOPs are ``2 * macs / 1e9``,
    `bflops`). `layer_info` has them per layer, with each layer's output shape.
    """

    def __init__(self, cfg_path: str | Path) -> None:
        super().__init__()
        path = Path(cfg_path)
        sections = parse_darknet_cfg(path)
        net, *rest = sections
        if net.kind != "net":
            raise _cfg_error(path, net.line, f"the first section must be [net], got [{net.kind}]")
        opt = _Options(path, net)
        self.cfg_path = str(path)
        self.name = path.stem
        self.in_channels = opt.integer("channels", minimum=1)
        self.input_size = (opt.integer("height", minimum=1), opt.integer("width", minimum=1))
        self.layers = nn.ModuleList()
        self.layer_info: list[DarknetLayer] = []
        self.region: DarknetRegion | None = None
        self.softmax_groups: int | None = None
        self.num_classes: int | None = None
        shape = (self.in_channels, *self.input_size)
        shapes: list[tuple[int, int, int]] = []
        params = 0
        end: CfgSection | None = None
        for index, section in enumerate(rest):
            if end is not None:
                raise _cfg_error(path, section.line, f"[{shorten(section.kind, 30)}] after [{end.kind}] (line "
                                                     f"{end.line}) is not supported: [region] and [softmax] must be "
                                                     f"the last layer")
            builder = _BUILDERS.get(section.kind)
            if builder is None:
                problem = ("[net] must be the first section only" if section.kind == "net" else
                           f"unsupported section [{shorten(section.kind, 30)}] (supported: {', '.join(_BUILDERS)})")
                raise _cfg_error(path, section.line, problem)
            built = builder(_Options(path, section), _State(index, shape, shapes, params))
            params += built.params
            if built.module is None:
                end = section
                self.region = built.region or self.region
                self.softmax_groups = built.softmax_groups or self.softmax_groups
            else:
                self.layers.append(built.module)
            shape = built.shape
            shapes.append(shape)
            self.layer_info.append(DarknetLayer(index, section.kind, section.line, shape, built.params, built.macs))
        if not self.layers:
            raise BetterConvError(f"darknet cfg {path} has no layers to build")
        self.out_shape = shapes[len(self.layers) - 1]  # (C, H, W) that forward returns at the cfg's input size
        self.num_params = sum(info.params for info in self.layer_info)
        self.macs = sum(info.macs for info in self.layer_info)
        self._keep = frozenset(j for m in self.layers if isinstance(m, DarknetRoute) for j in m.layers)
        self._flatten = self.softmax_groups is not None and isinstance(self.layers[-1], nn.AdaptiveAvgPool2d)
        if self.region is not None:
            self.register_buffer("anchors", torch.tensor(self.region.anchors, dtype=torch.float32))  # (A, 2)
            self.num_classes, self.num_anchors = self.region.classes, self.region.num
        elif self.softmax_groups is not None:
            self.num_classes = self.out_shape[0]
        init_darknet_weights(self)

    @property
    def bflops(self) -> float:
        return 2 * self.macs / 1e9

    def convolutions(self) -> list[ConvNormAct]:
        """The `[convolutional]` layers in cfg order: the order of a .weights file."""
        return [m for m in self.layers if isinstance(m, ConvNormAct)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise BetterConvError(f"{self.name} expects a (B, {self.in_channels}, H, W) input, got {tuple(x.shape)}")
        size = tuple(x.shape[-2:])
        outputs: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, DarknetRoute):
                x = layer([outputs[j] for j in layer.layers])
            elif isinstance(layer, Reorg):
                if x.shape[1] % layer.stride**2 or x.shape[-2] % layer.stride or x.shape[-1] % layer.stride:
                    c, h, w = x.shape[1:]
                    raise BetterConvError(f"{self.name}: layer {i} ([reorg] stride={layer.stride}) cannot split its "
                                          f"{c}x{h}x{w} input, so a {size[0]}x{size[1]} input does not fit this cfg")
                x = layer(x)
            else:
                x = layer(x)
            if i in self._keep:
                outputs[i] = x
        # region cfgs: (B, num*(5+classes), H, W), the region layer's raw input; classifiers: logits
        return x.flatten(1) if self._flatten else x

    def extra_repr(self) -> str:
        return f"cfg={self.cfg_path!r}, input={self.in_channels}x{self.input_size[0]}x{self.input_size[1]}"


def from_darknet(cfg_path: str | Path, weights_path: str | Path | None = None) -> DarknetModel:
    """Build the network a darknet cfg describes; with `weights_path`, load a darknet .weights file into it.
    The model is returned in training mode, like any freshly built module; call `.eval()` for inference."""
    model = DarknetModel(cfg_path)
    if weights_path is not None:
        load_darknet_weights(model, weights_path)
    return model


# --- .weights ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DarknetHeader:
    """A .weights file's header. ``seen`` (images trained on) is an int64 when ``major * 10 + minor >= 2``."""

    major: int
    minor: int
    revision: int
    seen: int

    @property
    def version(self) -> tuple[int, int, int]:
        return self.major, self.minor, self.revision

    @property
    def size(self) -> int:
        return 20 if _seen_is_int64(self.major, self.minor) else 16


def _seen_is_int64(major: int, minor: int) -> bool:
    return major * 10 + minor >= 2 and major < 1000 and minor < 1000  # darknet's load_weights_upto


def darknet_convolutions(model: nn.Module) -> list[nn.Module]:
    """`model`'s convolutions in the order of a darknet .weights file: `ConvNormAct` modules, or a bare `nn.Conv2d`
    for a native model's linear prediction convolution."""
    if isinstance(model, DarknetModel):
        return list(model.convolutions())
    if isinstance(model, YOLOv2):
        # yolov2-voc.cfg: layers 0-22 Darknet-19 body, 23-24 head, 26 passthrough 1x1 (after the head), 29 fuse, 30
        if model.passthrough is None or model.scales != 1:
            raise BetterConvError("darknet weights map onto yolov2 as yolov2-voc.cfg builds it: with passthrough and "
                                  "one prediction scale")
        return [*_darknet_body(model.backbone), *model.head, model.passthrough[0], model.fuse, model.pyramid.pred]
    if isinstance(model, TinyYOLOv2):
        # yolov2-tiny-voc.cfg: body, maxpool 2x2/1, conv 1024, conv 1024, linear conv
        return [*_darknet_body(model.backbone), model.head[1], model.head[2], model.pred]
    if isinstance(model, Darknet):
        # darknet19.cfg: body, then the linear 1x1 classifier conv (absent when built with num_classes=None)
        return [*_darknet_body(model), *([model.head] if model.head is not None else [])]
    raise BetterConvError(f"cannot map darknet weights onto a {type(model).__name__}; supported: from_darknet models, "
                          f"darknet19, yolov2, yolov2_tiny")


def _darknet_body(body: Darknet) -> list[nn.Module]:
    # stem, then every stage's convolutions in order (each stage is maxpool, conv, conv, ...)
    return [body.stem, *(m for stage in body.stages for m in stage if isinstance(m, ConvNormAct))]


def _conv_and_norm(module: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    if isinstance(module, nn.Conv2d):
        conv, bn = module, None
    else:
        conv, bn = module.conv, getattr(module, "bn", None)
    if bn is None and conv.bias is None:
        raise BetterConvError("a darknet convolution without batch norm needs a bias")
    return conv, bn


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    """The tensors a .weights file stores for one convolution, in file order."""
    conv, bn = _conv_and_norm(module)
    if bn is None:
        return [conv.bias, conv.weight]
    return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]


def _describe(model: nn.Module, convs: list[nn.Module]) -> str:
    name = getattr(model, "cfg_path", None) or type(model).__name__
    return f"{name}'s {len(convs)} convolutions"


def load_darknet_weights(model: nn.Module, path: str | Path) -> DarknetHeader:
    """Fill `model` (a `from_darknet` model, or a native darknet19 / yolov2 / yolov2_tiny) from a darknet .weights
    file. The file must hold exactly the values the model's convolutions need (its size is checked before the
    values are read), all finite; nothing is written into the model otherwise. Returns the file's header."""
    path = Path(path)
    convs = darknet_convolutions(model)
    tensors = [t for m in convs for t in _tensors(m)]
    expected = sum(t.numel() for t in tensors)
    try:
        with open(path, "rb") as f:
            head = f.read(20)
            length = f.seek(0, 2)
            if len(head) < 12:
                raise BetterConvError(f"darknet weights {path} is {length} bytes, too short for a header")
            major, minor, revision = struct.unpack_from("<3i", head, 0)
            wide = _seen_is_int64(major, minor)
            size = 20 if wide else 16
            if length < size:
                raise BetterConvError(f"darknet weights {path} is {length} bytes, too short for its {size}-byte "
                                      f"header")
            found, extra = divmod(length - size, 4)
            if found != expected or extra:  # before reading: a truncated or a 10 GB file alike
                tail = f" and {extra} stray bytes" if extra else ""
                raise BetterConvError(f"darknet weights {path} has the wrong size for {_describe(model, convs)}: "
                                      f"expected {expected} float32 values after its {size}-byte header, found "
                                      f"{found}{tail}")
            f.seek(size)
            data = f.read()
    except OSError as e:
        raise BetterConvError(f"cannot read darknet weights {path}: {e.strerror or e}") from None
    (seen,) = struct.unpack_from("<Q" if wide else "<i", head, 12)
    header = DarknetHeader(major, minor, revision, seen)
    if len(data) != 4 * expected:  # the file changed while it was read
        raise BetterConvError(f"darknet weights {path} changed while it was read")
    values = np.frombuffer(data, dtype="<f4")
    names = {id(t): name for name, t in model.state_dict(keep_vars=True).items()}
    offset = 0
    for t in tensors:
        chunk = values[offset:offset + t.numel()]
        if not np.isfinite(chunk).all():
            bad = int(chunk.size - np.isfinite(chunk).sum())
            raise BetterConvError(f"darknet weights {path}: {bad} NaN or infinite value(s) for tensor "
                                  f"{names.get(id(t), '?')!r} (float32 values {offset} to {offset + t.numel() - 1})")
        offset += t.numel()
    offset = 0
    with torch.no_grad():
        for t in tensors:
            chunk = values[offset:offset + t.numel()].reshape(t.shape)
            t.copy_(torch.from_numpy(chunk.astype(np.float32)))  # astype copies: frombuffer arrays are read-only
            offset += t.numel()
    return header


def save_darknet_weights(model: nn.Module, path: str | Path, header: Sequence[int] = (0, 2, 0),
                         seen: int = 0) -> None:
    """Write `model`'s convolutions as a darknet .weights file (atomically). `header` is (major, minor, revision);
    ``seen`` is written as int64 when ``major * 10 + minor >= 2`` (darknet's own files use (0, 2, 0)), else int32.
    Saving with the header `load_darknet_weights` returned reproduces the file byte for byte."""
    if len(header) != 3 or not all(isinstance(v, int) and -2**31 <= v < 2**31 for v in header):
        raise BetterConvError(f"darknet header must be three int32 values (major, minor, revision), got {header!r}")
    major, minor, revision = header
    wide = _seen_is_int64(major, minor)
    if not isinstance(seen, int) or not 0 <= seen < (2**64 if wide else 2**31):
        raise BetterConvError(f"darknet seen={seen!r} does not fit this header's {'int64' if wide else 'int32'}")
    convs = darknet_convolutions(model)
    parts = [struct.pack("<3i", major, minor, revision), struct.pack("<Q" if wide else "<i", seen)]
    for m in convs:
        for t in _tensors(m):
            parts.append(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes())
    write_atomic(Path(path), b"".join(parts))
