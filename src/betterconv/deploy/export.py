"""ONNX and TorchScript export of betterconv models, checked against PyTorch.

The input contract of an exported graph
---------------------------------------
The graph takes one float32 tensor named ``input`` of shape (N, 3, H, W): RGB, channels first, at the export's
input size (H, W), N free when `dynamic_batch` (the default), else 1. Its one output is named ``output``:

* ``normalize=None``: the input is exactly what the PyTorch model's `forward` takes (already normalised);
* ``normalize=(mean, std)`` (as recorded in the weights' metadata, `betterconv.mean` / `betterconv.std`): the
  input is the image scaled to [0, 1] (8-bit pixels / 255) and the graph computes ``(x - mean) / std`` per
  channel before the model. For TensorFlow/TFLite weights (mean = std = 0.5) that is ``pixels / 127.5 - 1``; for
  darknet (mean 0, std 1) it is ``pixels / 255``; for torchvision the ImageNet statistics.

The output is the model's: classifier logits (N, classes) (no softmax), segmentation logits (N, classes, H, W)
at the input size, or YOLOv2's raw region tensor (N, A * (5 + C), H / 32, W / 32) before decoding.
The spatial size is fixed at export time (TF "SAME" padding and darknet's max-pool padding are computed from it).

Batch norm is folded into the convolutions first (`fuse_batch_norm`); the model is exported in eval mode.
Files are written atomically: to a temporary file in the output's folder, checked, then renamed over the output,
so a failed export or check leaves no file (and never a half-written one) at the output path. The checks and
the input preparation that the ncnn exporter shares are in `betterconv.deploy.checks`.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BetterConvError, first_line
from .checks import (ONNX_ATOL, Normalize, check_input_size, check_normalize, check_output, example_input,
                     reference_output, temporary_path)
from .fuse import fuse_batch_norm

# Normalize and temporary_path live in `betterconv.deploy.checks`; they stay importable from here
__all__ = ["AdaptiveAvgPool2dExportable", "DEFAULT_OPSET", "Normalize", "export_onnx", "export_torchscript",
           "onnx_session", "prepare_for_export", "run_onnx", "temporary_path"]

DEFAULT_OPSET = 17


class _Normalized(nn.Module):
    def __init__(self, normalize: Normalize, model: nn.Module) -> None:
        super().__init__()
        self.normalize, self.model = normalize, model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


class AdaptiveAvgPool2dExportable(nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d` that the ONNX exporter takes at any input size.

    The TorchScript-based exporter refuses an output size that does not divide the input size (VGG's 7x7 pool on
    a small input). For a known input size, adaptive average pooling is linear along each axis: bin i averages
    rows floor(i*h/o) to ceil((i+1)*h/o) - 1, so ``y = P_h @ x @ P_w^T`` with constant (o, h) and (o, w) pooling
    matrices, which exports as two MatMuls. Sizes that divide evenly keep the built-in operator."""

    @staticmethod
    def _matrix(size: int, out: int, dtype: torch.dtype) -> torch.Tensor:
        m = torch.zeros(out, size, dtype=torch.float64)
        for i in range(out):
            start, end = (i * size) // out, -((-(i + 1) * size) // out)
            m[i, start:end] = 1.0 / (end - start)
        return m.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = (self.output_size, self.output_size) if isinstance(self.output_size, int) else self.output_size
        oh, ow = oh or h, ow or w
        if h % oh == 0 and w % ow == 0:
            return super().forward(x)
        return self._matrix(h, oh, x.dtype) @ x @ self._matrix(w, ow, x.dtype).t()


def _exportable_pooling(model: nn.Module) -> None:
    for parent in model.modules():
        for name, child in list(parent._modules.items()):
            if type(child) is nn.AdaptiveAvgPool2d:
                parent._modules[name] = AdaptiveAvgPool2dExportable(child.output_size)


def prepare_for_export(model: nn.Module, normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                       channels: int = 3, fuse: bool = True) -> nn.Module:
    """The module that is exported: a copy of `model` in eval mode with batch norm folded (`fuse`), adaptive
    average pools made exportable at any size, behind `Normalize` when `normalize` is given."""
    norm = check_normalize(normalize, channels)
    core = fuse_batch_norm(model) if fuse else copy.deepcopy(model)
    _exportable_pooling(core)
    core = core.to("cpu", torch.float32).eval()  # exported on the CPU in float32, wherever the model lives
    return (_Normalized(norm, core) if norm is not None else core).eval()


def onnx_session(path: str | Path | bytes) -> Any:
    """An onnxruntime CPU session for an ONNX file (or its bytes), with graph optimisations at the basic level."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a dependency
        raise BetterConvError("ONNX checks need the 'onnxruntime' package: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.intra_op_num_threads = max(1, min(4, torch.get_num_threads()))
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on a shared machine
    opts.log_severity_level = 3
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(session_or_path: Any, x: np.ndarray | torch.Tensor, all_outputs: bool = False
             ) -> np.ndarray | list[np.ndarray]:
    """Run a one-input ONNX model (a session or a path) on `x`; returns its first output (every output, in the
    graph's order, with `all_outputs`)."""
    session = session_or_path if hasattr(session_or_path, "run") else onnx_session(session_or_path)
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: np.ascontiguousarray(arr, dtype=np.float32)})
    return outputs if all_outputs else outputs[0]


