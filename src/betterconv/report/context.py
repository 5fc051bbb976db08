"""What every section reads: the settings (how much to compute live), the reference data folder (or its absence)
and the results folder."""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.conv_cost import MOBILENET_SHAPES
from .results import Result, read_result


@dataclass(frozen=True)
class ReportSettings:
    """How much the live sections compute. The defaults are the full report; `quick()` is the cheapest report that
    still has every section, for tests.

    zoo_models: the models profiled in section 1 (None: every registered model), each at `zoo_input_size`
        (None: its paper's input size).
    memory_input_size: the input of the MobileNetV2 Table 3 comparison (the paper's is 224x224).
    conv_kernels, conv_shapes, conv_repeats: the k^2 measurement of section 5 (timed calls per convolution).
    heatmap_sizes: the short sides the heat-map images are resized to (each 224-pixel window of the classifier is
        then a smaller part of the image; the figures show the largest).
    aspp_input_size: the input at which a DeepLabv3-MobileNetV2's ASPP is read (CamVid's full frame).
    sections: which sections to build (1-6).
    """
    zoo_models: tuple[str, ...] | None = None
    zoo_input_size: tuple[int, int] | None = None
    memory_input_size: tuple[int, int, int] = (3, 224, 224)
    conv_kernels: tuple[int, ...] = (1, 3, 5, 7)
    conv_shapes: tuple[tuple[int, int], ...] = MOBILENET_SHAPES
    conv_repeats: int = 5
    heatmap_sizes: tuple[int, ...] = (448, 672, 896)
    aspp_input_size: tuple[int, int] = (360, 480)
    sections: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

    @classmethod
    def quick(cls, **overrides: Any) -> ReportSettings:
        settings = {"zoo_models": ("mobilenet_v2", "deeplabv3_mobilenet_v2"), "zoo_input_size": (128, 128),
                    "conv_kernels": (1, 3), "conv_shapes": ((128, 14),), "conv_repeats": 2,
                    "heatmap_sizes": (448,), "aspp_input_size": (96, 128)}
        return cls(**{**settings, **overrides})


@dataclass
class Context:
    settings: ReportSettings
    data: Path | None  # the reference data folder, None when it is absent
    data_asked: Path  # the folder asked for (named in the lines that replace live figures)
    results: Path
    progress: Callable[[str], None] = lambda message: None  # a progress bar's postfix

    def result(self, name: str) -> Result:
        return read_result(self.results, name)

    def data_path(self, relative: str) -> Path | None:
        """`relative` inside the reference data folder, None when the folder or the path is absent."""
        if self.data is None:
            return None
        path = self.data / relative
        return path if path.exists() else None

    def no_data_line(self, relative: str, what: str) -> str:
        return (f"{what} left out: {self.data_asked / relative} is absent (give the reference data folder with "
                "`betterconv report --data PATH`).")


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only the figures need it

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib  # lazy: matplotlib is heavy and only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
