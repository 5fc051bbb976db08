"""Static int8 quantisation of an exported ONNX graph with onnxruntime.

`quantize_onnx_static` writes a QDQ graph (QuantizeLinear/DequantizeLinear pairs around each quantised operator,
which onnxruntime runs with int8 kernels): weights int8 per output channel, activations int8 per tensor with
ranges measured (min/max) on calibration images. The int8 graph keeps the float graph's input and output: the same
input contract (see `betterconv.deploy.export`) and float outputs.

By default the output of the layer that computes the graph's outputs (the classifier's Gemm, a segmentation head's
last convolution and the resizing after it, a detector's prediction convolution) stays float; its weights and
inputs are int8 like the rest. Its output is logits, and an int8 output tensor gets one scale for all of them: when
the logits span hundreds, one quantisation step can exceed the gap between the two largest logits and change the
top-1 (measured in docs/deployment.md).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import IMAGE_EXTENSIONS, open_image
from ..errors import BetterConvError, first_line
from .checks import temporary_path
from .export import onnx_session, run_onnx

__all__ = ["IMAGE_SUFFIXES", "QuantizationReport", "calibration_images", "load_image", "output_layer_nodes",
           "quantize_onnx_static"]

IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # the old name, kept for the modules that still import it from here


# operators that only move, reshape or resample values: walking back from a graph output through these reaches the
# layer that computes it
_PASS_THROUGH = frozenset({"Resize", "Upsample", "Flatten", "Reshape", "Transpose", "Identity", "Squeeze",
                           "Unsqueeze", "Concat", "Split", "Slice"})


def output_layer_nodes(model: Any) -> list[str]:
    """Names of the nodes of an ONNX `model` that compute its outputs: walking back from each graph output along the
    data through pass-through operators (resize, reshape, concat ...) to the first node that computes (Gemm, Conv,
    MatMul ...), which is included. Nodes without a name are skipped (the quantised graph is matched by name)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found: list[str] = []
    stack = [o.name for o in model.graph.output]
    seen: set[str] = set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.name:
            found.append(node.name)
        if node.op_type in _PASS_THROUGH:  # the data: every input of a Concat, the first of the others
            stack.extend(node.input if node.op_type == "Concat" else node.input[:1])
    return found


def _dequantize_outputs(model: Any, layer_nodes: Sequence[str]) -> None:
    """Drop, in place, the QuantizeLinear -> DequantizeLinear pairs that the QDQ quantiser put on the outputs of
    `layer_nodes` (`output_layer_nodes` of the float graph, whose names the quantiser keeps): their consumers and
    the graph's outputs then read the float tensors. Weights and inputs of those nodes stay int8."""
    graph = model.graph
    names, graph_outputs = set(layer_nodes), {o.name for o in graph.output}
    produced = {out for node in graph.node if node.name in names for out in node.output}
    rename: dict[str, str] = {}  # a DequantizeLinear's output -> the float tensor it stood for
    drop: list[Any] = []
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in produced]:
        readers = [n for n in graph.node if q.output[0] in n.input]
        dqs = [n for n in readers if n.op_type == "DequantizeLinear"]
        for dq in dqs:
            rename[dq.output[0]] = q.input[0]
            drop.append(dq)
        if len(dqs) == len(readers) and q.output[0] not in graph_outputs:
            drop.append(q)
    for out in graph.output:  # a graph output keeps its name: the float tensor is renamed to it
        float_name = rename.pop(out.name, None)
        if float_name is None:
            continue
        for node in graph.node:
            node.output[:] = [out.name if t == float_name else t for t in node.output]
            node.input[:] = [out.name if t == float_name else t for t in node.input]
        rename = {k: out.name if v == float_name else v for k, v in rename.items()}
    dropped = {id(n) for n in drop}
    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        node.input[:] = [rename.get(t, t) for t in node.input]
    del graph.node[:]
    graph.node.extend(kept)


@dataclass(frozen=True)
class QuantizationReport:
    """int8 against float on the calibration images: how many, the largest |output difference|, and the share of
    positions (images for a classifier, pixels for a segmentation map) whose argmax over channels agrees."""

    images: int
    max_abs_diff: float
    top1_agreement: float

    def format(self) -> str:
        return (f"int8 vs float on {self.images} calibration image(s): max |diff| {self.max_abs_diff:.4g}, "
                f"top-1 agreement {100 * self.top1_agreement:.1f}%")


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An image file -> (3, H, W) float32 RGB in [0, 1]: scaled (bilinear) so that it covers H x W, then cropped
    to H x W around the centre. A missing or unreadable file raises `BadSampleError` naming it."""
    from PIL import Image

    h, w = size
    img = open_image(path, mode="RGB")
    scale = max(h / img.height, w / img.width)
    rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((rw, rh), Image.BILINEAR)
    left, top = (rw - w) // 2, (rh - h) // 2
    img = img.crop((left, top, left + w, top + h))
    return np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def calibration_images(files: Iterable[str | Path], size: tuple[int, int],
                       normalize: tuple[Sequence[float], Sequence[float]] | None = None) -> list[np.ndarray]:
    """Calibration inputs for a graph of input size `size` (H, W): each file as `load_image` gives it ([0, 1]),
    then ``(x - mean) / std`` when `normalize` is given (for a graph exported without normalisation)."""
    images = [load_image(f, size) for f in files]
    if normalize is not None:
        mean = np.asarray(normalize[0], dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(normalize[1], dtype=np.float32).reshape(-1, 1, 1)
        images = [(x - mean) / std for x in images]
    return images


class _DropPreprocessingHint(logging.Filter):
    """onnxruntime's quantiser logs (through Python's root logger) a hint to run its shape-inference/optimisation
    pre-pass; the exported graph has batch norm folded and its shapes known already (the pre-pass changed nothing on
    MobileNetV2), so the hint is dropped. So are its notes on initializers it removes or biases it leaves float:
    remarks on the graph's bookkeeping, not on the result, which the report checks."""

    _NOISE = ("pre-processing", "Removing initializer", "to be an initializer")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self._NOISE)


