"""TensorFlow Lite files read without TensorFlow: the graph (tensors, their quantisation, operators) and its input.

    read_tflite(path)          the file's first subgraph as a `TFLiteGraph`: `TFLiteTensor`s (constant contents
                               reshaped, quantisation parameters) and `TFLiteOp`s in execution order, with the
                               builtin options betterconv reads (padding, stride, dilation, fused activation, ...)
    tflite_input(path)         the input the file expects (`TFLiteInput`): size, quantisation, and the float tensor
                               that betterconv's model must be given for the *same* image as the interpreter's
                               uint8/int8 input

The flatbuffer is parsed with the `tflite` package (generated from TensorFlow's schema). Constant tensors are
dequantised as real = scale * (q - zero_point): per tensor, or per channel along the tensor's quantized dimension;
float32/float16 tensors are taken as they are. A missing, non-TFLite or corrupt file (bytes flipped or cut off: an
operator naming a tensor the file does not have, a constant whose data does not fill its shape, a negative
dimension), or one without a single NHWC image input, raises one `BetterConvError` line naming the file. Mapping
the graph onto a betterconv model is `betterconv.interop.tflite`'s part.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BetterConvError, first_line
from ..models import shorten

__all__ = ["PASS_THROUGH", "TFLiteGraph", "TFLiteInput", "TFLiteOp", "TFLiteTensor", "read_tflite", "tflite_input"]

# tflite schema enums
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
           9: np.int8}
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PADDINGS = {0: "SAME", 1: "VALID"}

PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE")  # operators that change the number format only


# ----------------------------------------------------------------------------------------------------------------
# the graph

@dataclass
class TFLiteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any  # numpy scalar type, None when the schema type is not one betterconv reads
    data: np.ndarray | None  # constant contents (already reshaped), None for activations
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int = 0  # quantized dimension for per-channel parameters

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0

    def dequantize(self) -> np.ndarray:
        """The real values of a constant tensor: scale * (q - zero_point), per tensor or per channel."""
        if self.data is None:
            raise ValueError(f"tensor {self.name!r} is not a constant")
        with np.errstate(all="ignore"):  # a corrupt file's NaN or huge scales are refused by the caller
            return self._dequantize()

    def _dequantize(self) -> np.ndarray:
        if not self.quantized or self.data.dtype.kind == "f":
            return self.data.astype(np.float32)
        scale = self.scale.astype(np.float64)
        zero = self.zero_point.astype(np.float64) if self.zero_point is not None and self.zero_point.size else 0.0
        if np.size(zero) not in (1, scale.size):
            raise ValueError(f"tensor {self.name[:60]!r} has {scale.size} scales but {np.size(zero)} zero points")
        if scale.size == 1:  # per tensor
            scale, zero = float(scale[0]), float(np.reshape(zero, -1)[0])
        else:  # per channel
            if not 0 <= self.axis < self.data.ndim or self.data.shape[self.axis] != scale.size:
                raise ValueError(f"tensor {self.name[:60]!r} of shape {self.data.shape} has {scale.size} scales "
                                 f"along dimension {self.axis}")
            shape = [1] * self.data.ndim
            shape[self.axis] = scale.size
            scale = scale.reshape(shape)
            if np.size(zero) == 1:
                zero = float(np.reshape(zero, -1)[0])
            zero = np.reshape(zero, shape) if np.ndim(zero) else zero  # a size mismatch: ValueError
        return ((self.data.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class TFLiteOp:
    index: int
    kind: str  # builtin operator name, e.g. "CONV_2D"
    inputs: tuple[int, ...]  # tensor indices (-1: optional input absent)
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    path: Path
    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]
    inputs: list[int]
    outputs: list[int]
    description: str = ""

    def __post_init__(self) -> None:
        self.producer = {t: op.index for op in self.ops for t in op.outputs}

    def producing_op(self, tensor: int) -> TFLiteOp | None:
        i = self.producer.get(tensor)
        return None if i is None else self.ops[i]

    def constant(self, tensor: int) -> np.ndarray | None:
        """Real values of a constant input, also through a DEQUANTIZE of a constant (float16/int8 weight files)."""
        for _ in range(len(self.ops) + 1):  # a corrupt file may chain DEQUANTIZEs in a circle
            if tensor < 0:
                return None
            t = self.tensors[tensor]
            if t.data is not None:
                return t.dequantize()
            op = self.producing_op(tensor)
            if op is None or op.kind != "DEQUANTIZE" or not op.inputs:
                return None
            tensor = op.inputs[0]
        raise BetterConvError(f"{self.where()}: corrupt TensorFlow Lite file (DEQUANTIZE operators form a cycle)")

    def source(self, tensor: int, through: tuple[str, ...] = PASS_THROUGH) -> tuple[int, TFLiteOp | None]:
        """Follow `tensor` back through operators in `through`; returns the tensor reached and its producer."""
        op = self.producing_op(tensor)
        for _ in range(len(self.ops) + 1):  # a corrupt file may connect operators in a circle
            if op is None or op.kind not in through or not op.inputs:
                return tensor, op
            tensor = op.inputs[0]
            op = self.producing_op(tensor)
        raise BetterConvError(f"{self.where()}: corrupt TensorFlow Lite file (operators form a cycle)")

    def where(self) -> str:
        return self.path.name


# ----------------------------------------------------------------------------------------------------------------
# reading the flatbuffer

def _import_tflite():
    try:
        import tflite  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - the package is a dependency
        raise BetterConvError("reading .tflite files needs the 'tflite' package: pip install tflite") from None
    return tflite


def _options(tfl, op, kind: str) -> dict[str, Any]:
    table = op.BuiltinOptions()
    if table is None:
        return {}

    def init(cls):
        o = cls()
        o.Init(table.Bytes, table.Pos)
        return o

    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = init(tfl.Conv2DOptions if kind == "CONV_2D" else tfl.DepthwiseConv2DOptions)
        out = dict(padding=_PADDINGS.get(o.Padding(), str(o.Padding())), stride=(o.StrideH(), o.StrideW()),
                   dilation=(o.DilationHFactor(), o.DilationWFactor()),
                   activation=_ACTIVATIONS.get(o.FusedActivationFunction(), str(o.FusedActivationFunction())))
        if kind == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = init(tfl.Pool2DOptions)
        return dict(padding=_PADDINGS.get(o.Padding()), stride=(o.StrideH(), o.StrideW()),
                    filter=(o.FilterHeight(), o.FilterWidth()),
                    activation=_ACTIVATIONS.get(o.FusedActivationFunction()))
    if kind == "FULLY_CONNECTED":
        o = init(tfl.FullyConnectedOptions)
        return dict(activation=_ACTIVATIONS.get(o.FusedActivationFunction()))
    if kind == "ADD":
        o = init(tfl.AddOptions)
        return dict(activation=_ACTIVATIONS.get(o.FusedActivationFunction()))
    if kind == "CONCATENATION":
        o = init(tfl.ConcatenationOptions)
        return dict(axis=o.Axis(), activation=_ACTIVATIONS.get(o.FusedActivationFunction()))
    if kind == "RESIZE_BILINEAR":
        o = init(tfl.ResizeBilinearOptions)
        return dict(align_corners=bool(o.AlignCorners()), half_pixel_centers=bool(o.HalfPixelCenters()))
    if kind == "MEAN":
        o = init(tfl.ReducerOptions)
        return dict(keep_dims=bool(o.KeepDims()))
    return {}


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse a .tflite file (its first subgraph). Missing, non-TFLite or corrupt files raise `BetterConvError`."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise BetterConvError(f"{path}: cannot read the file ({e.strerror or e.__class__.__name__})") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise BetterConvError(f"{path}: not a TensorFlow Lite file (no 'TFL3' identifier)")
    tfl = _import_tflite()
    names = tfl.BUILTIN_OPCODE2NAME
    try:
        model = tfl.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        sg = model.Subgraphs(0)
        tensors: list[TFLiteTensor] = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            dtype = _DTYPES.get(t.Type())
            data = None
            b = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
            if b is not None and dtype is not None:
                raw = None
                if b.DataLength():
                    raw = b.DataAsNumpy().tobytes()
                elif b.Offset() > 1:  # large models keep buffers after the flatbuffer
                    raw = buf[b.Offset():b.Offset() + b.Size()]
                if raw:
                    data = np.frombuffer(raw, dtype=dtype).reshape(shape)
            scale = zero = None
            axis = 0
            q = t.Quantization()
            if q is not None and q.ScaleLength():
                scale = q.ScaleAsNumpy().astype(np.float32)
                zero = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(1, np.int64)
                axis = q.QuantizedDimension()
            tensors.append(TFLiteTensor(i, t.Name().decode("utf-8", "replace"), shape, dtype, data, scale, zero,
                                        axis))
        ops: list[TFLiteOp] = []
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            kind = names.get(builtin, f"BUILTIN_{builtin}")
            if kind == "CUSTOM":
                kind = f"CUSTOM:{(code.CustomCode() or b'').decode('utf-8', 'replace')}"
            ops.append(TFLiteOp(k, kind, tuple(int(i) for i in op.InputsAsNumpy()),
                                tuple(int(i) for i in op.OutputsAsNumpy()), _options(tfl, op, kind)))
        graph = TFLiteGraph(path, tensors, ops, [int(i) for i in sg.InputsAsNumpy()],
                            [int(i) for i in sg.OutputsAsNumpy()],
                            (model.Description() or b"").decode("utf-8", "replace"))
    except BetterConvError:
        raise
    except Exception as e:  # flatbuffers reports corruption as IndexError, struct.error, ...
        raise BetterConvError(f"{path}: corrupt or truncated TensorFlow Lite file ({e.__class__.__name__}: "
                              f"{first_line(e, 80)})") from None
    _check_structure(graph)
    if len(graph.inputs) != 1 or len(graph.tensors[graph.inputs[0]].shape) != 4:
        raise BetterConvError(f"{path}: expected one NHWC image input, found inputs "
                              f"{[graph.tensors[i].shape for i in graph.inputs][:4]}")
    return graph


def _check_structure(g: TFLiteGraph) -> None:
    """Every tensor index an operator or the graph names exists (-1, an absent optional input, only among an
    operator's inputs) and no dimension is negative: what a flipped byte breaks first."""
    n = len(g.tensors)
    for t in g.tensors:
        if any(d < 0 for d in t.shape):
            raise BetterConvError(f"{g.path}: corrupt TensorFlow Lite file (tensor {t.index} has shape "
                                  f"{shorten(str(t.shape))})")
    for op in g.ops:
        bad = [i for i in op.inputs if not -1 <= i < n] + [i for i in op.outputs if not 0 <= i < n]
        if bad:
            raise BetterConvError(f"{g.path}: corrupt TensorFlow Lite file (operator {op.index}, {op.kind[:40]}, "
                                  f"names tensor {bad[0]} of {n})")
    bad = [i for i in g.inputs + g.outputs if not 0 <= i < n]
    if bad:
        raise BetterConvError(f"{g.path}: corrupt TensorFlow Lite file (the graph names tensor {bad[0]} of {n})")


def _graph(path_or_graph: str | Path | TFLiteGraph) -> TFLiteGraph:
    return path_or_graph if isinstance(path_or_graph, TFLiteGraph) else read_tflite(path_or_graph)


# ----------------------------------------------------------------------------------------------------------------
# the input

@dataclass(frozen=True)
class TFLiteInput:
    """The image input of a .tflite file and the float input that betterconv's imported model takes for it.

    The interpreter takes RGB pixels (N, H, W, 3): uint8 files the pixels as they are, int8 files pixels - 128,
    float files pixels / 127.5 - 1. betterconv's model takes the same numbers dequantised, in NCHW:
    `scale * (q - zero_point)` — for the Coral MobileNet files (scale 1/128, zero point 128) that is
    (pixels - 128) / 128, TensorFlow's `pixels / 127.5 - 1` to within one quantisation step.
    """

    height: int
    width: int
    channels: int
    dtype: Any  # numpy type of the interpreter's input
    scale: float  # 1.0 and 0 for float inputs
    zero_point: int

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def load_image(self, image: str | Path | Any) -> np.ndarray:
        """An image file or PIL image -> (H, W, 3) uint8 RGB at the file's size (PIL Lanczos, as Coral's examples)."""
        from PIL import Image

        img = image if isinstance(image, Image.Image) else Image.open(image)
        img = img.convert("RGB")
        if img.size != (self.width, self.height):
            img = img.resize((self.width, self.height), Image.LANCZOS)
        return np.asarray(img, dtype=np.uint8)

    def interpreter_input(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) or (N, H, W, 3) uint8 pixels -> the array to give the interpreter."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            raise BetterConvError(f"expected uint8 pixels, got {pixels.dtype}")
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.shape[1:] != (self.height, self.width, self.channels):
            raise BetterConvError(f"expected pixels of shape (N, {self.height}, {self.width}, {self.channels}), "
                                  f"got {tuple(pixels.shape)}")
        if self.dtype == np.uint8:
            return pixels
        if self.dtype == np.int8:
            return (pixels.astype(np.int16) - 128).astype(np.int8)
        return (pixels.astype(np.float32) / 127.5 - 1.0).astype(self.dtype)

    def to_float(self, pixels: np.ndarray) -> torch.Tensor:
        """(H, W, 3) or (N, H, W, 3) uint8 pixels -> betterconv's input (N, 3, H, W) float32: the interpreter's
        input, dequantised."""
        q = self.interpreter_input(pixels)
        x = q.astype(np.float32) if q.dtype.kind == "f" else (
            (q.astype(np.float64) - self.zero_point) * self.scale).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def tflite_input(path: str | Path | TFLiteGraph) -> TFLiteInput:
    """Size and quantisation of the file's image input (see `TFLiteInput`)."""
    g = _graph(path)
    t = g.tensors[g.inputs[0]]
    _, h, w, c = t.shape
    if min(h, w, c) < 1:
        raise BetterConvError(f"{g.where()}: the image input {t.name[:60]!r} has shape {t.shape}")
    if t.dtype in (np.uint8, np.int8):
        if not t.quantized:
            raise BetterConvError(f"{g.where()}: the {np.dtype(t.dtype).name} input {t.name[:60]!r} has no "
                                  f"quantisation")
        scale = float(t.scale[0])
        if not (np.isfinite(scale) and scale > 0) or t.zero_point is None or not t.zero_point.size:
            raise BetterConvError(f"{g.where()}: the input {t.name[:60]!r} has an unusable quantisation (scale "
                                  f"{scale})")
        return TFLiteInput(h, w, c, t.dtype, scale, int(t.zero_point[0]))
    if t.dtype in (np.float32, np.float16):
        return TFLiteInput(h, w, c, t.dtype, 1.0, 0)
    raise BetterConvError(f"{g.where()}: unsupported input type {t.dtype} of tensor {t.name!r}")
