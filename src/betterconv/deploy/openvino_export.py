"""OpenVINO export of betterconv models: IR (`.xml` graph + `.bin` weights) in float32, or int8 by NNCF
post-training quantisation, checked against PyTorch before anything is put at the output path.

How a model becomes an IR
-------------------------
The model goes through `export_onnx` (batch norm folded, adaptive pools made exportable, `Normalize` in front when
`normalize` is given) and OpenVINO's ONNX frontend (`openvino.convert_model` on the ONNX file). OpenVINO's PyTorch
frontend (`convert_model` on the module) maps every model of the zoo too, to the same outputs; the ONNX route is
taken so that the IR is the graph the ONNX export writes and tests, with its input contract (see
`betterconv.deploy.export`: one float32 input ``input`` (N, C, H, W), outputs ``output``, ``output_1``, ... in the
model's order), its metadata (kept in the IR's ``rt_info`` under ``betterconv``) and its free batch axis, and so
that an operation the ONNX exporter cannot write fails the same way for every engine. An operation OpenVINO has no
conversion rule for raises `BetterConvError` naming it, and nothing is written.

The IR is written in float32 (`openvino.save_model` compresses weights to float16 by default; this exporter never
does), read back, compiled for the CPU with the float32 precision hint (`OpenVINOModel`) and compared with the model
as given (`betterconv.deploy.checks`); only then are the two files renamed into place (the `.bin` first).

int8 (`export_openvino_int8`): the checked float32 IR is quantised by NNCF (`nncf.quantize`, its default preset:
symmetric int8 weights per output channel, int8 activations, fast bias correction) with statistics from
calibration images given exactly as the graph takes them (`betterconv.deploy.quantize.calibration_images` loads and
preprocesses image files as the ONNX int8 path does). NNCF quantises the inputs of convolutions and matrix products,
so the layer computing the outputs (logits) writes float values, as `quantize_onnx_static` arranges for ONNX.
The int8 IR is compared with the float one on the calibration images (`QuantizationReport`: largest difference,
top-1 agreement).

bfloat16 is not a file format here: it is a precision hint given when a model is compiled (`OpenVINOModel`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import BetterConvError
from .checks import ONNX_ATOL, check_input_size, check_normalize, check_output, example_input, reference_output
from .export import DEFAULT_OPSET, export_onnx
from .openvino_runtime import OpenVINOModel, openvino_message
from .quantize import QuantizationReport

__all__ = ["check_openvino_installed", "export_openvino", "export_openvino_int8", "load_openvino"]

_INSTALL = "pip install 'betterconv[openvino]'"


def check_openvino_installed(int8: bool = False) -> None:
    """Raise `BetterConvError` unless `openvino` (and, for `int8`, `nncf`) can be imported."""
    _openvino()
    if int8:
        _nncf()


def _openvino() -> Any:
    try:  # imported here, not at the top: an optional dependency, loaded only when a model is exported
        import openvino
    except ImportError:
        raise BetterConvError(f"OpenVINO export needs the 'openvino' package: {_INSTALL}") from None
    return openvino


@contextlib.contextmanager
def _no_cuda_note() -> Iterator[None]:
    """NNCF loads torch's C++ extension helper (on import and again while quantising), which warns through logging
    that this machine has no CUDA runtime: not news for a CPU export, so that logger is quiet meanwhile."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _nncf() -> Any:
    try:  # imported here, not at the top: an optional dependency, loaded only for int8
        with _no_cuda_note():
            import nncf
    except ImportError:
        raise BetterConvError(f"OpenVINO int8 quantisation needs the 'nncf' package: {_INSTALL}") from None
    return nncf


@contextlib.contextmanager
def _staging(path: Path) -> Iterator[Path]:
    """A temporary folder beside `path` (same file system, so `os.replace` out of it is atomic); removed with
    whatever is left in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_ir_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise BetterConvError(f"{path}: an OpenVINO IR is named .xml (its weights go beside it as .bin)")
    return path


def _convert(model: nn.Module, size: tuple[int, int, int], folder: Path, *, dynamic_batch: bool,
             normalize: tuple[Sequence[float], Sequence[float]] | None, opset: int,
             metadata: Mapping[str, Any] | None) -> Any:
    """`model` through `export_onnx` (into `folder`) and OpenVINO's ONNX frontend: an `openvino.Model` with the
    ONNX graph's metadata in its rt_info under "betterconv"."""
    ov = _openvino()
    name = getattr(model, "model_name", type(model).__name__)
    onnx_path = folder / "model.onnx"
    # not run by onnxruntime here: the IR is the graph that is checked against PyTorch
    export_onnx(model, onnx_path, size, dynamic_batch=dynamic_batch, normalize=normalize, opset=opset, verify=False,
                metadata=metadata)
    try:
        converted = ov.convert_model(str(onnx_path))
    except Exception as e:  # OpConversionFailure and the frontend's other errors: one line
        raise BetterConvError(f"OpenVINO conversion of {name} failed: {openvino_message(e)}; nothing written") from e
    for prop in onnx.load(str(onnx_path), load_external_data=False).metadata_props:
        key = prop.key.removeprefix("betterconv.")
        converted.set_rt_info(prop.value, ["betterconv", key])
    return converted


