"""Dimension clusters (YOLOv2, Redmon & Farhadi 2017, §2 "Dimension Clusters", Table 1).

YOLOv2 picks its anchor shapes by k-means on the training boxes' (width, height), with the distance
d(box, centroid) = 1 - IoU(box, centroid), both boxes placed at the same centre, instead of the Euclidean
distance, which lets large boxes dominate. Boxes are taken as fractions of their image's width and height
(darknet resizes every image to the square input), and an anchor for an input of S pixels is that fraction
times S / 32 grid cells, the units of `YOLOv2.anchors`.

Here k-means (both distances) starts from k-means++ seeds (the next seed drawn with probability proportional
to the squared distance to the nearest one already chosen), runs Lloyd iterations (assign each box to its
nearest centroid, move each centroid to the mean (w, h) of its boxes; an empty cluster is re-seeded with the box
farthest from its centroid) until no assignment changes, and keeps the best of `restarts` runs by average IoU
(IoU k-means) or by the sum of squared distances (Euclidean k-means). Everything draws from
numpy.random.default_rng(seed), so the result is deterministic.

Table 1's figure of merit, for any anchor set, is the average over boxes of the IoU with the best anchor.
Its "Anchor Boxes [15]" row is Faster R-CNN's 9 hand-picked anchors (Ren et al. 2015): areas 128², 256², 512²
pixels times aspect ratios (h/w) 1:2, 1:1, 2:1 on images rescaled so the shorter side is 600 pixels. The
values used here are those py-faster-rcnn's generate_anchors produces (rounded from a 16-pixel base):
184x96, 368x192, 736x384, 128x128, 256x256, 512x512, 88x176, 176x352, 352x704 (w x h). They are compared with
the boxes in that frame: each box in pixels times 600 / its image's shorter side, which needs the image sizes;
without them the images are taken as 600x600 squares.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.images import image_size
from ..errors import BetterConvError

FASTER_RCNN_SHORT_SIDE = 600


def iou_wh(boxes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of (w, h) boxes (N, 2) with (w, h) centroids (K, 2), all aligned at one centre: (N, K)."""
    boxes, centroids = np.asarray(boxes, np.float64), np.asarray(centroids, np.float64)
    bw, bh, cw, ch = boxes[:, 0:1], boxes[:, 1:2], centroids[:, 0], centroids[:, 1]
    inter = np.minimum(bw, cw)
    inter *= np.minimum(bh, ch)
    union = bw * bh + cw * ch  # (N, K)
    union -= inter
    inter /= union
    return inter


def avg_iou(boxes: np.ndarray, anchors: np.ndarray) -> float:
    """Table 1's measure: the mean over boxes of the IoU with their best anchor."""
    return float(iou_wh(boxes, anchors).max(axis=1).mean())