def _add_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Append string properties to an ONNX file without re-reading it: a serialised protobuf message followed by
    another one parses as their merge, and `metadata_props` is a repeated field, so appending a ModelProto that
    holds only them adds them (the weights of a large model are not parsed and written again)."""
    import onnx

    extra = onnx.ModelProto()
    for key, value in metadata.items():
        if value is None:
            continue
        entry = extra.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    with open(path, "ab") as f:
        f.write(extra.SerializeToString())


def _onnx_metadata(model: nn.Module, size: tuple[int, int, int], normalize: Normalize | None,
                   extra: Mapping[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "betterconv.model": getattr(model, "model_name", None),
        "betterconv.model_kwargs": getattr(model, "model_kwargs", None),
        "betterconv.input_size": list(size),
        "betterconv.input": ("float32 NCHW RGB in [0, 1]; the graph normalises (x - mean) / std"
                             if normalize is not None else "float32 NCHW, already normalised as the model expects"),
    }
    if normalize is not None:
        meta["betterconv.mean"] = normalize.mean.flatten().tolist()
        meta["betterconv.std"] = normalize.std.flatten().tolist()
    for key, value in (extra or {}).items():
        meta[key if key.startswith("betterconv.") else f"betterconv.{key}"] = value
    return meta


def export_onnx(model: nn.Module, path: str | Path, input_size: Sequence[int] = (3, 224, 224), *,
                dynamic_batch: bool = True, normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                opset: int = DEFAULT_OPSET, verify: bool = True, atol: float = ONNX_ATOL,
                metadata: Mapping[str, Any] | None = None) -> float | None:
    """Export `model` to an ONNX file at `path` (see the module's docstring for the graph's input contract).

    Batch norm is folded first. With `verify` (the default) the written graph is run with onnxruntime on a
    random batch (two images when `dynamic_batch`, to check the free batch axis) and compared with the model as
    given, in eval mode; a difference above `atol` (scaled by the output's magnitude when it exceeds 1) raises
    `BetterConvError` and nothing is written. Returns the measured max |ONNX - PyTorch| (None without `verify`).

    `metadata` adds string properties to the graph (keys prefixed "betterconv."); the model name, keywords,
    input size, mean and std are always recorded.
    """
    path = Path(path)
    size = check_input_size(input_size)
    norm = check_normalize(normalize, size[0])
    module = prepare_for_export(model, normalize, size[0])
    x = example_input(size, 2 if dynamic_batch else 1, norm is not None)
    reference = reference_output(model, norm, x, several=True)  # one tensor per output (several prediction scales)
    output_names = ["output"] + [f"output_{i}" for i in range(1, len(reference))]
    dynamic_axes = {n: {0: "batch"} for n in ["input", *output_names]} if dynamic_batch else None
    with temporary_path(path) as tmp:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
                torch.onnx.export(module, (x[:1],), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=output_names, dynamic_axes=dynamic_axes,
                                  do_constant_folding=True)
        except BetterConvError:
            raise
        except Exception as e:  # the exporter raises many types; the user gets one line
            raise BetterConvError(f"ONNX export of {getattr(model, 'model_name', type(model).__name__)} failed: "
                                  f"{first_line(e)}") from e
        _add_metadata(tmp, _onnx_metadata(model, size, norm, metadata))
        diff = None
        if verify:
            try:
                got = run_onnx(onnx_session(tmp), x, all_outputs=True)
            except Exception as e:
                raise BetterConvError(f"{path}: onnxruntime cannot run the exported graph: {first_line(e)}") from e
            diff = max(check_output(path, "ONNX", g, r, atol) for g, r in zip(got, reference, strict=True))
        os.replace(tmp, path)
    return diff


def export_torchscript(model: nn.Module, path: str | Path, input_size: Sequence[int] = (3, 224, 224), *,
                       normalize: tuple[Sequence[float], Sequence[float]] | None = None, verify: bool = True,
                       atol: float = ONNX_ATOL) -> float | None:
    """Trace `model` (batch norm folded, behind `Normalize` when given: the same input contract as `export_onnx`)
    with `torch.jit.trace` and save it atomically to `path`; load it with `torch.jit.load`.

    Tracing records the operations for the example's spatial size: give the size the model will run at. The
    batch size stays free. With `verify`, the saved file is loaded back and compared with the model as given on a
    batch of two; returns the max abs difference (None without `verify`)."""
    path = Path(path)
    size = check_input_size(input_size)
    norm = check_normalize(normalize, size[0])
    module = prepare_for_export(model, normalize, size[0])
    x = example_input(size, 2, norm is not None)
    with temporary_path(path) as tmp:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(module, (x[:1],), check_trace=False)
                torch.jit.save(traced, str(tmp))
        except Exception as e:
            raise BetterConvError(f"TorchScript export of {getattr(model, 'model_name', type(model).__name__)} "
                                  f"failed: {first_line(e)}") from e
        diff = None
        if verify:
            reference = reference_output(model, norm, x)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = torch.jit.load(str(tmp), map_location="cpu")(x).float()
            diff = check_output(path, "TorchScript", got, reference, atol)
        os.replace(tmp, path)
    return diff
