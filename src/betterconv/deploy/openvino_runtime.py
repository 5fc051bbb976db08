"""Running an exported OpenVINO model (IR `.xml` + `.bin`, as `export_openvino` writes them) from PyTorch code.

`OpenVINOModel` compiles the IR for OpenVINO's CPU plugin (Intel, `pip install openvino`) and is called like the
PyTorch model: (N, C, H, W) in, one tensor (or a tuple, for several outputs: a detector's prediction scales) with a
batch axis out. The IR takes the ONNX export's input (`betterconv.deploy.export`): the batch axis is free unless the
graph was exported with a static batch.

Precision is a property of the compiled model, not of the file (OpenVINO's CPU plugin documentation, "Inference
precision"): the plugin's `INFERENCE_PRECISION_HINT` says in which type floating-point layers compute. Its default
is bf16 on CPUs that have bf16 instructions (AVX512_BF16, AMX), so `OpenVINOModel` always sets it: "f32" (the
default) runs float32 end to end, "bf16" runs the floating-point layers in bfloat16 where the CPU has native bf16
instructions; where it has none, the plugin runs float32 and `inference_precision` says so. An int8 IR (quantised by
NNCF, `export_openvino_int8`) runs its quantised layers in int8 whatever the hint; the hint applies to the rest.

`openvino_cpu_info()` records what decides those choices: OpenVINO's version, the CPU plugin's
`OPTIMIZATION_CAPABILITIES` (its own list of the precisions it runs natively) and the CPU's feature flags.
This module imports neither the exporter nor OpenVINO until it is used, so running a model does not need what
writing one needs (NNCF, onnx).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BetterConvError, first_line

__all__ = ["CPU_FEATURES", "PRECISIONS", "OpenVINOModel", "bf16_support", "cpu_flags", "installed",
           "openvino_available", "openvino_cpu_info", "openvino_message"]

PRECISIONS = ("f32", "bf16")  # INFERENCE_PRECISION_HINT values a caller may ask for
# the /proc/cpuinfo flags that decide which reduced-precision kernels a CPU runs natively
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
_INSTALL = "pip install 'betterconv[openvino]'"


def installed(package: str) -> bool:
    """Whether `package` can be imported (found without importing it; False where imports of it are blocked)."""
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # sys.modules[package] is None: the import system's way to refuse a package
        return False


def openvino_available() -> bool:
    """Whether the `openvino` package is installed (without importing it)."""
    return installed("openvino")


def _openvino() -> Any:
    try:  # imported here, not at the top: the optional dependency stays lazy until a model is compiled
        import openvino
    except ImportError:
        raise BetterConvError(f"OpenVINO models need the 'openvino' package: {_INSTALL}") from None
    return openvino


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    return _openvino().Core()  # one per process: it holds the loaded device plugins


def openvino_message(error: BaseException) -> str:
    """The informative line of an OpenVINO exception: its messages start with lines of source locations ("Check
    '...' failed at src/...", "Exception from src/..."); the first line after those, or the line naming operations
    without a conversion rule."""
    lines = [line.strip().lstrip("- ").strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "No conversion rule found" in line]
    useful = [line for line in lines if not line.startswith(("Check '", "Exception from ", "FrontEnd API failed"))]
    return (named or useful or [first_line(error)])[0][:300]


def cpu_flags() -> dict[str, bool]:
    """Which of `CPU_FEATURES` this CPU has (/proc/cpuinfo; all False where that cannot be read)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {name: name in flags for name in CPU_FEATURES}


def openvino_cpu_info() -> dict[str, Any]:
    """What OpenVINO's CPU plugin and the CPU say about reduced precision: OpenVINO's version, the plugin's device
    name and `OPTIMIZATION_CAPABILITIES` (e.g. FP32, BF16, INT8), the CPU's `cpu_flags()`, and `bf16_support`."""
    ov = _openvino()
    core = _core()
    capabilities = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    flags = cpu_flags()
    return {"openvino": ov.__version__, "device": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
            "optimization_capabilities": capabilities, "cpu_flags": flags,
            "bf16": bf16_support(capabilities, flags)}


def bf16_support(capabilities: list[str], flags: dict[str, bool]) -> str:
    """"native (...)" when OpenVINO lists BF16 among its optimisation capabilities (naming the CPU's bf16
    instructions), else a note that a bf16 hint is not run in bf16 on this CPU."""
    if "BF16" in capabilities:
        units = [name for name in ("avx512_bf16", "amx_bf16") if flags.get(name)]
        return f"native ({', '.join(units) or 'OpenVINO reports BF16'})"
    return ("unsupported: this CPU has neither avx512_bf16 nor AMX, OpenVINO does not list BF16; a bf16 hint runs "
            "float32 (see inference_precision)")


class OpenVINOModel:
    """An OpenVINO IR (`.xml`, its `.bin` beside it) or an in-memory `openvino.Model`, compiled for the CPU and
    called like the PyTorch model: (N, C, H, W) in, one tensor (or a tuple, for several outputs) with a batch axis
    out, float32.

    `precision`: the `INFERENCE_PRECISION_HINT`, "f32" (float32 throughout) or "bf16" (bfloat16 where the CPU has
    native bf16 instructions); `inference_precision` is what the compiled model reports it uses. `threads`: the
    `INFERENCE_NUM_THREADS` (default: PyTorch's thread count). Latency mode (one stream, one request at a time).

    A graph with a free batch axis is compiled for each input shape it is called with (the last few kept): the CPU
    plugin plans memory and picks kernels for static shapes. `prepare(shape)` compiles ahead of a call."""

    _KEEP = 4  # compiled shapes kept

    def __init__(self, model: str | Path | Any, weights: str | Path | None = None, *, precision: str = "f32",
                 threads: int | None = None) -> None:
        if precision not in PRECISIONS:
            raise BetterConvError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        ov = _openvino()
        self.path: Path | None = None
        if isinstance(model, (str, Path)):
            self.path = Path(model)
            bin_path = Path(weights) if weights is not None else self.path.with_suffix(".bin")
            for path in (self.path, bin_path):
                if not path.is_file():
                    raise BetterConvError(f"{path}: no such file")
            with open(self.path, "rb") as f:
                head = f.read(512)
            # read_model tries every frontend on a file its IR reader refuses (TensorFlow's logs parse errors on
            # stderr): a file that is not IR XML is refused here first
            if b"<net" not in head:
                raise BetterConvError(f"{self.path}: not an OpenVINO IR .xml file")
            try:
                # weights read into memory, not mapped from the file: the files may go once the model is loaded
                model = _core().read_model(str(self.path), str(bin_path), {"ENABLE_MMAP": False})
            except Exception as e:
                raise BetterConvError(f"{self.path}: OpenVINO cannot read it ({openvino_message(e)})") from None
        elif not isinstance(model, ov.Model):
            raise BetterConvError(f"OpenVINOModel takes an IR .xml path or an openvino.Model, got "
                                  f"{type(model).__name__}")
        if len(model.inputs) != 1:
            raise BetterConvError(f"{self._where()}: OpenVINOModel runs graphs with one input, this one has "
                                  f"{len(model.inputs)}")
        self.model = model
        self.precision = precision
        self.config = {"INFERENCE_PRECISION_HINT": precision,
                       "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()), "PERFORMANCE_HINT": "LATENCY"}
        self.input_shape = [d.get_length() if d.is_static else None for d in model.input(0).get_partial_shape()]
        self.output_names = [o.get_any_name() for o in model.outputs]
        self._compiled: dict[tuple[int, ...] | None, tuple[Any, Any]] = {}
        # compiled once now (batch 1 where the batch is free) to report what the plugin chose
        compiled, _ = self._compiled_for(tuple(d if d is not None else 1 for d in self.input_shape))
        self.inference_precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32"
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "the OpenVINO model"

    def _compiled_for(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        """(compiled model, infer request) for inputs of `shape`: the graph reshaped to it when it has free axes."""
        free = None in self.input_shape
        key = tuple(shape) if free else None
        if key in self._compiled:
            return self._compiled[key]
        model = self.model
        if free:
            fixed = [want if want is not None else got for want, got in zip(self.input_shape, shape)]
            if len(shape) != len(self.input_shape) or list(shape) != fixed:
                takes = ", ".join("N" if d is None else str(d) for d in self.input_shape)
                raise BetterConvError(f"{self._where()}: the graph takes inputs of shape ({takes}), got "
                                      f"{tuple(shape)}")
            # a static shape is also what keeps int8 graphs right: with the batch axis left free, OpenVINO 2026.4's
            # CPU plugin gave one and the same output for every batch-1 input of an NNCF-quantised MobileNet whose
            # last feature map is 1x1 (batches of 2 and more, and the same graph reshaped to batch 1, were right)
            model = self.model.clone()
            model.reshape({model.input(0): list(shape)})
        try:
            compiled = _core().compile_model(model, "CPU", self.config)
        except Exception as e:
            raise BetterConvError(f"{self._where()}: OpenVINO cannot compile it for the CPU "
                                  f"({openvino_message(e)})") from None
        if len(self._compiled) >= self._KEEP:
            self._compiled.pop(next(iter(self._compiled)))
        self._compiled[key] = compiled, compiled.create_infer_request()
        return self._compiled[key]

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Compile for inputs of `shape` (N, C, H, W) now, not on the first call with it."""
        self._compiled_for(tuple(int(d) for d in shape))

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | tuple[torch.Tensor, ...]:
        batch = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        data = np.ascontiguousarray(batch, dtype=np.float32)
        compiled, request = self._compiled_for(data.shape)
        try:
            results = request.infer({0: data})  # outputs copied out of the request's buffers
        except Exception as e:
            raise BetterConvError(f"{self._where()}: OpenVINO failed on an input of shape {tuple(data.shape)} "
                                  f"({openvino_message(e)})") from None
        outs = tuple(torch.from_numpy(np.asarray(results[o])) for o in compiled.outputs)
        return outs[0] if len(outs) == 1 else outs