def _save(ov_model: Any, xml: Path) -> None:
    _openvino().save_model(ov_model, str(xml), compress_to_fp16=False)  # float32 weights, as PyTorch's


def _check(path: Path, xml: Path, model: nn.Module, norm: Any, x: torch.Tensor, atol: float) -> float:
    """The written IR at `xml`, compiled in float32, against the model as given on `x`: max |OpenVINO - PyTorch|
    over the outputs; `check_output` raises above the tolerance."""
    references = reference_output(model, norm, x, several=True)
    outs = OpenVINOModel(xml, precision="f32", threads=max(1, min(4, torch.get_num_threads())))(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    if len(outs) != len(references):
        raise BetterConvError(f"{path}: the OpenVINO model has {len(outs)} output(s), PyTorch's {len(references)}")
    return max(check_output(path, f"OpenVINO (output {i})", got, reference, atol)
               for i, (got, reference) in enumerate(zip(outs, references)))


def _move_into_place(xml: Path, path: Path) -> None:
    # the weights first, then the graph that reads them (as the ncnn exporter does)
    os.replace(xml.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(xml, path)


def export_openvino(model: nn.Module, path: str | Path, input_size: Sequence[int] = (3, 224, 224), *,
                    dynamic_batch: bool = True, normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                    opset: int = DEFAULT_OPSET, verify: bool = True, atol: float = ONNX_ATOL,
                    metadata: Mapping[str, Any] | None = None) -> float | None:
    """Export `model` to a float32 OpenVINO IR: `path` (the `.xml` graph) and its weights beside it (`.bin`).

    The graph is the ONNX export's (same input contract, `normalize`, free batch axis with `dynamic_batch`, `opset`,
    `metadata`), converted by OpenVINO's ONNX frontend. With `verify` (the default) the written files are read back,
    compiled for the CPU in float32 and compared with the model as given on a random batch (two images when
    `dynamic_batch`); a difference above `atol` (scaled by the output's magnitude when it exceeds 1) raises
    `BetterConvError` and nothing is written. Returns the max |OpenVINO - PyTorch| over the outputs (None without
    `verify`)."""
    path = _check_ir_path(path)
    size = check_input_size(input_size)
    norm = check_normalize(normalize, size[0])
    _openvino()
    with _staging(path) as folder:
        converted = _convert(model, size, folder, dynamic_batch=dynamic_batch, normalize=normalize, opset=opset,
                             metadata=metadata)
        xml = folder / "model.xml"
        _save(converted, xml)
        diff = None
        if verify:
            x = example_input(size, 2 if dynamic_batch else 1, norm is not None)
            diff = _check(path, xml, model, norm, x, atol)
        _move_into_place(xml, path)
    return diff


def _calibration_arrays(images: Iterable[Any], size: tuple[int, int, int]) -> list[np.ndarray]:
    """Each calibration item (C, H, W) or (N, C, H, W), arrays or tensors, as float32 (1, C, H, W) arrays of the
    graph's input size."""
    out = []
    for i, item in enumerate(images):
        arr = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        arr = arr.astype(np.float32, copy=False)
        arr = arr[None] if arr.ndim == 3 else arr
        if arr.ndim != 4 or tuple(arr.shape[1:]) != size:
            raise BetterConvError(f"calibration item {i} has shape {tuple(arr.shape)}; the graph takes (N, "
                                  f"{', '.join(map(str, size))})")
        out.extend(np.ascontiguousarray(a[None]) for a in arr)
    return out


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs through a handler bound to stdout and draws progress bars (rich) on stdout: both go to stderr
    while it runs, so that stdout keeps only what betterconv prints (JSON with --json)."""
    nncf_log = logging.getLogger("nncf")
    handlers = [h for h in nncf_log.handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setStream(sys.stderr)
        h.setLevel(max(h.level, logging.WARNING))  # its INFO lines repeat what the progress bars show
    try:
        with contextlib.redirect_stdout(sys.stderr), _no_cuda_note():
            yield
    finally:
        for h, level in zip(handlers, levels):
            h.setStream(sys.stdout)
            h.setLevel(level)


def _top1_report(float_model: OpenVINOModel, int8_model: OpenVINOModel, items: list[np.ndarray]) -> QuantizationReport:
    diffs, agree, total = [], 0, 0
    for x in items:
        ref, got = float_model(x), int8_model(x)
        ref, got = (ref[0], got[0]) if isinstance(ref, tuple) else (ref, got)  # the first output, as for ONNX
        diffs.append(float((ref - got).abs().max()))
        if ref.ndim >= 2:
            same = ref.argmax(1) == got.argmax(1)  # per image (classifier) or per pixel / cell
            agree, total = agree + int(same.sum()), total + same.numel()
    return QuantizationReport(len(items), max(diffs), agree / total if total else float("nan"))


def export_openvino_int8(model: nn.Module, path: str | Path, input_size: Sequence[int] = (3, 224, 224),
                         calibration: Iterable[Any] | None = None, *, dynamic_batch: bool = True,
                         normalize: tuple[Sequence[float], Sequence[float]] | None = None, opset: int = DEFAULT_OPSET,
                         atol: float = ONNX_ATOL, metadata: Mapping[str, Any] | None = None
                         ) -> tuple[float, QuantizationReport]:
    """Export `model` to an int8 OpenVINO IR at `path` (`.xml`, `.bin` beside it), quantised by NNCF.

    The float32 IR is made and checked against PyTorch as by `export_openvino` (a difference above `atol` raises,
    nothing written), then `nncf.quantize` calibrates it on `calibration`: inputs exactly as the graph takes them,
    arrays or tensors (C, H, W) or (N, C, H, W) (for a graph exported with `normalize`, images in [0, 1]: see
    `calibration_images`). The int8 IR is written, read back, and compared with the float IR on the calibration
    inputs. Returns (max |float IR - PyTorch|, the `QuantizationReport` of int8 against float)."""
    path = _check_ir_path(path)
    size = check_input_size(input_size)
    norm = check_normalize(normalize, size[0])
    if calibration is None:
        raise BetterConvError("int8 quantisation needs calibration images (give a few representative inputs)")
    items = _calibration_arrays(calibration, size)
    if not items:
        raise BetterConvError("int8 quantisation needs calibration images; none were given")
    nncf = _nncf()
    ov = _openvino()
    threads = max(1, min(4, torch.get_num_threads()))
    with _staging(path) as folder:
        converted = _convert(model, size, folder, dynamic_batch=dynamic_batch, normalize=normalize, opset=opset,
                             metadata=metadata)
        float_xml, xml = folder / "float.xml", folder / "model.xml"
        _save(converted, float_xml)
        diff = _check(path, float_xml, model, norm, example_input(size, 2 if dynamic_batch else 1, norm is not None),
                      atol)
        float_ir = ov.Core().read_model(str(float_xml))
        try:
            with _quiet_nncf():
                quantized = nncf.quantize(float_ir, nncf.Dataset(items), subset_size=len(items))
        except BetterConvError:
            raise
        except Exception as e:  # NNCF raises many types; the user gets one line
            raise BetterConvError(f"int8 quantisation of {getattr(model, 'model_name', type(model).__name__)} with "
                                  f"NNCF failed: {openvino_message(e)}; nothing written") from e
        quantized.set_rt_info("int8 (NNCF post-training quantisation)", ["betterconv", "precision"])
        _save(quantized, xml)
        report = _top1_report(OpenVINOModel(float_xml, threads=threads), OpenVINOModel(xml, threads=threads), items)
        _move_into_place(xml, path)
    return diff, report


def load_openvino(model: nn.Module, input_size: Sequence[int], *, precision: str = "f32", threads: int | None = None,
                  normalize: tuple[Sequence[float], Sequence[float]] | None = None) -> OpenVINOModel:
    """`model` exported to a float32 IR at `input_size` (checked against PyTorch, as by `export_openvino`) in a
    temporary folder and compiled with the `precision` hint: an `OpenVINOModel` to call in its place (the compiled
    model holds the weights; the files are removed). What `--engine openvino` runs."""
    with tempfile.TemporaryDirectory(prefix="betterconv-openvino-") as folder:
        xml = Path(folder) / "model.xml"
        export_openvino(model, xml, input_size, normalize=normalize)
        return OpenVINOModel(xml, precision=precision, threads=threads)
