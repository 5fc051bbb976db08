"""Activation memory: the rule of MobileNetV2 §5 (Sandler et al. 2018), its Table 3, and a measured peak.

§5.1, eq. (2): for a graph with only trivial parallel structure (residual connections), the memory needed for
inference is

    M(G) = max over ops of  sum |inputs| + sum |outputs| (+ the op's scratch space, taken as 0 here)

and "if we treat a bottleneck residual block as a single operation (and treat inner convolution as a disposable
tensor)", the expanded tensor inside is streamed in t channel groups and never materialised whole. The rule here
applies eq. (2) to a forward pass, generically over module types:

- a *streamed block* (`InvertedResidual`; `ShuffleUnit`, whose grouped 1x1 -> shuffle -> depthwise -> grouped 1x1
  branch has the same A∘N∘B form; `DepthwiseSeparableConv`, where the depthwise output is streamed into the
  pointwise sums) is one op: its input(s) + output(s);
- batch norm, activations, dropout, identity and flatten are fused into the op that produced their input (they
  cost nothing), as inference engines run them;
- every other leaf module (convolution, pooling, linear, upsampling, reorg, ...) is one op: inputs + outputs;
- tensor operations written in a `forward` outside any op module (a residual `x + y`, `torch.cat`,
  `F.interpolate`) are ops too, views excepted.

Tensors are counted once per op (an in-place output is its input), parameters and buffers never. Table 3
assumes 16-bit floats: bytes = elements x 2, and K = 1000 bytes. An op belongs to the row of its input's spatial
size (its largest input), so a stride-2 op's cost is listed at the finer resolution, where it is paid.
"""
from __future__ import annotations

import math
import textwrap
import weakref
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from ..layers import DepthwiseSeparableConv, InvertedResidual, ShuffleUnit
from ..models import create_model

BYTES_PER_ELEMENT = 2  # Table 3: "We assume 16-bit floats for activations"
KILO = 1000

STREAMED: tuple[type[nn.Module], ...] = (InvertedResidual, ShuffleUnit, DepthwiseSeparableConv)
FUSED: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU,
    nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
    nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten,
)

Size = tuple[int, int]


def _size(t: torch.Tensor) -> Size:
    """The spatial size of a tensor: (H, W) of an (N, C, H, W) map, (1, L) for (N, C, L), (1, 1) for vectors."""
    hw = tuple(t.shape[2:])[-2:] if t.ndim >= 3 else ()
    return (1,) * (2 - len(hw)) + hw


def _storages(tensors: Iterable[torch.Tensor]) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


@dataclass(frozen=True)
class MaterialisedOp:
    name: str  # module name, or "<module>:<aten op>" for tensor operations written in a forward
    size: Size  # spatial size of its largest input: its row
    elements: int  # inputs + outputs, each tensor once
    tensors: tuple[tuple[Size, int], ...]  # (spatial size, elements) of each of them


