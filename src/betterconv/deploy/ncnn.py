"""ncnn export and runtime under one name: `export_ncnn` (`betterconv.deploy.ncnn_export`) writes a model's
`.param` + `.bin` and checks them with ncnn; `NcnnModel` (`betterconv.deploy.ncnn_runtime`) runs them.

Code that only runs exported graphs imports `betterconv.deploy.ncnn_runtime`, which does not load the exporter.
"""
from .ncnn_export import export_ncnn
from .ncnn_runtime import NcnnModel

__all__ = ["NcnnModel", "export_ncnn"]
