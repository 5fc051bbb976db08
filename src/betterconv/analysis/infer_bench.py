"""Inference latency and throughput of one model along betterconv's deployment paths, against torchvision's.

Ten ways to run the same network on the CPU, measured in one process at batch 1 and 8 (by default):

    torchvision_eager     torchvision's model of the same architecture, eager float32 (where torchvision has one)
    betterconv_eager      betterconv's model, eager float32, contiguous (NCHW) memory
    betterconv_fused_cl   batch norm folded into the convolutions (`fuse_batch_norm`), channels-last memory
    betterconv_winograd   that model with each 3x3 stride-1 convolution run as direct or Winograd F(2x2) / F(4x4),
                          whichever was fastest on this batch (`winograd_convolutions`); left out for a model
                          without such convolutions (MobileNets: depthwise and strided 3x3 only)
    onnxruntime_fp32      the graph `export_onnx` writes (batch norm folded), run by onnxruntime
    onnxruntime_int8      that graph after `quantize_onnx_static` (QDQ, int8), run by onnxruntime
    ncnn_fp32             the graph `export_ncnn` writes (float32 weights and arithmetic), run by ncnn one image at
                          a time; left out, with the reason, where the exporter cannot map the model (VGG's 7x7
                          adaptive pool at an input size it does not divide)
    openvino_fp32         the IR `export_openvino` writes (the ONNX graph through OpenVINO's converter), compiled for
                          the CPU with the float32 precision hint
    openvino_bf16         that IR compiled with the bf16 precision hint: bfloat16 arithmetic where the CPU has native
                          bf16 instructions (AVX512_BF16, AMX); elsewhere OpenVINO runs float32, and the result says so
    openvino_int8         the IR after NNCF post-training quantisation (`export_openvino_int8`), float32 hint for the
                          layers it leaves float
The OpenVINO variants are left out, with the reason, where the `openvino` package (or, for int8, `nncf`) is not
installed; the result records OpenVINO's version, the CPU plugin's optimisation capabilities and the CPU's flags.

Both PyTorch models carry the same weights: torchvision's randomly initialised model gets batch-norm statistics from
one random batch (`calibrate_batch_norm`: activations of about unit variance, as in a trained network, instead of
fading to subnormal floats that slow the CPU down), its state dict is loaded into betterconv's model with
`map_torchvision_state_dict`, and their outputs are checked to agree before anything is timed. Where
torchvision has no such model (`deeplabv3_mobilenet_v2`: torchvision's `deeplabv3_mobilenet_v3_large` is another
network; `yolov2`) the other four are measured alone and the result says why.

Timing: PyTorch runs under `torch.inference_mode()` with `torch.set_num_threads(threads)`; onnxruntime sessions
use `threads` intra-op threads, one inter-op thread, every graph optimisation (which turns the int8 QDQ pairs into
int8 kernels) and, by default, busy-waiting worker threads as PyTorch's OpenMP threads have; OpenVINO compiles with
`threads` inference threads in latency mode (one stream), for each batch size's static shape before its calls.
Every variant is called `warmup` times untimed, then in each of `repeats` rounds each variant runs once, in an order
rotated from round to round, so that load from other processes falls on all of them alike; or (`interleave=False`,
for an idle machine) each variant's calls run in one block, so that no engine's busy-waiting threads compete with
the next engine's call (`betterconv.analysis.timing`). Reported per variant and batch: median and minimum wall
time, images per second at the median, median process CPU time, and speed-ups against torchvision eager (its median
over the variant's; > 1 means faster) and against betterconv eager.
"""
from __future__ import annotations

import datetime as dt
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from tqdm import tqdm

from ..data.images import image_files
from ..deploy import (NcnnModel, OpenVINOModel, calibration_images, export_ncnn, export_onnx, export_openvino,
                      export_openvino_int8, fuse_batch_norm, openvino_available, openvino_cpu_info,
                      quantize_onnx_static, winograd_convolutions)