def _sq_euclidean(boxes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = boxes[:, 0:1] - centroids[:, 0]
    d *= d
    dh = boxes[:, 1:2] - centroids[:, 1]
    dh *= dh
    d += dh
    return d


def _iou_distance(boxes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = iou_wh(boxes, centroids)
    return np.subtract(1, d, out=d)


def _check_boxes(boxes: Any, k: int) -> np.ndarray:
    wh = np.asarray(boxes, np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise BetterConvError(f"boxes must be (N, 2) widths and heights, got shape {wh.shape}")
    wh = wh[(wh > 0).all(axis=1) & np.isfinite(wh).all(axis=1)]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise BetterConvError(f"k must be a positive integer, got {k!r}")
    if len(wh) < k:
        raise BetterConvError(f"k-means with k={k} needs at least {k} boxes of positive size, got {len(wh)}")
    return wh


def _kmeans_once(wh: np.ndarray, k: int, distance: Any, rng: np.random.Generator,
                 max_iter: int) -> tuple[np.ndarray, int]:
    # k-means++ seeding
    centroids = [wh[rng.integers(len(wh))]]
    nearest = distance(wh, np.array(centroids))[:, 0]
    for _ in range(1, k):
        weights = nearest ** 2
        total = weights.sum()
        index = rng.choice(len(wh), p=weights / total) if total > 0 else rng.integers(len(wh))
        centroids.append(wh[index])
        nearest = np.minimum(nearest, distance(wh, np.array(centroids[-1:]))[:, 0])
    centroids = np.array(centroids)
    assign = None
    for iteration in range(max_iter):
        d = distance(wh, centroids)
        new = d.argmin(axis=1)
        if assign is not None and np.array_equal(new, assign):
            return centroids, iteration
        assign = new
        counts = np.bincount(assign, minlength=k)
        for j in range(2):
            centroids[:, j] = np.bincount(assign, weights=wh[:, j], minlength=k) / np.maximum(counts, 1)
        for j in np.flatnonzero(counts == 0):  # re-seed an empty cluster with the box farthest from its centroid
            far = int(d[np.arange(len(wh)), assign].argmax())
            centroids[j] = wh[far]
            assign[far] = j
            d[far] = 0
    return centroids, max_iter


@dataclass(frozen=True)
class Clusters:
    """k-means result: centroids (K, 2) as fractions of the image (sorted by area), the average IoU of boxes with
    their best centroid, and which distance found them."""

    centroids: np.ndarray
    avg_iou: float
    method: str

    def anchors(self, input_size: int = 416, stride: int = 32) -> np.ndarray:
        """The centroids in grid cells of an `input_size` input (YOLOv2's anchor units)."""
        return self.centroids * (input_size / stride)


def kmeans_anchors(boxes: Any, k: int = 5, distance: str = "iou", seed: int = 0, restarts: int | None = None,
                   max_iter: int = 300) -> Clusters:
    """k-means on (w, h) boxes with d = 1 - IoU ("iou", YOLOv2) or squared Euclidean distance ("euclidean");
    the best of `restarts` k-means++ runs (default 10, or 3 above 100,000 boxes: a run on COCO's 860k boxes
    takes seconds). Centroids sorted by area."""
    wh = _check_boxes(boxes, k)
    if restarts is None:
        restarts = 10 if len(wh) <= 100_000 else 3
    if distance not in ("iou", "euclidean"):
        raise BetterConvError(f"distance must be 'iou' or 'euclidean', got {distance!r}")
    fn = _iou_distance if distance == "iou" else _sq_euclidean
    rng = np.random.default_rng(seed)
    best, best_score = None, None
    for _ in range(max(1, restarts)):
        centroids, _ = _kmeans_once(wh, k, fn, rng, max_iter)
        # IoU k-means maximises the average IoU; Euclidean k-means minimises its own objective (SSE)
        score = avg_iou(wh, centroids) if distance == "iou" else -float(_sq_euclidean(wh, centroids).min(1).sum())
        if best_score is None or score > best_score:
            best, best_score = centroids, score
    order = np.argsort(best[:, 0] * best[:, 1], kind="stable")
    best = best[order]
    return Clusters(best, avg_iou(wh, best), "IoU k-means" if distance == "iou" else "Euclidean k-means")


def faster_rcnn_anchors(base_size: int = 16, ratios: Sequence[float] = (0.5, 1.0, 2.0),
                        scales: Sequence[float] = (8, 16, 32)) -> np.ndarray:
    """Faster R-CNN's anchors (w, h) in pixels as py-faster-rcnn computes them: for each ratio r = h / w, a
    base_size² area reshaped to w = round(sqrt(area / r)), h = round(w * r), then times each scale."""
    out = []
    for r in ratios:
        w = round(np.sqrt(base_size * base_size / r))
        h = round(w * r)
        out += [(w * s, h * s) for s in scales]
    return np.array(out, np.float64)


def _faster_rcnn_frame(boxes: np.ndarray, image_sizes: np.ndarray | None) -> np.ndarray:
    """Normalised (w, h) -> pixels of Faster R-CNN's input (shorter image side 600)."""
    if image_sizes is None:
        return boxes * FASTER_RCNN_SHORT_SIDE
    sizes = np.asarray(image_sizes, np.float64)  # (N, 2) image width, height
    pixels = boxes * sizes
    return pixels * (FASTER_RCNN_SHORT_SIDE / sizes.min(axis=1, keepdims=True))


@dataclass(frozen=True)
class AnchorRow:
    method: str
    k: int
    avg_iou: float


def compare_anchors(boxes: Any, ks: Sequence[int] = (5, 9), image_sizes: Any = None, seed: int = 0,
                    restarts: int | None = None) -> list[AnchorRow]:
    """YOLOv2's Table 1 on these boxes (normalised (w, h), N x 2; `image_sizes` (N, 2) their images' width and
    height, for the Faster R-CNN row): Euclidean k-means, IoU k-means for each k, and the 9 hand-picked anchors."""
    wh = np.asarray(boxes, np.float64)
    rows = []
    for k in ks:
        for distance in ("euclidean", "iou"):
            result = kmeans_anchors(wh, k, distance, seed=seed, restarts=restarts)
            rows.append(AnchorRow(result.method, k, result.avg_iou))
    hand = faster_rcnn_anchors()
    valid = (wh > 0).all(axis=1)
    sizes = None if image_sizes is None else np.asarray(image_sizes, np.float64)[valid]
    rows.append(AnchorRow("Faster R-CNN anchors", len(hand), avg_iou(_faster_rcnn_frame(wh[valid], sizes), hand)))
    return sorted(rows, key=lambda r: (r.k, r.method))


def dataset_boxes(dataset: Any, include_difficult: bool = False, image_sizes: bool = False) \
        -> tuple[np.ndarray, np.ndarray | None]:
    """(w, h) of a detection dataset's boxes as fractions of their image, (N, 2), without loading images; with
    `image_sizes` also each box's image (width, height), (N, 2) (read from the image headers where the
    annotations do not say). Difficult / crowd boxes are left out unless `include_difficult`."""
    wh = dataset.box_sizes(include_difficult)
    if not image_sizes:
        return wh, None
    sizes = []
    for record in dataset.records:
        n = len(record.boxes) if include_difficult else int((~record.difficult).sum())
        if not n:
            continue
        size = record.size
        if size is None:
            size = image_size(record.image)
        sizes += [size] * n
    return wh, np.array(sizes, np.float64).reshape(-1, 2)


def format_anchors(anchors: np.ndarray) -> str:
    """Anchors as darknet's cfg writes them: `w1,h1, w2,h2, ...`."""
    return ", ".join(f"{w:.4f},{h:.4f}" for w, h in np.asarray(anchors))


def anchors_report(boxes: Any, k: int = 5, input_size: int = 416, compare: bool = False, image_sizes: Any = None,
                   seed: int = 0, restarts: int | None = None, source: str = "") -> str:
    """A printable report: the IoU k-means anchors for `input_size` in grid cells (darknet cfg form), their
    average IoU, and with `compare` YOLOv2's Table 1 rows for k = 5, 9 and `k`."""
    if input_size % 32:
        raise BetterConvError(f"input size must be a multiple of 32, got {input_size}")
    wh = np.asarray(boxes, np.float64)
    result = kmeans_anchors(wh, k, "iou", seed=seed, restarts=restarts)
    cells = input_size // 32
    lines = [f"{len(wh)} boxes" + (f" of {source}" if source else ""),
             f"IoU k-means, k={k}: average IoU {100 * result.avg_iou:.2f}%",
             f"anchors for a {input_size}x{input_size} input ({cells}x{cells} grid, in grid cells, by area):",
             f"anchors = {format_anchors(result.anchors(input_size))}"]
    if compare:
        ks = tuple(sorted({5, 9, k}))
        lines += ["", f"{'method':24s} {'k':>3s}  avg IoU"]
        for row in compare_anchors(wh, ks, image_sizes=image_sizes, seed=seed, restarts=restarts):
            lines.append(f"{row.method:24s} {row.k:3d}  {100 * row.avg_iou:6.2f}")
    return "\n".join(lines)
