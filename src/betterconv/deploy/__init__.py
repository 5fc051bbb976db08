"""Deployment: batch-norm folding, ONNX / TorchScript / ncnn / OpenVINO export checked against PyTorch, static int8
quantisation.

    fuse_batch_norm(model)                       a copy with every conv -> batch norm folded into the conv
    export_onnx(model, path, input_size, ...)    ONNX graph, checked with onnxruntime; returns max |ONNX - PyTorch|
    export_torchscript(model, path, ...)         traced TorchScript, checked after loading it back
    export_ncnn(model, path, input_size, ...)    ncnn .param + .bin (float32), checked with ncnn; NcnnModel runs it
    export_openvino(model, path, input_size, ...)  OpenVINO IR .xml + .bin (float32), checked with OpenVINO;
                                                 OpenVINOModel runs it (precision hint f32 or bf16)
    export_openvino_int8(model, path, size, images)  int8 IR by NNCF post-training quantisation
    quantize_onnx_static(float, int8, images)    int8 QDQ graph calibrated on images (onnxruntime)
    winograd_convolutions(model, example)        a copy whose 3x3 convs use Winograd where it is faster (timed)

Modules: `export` (ONNX, TorchScript), `checks` (what every exporter checks: input size, normalisation, the
comparison with PyTorch, the temporary file), `ncnn_export` and `ncnn_runtime` (`ncnn` imports both),
`openvino_export` and `openvino_runtime` (OpenVINO and NNCF, optional: `pip install 'betterconv[openvino]'`),
`quantize`, `fuse`, `winograd`. The input contract of exported graphs is described in `betterconv.deploy.export`.
Every file is written atomically.

The names below are imported on first use, so that importing one module of the package (the ncnn runtime, say)
does not import the others.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checks import Normalize
    from .export import AdaptiveAvgPool2dExportable, export_onnx, export_torchscript, onnx_session, run_onnx
    from .fuse import count_batch_norms, fuse_batch_norm
    from .ncnn_export import export_ncnn
    from .ncnn_runtime import NcnnModel
    from .openvino_export import export_openvino, export_openvino_int8, load_openvino
    from .openvino_runtime import OpenVINOModel, openvino_available, openvino_cpu_info
    from .quantize import QuantizationReport, calibration_images, load_image, quantize_onnx_static
    from .winograd import WinogradConv2d, winograd_convolutions

_MODULE_OF = {
    "AdaptiveAvgPool2dExportable": "export", "Normalize": "checks", "export_onnx": "export",
    "export_torchscript": "export", "onnx_session": "export", "run_onnx": "export",
    "count_batch_norms": "fuse", "fuse_batch_norm": "fuse",
    "export_ncnn": "ncnn_export", "NcnnModel": "ncnn_runtime",
    "export_openvino": "openvino_export", "export_openvino_int8": "openvino_export", "load_openvino": "openvino_export",
    "OpenVINOModel": "openvino_runtime", "openvino_available": "openvino_runtime",
    "openvino_cpu_info": "openvino_runtime",
    "QuantizationReport": "quantize", "calibration_images": "quantize", "load_image": "quantize",
    "quantize_onnx_static": "quantize",
    "WinogradConv2d": "winograd", "winograd_convolutions": "winograd",
}

__all__ = ["AdaptiveAvgPool2dExportable", "NcnnModel", "Normalize", "OpenVINOModel", "QuantizationReport",
           "calibration_images", "count_batch_norms", "export_ncnn", "export_onnx", "export_openvino",
           "export_openvino_int8", "export_torchscript", "fuse_batch_norm", "load_image", "load_openvino",
           "onnx_session", "openvino_available", "openvino_cpu_info", "quantize_onnx_static", "run_onnx",
           "WinogradConv2d", "winograd_convolutions"]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
