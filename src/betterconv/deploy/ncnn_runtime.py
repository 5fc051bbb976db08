"""Running an exported ncnn model (`.param` + `.bin`, as `export_ncnn` writes them) from PyTorch code.

`NcnnModel` loads the two files with ncnn (Tencent, `pip install ncnn`) and is called like the PyTorch model:
(N, C, H, W) in, one tensor (or a tuple, for several outputs) with a batch axis out; ncnn itself runs one
(C, H, W) image at a time, in float32 end to end (its float16 / bfloat16 storage and arithmetic are switched
off, also on CPUs where ncnn's defaults would use them).

The input blob is the graph's first input (``in0`` in betterconv's exports) and the outputs are read in the
graph's output order (``out0``, ``out1``, ...). This module imports neither the exporter nor ncnn until a model
is loaded, so running a graph does not need what writing one needs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import BetterConvError

__all__ = ["NcnnModel"]


class NcnnModel:
    """An exported ncnn model (`.param` + `.bin`) run on the CPU in float32, called like the PyTorch model:
    (N, C, H, W) in, one tensor (or a tuple, for several outputs) with a batch axis out."""

    def __init__(self, param: str | Path, weights: str | Path | None = None, *, threads: int | None = None) -> None:
        try:  # imported here, not at the top: the optional dependency stays lazy until a model is loaded
            import ncnn
        except ImportError:  # pragma: no cover - a dependency
            raise BetterConvError("ncnn models need the 'ncnn' package: pip install ncnn") from None
        self.param = Path(param)
        self.weights = Path(weights) if weights is not None else self.param.with_suffix(".bin")
        for path in (self.param, self.weights):
            if not path.is_file():
                raise BetterConvError(f"{path}: no such file")
        net = ncnn.Net()
        opt = net.opt
        opt.num_threads = threads or torch.get_num_threads()
        for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage",
                     "use_bf16_packed"):
            setattr(opt, flag, False)  # float32 throughout, also on CPUs where ncnn's defaults would use float16
        if net.load_param(str(self.param)) != 0:
            raise BetterConvError(f"{self.param}: not an ncnn .param file ncnn can read")
        if net.load_model(str(self.weights)) != 0:
            raise BetterConvError(f"{self.weights}: ncnn cannot read the weights (truncated, or not this "
                                  f"graph's .bin)")
        self.net, self._ncnn = net, ncnn
        self.input_names, self.output_names = list(net.input_names()), list(net.output_names())

    def run_one(self, image: np.ndarray) -> list[np.ndarray]:
        """One (C, H, W) float32 image through the graph; each output without a batch axis."""
        ex = self.net.create_extractor()
        # ncnn.Mat(array) wraps the array's memory without holding the array: `data` must outlive the Mat until
        # the clone, a Mat that owns a copy (a Mat over foreign memory has no reference count, which an in-place
        # first layer, Scale for `normalize`, dereferences, and it would write into the caller's array)
        data = np.ascontiguousarray(image, dtype=np.float32)
        ex.input(self.input_names[0], self._ncnn.Mat(data).clone())
        del data
        outs = []
        for name in self.output_names:
            status, mat = ex.extract(name)
            if status != 0:
                raise BetterConvError(f"{self.param}: ncnn failed computing {name} (status {status})")
            outs.append(np.array(mat))
        return outs

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | tuple[torch.Tensor, ...]:
        batch = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        per_image = [self.run_one(image) for image in batch]
        outs = tuple(torch.from_numpy(np.stack([o[i] for o in per_image])) for i in range(len(self.output_names)))
        return outs[0] if len(outs) == 1 else outs
