"""Class heat-maps from a convolutionalised classifier (FCN §3.1, the survey's Fig. 2): the classifier slides over
a larger image as a convolution and gives a map of class probabilities instead of one vector."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import BetterConvError
from ..models.fcn import convolutionalize


def to_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
    return ((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]).unsqueeze(0)


def class_heatmap(classifier: nn.Module, image: Image.Image, class_index: int, mean: Sequence[float],
                  std: Sequence[float], short_side: int = 448) -> np.ndarray:
    """Probability of `class_index` at every position of the score map, upsampled to the image: (H, W) in [0, 1]."""
    model = convolutionalize(classifier).eval()
    scale = short_side / min(image.size)
    resized = image.resize((max(224, round(image.width * scale)), max(224, round(image.height * scale))),
                           Image.BILINEAR)
    with torch.no_grad():
        scores = model(to_tensor(resized, mean, std))  # (1, K, h, w)
        prob = scores.softmax(dim=1)[:, class_index:class_index + 1]  # (1, 1, h, w)
        prob = F.interpolate(prob, size=(image.height, image.width), mode="bilinear", align_corners=False)
    return prob[0, 0].clamp(0, 1).numpy()


def heatmap_png(image: Image.Image, heat: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8 * image.height / image.width + 0.6))
    ax.imshow(image)
    shown = ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="probability")
    ax.set_title(title)
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def find_class(class_names: Sequence[str], name: str) -> int:
    """Index of `name`: an exact (case-insensitive) match, else the only name that contains it."""
    lowered = [c.lower() for c in class_names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    partial = [i for i, c in enumerate(lowered) if name.lower() in c]
    if len(partial) == 1:
        return partial[0]
    hint = f"; candidates: {', '.join(class_names[i] for i in partial[:5])}" if partial else ""
    raise BetterConvError(f"no class named {name!r}{hint}")