from ..deploy.openvino_runtime import installed
from ..deploy.winograd import winograd_eligible
from ..errors import BetterConvError
from ..interop.torchvision import map_torchvision_state_dict
from ..models import create_model, model_info, paper_input_size
from .timing import (Timed, cpu_model, load_average, machine_info, ort_call, ort_session, time_in_blocks,
                     time_interleaved, torch_call, versions)

__all__ = ["OPENVINO_VARIANTS", "VARIANTS", "InferRow", "InferBenchResult", "bench_record", "calibrate_batch_norm",
           "measure_inference", "torchvision_peer"]

VARIANTS = ("torchvision_eager", "betterconv_eager", "betterconv_fused_cl", "betterconv_winograd", "onnxruntime_fp32",
            "onnxruntime_int8", "ncnn_fp32", "openvino_fp32", "openvino_bf16", "openvino_int8")
OPENVINO_VARIANTS = ("openvino_fp32", "openvino_bf16", "openvino_int8")
_OPENVINO_INSTALL = "pip install 'betterconv[openvino]'"
LABELS = {
    "torchvision_eager": "torchvision eager fp32",
    "betterconv_eager": "betterconv eager fp32",
    "betterconv_fused_cl": "betterconv fused + channels-last",
    "betterconv_winograd": "betterconv fused + Winograd",
    "onnxruntime_fp32": "onnxruntime fp32",
    "onnxruntime_int8": "onnxruntime int8 (static)",
    "ncnn_fp32": "ncnn fp32",
    "openvino_fp32": "OpenVINO fp32",
    "openvino_bf16": "OpenVINO bf16 (precision hint)",
    "openvino_int8": "OpenVINO int8 (NNCF)",
}
BETTERCONV_VARIANTS = VARIANTS[1:]

# builder keywords that mean the same in torchvision's model classes
_SHARED_KWARGS = ("num_classes", "width_mult", "round_nearest", "dropout")
# the thresholds `InferBenchResult.acceptance` checks
EAGER_TOLERANCE = 1.05  # betterconv eager's time over torchvision eager's, at most
FASTEST_SPEEDUP = 3.0  # torchvision eager's time over the fastest betterconv path's at batch 1, at least


# ------------------------------------------------------------------------------------------------------ the models

def torchvision_peer(name: str, model_kwargs: Mapping[str, Any] | None = None) -> tuple[str | None, dict, str]:
    """torchvision's model of the same architecture as betterconv's `name` built with `model_kwargs`.

    Returns (torchvision builder name or None, the keywords to build betterconv's model with, a note). The keywords
    are the model record's `torchvision_config` (segmentation models without their auxiliary head: only the main
    output is timed) updated with `model_kwargs`; a keyword torchvision has no equivalent for means no peer."""
    info = model_info(name)
    kwargs = dict(model_kwargs or {})
    if info.torchvision is None:
        return None, kwargs, info.peer_note or f"torchvision has no {name}"
    tv_name = info.torchvision
    config = {k: v for k, v in info.torchvision_config.items() if k != "aux_head"}
    foreign = [k for k, v in kwargs.items() if k not in _SHARED_KWARGS and not (k in config and config[k] == v)]
    if foreign:
        return None, {**config, **kwargs}, (f"no torchvision peer: torchvision's {tv_name} has no equivalent of "
                                            f"{', '.join(foreign)}")
    return tv_name, {**config, **kwargs}, f"torchvision {tv_name}, the same weights loaded into both"


