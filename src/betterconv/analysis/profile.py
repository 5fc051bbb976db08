"""`profile(model)`: parameters, MACs, output stride, receptive field and activation memory of any `nn.Module`.

One float32 forward pass of a batch of 1, in eval mode without gradients, under four observers:

- MACs: `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products; norm, activation, pooling
  and additions are not counted). MACs = its FLOPs // 2; wherever FLOPs are shown they are 2 x MACs;
- receptive field and cumulative stride of every tensor (`receptive_field.FieldTracker`); the receptive field
  is `math.inf` (`GLOBAL`) when an output depends on the whole input, e.g. after global pooling;
- the MobileNetV2 §5 eq. (2) activation memory at 16 bits per element (`memory.MaterialisationTracker`);
- the measured peak of live activation bytes in float32 (`memory.LiveMemory`).

Every leaf module that runs gives a row (one per call) with its output's shape, receptive field and stride.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from ..errors import BetterConvError
from ..layers import Reorg
from .memory import BYTES_PER_ELEMENT, LiveMemory, MaterialisationTracker, eval_mode, example_input
from .receptive_field import Field, FieldTracker

# modules whose output is a reshape that moves s x s pixels into channels: darknet's reorg
SPACE_TO_DEPTH = {Reorg: "stride"}


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: float  # input pixels; math.inf when global
    stride: float  # cumulative stride (input pixels between neighbouring outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "output_shape": list(self.output_shape),
                "params": self.params, "macs": self.macs, "receptive_field": _json_rf(self.receptive_field),
                "stride": _int_if_whole(self.stride)}


@dataclass(frozen=True)
class Profile:
    params: int
    macs: int
    output_stride: int  # the largest cumulative stride of any feature map
    receptive_field: float  # of the output (the largest over outputs); math.inf when global
    peak_activation_bytes: int  # MobileNetV2 §5 eq. (2), 16-bit, max over every op (the stem included)
    measured_peak_activation_bytes: int  # live float32 activations, the input included, weights excluded
    input_size: tuple[int, int, int]
    layers: list[LayerRow] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a global receptive field is the string "global"."""
        return {"params": self.params, "macs": self.macs, "flops": self.flops, "output_stride": self.output_stride,
                "receptive_field": _json_rf(self.receptive_field),
                "peak_activation_bytes": self.peak_activation_bytes,
                "measured_peak_activation_bytes": self.measured_peak_activation_bytes,
                "input_size": list(self.input_size), "layers": [row.to_dict() for row in self.layers]}

    def format_table(self) -> str:
        head = ("layer", "type", "output", "params", "MACs", "RF", "stride")
        body = [(r.name, r.type, "x".join(map(str, r.output_shape[1:])), f"{r.params:,}", _human(r.macs),
                 _fmt_rf(r.receptive_field), _fmt_num(r.stride)) for r in self.layers]
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*head), "  ".join("-" * w for w in widths), *(fmt.format(*row) for row in body)]
        c, h, w = self.input_size
        lines += [
            "",
            f"input {c}x{h}x{w} (batch 1)   params {self.params:,} ({_human(self.params)})   "
            f"{_human(self.macs)} MACs ({_human(self.flops)} FLOPs)",
            f"output stride {self.output_stride}   receptive field {_fmt_rf(self.receptive_field)}",
            f"peak activations {self.peak_activation_bytes / 1e6:.2f} MB (MobileNetV2 §5 rule, "
            f"{8 * BYTES_PER_ELEMENT}-bit, stem included)   measured peak "
            f"{self.measured_peak_activation_bytes / 1e6:.2f} MB (float32 forward)",
        ]
        return "\n".join(lines)


def profile(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> Profile:
    """Profile `model` on one (1, C, H, W) input; its training flags are restored afterwards."""
    if len(input_size) != 3 or any(int(s) != s or s < 1 for s in input_size):
        raise BetterConvError(f"input size must be three positive integers (C, H, W), got {tuple(input_size)}")
    input_size = tuple(int(s) for s in input_size)
    names: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        names.setdefault(module, name or type(model).__name__)
    rows: list[LayerRow] = []
    with eval_mode(model), ExitStack() as stack:
        x = example_input(model, input_size)
        flops = stack.enter_context(FlopCounterMode(display=False))
        fields = stack.enter_context(FieldTracker())
        live = stack.enter_context(LiveMemory(model))
        ops = stack.enter_context(MaterialisationTracker(model))
        fields.track(x)
        live.track(x)
        started: list[int] = []

        def pre(module: nn.Module, args: tuple) -> None:
            started.append(flops.get_total_flops())

        def post(module: nn.Module, args: tuple, output: Any) -> None:
            outputs = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
            attr = next((a for cls, a in SPACE_TO_DEPTH.items() if isinstance(module, cls)), None)
            source = fields.get(args[0]) if args else None
            if attr and source is not None:
                for t in outputs:
                    fields.track(t, source.space_to_depth(getattr(module, attr)))
            out_fields = [f for f in map(fields.get, outputs) if f is not None]
            rf = Field.merge(out_fields) if out_fields else Field((0, 0), (0, 0))
            rows.append(LayerRow(names[module], type(module).__name__, tuple(outputs[0].shape) if outputs else (),
                                 sum(p.numel() for p in module.parameters()),
                                 (flops.get_total_flops() - started.pop()) // 2, rf.size, rf.stride))

        for module in names:
            if next(module.children(), None) is None:
                stack.callback(module.register_forward_pre_hook(pre).remove)
                stack.callback(module.register_forward_hook(post).remove)
        output = model(x)
        out_fields = [f for f in map(fields.get, tree_leaves(output)) if f is not None]
        del output
    return Profile(
        params=sum(p.numel() for p in model.parameters()),
        macs=flops.get_total_flops() // 2,
        output_stride=round(fields.max_stride),
        receptive_field=Field.merge(out_fields).size if out_fields else 0,
        peak_activation_bytes=max((op.elements for op in ops.ops), default=0) * BYTES_PER_ELEMENT,
        measured_peak_activation_bytes=live.peak,
        input_size=input_size,
        layers=rows,
    )


def _int_if_whole(x: float) -> float | int:
    return int(x) if math.isfinite(x) and x == int(x) else x


def _json_rf(rf: float) -> int | float | str:
    return "global" if math.isinf(rf) else _int_if_whole(rf)


def _fmt_num(x: float) -> str:
    x = _int_if_whole(x)
    return str(x) if isinstance(x, int) else f"{x:.3g}"


def _fmt_rf(rf: float) -> str:
    return "global" if math.isinf(rf) else _fmt_num(rf)


def _human(n: float) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}" if unit in "GT" else f"{n / scale:.1f}{unit}"
    return str(n)
