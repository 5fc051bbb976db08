"""What every exporter (ONNX, TorchScript, ncnn) checks and prepares the same way.

    check_input_size(input_size)        (C, H, W) from (C, H, W) or (H, W), refused when not positive
    check_normalize(normalize, C)       the `Normalize` module for (mean, std), or None
    example_input(size, batch, ...)     the seeded random batch an export is traced and verified on
    reference_output(model, norm, x)    what the model as given computes for the graph's input, in eval mode
    check_output(path, engine, ...)     max |exported - PyTorch|, refused above ONNX_ATOL (scaled by magnitude)
    temporary_path(path)                the file an export writes before it is checked and renamed over `path`

An exported graph takes the image either already normalised or in [0, 1] behind `Normalize` (see
`betterconv.deploy.export` for the input contract); its outputs are compared with the model's before any file is
put at the output path.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import BetterConvError

__all__ = ["ONNX_ATOL", "Normalize", "check_input_size", "check_normalize", "check_output", "example_input",
           "reference_output", "temporary_path", "tolerance"]

ONNX_ATOL = 1e-4  # the largest |exported - PyTorch| allowed, relative to outputs of magnitude <= 1 (see tolerance)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel of an NCHW batch, as a module that exports to ONNX (Sub, Div) and to ncnn
    (Scale)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape != std_t.shape:
            raise BetterConvError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if not torch.all(std_t > 0):
            raise BetterConvError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def check_input_size(input_size: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of an export's input: `input_size` as (C, H, W), or (H, W) for 3 channels; sizes must be positive."""
    size = tuple(int(v) for v in input_size)
    if len(size) == 2:
        size = (3, *size)
    if len(size) != 3 or min(size) < 1:
        raise BetterConvError(f"input_size must be (C, H, W) or (H, W) with positive sizes, got {tuple(input_size)}")
    return size  # type: ignore[return-value]


def check_normalize(normalize: tuple[Sequence[float], Sequence[float]] | None, channels: int) -> Normalize | None:
    """The `Normalize` module for ``normalize=(mean, std)`` (one value, or one per channel), None for None."""
    if normalize is None:
        return None
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise BetterConvError("normalize must be (mean, std) or None") from None
    mod = Normalize(mean, std)
    if mod.mean.shape[1] not in (1, channels):
        raise BetterConvError(f"normalize has {mod.mean.shape[1]} values for a {channels}-channel input")
    return mod


def example_input(size: tuple[int, int, int], batch: int, normalized: bool, seed: int = 0) -> torch.Tensor:
    """A seeded random (batch, C, H, W) input: an image in [0, 1] when the graph `normalized` it itself, else
    about what a normalised image looks like ((x - 0.5) / 0.25)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *size, generator=g)
    return x if normalized else (x - 0.5) / 0.25


def reference_output(model: nn.Module, norm: Normalize | None, x: torch.Tensor,
                     several: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """What the model as given computes in eval mode for the graph's input `x` (no folding), in float32 on the
    CPU: one tensor, or with `several` a tuple of the model's outputs (one or more). The model's training mode is
    restored afterwards."""
    was_training = model.training
    param = next(model.parameters(), None)
    x = norm(x) if norm is not None else x
    if param is not None:
        x = x.to(param.device, param.dtype if param.is_floating_point() else torch.float32)
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    if several and isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return tuple(o.float().cpu() for o in out)
    if not isinstance(out, torch.Tensor):
        raise BetterConvError(f"export needs a model whose forward returns one tensor, got {type(out).__name__}")
    return (out.float().cpu(),) if several else out.float().cpu()


@contextmanager
def temporary_path(path: Path) -> Iterator[Path]:
    """A temporary file name beside `path` (same folder, so `os.replace` is atomic); removed if still there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def tolerance(reference: torch.Tensor, atol: float) -> float:
    """`atol` for outputs of magnitude up to 1, scaled by the largest |output| above that: float32 rounding grows
    with the values (logits of an untrained deep network can be in the hundreds)."""
    return atol * max(1.0, float(reference.abs().max()))


def check_output(path: Path, engine: str, got: torch.Tensor | np.ndarray, reference: torch.Tensor,
                 atol: float) -> float:
    """max |got - reference| of an exported file's output, after checking its shape; raises `BetterConvError`
    (nothing is written) when it exceeds `atol` scaled by the output's magnitude (`tolerance`)."""
    got = torch.as_tensor(got)
    if tuple(got.shape) != tuple(reference.shape):
        raise BetterConvError(f"{path}: {engine} output shape {tuple(got.shape)} differs from PyTorch's "
                              f"{tuple(reference.shape)}")
    diff = float((got.float() - reference).abs().max())
    limit = tolerance(reference, atol)
    if not diff <= limit:
        raise BetterConvError(f"{path}: {engine} output differs from PyTorch by {diff:.3g} (limit {limit:.3g}); "
                              f"nothing written")
    return diff