def _build_torchvision(tv_name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    shared = {k: v for k, v in kwargs.items() if k in _SHARED_KWARGS}
    if hasattr(torchvision.models.segmentation, tv_name):
        return getattr(torchvision.models.segmentation, tv_name)(weights=None, weights_backbone=None, aux_loss=False,
                                                                 **shared)
    return getattr(torchvision.models, tv_name)(weights=None, **shared)


def _output(out: Any) -> torch.Tensor:
    return out["out"] if isinstance(out, Mapping) else out  # torchvision's segmentation models return {"out": ...}


def calibrate_batch_norm(model: nn.Module, size: tuple[int, int], seed: int = 0, batch: int = 2) -> nn.Module:
    """Set every batch norm's running statistics to those of one random batch (in place; returns `model` in eval
    mode). A freshly initialised network has mean 0 / variance 1 statistics, so in eval mode its activations
    shrink layer by layer (MobileNetV2's depthwise initialisation divides them by about sqrt(channels)) down to
    subnormal floats, which the CPU handles far more slowly than normal ones and which no trained network has.
    After this every normalised activation has about unit variance, as in a trained network."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, exactly its statistics
    model.train()
    try:
        with torch.no_grad():
            model(torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed)))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return model


def _build_models(name: str, model_kwargs: Mapping[str, Any] | None, seed: int, size: tuple[int, int]
                  ) -> tuple[nn.Module, nn.Module | None, str | None, dict, str, float | None]:
    """(betterconv model, torchvision model or None, its name, betterconv keywords, note,
    max |betterconv - torchvision|)."""
    tv_name, kwargs, note = torchvision_peer(name, model_kwargs)
    torch.manual_seed(seed)
    model = create_model(name, **kwargs).eval()
    tv = None
    if tv_name is not None:
        torch.manual_seed(seed)
        try:
            tv = _build_torchvision(tv_name, kwargs).eval()
        except TypeError as e:
            tv_name, note = None, f"no torchvision peer: torchvision's {tv_name} refused {kwargs} ({e})"
    if tv is None:
        return calibrate_batch_norm(model, size, seed), None, None, kwargs, note, None
    calibrate_batch_norm(tv, size, seed)
    model.load_state_dict(map_torchvision_state_dict(model, tv.state_dict(), source=f"torchvision {tv_name}"))
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        a, b = _output(tv(x)), _output(model(x))
    if a.shape != b.shape:
        raise BetterConvError(f"{name}: output shape {tuple(b.shape)} differs from torchvision {tv_name}'s "
                              f"{tuple(a.shape)}")
    diff = float((a - b).abs().max())
    if not diff <= 1e-4 * max(1.0, float(a.abs().max())):
        raise BetterConvError(f"{name} and torchvision {tv_name} disagree with the same weights (max |difference| "
                              f"{diff:.3g}); their speeds are not comparable")
    return model, tv, tv_name, kwargs, note, diff


def _calibration(name: str, size: tuple[int, int], calibration: Any, count: int, seed: int) -> list[np.ndarray]:
    """Calibration inputs as the float graph takes them (normalised with the model record's mean and std): image
    files (paths, a folder, a pattern or a list file as `betterconv export --calib` takes them), arrays, or `count`
    random images when None."""
    info = model_info(name)
    mean, std = info.mean, info.std
    if calibration is None:
        g = np.random.default_rng(seed)
        m, s = np.asarray(mean, np.float32).reshape(3, 1, 1), np.asarray(std, np.float32).reshape(3, 1, 1)
        return [((g.random((3, *size), dtype=np.float32) - m) / s).astype(np.float32) for _ in range(count)]
    if isinstance(calibration, (str, Path)):
        return calibration_images(image_files(calibration, count, option="--calib"), size, (mean, std))
    items = list(calibration)
    if items and isinstance(items[0], (str, Path)):
        return calibration_images(items[:count], size, (mean, std))
    return [np.asarray(a, dtype=np.float32) for a in items[:count]]


def _openvino_sessions(model: nn.Module, name: str, size: tuple[int, int], wanted: list[str],
                       sessions: dict[str, Any], checks: dict[str, Any], threads: int, workdir: str | Path | None,
                       log: Callable[[str], None], calibration: Callable[[], list[np.ndarray]]) -> None:
    """Export `model` to OpenVINO IR (float32, and int8 when wanted) and compile the wanted OpenVINO variants into
    `sessions`; variants that cannot run are removed from `wanted` with the reason in `checks`, as are the CPU
    plugin's capabilities and each variant's difference from eager PyTorch."""
    ov_wanted = [v for v in OPENVINO_VARIANTS if v in wanted]
    if not openvino_available():
        for v in ov_wanted:
            wanted.remove(v)
        checks["openvino"] = f"not measured: the 'openvino' package is not installed ({_OPENVINO_INSTALL})"
        return
    if "openvino_int8" in wanted and not installed("nncf"):
        wanted.remove("openvino_int8")
        checks["openvino_int8"] = f"not measured: the 'nncf' package is not installed ({_OPENVINO_INSTALL})"
    info = openvino_cpu_info()
    checks["openvino_version"] = info["openvino"]
    checks["openvino_optimization_capabilities"] = info["optimization_capabilities"]
    checks["cpu_flags"] = info["cpu_flags"]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = model(x)
    ref = ref[0] if isinstance(ref, tuple) else ref

    def diff(net: OpenVINOModel) -> float:
        out = net(x)
        return float(((out[0] if isinstance(out, tuple) else out) - ref).abs().max())

    with tempfile.TemporaryDirectory(prefix="betterconv-infer-") as tmp:
        folder = Path(workdir) if workdir is not None else Path(tmp)
        try:
            if "openvino_fp32" in wanted or "openvino_bf16" in wanted:
                xml = folder / f"{name}_openvino_fp32.xml"
                checks["max_abs_diff_openvino_fp32_export_check"] = export_openvino(model, xml, (3, *size))
                for v, hint in (("openvino_fp32", "f32"), ("openvino_bf16", "bf16")):
                    if v in wanted:  # the compiled model holds the weights: the files may go
                        sessions[v] = OpenVINOModel(xml, precision=hint, threads=threads)
                        checks[f"max_abs_diff_{v}_vs_eager"] = diff(sessions[v])
                log(f"  exported {xml.name} for OpenVINO")
            if "openvino_bf16" in wanted:
                ran = sessions["openvino_bf16"].inference_precision
                checks["openvino_bf16"] = f"{info['bf16']}; the compiled model reports inference precision {ran}"
            if "openvino_int8" in wanted:
                xml = folder / f"{name}_openvino_int8.xml"
                _, report = export_openvino_int8(model, xml, (3, *size), calibration())
                checks["openvino_int8_top1_agreement_on_calibration"] = report.top1_agreement
                checks["openvino_int8_max_abs_diff_on_calibration"] = report.max_abs_diff
                sessions["openvino_int8"] = OpenVINOModel(xml, precision="f32", threads=threads)
                checks["max_abs_diff_openvino_int8_vs_eager"] = diff(sessions["openvino_int8"])
                log(f"  quantised {xml.name} with NNCF: {report.format()}")
        except BetterConvError as e:
            for v in ov_wanted:
                if v in wanted and v not in sessions:
                    wanted.remove(v)
            checks["openvino"] = f"not measured: {e}"


# ------------------------------------------------------------------------------------------------------ the result

@dataclass
class InferRow:
    variant: str
    batch: int
    median_ms: float
    min_ms: float
    images_per_s: float  # batch / median time
    cpu_ms: float  # median process CPU time (all threads of this process)
    speedup_vs_torchvision: float | None  # torchvision eager median / this median; > 1: faster; None without peer
    paired_speedup_vs_torchvision: float | None  # median over rounds of the same ratio within each round
    speedup_vs_betterconv_eager: float | None
    times_ms: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.variant]


@dataclass
class InferBenchResult:
    model: str
    model_kwargs: dict
    input_size: tuple[int, int]
    threads: int
    repeats: dict[int, int]
    warmup: int
    torchvision_model: str | None
    peer_note: str
    checks: dict[str, Any]
    rows: list[InferRow]
    load_average_before: list[float] | None = None
    load_average_after: list[float] | None = None
    elapsed_s: float = 0.0

    def row(self, variant: str, batch: int) -> InferRow | None:
        return next((r for r in self.rows if r.variant == variant and r.batch == batch), None)

    @property
    def batches(self) -> list[int]:
        return list(dict.fromkeys(r.batch for r in self.rows))

    def acceptance(self) -> dict[str, Any]:
        """Whether betterconv eager is at most 5% slower than torchvision eager (`EAGER_TOLERANCE`, each batch)
        and the fastest betterconv path at least `FASTEST_SPEEDUP` times faster than torchvision eager at batch 1.
        Empty without a peer."""
        if self.torchvision_model is None:
            return {}
        out: dict[str, Any] = {"eager_within_5_percent": {}, "eager_passes": True}
        for b in self.batches:
            tv, bc = self.row("torchvision_eager", b), self.row("betterconv_eager", b)
            if tv and bc:
                ratio = bc.median_ms / tv.median_ms
                out["eager_within_5_percent"][b] = {"betterconv_over_torchvision_time": ratio,
                                                    "passes": ratio <= EAGER_TOLERANCE}
                out["eager_passes"] &= ratio <= EAGER_TOLERANCE
        ones = [r for r in self.rows if r.batch == 1 and r.variant in BETTERCONV_VARIANTS]
        if ones and self.row("torchvision_eager", 1):
            best = min(ones, key=lambda r: r.median_ms)
            out["fastest_batch1"] = {"variant": best.variant, "speedup_vs_torchvision": best.speedup_vs_torchvision,
                                     "passes": best.speedup_vs_torchvision >= FASTEST_SPEEDUP}
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["repeats"] = {str(k): v for k, v in self.repeats.items()}
        for row, r in zip(d["rows"], self.rows):
            row["label"] = r.label
        d["acceptance"] = self.acceptance()
        return d

    def format(self) -> str:
        h, w = self.input_size
        head = (f"{'variant':<34}{'batch':>6}{'median ms':>11}{'min ms':>10}{'images/s':>10}{'cpu ms':>10}"
                f"{'vs torchvision':>16}{'vs bc eager':>13}")
        lines = [f"{self.model} {h}x{w}, {self.threads} thread(s), {cpu_model()}; "
                 f"load average {self.load_average_before} -> {self.load_average_after}",
                 f"peer: {self.peer_note}", head, "-" * len(head)]
        fmt = lambda v: "-" if v is None else f"{v:.2f}x"
        for b in self.batches:
            for r in (r for r in self.rows if r.batch == b):
                lines.append(f"{r.label:<34}{r.batch:>6}{r.median_ms:>11.2f}{r.min_ms:>10.2f}{r.images_per_s:>10.1f}"
                             f"{r.cpu_ms:>10.1f}{fmt(r.speedup_vs_torchvision):>16}"
                             f"{fmt(r.speedup_vs_betterconv_eager):>13}")
        lines.append("speed-ups are ratios of median times (> 1: faster than the reference); images/s at the median")
        acc = self.acceptance()
        if acc:
            eager = ", ".join(f"batch {b}: {v['betterconv_over_torchvision_time']:.3f}"
                              for b, v in acc["eager_within_5_percent"].items())
            lines.append(f"betterconv eager / torchvision eager time: {eager} "
                         f"({'within' if acc['eager_passes'] else 'NOT within'} 5%)")
            if "fastest_batch1" in acc:
                f = acc["fastest_batch1"]
                lines.append(f"fastest betterconv path at batch 1: {LABELS[f['variant']]}, "
                             f"{f['speedup_vs_torchvision']:.2f}x torchvision eager "
                             f"({'>=' if f['passes'] else 'below'} {FASTEST_SPEEDUP:g}x)")
        checks = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.checks.items())
        lines.append(f"checks: {checks}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- measurement

def _repeats_for(repeats: int | Mapping[int, int], batch: int) -> int:
    n = repeats.get(batch, max(repeats.values())) if isinstance(repeats, Mapping) else repeats
    if int(n) < 1:
        raise BetterConvError(f"repeats must be >= 1, got {n}")
    return int(n)


def measure_inference(name: str, *, input_size: Sequence[int] | None = None, batches: Sequence[int] = (1, 8),
                      repeats: int | Mapping[int, int] = 10, warmup: int = 2, threads: int = 2,
                      model_kwargs: Mapping[str, Any] | None = None, variants: Sequence[str] | None = None,
                      calibration: Any = None, calibration_count: int = 4, seed: int = 0,
                      time_budget_s: float | None = None, workdir: str | Path | None = None,
                      ort_spinning: bool = True, interleave: bool = True,
                      log: Callable[[str], None] | None = None, progress: bool = False) -> InferBenchResult:
    """Measure `name` (a registered model, built with `model_kwargs`) along the paths in `variants` (default: all
    of `VARIANTS`; torchvision's only where it has the architecture) at each batch size, at `input_size` (H, W;
    default the paper's). `repeats` is the number of timed rounds, or a mapping batch -> rounds. `calibration`:
    image files (a list, or a folder / pattern / list file) or arrays for the int8 graph, else
    `calibration_count` random images. With `time_budget_s`, the rounds of a batch size stop once they have taken
that long (after at least 3, or all if fewer were asked for); `repeats` in the result says how many ran. The ONNX
files go to `workdir` (kept) or a temporary folder. `ort_spinning`: onnxruntime's threads busy-wait (see
    `timing.ort_session`). `interleave`: rounds of one call per variant (robust to load from other processes), else
    each variant's calls in one block (`timing.time_in_blocks`: no engine's spinning threads slow the next).
    `progress`: a progress bar on stderr (the set-up, then each timed round). Returns an `InferBenchResult`;
    `torch`'s thread count is restored afterwards."""
    log = log or (lambda msg: None)
    wanted = list(variants or VARIANTS)
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        raise BetterConvError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if threads < 1:
        raise BetterConvError(f"threads must be >= 1, got {threads}")
    batches = [int(b) for b in batches]
    if not batches or min(batches) < 1:
        raise BetterConvError(f"batch sizes must be >= 1, got {batches}")
    size = tuple(int(v) for v in (input_size or paper_input_size(name)))
    if len(size) == 3:
        size = size[1:]
    if len(size) != 2 or min(size) < 1:
        raise BetterConvError(f"input_size must be (H, W), got {tuple(input_size or ())}")
    rounds = {b: _repeats_for(repeats, b) for b in batches}
    bar = tqdm(total=1 + sum(rounds.values()), desc=f"bench infer {name}", unit="round", disable=not progress,
               leave=False)

    def round_log(batch: int) -> Callable[[str], None]:
        def report(msg: str) -> None:
            if msg.startswith("round "):
                bar.update()
            log(f"  batch {batch} {msg}")
        return report

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    load_before = load_average()
    try:
        bar.set_postfix_str("building and exporting")
        model, tv, tv_name, kwargs, note, tv_diff = _build_models(name, model_kwargs, seed, size)
        if tv is None:
            wanted = [v for v in wanted if v != "torchvision_eager"]
        checks: dict[str, Any] = {"onnxruntime_spinning": ort_spinning, "interleaved_rounds": interleave}
        if tv_diff is not None:
            checks["max_abs_diff_betterconv_vs_torchvision"] = tv_diff
        with torch.inference_mode():
            checks["output_std"] = float(model(torch.randn(1, 3, *size, generator=torch.Generator()
                                                           .manual_seed(seed + 4))).std())
        log(f"{name} {size[0]}x{size[1]}: built ({note})")

        modules: dict[str, nn.Module] = {}
        if "torchvision_eager" in wanted:
            modules["torchvision_eager"] = tv
        if "betterconv_eager" in wanted:
            modules["betterconv_eager"] = model
        if "betterconv_winograd" in wanted and not any(winograd_eligible(m) for m in model.modules()):
            wanted.remove("betterconv_winograd")
            checks["winograd"] = "no 3x3 stride-1 convolution: not measured"
        if "betterconv_fused_cl" in wanted or "betterconv_winograd" in wanted:
            fused = fuse_batch_norm(model).to(memory_format=torch.channels_last).eval()
            x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed + 2))
            with torch.inference_mode():
                ref, got = model(x), fused(x.contiguous(memory_format=torch.channels_last))
            checks["max_abs_diff_fused_cl_vs_eager"] = float((ref - got).abs().max())
            modules["betterconv_fused_cl"] = fused

        sessions: dict[str, Any] = {}
        if "onnxruntime_fp32" in wanted or "onnxruntime_int8" in wanted:
            with tempfile.TemporaryDirectory(prefix="betterconv-infer-") as tmp:
                folder = Path(workdir) if workdir is not None else Path(tmp)
                fp32, int8 = folder / f"{name}_fp32.onnx", folder / f"{name}_int8.onnx"
                diff = export_onnx(model, fp32, (3, *size), dynamic_batch=True, normalize=None, verify=True)
                checks["max_abs_diff_onnx_fp32_vs_eager"] = diff
                log(f"  exported {fp32.name} (max |ONNX - PyTorch| {diff:.2e})")
                if "onnxruntime_fp32" in wanted:
                    sessions["onnxruntime_fp32"] = ort_session(fp32, threads, ort_spinning)
                if "onnxruntime_int8" in wanted:
                    images = _calibration(name, size, calibration, calibration_count, seed)
                    report = quantize_onnx_static(fp32, int8, images, check=True, batch_size=len(images) or 1)
                    checks["int8_calibration_images"] = report.images
                    checks["int8_top1_agreement_on_calibration"] = report.top1_agreement
                    checks["int8_max_abs_diff_on_calibration"] = report.max_abs_diff
                    log(f"  quantised {int8.name}: {report.format()}")
                    sessions["onnxruntime_int8"] = ort_session(int8, threads, ort_spinning)
                # the sessions hold the graphs in memory: the files may go
        if "ncnn_fp32" in wanted:
            with tempfile.TemporaryDirectory(prefix="betterconv-infer-") as tmp:
                param = (Path(workdir) if workdir is not None else Path(tmp)) / f"{name}.param"
                try:
                    checks["max_abs_diff_ncnn_fp32_vs_eager"] = export_ncnn(model, param, (3, *size))
                    sessions["ncnn_fp32"] = NcnnModel(param, threads=threads)  # holds the graph: the files may go
                except BetterConvError as e:
                    wanted.remove("ncnn_fp32")
                    checks["ncnn"] = f"not measured: {e}"
        if any(v in wanted for v in OPENVINO_VARIANTS):
            _openvino_sessions(model, name, size, wanted, sessions, checks, threads, workdir, log,
                               lambda: _calibration(name, size, calibration, calibration_count, seed))

        bar.update()
        rows: list[InferRow] = []
        for batch in batches:
            bar.set_postfix_str(f"batch {batch}")
            g = torch.Generator().manual_seed(seed + 3)
            x = torch.randn(batch, 3, *size, generator=g)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            x_np = np.ascontiguousarray(x.numpy(), dtype=np.float32)
            if "betterconv_winograd" in wanted:  # the per-layer choice depends on the batch: made for each one
                with torch.inference_mode():
                    modules["betterconv_winograd"], layers = winograd_convolutions(fused, x_cl)
                    diff = float((modules["betterconv_winograd"](x_cl) - model(x)).abs().max())
                checks[f"winograd_batch{batch}"] = {
                    "max_abs_diff_vs_eager": diff, "layers": len(layers),
                    "chosen": {c: sum(r["choice"] == c for r in layers) for c in sorted({r["choice"] for r in layers})}}
            timed = []
            for v in VARIANTS:
                if v not in wanted:
                    continue
                if v == "ncnn_fp32" or v in OPENVINO_VARIANTS:
                    if v in OPENVINO_VARIANTS:
                        sessions[v].prepare(x_np.shape)  # compiled for this batch's shape before any call
                    timed.append(Timed(v, lambda net=sessions[v]: net(x_np)))
                elif v in sessions:
                    timed.append(Timed(v, ort_call(sessions[v], x_np)))
                else:
                    channels_last = v in ("betterconv_fused_cl", "betterconv_winograd")
                    timed.append(Timed(v, torch_call(modules[v], x_cl if channels_last else x)))
            if interleave:
                rounds[batch] = time_interleaved(timed, warmup, rounds[batch], time_budget_s, round_log(batch))
            else:
                rounds[batch] = time_in_blocks(timed, warmup, rounds[batch], time_budget_s)
                bar.update(rounds[batch])
                log(f"  batch {batch}, {rounds[batch]} call(s) each: "
                    + ", ".join(f"{t.variant} {statistics.median(t.wall):.1f} ms" for t in timed))
            by = {t.variant: t for t in timed}
            tv_t, bc_t = by.get("torchvision_eager"), by.get("betterconv_eager")
            for t in timed:
                med = statistics.median(t.wall)
                rows.append(InferRow(
                    variant=t.variant, batch=batch, median_ms=med, min_ms=min(t.wall),
                    images_per_s=batch * 1000.0 / med, cpu_ms=statistics.median(t.cpu),
                    speedup_vs_torchvision=statistics.median(tv_t.wall) / med if tv_t else None,
                    paired_speedup_vs_torchvision=(statistics.median(a / b for a, b in zip(tv_t.wall, t.wall))
                                                   if tv_t else None),
                    speedup_vs_betterconv_eager=statistics.median(bc_t.wall) / med if bc_t else None,
                    times_ms=[round(v, 3) for v in t.wall]))
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
    return InferBenchResult(
        model=name, model_kwargs=dict(kwargs), input_size=size, threads=threads, repeats=rounds, warmup=warmup,
        torchvision_model=tv_name, peer_note=note, checks=checks, rows=rows,
        load_average_before=load_before, load_average_after=load_average(),
        elapsed_s=round(time.perf_counter() - start, 1))