class MaterialisationTracker(TorchDispatchMode):
    """Collects the ops of eq. (2) over one forward pass of `model` (use as a context manager around it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.ops: list[MaterialisedOp] = []
        self._weights = _storages(chain(model.parameters(), model.buffers()))
        self._stack: list[str] = []
        self._active: nn.Module | None = None  # the op module running now; everything inside it is its own
        self._inputs: list[torch.Tensor] = []
        self._hooks: list[Any] = []

    def __enter__(self) -> MaterialisationTracker:
        for name, module in self.model.named_modules():
            self._hooks.append(module.register_forward_pre_hook(self._make_pre(name)))
            self._hooks.append(module.register_forward_hook(self._post))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        super().__exit__(*exc)

    def _activations(self, obj: Any) -> list[torch.Tensor]:
        return [t for t in tree_leaves(obj) if isinstance(t, torch.Tensor) and t.is_floating_point()
                and t.numel() and t.untyped_storage().data_ptr() not in self._weights]

    def _record(self, name: str, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        unique = {(t.data_ptr(), tuple(t.shape)): t for t in chain(inputs, outputs)}  # in-place: counted once
        if not unique:
            return
        size = _size(max(inputs, key=lambda t: math.prod(_size(t)))) if inputs else (1, 1)
        tensors = tuple((_size(t), t.numel()) for t in unique.values())
        self.ops.append(MaterialisedOp(name, size, sum(n for _, n in tensors), tensors))

    def _make_pre(self, name: str):
        def pre(module: nn.Module, args: tuple) -> None:
            self._stack.append(name)
            if self._active is None and (isinstance(module, STREAMED) or next(module.children(), None) is None):
                self._active, self._inputs = module, self._activations(args)
        return pre

    def _post(self, module: nn.Module, args: tuple, output: Any) -> None:
        name = self._stack.pop()
        if module is self._active:
            self._active = None
            if not isinstance(module, FUSED):
                self._record(name, self._inputs, self._activations(output))
            self._inputs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self._active is None and not func.is_view:
            inputs = self._activations((args, kwargs))
            if inputs:
                where = (self._stack[-1] if self._stack else "") or type(self.model).__name__
                self._record(f"{where}:{func.overloadpacket.__name__}", inputs, self._activations(out))
        return out


class LiveMemory(TorchDispatchMode):
    """Measures the peak of live activation bytes over a real forward pass.

    Every storage created by an op (and each storage passed to `track`) counts from its creation until it is
    freed (a weakref finalizer); parameters and buffers are never counted, nor the scratch space inside an op.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._weights = _storages(chain(model.parameters(), model.buffers()))
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._finalizers: list[weakref.finalize] = []
        self.live = self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage in self._seen or storage.data_ptr() in self._weights or not storage.nbytes():
            return
        self._seen[storage] = nbytes = storage.nbytes()
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        self._finalizers.append(weakref.finalize(storage, self._free, nbytes))

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __exit__(self, *exc: Any) -> None:
        for f in self._finalizers:
            f.detach()
        super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad, restoring every submodule's own training flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in flags:
            m.training = training


def example_input(model: nn.Module, input_size: tuple[int, ...]) -> torch.Tensor:
    device = next(chain(model.parameters(), model.buffers()), torch.empty(0)).device
    return torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0)).to(device)


