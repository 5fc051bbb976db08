"""Gridding of stacked dilated convolutions (the survey's Fig. 14; Wang et al., "Understanding Convolution for
Semantic Segmentation", WACV 2018, §3.2).

A stack of k x k convolutions with dilation rates r_1..r_n (stride 1) sees a receptive-field square of side
1 + sum((k - 1) r_i), but when the rates share a factor (2, 2, 2) it sees it through a grid: whole rows and columns
of input pixels reach the output unit by no path at all, and detail between them is lost. `path_counts` counts the
paths from every input pixel to one output unit, `gridding_report` summarises them with the hybrid dilated
convolution (HDC) condition of the paper, and `suggest_rates` searches the rates that satisfy it without holes.

`model_gridding_report` reads the runs of dilated 3x3 convolutions of a built model (in its backbone and head) and
reports each, with and without the centre taps that residual connections add. The HDC condition itself and the
hole test live in `betterconv.models._features`, which the models' `dilation_pattern="hdc"` uses too.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BetterConvError, first_line
from ..layers import InvertedResidual
from ..models._features import covers_every_offset, hdc_max_distances, satisfies_hdc
from ..models.resnet import Bottleneck

MAX_SUGGEST_LAYERS = 4
MAX_SUGGEST_RATE = 32


def check_rates(rates: Sequence[int], kernel: int) -> tuple[int, ...]:
    """`rates` as a tuple of integers >= 1 and `kernel` an odd integer >= 1, else a one-line `BetterConvError`."""
    if isinstance(kernel, bool) or not isinstance(kernel, (int, np.integer)) or kernel < 1 or kernel % 2 == 0:
        raise BetterConvError(f"the kernel size must be an odd integer >= 1, got {kernel!r}")
    rates = tuple(rates)
    if not rates:
        raise BetterConvError("give at least one dilation rate")
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise BetterConvError(f"dilation rates must be integers >= 1, got {r!r}")
    return tuple(int(r) for r in rates)


def receptive_field(rates: Sequence[int], kernel: int = 3) -> int:
    """Side of the receptive-field square: 1 + sum((kernel - 1) r)."""
    rates = check_rates(rates, kernel)
    return 1 + sum((kernel - 1) * r for r in rates)


def check_identity(identity: Sequence[bool] | None, n: int) -> tuple[bool, ...]:
    """`identity` as one bool per layer (None: no identity taps), else a one-line `BetterConvError`."""
    if identity is None:
        return (False,) * n
    identity = tuple(identity)
    if len(identity) != n or not all(isinstance(i, (bool, np.bool_)) for i in identity):
        raise BetterConvError(f"identity needs one bool per layer ({n}), got {identity!r}")
    return tuple(bool(i) for i in identity)


def path_counts(rates: Sequence[int], kernel: int = 3, identity: Sequence[bool] | None = None) -> np.ndarray:
    """Number of paths from every input pixel of the receptive-field square to one output unit, (side, side).

    Repeated convolution of an integer delta with each layer's dilated all-ones kernel, done by hand with shifted
    integer additions: no library counts paths, and floating-point convolutions would lose exactness for deep stacks
    with large counts. `identity[i]` adds layer i a residual connection, one more path through its centre tap
    (y = x + conv(x)). The counts are int64, or Python integers (dtype object) when the total number of paths,
    prod(kernel^2 + identity), exceeds int64. Order of the rates does not change the counts (convolution
    commutes)."""
    rates = check_rates(rates, kernel)
    identity = check_identity(identity, len(rates))
    total = math.prod(kernel * kernel + int(i) for i in identity)
    counts = np.ones((1, 1), dtype=np.int64 if total <= np.iinfo(np.int64).max else object)
    for r, skip in zip(rates, identity):
        span = (kernel - 1) * r
        side = counts.shape[0] + span
        grown = np.zeros((side, side), dtype=counts.dtype)
        for i in range(kernel):
            for j in range(kernel):
                grown[i * r:i * r + counts.shape[0], j * r:j * r + counts.shape[1]] += counts
        if skip:
            grown[span // 2:span // 2 + counts.shape[0], span // 2:span // 2 + counts.shape[1]] += counts
        counts = grown
    return counts


def hdc(rates: Sequence[int], kernel: int = 3) -> bool:
    """The hybrid dilated convolution condition (Wang et al. WACV 2018 §3.2) on checked rates: the rates share no
    common factor above 1 and M_2 <= kernel; `betterconv.models._features.satisfies_hdc` (the implementation the
    models' `dilation_pattern="hdc"` uses) documents the edge cases. Rates run from the input (r_1) to the output
    (r_n); unlike the path counts, the condition depends on their order."""
    return satisfies_hdc(check_rates(rates, kernel), kernel)


def count_stats(counts: np.ndarray) -> tuple[float, float]:
    """(holes_fraction, coverage_cv) of path counts: the share of the square no path reaches, and the population
    std / mean of the counts of the reached pixels."""
    reached = counts[counts > 0].astype(np.float64)
    return float((counts == 0).sum() / counts.size), float(reached.std() / reached.mean())


def gridding_report(rates: Sequence[int], kernel: int = 3) -> dict:
    """rates, kernel, receptive_field (side), holes_fraction (share of the square no path reaches), coverage_cv
    (population std / mean of the path counts of the reached pixels) and hdc (see `hdc`)."""
    rates = check_rates(rates, kernel)
    counts = path_counts(rates, kernel)
    holes, cv = count_stats(counts)
    return {
        "rates": list(rates),
        "kernel": int(kernel),
        "receptive_field": int(counts.shape[0]),
        "holes_fraction": holes,
        "coverage_cv": cv,
        "hdc": hdc(rates, kernel),
    }


def compositions(total: int, n: int, max_rate: int) -> Iterator[tuple[int, ...]]:
    """Tuples of n rates in 1..max_rate summing to `total`, in lexicographic order."""
    if n == 1:
        if 1 <= total <= max_rate:
            yield (total,)
        return
    for first in range(max(1, total - (n - 1) * max_rate), min(max_rate, total - (n - 1)) + 1):
        for rest in compositions(total - first, n - 1, max_rate):
            yield (first, *rest)


def suggest_rates(n: int, max_rate: int, kernel: int = 3) -> tuple[int, ...]:
    """Among the n-tuples of rates in 1..max_rate that satisfy HDC and leave no holes, the one with the largest
    receptive field (ties: the lexicographically smallest). Brute force, so n <= 4 and max_rate <= 32."""
    check_rates([1], kernel)
    if not (1 <= n <= MAX_SUGGEST_LAYERS and 1 <= max_rate <= MAX_SUGGEST_RATE):
        raise BetterConvError(f"suggesting rates searches by brute force: it needs 1 <= n <= {MAX_SUGGEST_LAYERS} "
                              f"and 1 <= max_rate <= {MAX_SUGGEST_RATE}, got n={n}, max_rate={max_rate}")
    # the receptive field grows with the sum of the rates: search sums from the largest down, each in lexicographic
    # order, and the first tuple that qualifies is the answer
    for total in range(n * max_rate, n - 1, -1):
        for rates in compositions(total, n, max_rate):
            if hdc(rates, kernel) and covers_every_offset(rates, kernel):
                return rates
    raise BetterConvError(f"no {n} rates up to {max_rate} satisfy HDC without holes")  # unreachable: 1s qualify


# --- the runs of a model ------------------------------------------------------------------------------------------

MODEL_KERNEL = 3  # the analysis of a model reads its 3x3 convolutions only
DEFAULT_INPUT_SIZE = (64, 64)  # rates do not depend on the input size; a small one keeps the dummy forward cheap


@dataclass
class SpatialConv:
    """A convolution with a kernel above 1x1 as the dummy forward met it (1x1 convolutions move no pixel)."""
    name: str
    is_3x3: bool
    stride: int
    dilation: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    identity: bool  # its block adds the block's input back around it (a centre tap)
    parent: int | None = None  # the spatial convolution whose output it reads (None: none, or parallel ones merge)
    linked: bool = False  # it continues its parent's run: both 3x3 with stride 1, at one resolution


def identity_convs(model: nn.Module) -> set[int]:
    """ids of the 3x3 convolutions that sit in a residual block with a connection around them: ResNet's
    `Bottleneck` at stride 1 (an identity, or a stride-1 1x1 projection: a centre tap too) and MobileNetV2's
    `InvertedResidual` with its identity (stride 1, as many channels out as in)."""
    found = set()
    for m in model.modules():
        if isinstance(m, Bottleneck) and m.conv2.conv.stride == (1, 1):
            found.add(id(m.conv2.conv))
        elif isinstance(m, InvertedResidual) and m.use_residual:
            found.add(id(m.depthwise.conv))
    return found


def nearest_convs(start: Any, outputs: dict[int, int]) -> set[int]:
    """Indices of the spatial convolutions whose outputs (autograd nodes in `outputs`, by id) the tensor with grad_fn
    `start` was computed from, not counting those reached only through another of them. A walk over the autograd
    graph, by hand: forward hooks give the order of the convolutions, the graph says which one feeds which (the
    FCN/DeepLab auxiliary head reads layer3, not the head before it in the forward order)."""
    found: set[int] = set()
    seen: set[int] = set()
    stack = [start]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if id(node) in outputs:
            found.add(outputs[id(node)])
            continue
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def spatial_convs(model: nn.Module, input_size: Sequence[int]) -> list[SpatialConv]:
    """The model's convolutions with kernels above 1x1, in forward order for one zero image of `input_size` (H, W)
    (eval mode, restored after), each with the one it reads from (`parent`) and whether it continues its run."""
    names = {id(m): name for name, m in model.named_modules()}
    with_identity = identity_convs(model)
    convs: list[SpatialConv] = []
    in_nodes: list[Any] = []
    outputs: dict[int, int] = {}
    keep: list[Any] = []  # the autograd nodes stay alive (and their ids unique) until the walk is done

    def record(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if module.kernel_size == (1, 1):
            return
        kh, kw = module.kernel_size
        is_3x3 = (kh, kw) == (3, 3) and module.dilation[0] == module.dilation[1]
        convs.append(SpatialConv(names.get(id(module), type(module).__name__), is_3x3, max(module.stride),
                                 module.dilation[0], tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:]),
                                 id(module) in with_identity))
        in_nodes.append(inputs[0].grad_fn)  # the nodes as they are now: a later in-place op does not move them
        outputs[id(output.grad_fn)] = len(convs) - 1
        keep.append(output.grad_fn)

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            try:
                model(torch.zeros(1, 3, *input_size, requires_grad=True))
            except (RuntimeError, ValueError) as e:  # e.g. a map pooled below 1x1
                raise BetterConvError(f"{type(model).__name__} cannot run on a {input_size[0]}x{input_size[1]} "
                                      f"input: {first_line(e, 160)}") from None
            for i, node in enumerate(in_nodes):
                preds = nearest_convs(node, outputs)
                if not preds:
                    continue
                parent = max(preds)
                ancestors, a = set(), parent
                while a is not None:
                    ancestors.add(a)
                    a = convs[a].parent
                if preds <= ancestors:  # one line of data, not parallel branches merging (ASPP's concatenation)
                    c, p = convs[i], convs[parent]
                    c.parent = parent
                    c.linked = (c.is_3x3 and p.is_3x3 and c.stride == 1 and p.stride == 1 and c.in_hw == p.out_hw)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return convs


def model_runs(model: nn.Module, input_size: Sequence[int] = DEFAULT_INPUT_SIZE) -> list[list[SpatialConv]]:
    """The runs of dilated 3x3 convolutions of `model`: chains of stride-1 3x3 convolutions at one resolution, each
    reading the one before, that contain a dilation above 1. A run ends where no 3x3 convolution continues it or
    where several do (a fork: each branch, as each atrous branch of an ASPP, is reported as the run before the fork
    followed by the branch), and starts at its first dilated convolution: the rate-1 ones before it are left out
    (as the dilated stacks of Wang et al. §3.2; `rate1_before` in the report counts them)."""
    convs = spatial_convs(model, input_size)
    children = [0] * len(convs)
    for c in convs:
        if c.linked:
            children[c.parent] += 1
    runs = []
    for i, c in enumerate(convs):
        if not c.is_3x3 or c.stride != 1 or children[i] == 1:
            continue
        chain = [c]
        while chain[-1].linked:
            chain.append(convs[chain[-1].parent])
        chain.reverse()
        if any(conv.dilation > 1 for conv in chain):
            runs.append(chain)  # whole: the report splits off the rate-1 convolutions before the first dilated one
    return runs


def residual_note(identity: Sequence[bool], holes: float, cv: float, cv_identity: float) -> str:
    """One sentence on what the residual connections of a run change: the paths, never the pixels reached."""
    n = sum(identity)
    if not n:
        return ("no convolution of this run has a residual connection around it, so the counts with identity are "
                "the plain ones")
    return (f"{n} of the {len(identity)} convolutions sit in residual blocks whose connection adds one path through "
            f"the centre tap the 3x3 kernel already has, so the same pixels are reached (holes {holes:.1%} either "
            f"way) and only the weights change: coverage CV {cv:.3f} -> {cv_identity:.3f}")


def run_report(run: Sequence[SpatialConv]) -> dict[str, Any]:
    """One run as reported: module names, rates, receptive field, holes, coverage CV, HDC, and the same with the
    centre taps of residual connections."""
    first = next(k for k, conv in enumerate(run) if conv.dilation > 1)
    convs = run[first:]
    rates = [conv.dilation for conv in convs]
    identity = [conv.identity for conv in convs]
    report = gridding_report(rates, MODEL_KERNEL)
    holes_id, cv_id = count_stats(path_counts(rates, MODEL_KERNEL, identity))
    return {
        "modules": [conv.name for conv in convs],
        "feature_size": list(convs[0].in_hw),
        "rate1_before": first,
        **{k: v for k, v in report.items() if k != "kernel"},
        "identity": identity,
        "holes_fraction_with_identity": holes_id,
        "coverage_cv_with_identity": cv_id,
        "residual_note": residual_note(identity, report["holes_fraction"], report["coverage_cv"], cv_id),
    }


def check_input_size(input_size: Sequence[int]) -> tuple[int, int]:
    sizes = tuple(input_size)
    if len(sizes) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in sizes):
        raise BetterConvError(f"the input size must be two integers (H, W) >= 1, got {input_size!r}")
    return int(sizes[0]), int(sizes[1])


def model_gridding_report(model: nn.Module, input_size: Sequence[int] = DEFAULT_INPUT_SIZE) -> dict[str, Any]:
    """{"input_size": [H, W], "runs": [run_report, ...]} for the runs of dilated 3x3 convolutions of `model`
    (`model_runs`); a model without any has no runs. Each run also gives `holes_fraction_with_identity` and
    `coverage_cv_with_identity`: the path counts when every residual block adds its centre tap (`path_counts`
    with `identity`), and a one-sentence `residual_note`."""
    hw = check_input_size(input_size)
    return {"input_size": list(hw), "runs": [run_report(run) for run in model_runs(model, hw)]}


def gridding_png(counts: np.ndarray, title: str) -> bytes:
    """Heat-map of the path counts (zero-path pixels, the holes, in the colour map's lowest colour) as PNG bytes."""
    return gridding_panels_png([(counts, title)])


def gridding_panels_png(panels: Sequence[tuple[np.ndarray, str]], columns: int = 3) -> bytes:
    """One heat-map of path counts per (counts, title), up to `columns` a row, as PNG bytes."""
    import matplotlib  # lazy: matplotlib is heavy and only the PNG needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 5.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (counts, title) in zip(axes.flat, panels):
        shown = ax.imshow(counts.astype(np.float64), cmap="viridis", interpolation="nearest")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="paths to the output unit")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


__all__ = ["gridding_panels_png", "gridding_png", "gridding_report", "hdc", "hdc_max_distances",
           "model_gridding_report", "model_runs", "path_counts", "receptive_field", "suggest_rates"]