# ------------------------------------------------------------------------------------------------------ the record

def bench_record(results: Sequence[InferBenchResult], **extra: Any) -> dict[str, Any]:
    """The JSON record of one or more measurements: date, command, machine (CPU, threads, load average before
    the first and after the last), versions, `extra` settings, each result and its `acceptance` checks."""
    counts = sorted({r.threads for r in results})
    threads = counts[0] if len(counts) == 1 else counts
    machine = machine_info(threads)
    machine["load_average_before"] = results[0].load_average_before if results else None
    machine["load_average_after"] = results[-1].load_average_after if results else None
    before = machine["load_average_before"]  # before this process's own work (the later ones count it too)
    if before and before[0] > (os.cpu_count() or 1) - max(counts or [1]) + 0.5:
        machine["note"] = ("other processes kept the cores busy (1-minute load average above the cores this run "
                           "did not use): times include waits for a core"
                           + ("; with several threads PyTorch's OpenMP threads also wait for each other at every "
                              "parallel region, so eager and channels-last times are inflated and spread out far "
                              "more than onnxruntime's (no busy-waiting)" if max(counts) > 1 else "")
                           + "; compare medians within one run only")
    return {"benchmark": "betterconv bench infer: eager, fused channels-last, onnxruntime fp32 / int8 vs torchvision",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": shlex.join(sys.argv),
            "cwd": os.getcwd(), "machine": machine, "versions": versions(), **extra,
            "results": [r.to_dict() for r in results],
            "acceptance": {f"{r.model}, {r.threads} thread(s)": r.acceptance() for r in results
                           if r.torchvision_model is not None}}
