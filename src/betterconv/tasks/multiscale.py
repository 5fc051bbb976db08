"""YOLOv2 §2 "Multi-Scale Training": every 10 batches the network is trained at a new input size drawn from
{320, 352, ..., 608}. Batches are loaded at one size and resized here, on the whole batch, so that every data
worker agrees; the size is a function of the batch index and the seed, so a resumed run replays it."""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

YOLOV2_SIZES = tuple(range(320, 609, 32))


class MultiScale:
    def __init__(self, sizes: Sequence[int] = YOLOV2_SIZES, every: int = 10, seed: int = 0) -> None:
        if not sizes or any(s % 32 for s in sizes):
            raise ValueError(f"multi-scale sizes must be multiples of 32, got {tuple(sizes)}")
        self.sizes, self.every, self.seed = tuple(sizes), every, seed

    def size_for(self, batch_index: int) -> int:
        return random.Random(self.seed * 1_000_003 + batch_index // self.every).choice(self.sizes)

    def __call__(self, images: torch.Tensor, targets: list[dict], batch_index: int
                 ) -> tuple[torch.Tensor, list[dict], int]:
        """Resize the batch (B, 3, H, W) -> (B, 3, s, s) and scale its boxes (xyxy pixels) with it."""
        size = self.size_for(batch_index)
        h, w = images.shape[-2:]
        if (h, w) == (size, size):
            return images, targets, size
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        scale = images.new_tensor([size / w, size / h, size / w, size / h])
        targets = [{**t, "boxes": t["boxes"] * scale} for t in targets]
        return images, targets, size