# onnxruntime's native logger: 2 = warnings (its default), 3 = errors only
_ORT_WARNING, _ORT_ERROR = 2, 3


def _batches(images: list[np.ndarray], batch: int) -> list[np.ndarray]:
    return [np.concatenate(images[i:i + batch]) for i in range(0, len(images), batch)]


def _as_inputs(images: Iterable[Any], shape: Sequence[Any], where: str) -> list[np.ndarray]:
    """Each calibration item as a float32 (1, C, H, W) array matching the graph's input shape."""
    out = []
    for i, item in enumerate(images):
        arr = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
        arr = arr.astype(np.float32, copy=False)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise BetterConvError(f"{where}: calibration item {i} has shape {arr.shape}; expected (C, H, W) or "
                                  f"(N, C, H, W)")
        for dim, want in zip(arr.shape[1:], shape[1:]):
            if isinstance(want, int) and dim != want:
                raise BetterConvError(f"{where}: calibration item {i} has shape {tuple(arr.shape)}; the graph takes "
                                      f"{tuple(shape)}")
        out.extend(np.ascontiguousarray(a[None]) for a in arr)
    return out


def quantize_onnx_static(float_onnx_path: str | Path, int8_path: str | Path, calibration_images: Iterable[Any] | None,
                         *, per_channel: bool = True, check: bool = True, batch_size: int = 8,
                         float_output_layer: bool = True) -> QuantizationReport | None:
    """Quantise the float ONNX graph at `float_onnx_path` to int8 (QDQ, per-channel int8 weights, int8 activations
    calibrated by min/max) and write it atomically to `int8_path`.

    `calibration_images` are inputs exactly as the float graph takes them: float arrays (C, H, W) or batches
    (N, C, H, W) — for a graph exported with `normalize`, images in [0, 1] (see `calibration_images`). Without any,
    raises `BetterConvError`. With `check`, both graphs are run on the calibration images and the comparison is
    returned (`QuantizationReport`); else None. With `float_output_layer` (the default) the outputs of the nodes
    that `output_layer_nodes` names stay float (see the module's docstring for why).
    """
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError:  # pragma: no cover - a dependency
        raise BetterConvError("int8 quantisation needs the 'onnxruntime' package: pip install onnxruntime") from None

    source, target = Path(float_onnx_path), Path(int8_path)
    if not source.is_file():
        raise BetterConvError(f"{source}: no such file")
    if calibration_images is None:
        raise BetterConvError("int8 quantisation needs calibration images (give a few representative inputs)")
    try:
        session = onnx_session(source)
    except Exception as e:
        raise BetterConvError(f"{source}: onnxruntime cannot load it ({first_line(e)})") from None
    graph_input = session.get_inputs()[0]
    items = _as_inputs(calibration_images, graph_input.shape, str(source))
    if not items:
        raise BetterConvError("int8 quantisation needs calibration images; none were given")
    batch = batch_size if not isinstance(graph_input.shape[0], int) else 1
    batches = _batches(items, batch)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {graph_input.name: x}

        def rewind(self) -> None:
            self._it = iter(batches)

    with temporary_path(target) as tmp:
        hint = _DropPreprocessingHint()
        logging.getLogger().addFilter(hint)
        # the calibration sessions that quantize_static opens use onnxruntime's default logger, whose warnings
        # ("Removing initializer 'x'. It is not used by any node") go straight to the process's stderr
        ort.set_default_logger_severity(_ORT_ERROR)
        try:
            import onnx

            quantize_static(str(source), str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            if float_output_layer:
                quantized = onnx.load(str(tmp))
                _dequantize_outputs(quantized, output_layer_nodes(onnx.load(str(source), load_external_data=False)))
                onnx.save(quantized, str(tmp))
        except BetterConvError:
            raise
        except Exception as e:
            raise BetterConvError(f"int8 quantisation of {source} failed: {first_line(e)}") from e
        finally:
            ort.set_default_logger_severity(_ORT_WARNING)
            logging.getLogger().removeFilter(hint)
        report = None
        if check:
            try:
                quantized = onnx_session(tmp)
            except Exception as e:
                raise BetterConvError(f"{target}: onnxruntime cannot run the int8 graph ({first_line(e)})") from e
            diffs, agree, total = [], 0, 0
            for x in batches:
                ref, got = run_onnx(session, x), run_onnx(quantized, x)
                diffs.append(float(np.abs(ref - got).max()))
                if ref.ndim >= 2:
                    same = ref.argmax(1) == got.argmax(1)
                    agree, total = agree + int(same.sum()), total + same.size
            report = QuantizationReport(len(items), max(diffs), agree / total if total else float("nan"))
        os.replace(tmp, target)
    return report
