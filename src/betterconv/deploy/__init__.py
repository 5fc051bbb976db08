"""Deployment: batch-norm folding, ONNX / TorchScript export checked against PyTorch, static int8 quantisation.

    fuse_batch_norm(model)                       a copy with every conv -> batch norm folded into the conv
    export_onnx(model, path, input_size, ...)    ONNX graph, checked with onnxruntime; returns max |ONNX - PyTorch|
    export_torchscript(model, path, ...)         traced TorchScript, checked after loading it back
    export_ncnn(model, path, input_size, ...)    ncnn .param + .bin (float32), checked with ncnn; NcnnModel runs it
    quantize_onnx_static(float, int8, images)    int8 QDQ graph calibrated on images (onnxruntime)
    winograd_convolutions(model, example)        a copy whose 3x3 convs use Winograd where it is faster (timed)

The input contract of exported graphs is described in `betterconv.deploy.export`. Every file is written atomically.
"""
from .export import AdaptiveAvgPool2dExportable, Normalize, export_onnx, export_torchscript, onnx_session, run_onnx
from .fuse import count_batch_norms, fuse_batch_norm
from .ncnn import NcnnModel, export_ncnn
from .quantize import QuantizationReport, calibration_images, load_image, quantize_onnx_static
from .winograd import WinogradConv2d, winograd_convolutions

__all__ = ["AdaptiveAvgPool2dExportable", "NcnnModel", "Normalize", "QuantizationReport", "calibration_images",
           "count_batch_norms", "export_ncnn", "export_onnx", "export_torchscript", "fuse_batch_norm", "load_image",
           "onnx_session", "quantize_onnx_static", "run_onnx", "WinogradConv2d", "winograd_convolutions"]
