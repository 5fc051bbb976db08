"""Gridding of stacked dilated convolutions (the survey's Fig. 14; Wang et al., "Understanding Convolution for
Semantic Segmentation", WACV 2018, §3.2).

A stack of k x k convolutions with dilation rates r_1..r_n (stride 1) sees a receptive-field square of side
1 + sum((k - 1) r_i), but when the rates share a factor (2, 2, 2) it sees it through a grid: whole rows and columns
of input pixels reach the output unit by no path at all, and detail between them is lost. `path_counts` counts the
paths from every input pixel to one output unit, `gridding_report` summarises them with the hybrid dilated
convolution (HDC) condition of the paper, and `suggest_rates` searches the rates that satisfy it without holes.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import BetterConvError

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


def path_counts(rates: Sequence[int], kernel: int = 3) -> np.ndarray:
    """Number of paths from every input pixel of the receptive-field square to one output unit, (side, side) int64.

    Repeated convolution of an integer delta with each layer's dilated all-ones kernel, done by hand with shifted
    integer additions: no library counts paths, and floating-point convolutions would lose exactness for deep stacks
    with large counts. Order of the rates does not change the counts (convolution commutes)."""
    rates = check_rates(rates, kernel)
    counts = np.ones((1, 1), dtype=np.int64)
    for r in rates:
        span = (kernel - 1) * r
        side = counts.shape[0] + span
        grown = np.zeros((side, side), dtype=np.int64)
        for i in range(kernel):
            for j in range(kernel):
                grown[i * r:i * r + counts.shape[0], j * r:j * r + counts.shape[1]] += counts
        counts = grown
    return counts


def line_reached(rates: Sequence[int], kernel: int) -> np.ndarray:
    """The 1-D receptive field's reached pixels (bool): the 2-D counts are the outer product of the 1-D ones, so a
    2-D pixel has no path iff its row or its column has none."""
    reached = np.ones(1, dtype=bool)
    for r in rates:
        grown = np.zeros(reached.size + (kernel - 1) * r, dtype=bool)
        for i in range(kernel):
            grown[i * r:i * r + reached.size] |= reached
        reached = grown
    return reached


def hdc_max_distances(rates: Sequence[int]) -> list[int]:
    """[M_1, ..., M_n] of Wang et al. §3.2: M_n = r_n, M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i),
    the largest distance between two non-zero values seen by layer i (the paper's formula, written for its 3 x 3
    kernels, is used as published for every kernel size)."""
    m = [0] * len(rates)
    m[-1] = rates[-1]
    for i in range(len(rates) - 2, -1, -1):
        nxt = m[i + 1]
        m[i] = max(nxt - 2 * rates[i], nxt - 2 * (nxt - rates[i]), rates[i])
    return m


def hdc(rates: Sequence[int], kernel: int = 3) -> bool:
    """The hybrid dilated convolution condition (Wang et al. WACV 2018 §3.2): the rates share no common factor
    above 1 (gcd of all rates is 1) and M_2 <= kernel.

    Edge cases: with a single layer there is no M_2; the paper's goal (M_2 <= K, the distance the first layer must
    bridge) is read as M_1 = r_1 <= kernel, which together with the common-factor rule (gcd(r_1) = r_1) means
    hdc is True only for rate 1 (a lone dilated layer always leaves holes). Rates run from the input (r_1) to
    the output (r_n); unlike the path counts, the condition depends on their order."""
    rates = check_rates(rates, kernel)
    if math.gcd(*rates) != 1:
        return False
    m = hdc_max_distances(rates)
    return (m[1] if len(rates) >= 2 else m[0]) <= kernel


def gridding_report(rates: Sequence[int], kernel: int = 3) -> dict:
    """rates, kernel, receptive_field (side), holes_fraction (share of the square no path reaches), coverage_cv
    (population std / mean of the path counts of the reached pixels) and hdc (see `hdc`)."""
    rates = check_rates(rates, kernel)
    counts = path_counts(rates, kernel)
    reached = counts[counts > 0].astype(np.float64)
    return {
        "rates": list(rates),
        "kernel": int(kernel),
        "receptive_field": int(counts.shape[0]),
        "holes_fraction": float((counts == 0).sum() / counts.size),
        "coverage_cv": float(reached.std() / reached.mean()),
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
            if hdc(rates, kernel) and line_reached(rates, kernel).all():
                return rates
    raise BetterConvError(f"no {n} rates up to {max_rate} satisfy HDC without holes")  # unreachable: 1s qualify


def gridding_png(counts: np.ndarray, title: str) -> bytes:
    """Heat-map of the path counts (zero-path pixels, the holes, in the colour map's lowest colour) as PNG bytes."""
    import matplotlib  # lazy: matplotlib is heavy and only the PNG needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.4))
    shown = ax.imshow(counts, cmap="viridis", interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="paths to the output unit")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


__all__ = ["gridding_png", "gridding_report", "hdc", "path_counts", "receptive_field", "suggest_rates"]