def materialised_ops(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> list[MaterialisedOp]:
    with eval_mode(model), ExitStack() as stack:
        x = example_input(model, input_size)
        tracker = stack.enter_context(MaterialisationTracker(model))
        model(x)
    return tracker.ops


# --- Table 3 ----------------------------------------------------------------------------------------------

# Sandler et al. 2018, Table 3: channels / K bytes per resolution (16-bit activations), and the max row in K
PAPER_TABLE3: dict[str, dict[int | str, Any]] = {
    "MobileNetV1": {112: (64, 1600), 56: (128, 800), 28: (256, 400), 14: (512, 200), 7: (1024, 100),
                    1: (1024, 2), "max": 800},
    "MobileNetV2": {112: (16, 400), 56: (32, 200), 28: (64, 100), 14: (160, 62), 7: (320, 32),
                    1: (1280, 2), "max": 200},
    "ShuffleNet (2x, g=3)": {112: (32, 800), 56: (48, 300), 28: (400, 600), 14: (800, 310), 7: (1600, 156),
                             1: (1600, 3), "max": 600},
}

# (label, registered model, its arguments, the paper's column it is compared to)
TABLE3_COLUMNS = [
    ("MobileNetV1", "mobilenet_v1", {}, "MobileNetV1"),
    ("MobileNetV2", "mobilenet_v2", {}, "MobileNetV2"),
    ("ShuffleNet 2x g=3", "shufflenet_v1", {"groups": 3, "scale": 2.0}, "ShuffleNet (2x, g=3)"),
    # the widths the paper's ShuffleNet cells actually have (400/800/1600 = 2 x Table 1's g=2 column)
    ("ShuffleNet 2x g=2", "shufflenet_v1", {"groups": 2, "scale": 2.0}, "ShuffleNet (2x, g=3)"),
]


@dataclass(frozen=True)
class MemoryCell:
    size: Size
    elements: int  # the row's largest op: inputs + outputs
    op: str
    largest_tensor: int  # the largest single tensor of this spatial size (how the paper's V1 cells read)

    @property
    def bytes(self) -> int:
        return self.elements * BYTES_PER_ELEMENT

    @property
    def channels(self) -> float:
        """The op's elements as channels at the row's resolution (24@56 + 32@28 reads as 32)."""
        return self.elements / math.prod(self.size)


def memory_rows(ops: list[MaterialisedOp]) -> dict[Size, MemoryCell]:
    """The largest op per input resolution, finest first."""
    rows: dict[Size, MemoryCell] = {}
    for op in ops:
        if op.size not in rows or op.elements > rows[op.size].elements:
            rows[op.size] = MemoryCell(op.size, op.elements, op.name, 0)
    largest: dict[Size, int] = {}
    for size, n in chain.from_iterable(op.tensors for op in ops):
        largest[size] = max(largest.get(size, 0), n)
    return {s: MemoryCell(s, c.elements, c.op, largest.get(s, 0))
            for s, c in sorted(rows.items(), key=lambda kv: -math.prod(kv[0]))}


def stem_excluded(size: Size, input_hw: Size) -> bool:
    """Rows finer than 1/4 of the input (224 and 112 at 224): the paper's max row leaves out its 112x112 row."""
    return math.prod(size) * 16 > math.prod(input_hw)


@dataclass(frozen=True)
class MemoryColumn:
    label: str
    model: str
    kwargs: dict[str, Any]
    rows: dict[Size, MemoryCell]
    input_hw: Size
    paper: str | None = None

    @property
    def max_bytes(self) -> int:
        """The max row as the paper's: over rows at 1/4 of the input and coarser."""
        return max((c.bytes for s, c in self.rows.items() if not stem_excluded(s, self.input_hw)), default=0)

    @property
    def peak_bytes(self) -> int:
        """Over every row, the stem included: `Profile.peak_activation_bytes`."""
        return max((c.bytes for c in self.rows.values()), default=0)

    @property
    def largest_tensor_bytes(self) -> int:
        return BYTES_PER_ELEMENT * max((c.largest_tensor for s, c in self.rows.items()
                                        if not stem_excluded(s, self.input_hw)), default=0)

    @property
    def paper_max_bytes(self) -> int | None:
        return PAPER_TABLE3[self.paper]["max"] * KILO if self.paper else None

    @property
    def relative_difference(self) -> float | None:
        return self.max_bytes / self.paper_max_bytes - 1 if self.paper else None


@dataclass(frozen=True)
class MemoryTable:
    input_size: tuple[int, int, int]
    columns: list[MemoryColumn] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": "MobileNetV2 §5 eq. (2): max over ops of inputs + outputs; InvertedResidual, ShuffleUnit and "
                    "DepthwiseSeparableConv are single ops; norm/activation/dropout fused; row = input resolution",
            "bytes_per_element": BYTES_PER_ELEMENT, "kilo": KILO, "input_size": list(self.input_size),
            "max_rows": "resolutions at 1/4 of the input and coarser (the paper's max row leaves out 112x112)",
            "columns": [{
                "label": c.label, "model": c.model, "kwargs": c.kwargs, "paper_column": c.paper,
                "max_bytes": c.max_bytes, "peak_bytes": c.peak_bytes, "paper_max_bytes": c.paper_max_bytes,
                "relative_difference": c.relative_difference, "largest_tensor_bytes": c.largest_tensor_bytes,
                "rows": [{"size": list(s), "elements": cell.elements, "channels": cell.channels, "bytes": cell.bytes,
                          "op": cell.op, "largest_tensor_bytes": cell.largest_tensor * BYTES_PER_ELEMENT,
                          "paper": _paper_cell(c, s)} for s, cell in c.rows.items()],
            } for c in self.columns],
        }

    def format(self) -> str:
        sizes = sorted({s for c in self.columns for s in c.rows}, key=lambda s: -math.prod(s))
        h, w = self.input_size[1:]
        width = 22
        lines = ["Activation memory at each resolution, channels/K: ours by MobileNetV2 §5 eq. (2) beside the "
                 "paper's Table 3", f"(16-bit activations, K = {KILO} bytes, input {h}x{w})", "",
                 "Size      " + "".join(f"{c.label:<{width}}" for c in self.columns),
                 "          " + "".join(f"{'ours':<11}{'paper':<11}" for _ in self.columns)]
        for s in sizes:
            cells = []
            for c in self.columns:
                ours = f"{_num(c.rows[s].channels)}/{_kilo(c.rows[s].bytes)}" if s in c.rows else "-"
                paper = _paper_cell(c, s)
                cells.append(f"{ours:<11}{(f'{paper[0]}/{paper[1]}' if paper else '-'):<11}")
            lines.append(f"{s[0]}x{s[1]}".ljust(10) + "".join(cells))
        lines.append("max       " + "".join(
            f"{_kilo(c.max_bytes) + 'K':<11}{(str(PAPER_TABLE3[c.paper]['max']) + 'K') if c.paper else '-':<11}"
            for c in self.columns))
        lines.append("vs paper  " + "".join(
            f"{(f'{c.relative_difference:+.0%}' if c.paper else ''):<{width}}" for c in self.columns))
        lines = [line.rstrip() for line in lines]
        order = " < ".join(c.label for c in sorted(self.columns[:3], key=lambda c: c.max_bytes))
        notes = [
            "rule: max over ops of inputs + outputs (eq. 2); InvertedResidual, ShuffleUnit and "
            "DepthwiseSeparableConv are single ops (inner tensors streamed); norm, activation and dropout are "
            "fused into the op before them; an op is listed at its input's resolution; channels = elements / "
            "(H x W) of that row.",
            f"max: rows at {h // 4}x{w // 4} and below, as the paper's max row (which leaves out 112x112). Over "
            "all rows, the stem included: " + ", ".join(f"{c.label} {_kilo(c.peak_bytes)}K" for c in self.columns)
            + ".",
            f"largest single tensor at {h // 4}x{w // 4} and below (how the paper's MobileNetV1 and ShuffleNet "
            "cells read): " + ", ".join(f"{c.label} {_kilo(c.largest_tensor_bytes)}K" for c in self.columns) + ".",
            f"ordering of our max: {order} (the paper's: MobileNetV2 < ShuffleNet < MobileNetV1). Why each cell "
            "differs: docs/memory-table.md.",
        ]
        lines.append("")
        lines += [textwrap.fill(n, 110, subsequent_indent="  ") for n in notes]
        return "\n".join(lines)


def _paper_cell(column: MemoryColumn, size: Size) -> tuple[int, int] | None:
    if column.paper is None or size[0] != size[1]:
        return None
    return PAPER_TABLE3[column.paper].get(size[0])


def _num(x: float) -> str:
    return str(round(x)) if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def _kilo(nbytes: int) -> str:
    k = nbytes / KILO
    return f"{k:.0f}" if k >= 10 else f"{k:.1f}"


def memory_column(label: str, model_name: str, kwargs: dict[str, Any], paper: str | None = None,
                  input_size: tuple[int, int, int] = (3, 224, 224)) -> MemoryColumn:
    model = create_model(model_name, **kwargs)
    return MemoryColumn(label, model_name, dict(kwargs), memory_rows(materialised_ops(model, input_size)),
                        tuple(input_size[1:]), paper)


def memory_table(input_size: tuple[int, int, int] = (3, 224, 224)) -> MemoryTable:
    """Our eq. (2) figures for the architectures of Table 3, beside the paper's cells."""
    return MemoryTable(tuple(input_size), [memory_column(*col, input_size=input_size) for col in TABLE3_COLUMNS])
