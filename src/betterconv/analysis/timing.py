"""Timing on the CPU: callables timed in interleaved rounds or in blocks, PyTorch and onnxruntime calls to time,
and the description of the machine (CPU, threads, load, versions) that goes with every measurement.

    Timed(name, call)                           one thing to time; keeps its wall and process CPU times (ms)
    time_interleaved(timed, warmup, rounds)     rounds of one call each, the order rotated from round to round
    time_in_blocks(timed, warmup, rounds)       each one's calls back to back, right after its own warm-up
    torch_call(model, x), ort_call(session, x)  a model's forward as a callable (PyTorch under inference mode)
    ort_session(path, threads)                  an onnxruntime CPU session set up for timing
    machine_info(threads), versions()           what a result records about where it was measured
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Timed", "cpu_model", "load_average", "machine_info", "ort_call", "ort_session", "time_in_blocks",
           "time_interleaved", "torch_call", "versions"]

# --------------------------------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")


def machine_info(threads: int | Sequence[int]) -> dict[str, Any]:
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "load_average": load_average(), "thread_environment": {k: os.environ.get(k) for k in _THREAD_ENV}}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "onnx", "onnxruntime", "betterconv"):
        try:
            out[name] = getattr(__import__(name), "__version__", None)
        except ImportError:
            out[name] = None
    return out


# ------------------------------------------------------------------------------------------------------- timing

class Timed:
    """One thing to time: `call` and the wall-clock and process CPU times (ms) of its timed calls."""

    def __init__(self, variant: str, call: Callable[[], Any]) -> None:
        self.variant, self.call = variant, call
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def timed(self) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        self.call()
        t1, c1 = time.perf_counter(), time.process_time()
        self.wall.append((t1 - t0) * 1000)
        self.cpu.append((c1 - c0) * 1000)


def time_interleaved(timed: Sequence[Timed], warmup: int, rounds: int, time_budget_s: float | None,
                     log: Callable[[str], None]) -> int:
    """Rounds of one call per variant, the order rotated from round to round; returns the rounds run."""
    for t in timed:  # warm-up: allocator, oneDNN primitive caches, onnxruntime's first-run set-up
        for _ in range(warmup):
            t.call()
    began = time.perf_counter()
    for r in range(rounds):
        k = r % len(timed)
        for t in timed[k:] + timed[:k]:  # rotate the order so that no variant always runs first
            t.timed()
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{t.variant} {t.wall[-1]:.1f} ms" for t in timed))
        if time_budget_s is not None and r + 1 >= min(3, rounds) and time.perf_counter() - began > time_budget_s:
            log(f"time budget of {time_budget_s:g} s spent after {r + 1} round(s)")
            return r + 1
    return rounds


def time_in_blocks(timed: Sequence[Timed], warmup: int, rounds: int, time_budget_s: float | None) -> int:
    """Each variant's calls back to back, right after its own warm-up, so that no other engine's worker threads are
    still busy-waiting when it runs (onnxruntime with spinning, PyTorch's OpenMP); the time budget is shared out.
    Returns the fewest calls any variant made."""
    for t in timed:
        for _ in range(warmup):
            t.call()
        began = time.perf_counter()
        for r in range(rounds):
            t.timed()
            if (time_budget_s is not None and r + 1 >= min(3, rounds)
                    and time.perf_counter() - began > time_budget_s / len(timed)):
                break
    return min(len(t.wall) for t in timed)


def torch_call(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode():
            return model(x)

    return call


def ort_call(session: Any, x: np.ndarray) -> Callable[[], Any]:
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def ort_session(path: Path, threads: int, spinning: bool = True):
    """An onnxruntime session for timing: every graph optimisation, `threads` intra-op threads, one inter-op
    thread. With `spinning` its worker threads busy-wait between operators, as PyTorch's OpenMP threads do by
    default; without, they sleep, which is kinder to other processes on a shared machine."""
    import onnxruntime as ort  # imported on use: only ONNX timings need onnxruntime

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
