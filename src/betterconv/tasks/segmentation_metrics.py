"""Semantic segmentation metrics: confusion-matrix scores and the boundary F-score, accumulated over batches.

Confusion-matrix scores (Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, §5).
With n_ij the number of valid pixels of true class i predicted as class j, t_i = sum_j n_ij (pixels of class i in
the ground truth), p_j = sum_i n_ij (pixels predicted as j) and N = sum_i t_i:

    pixel_acc   = sum_i n_ii / N
    acc_i       = n_ii / t_i                       (None where t_i = 0)
    mean_acc    = mean of acc_i over classes with t_i > 0
    IoU_i       = n_ii / (t_i + p_i - n_ii)        (None where the union t_i + p_i - n_ii = 0)
    miou        = mean of IoU_i over classes with a non-zero union
    fw_iou      = sum_i (t_i / N) IoU_i            (frequency weighted; classes with t_i = 0 weigh nothing)

A class is counted in `miou` when it appears in the ground truth or in the prediction at a valid pixel anywhere in
the accumulated set: a class that is only predicted has IoU 0 and lowers the mean; a class absent from both is
left out (its IoU is None). Pixels whose target is `ignore_index` are not counted, whatever was predicted there.

Boundary F-score (Csurka, Larlus and Perronnin, "What is a good evaluation measure for semantic segmentation?",
BMVC 2013; the contour measure of DAVIS), with the conventions chosen here:

* Masks. For image k and class c, the true mask is {target == c} and the predicted mask is {pred == c} restricted
  to the valid pixels (target != ignore_index): the ignore region belongs to no class.
* Boundaries. A pixel of a mask is a boundary pixel when one of its 4 neighbours (up, down, left, right) inside
  the image is not in the mask; the image border is not a boundary. Both sides of a two-class edge are boundary
  pixels, each of its own class. Next to an ignored region, the mask's edge is a boundary in both masks alike.
* Matching. Distances are Chebyshev (chessboard): a boundary pixel matches when a boundary pixel of the other mask
  lies within `boundary_tolerance` pixels, i.e. inside the (2t+1) x (2t+1) square around it (a max-pool dilation).
  Precision = matched predicted boundary pixels / predicted boundary pixels, recall = matched true boundary pixels /
  true boundary pixels, F = 2PR / (P + R), and 0 when P + R = 0.
* Degenerate cases. Class c is *present* in an image when it appears at a valid pixel of the target or of the
  prediction; absent classes are skipped. For a present class, when exactly one of the two boundaries is empty
  F = 0; when both are empty (each mask fills whole connected pieces of the valid region, or is empty), F = 1 if the
  class is in both masks and 0 if it is in only one.
* Averaging. The score of an image is the mean of F over its present classes; `boundary_f` is the mean over the
  images with at least one present class (an image wholly ignored is skipped). `per_class_boundary_f[c]` is the
  mean of F over the images where c is present (None when never present).

The tolerance is in pixels of the evaluated maps (Csurka et al. use a fraction of the image diagonal).

Trimap mIoU (Chen et al., "DeepLab", TPAMI 2017, §4.1, "Mean Pixel IOU along Object Boundaries"; after
Kohli, Ladický and Torr, "Robust Higher Order Potentials for Enforcing Label Consistency", IJCV 2009): the mIoU of the
pixels in a band of width w around the ground-truth boundaries, reported for several w.

* Boundary. A ground-truth boundary pixel is a valid pixel with a 4-neighbour inside the image of another class or
  ignored, the true boundaries of the boundary F-score above. Ignored pixels are never boundary pixels, but a
  class's edge against an ignored region is a boundary: on PASCAL VOC, whose objects are outlined by an ignored band,
  the band then follows that outline, as DeepLab's trimap (built from VOC's void band) does, give or take a pixel.
* Band. The pixels whose Euclidean distance (between pixel centres) to the nearest boundary pixel of their image is
  at most w; an image without a boundary pixel has an empty band.
* Counting. Ignored pixels in the band are left out, as everywhere. Each width has its own confusion matrix summed
  over the images, and its mIoU follows the rules of `miou` above on that matrix. For w at least the image diagonal
  the band is every pixel of each image with a boundary, so the trimap mIoU is then the mIoU of those images.

Widths are in pixels of the evaluated maps.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import BetterConvError

__all__ = ["SegmentationMetric", "boundary_f_scores", "trimap_bands"]

# pixels of the (image, class) boundary maps dilated at once
_BOUNDARY_CHUNK = 1 << 24


def _float_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _label_boundaries(labels: torch.Tensor) -> torch.Tensor:
    """(B, H, W) labels with -1 for ignored pixels -> pixels of a class with a 4-neighbour of another label (or
    ignored) inside the image: the union over classes of each class mask's inner boundary."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    vertical = labels[:, 1:] != labels[:, :-1]
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, 1:] |= vertical
    edge[:, :-1] |= vertical
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    return edge & (labels >= 0)


def _dilate(mask: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Max over the (2t+1) x (2t+1) square, as two separable max-pools; -inf padding leaves the border alone."""
    if tolerance == 0:
        return mask
    k = 2 * tolerance + 1
    return F.max_pool2d(F.max_pool2d(mask, (1, k), 1, (0, tolerance)), (k, 1), 1, (tolerance, 0))


def _class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) labels with -1 for ignored pixels -> (B, num_classes) pixel counts."""
    b = labels.shape[0]
    image = torch.arange(b, device=labels.device).view(b, 1, 1)
    index = torch.where(labels >= 0, image * num_classes + labels, b * num_classes)
    return torch.bincount(index.flatten(), minlength=b * num_classes + 1)[:b * num_classes].view(b, num_classes)


def boundary_f_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int, tolerance: int,
                      ignore_index: int | None = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and class boundary F-scores of label maps `pred`, `target` (B, H, W) with labels in
    0..num_classes-1 (or `ignore_index` in the target), with the conventions of the module docstring. Returns F
    (B, num_classes) float and `present` (B, num_classes) bool; F is 0 where the class is absent.

    Only the (image, class) pairs present are dilated: their list costs one host synchronisation."""
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    true_labels = torch.where(valid, target, -1)
    pred_labels = torch.where(valid, pred, -1)
    in_true = _class_counts(true_labels, num_classes) > 0
    in_pred = _class_counts(pred_labels, num_classes) > 0
    present = in_true | in_pred
    dtype = _float_dtype(target.device)
    scores = torch.zeros(present.shape, dtype=dtype, device=target.device)
    pairs = present.nonzero()
    if len(pairs) == 0:
        return scores, present
    true_edges = _label_boundaries(true_labels)
    pred_edges = _label_boundaries(pred_labels)
    h, w = target.shape[1:]
    per_chunk = max(1, _BOUNDARY_CHUNK // (h * w))
    for start in range(0, len(pairs), per_chunk):
        image, cls = pairs[start:start + per_chunk].unbind(1)
        c = cls.view(-1, 1, 1)
        true_b = true_edges[image] & (true_labels[image] == c)
        pred_b = pred_edges[image] & (pred_labels[image] == c)
        near_true = _dilate(true_b.unsqueeze(1).float(), tolerance).squeeze(1) > 0
        near_pred = _dilate(pred_b.unsqueeze(1).float(), tolerance).squeeze(1) > 0
        # integer counts, exact at any image size
        n_true = true_b.sum((1, 2)).to(dtype)
        n_pred = pred_b.sum((1, 2)).to(dtype)
        matched_pred = (pred_b & near_true).sum((1, 2)).to(dtype)
        matched_true = (true_b & near_pred).sum((1, 2)).to(dtype)
        # 2PR/(P+R) with P = matched_pred/n_pred, R = matched_true/n_true, multiplied through by n_pred * n_true
        denom = matched_pred * n_true + matched_true * n_pred
        f = 2 * matched_pred * matched_true / denom.clamp_min(1e-12)
        both_empty = (n_true == 0) & (n_pred == 0)
        in_both = (in_true[image, cls] & in_pred[image, cls]).to(dtype)
        scores[image, cls] = torch.where((n_true > 0) & (n_pred > 0), f, both_empty.to(dtype) * in_both)
    return scores, present


def _squared_distance_within(edges: torch.Tensor, limit: int) -> torch.Tensor:
    """(B, H, W) bool boundary maps -> int64 squared Euclidean distance of each pixel to the nearest True pixel of
    its image, exact where it is <= limit**2 and some value > limit**2 elsewhere ((limit + 1)**2 without a boundary).

    Written here rather than taken from a library: scipy (`ndimage.distance_transform_edt`) is not a dependency and
    OpenCV only arrives with an optional extra; the band needs distances up to the largest width only, which two
    exact integer passes give on the metric's own device. Pass 1: g = the vertical distance to the nearest boundary
    pixel of the same column (cummax / cummin of row indices), clamped to limit + 1. Pass 2: d2(y, x) = min over
    |dx| <= limit of g(y, x + dx)**2 + dx**2, the separable form of the squared distance (Meijster et al. 2000)
    with the search bounded where any longer offset already exceeds limit**2."""
    _, h, w = edges.shape
    big = h + limit + 1
    rows = torch.arange(h, device=edges.device).view(1, h, 1)
    above = torch.where(edges, rows, -big).cummax(1).values  # (B, H, W): row of the nearest boundary at or above
    below = torch.where(edges, rows, h + big).flip(1).cummin(1).values.flip(1)  # ... at or below
    g = torch.minimum(rows - above, below - rows).clamp_max(limit + 1)
    g2 = g * g
    d2 = g2.clone()
    for dx in range(1, min(limit, w - 1) + 1):
        d2[..., :-dx] = torch.minimum(d2[..., :-dx], g2[..., dx:] + dx * dx)  # boundary columns to the right
        d2[..., dx:] = torch.minimum(d2[..., dx:], g2[..., :-dx] + dx * dx)  # ... to the left
    return d2


def _checked_widths(widths: Sequence[int]) -> tuple[int, ...]:
    if isinstance(widths, (str, bytes)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                   for v in widths):
        raise BetterConvError(f"trimap widths must be positive integers, got {widths!r}")
    return tuple(sorted(set(widths)))


def trimap_bands(target: torch.Tensor, widths: Sequence[int], ignore_index: int | None = 255) -> torch.Tensor:
    """The trimap bands of ground-truth label maps `target` (B, H, W): (len(widths), B, H, W) bool, True where the
    Euclidean distance to the nearest ground-truth boundary pixel of the image is <= w (module docstring). The
    bands are geometric: they include ignored pixels, which the metric then leaves out."""
    widths = _checked_widths(widths)
    if target.dim() != 3:
        raise BetterConvError(f"target must be (B, H, W) class indices, got shape {tuple(target.shape)}")
    target = target.long()
    if len(widths) == 0:
        return torch.zeros((0, *target.shape), dtype=torch.bool, device=target.device)
    labels = torch.where(target != ignore_index, target, -1) if ignore_index is not None else target
    d2 = _squared_distance_within(_label_boundaries(labels), widths[-1])
    squared = torch.tensor([w * w for w in widths], device=target.device).view(-1, 1, 1, 1)
    return d2.unsqueeze(0) <= squared  # (K, B, H, W)


def _iou_and_miou(cm: torch.Tensor) -> tuple[list[float | None], float | None]:
    """Per-class IoU (None where the union is empty) and their mean over the defined ones, of a (C, C) matrix."""
    cm = cm.to("cpu", torch.float64)
    tp = cm.diagonal()
    union = cm.sum(1) + cm.sum(0) - tp
    iou = [float(tp[i] / union[i]) if union[i] > 0 else None for i in range(len(tp))]
    defined = [v for v in iou if v is not None]
    return iou, (math.fsum(defined) / len(defined) if defined else None)


class SegmentationMetric:
    """Accumulates a confusion matrix and boundary F-scores over batches; `compute()` gives the scores.

    The accumulators are public tensors on the device of the last `update` (or `device`): `confusion_matrix`
    (C, C) int64, rows = true class, columns = predicted class; `bf_class_sum` / `bf_class_count` (C,) and
    `bf_image_sum` / `bf_image_count` (scalars). They are sums, so processes can add them: `all_reduce_()` does
    it with torch.distributed, `merge(other)` within one process. `boundary_tolerance=None` skips the boundary
    F-score (its entries are then None). `trimap_widths` (positive integers, pixels) adds one confusion matrix per
    width of the trimap band, `trimap_confusion` (K, C, C) int64 in increasing width order, and the `trimap` entry
    {"w": mIoU} (None without widths).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, boundary_tolerance: int | None = 2,
                 device: torch.device | str = "cpu", trimap_widths: Sequence[int] = ()) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise BetterConvError(f"num_classes must be a positive integer, got {num_classes!r}")
        if boundary_tolerance is not None and (not isinstance(boundary_tolerance, int) or boundary_tolerance < 0):
            raise BetterConvError(f"boundary_tolerance must be a non-negative integer or None, "
                                  f"got {boundary_tolerance!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary_tolerance = boundary_tolerance
        self.trimap_widths = _checked_widths(trimap_widths)
        self._allocate(torch.device(device))

    def _allocate(self, device: torch.device) -> None:
        c, fd = self.num_classes, _float_dtype(device)
        self.confusion_matrix = torch.zeros(c, c, dtype=torch.int64, device=device)
        self.bf_class_sum = torch.zeros(c, dtype=fd, device=device)
        self.bf_class_count = torch.zeros(c, dtype=torch.int64, device=device)
        self.bf_image_sum = torch.zeros((), dtype=fd, device=device)
        self.bf_image_count = torch.zeros((), dtype=torch.int64, device=device)
        self.trimap_confusion = torch.zeros(len(self.trimap_widths), c, c, dtype=torch.int64, device=device)

    def accumulators(self) -> dict[str, torch.Tensor]:
        out = {"confusion_matrix": self.confusion_matrix, "bf_class_sum": self.bf_class_sum,
               "bf_class_count": self.bf_class_count, "bf_image_sum": self.bf_image_sum,
               "bf_image_count": self.bf_image_count}
        if self.trimap_widths:  # no empty tensor for the collectives when there is no band
            out["trimap_confusion"] = self.trimap_confusion
        return out

    @property
    def device(self) -> torch.device:
        return self.confusion_matrix.device

    def to(self, device: torch.device | str) -> SegmentationMetric:
        device = torch.device(device)
        for name, value in self.accumulators().items():
            dtype = value.dtype if value.dtype == torch.int64 else _float_dtype(device)
            setattr(self, name, value.to(device=device, dtype=dtype))
        return self

    def reset(self) -> None:
        self._allocate(self.device)

    def _labels(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if target.dim() == 2:
            target, pred = target.unsqueeze(0), pred.unsqueeze(0)
        if target.dim() != 3:
            raise BetterConvError(f"target must be (B, H, W) class indices, got shape {tuple(target.shape)}")
        if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
            raise BetterConvError(f"target must hold integer class indices, got {target.dtype}")
        if pred.dim() == 4:
            if pred.shape[1] != self.num_classes:
                raise BetterConvError(f"logits have {pred.shape[1]} channels for {self.num_classes} classes")
            pred = pred.argmax(1)
        elif pred.dim() != 3 or pred.dtype.is_floating_point or pred.dtype == torch.bool or pred.is_complex():
            raise BetterConvError(f"pred must be (B, H, W) integer class indices or (B, C, H, W) logits, "
                                  f"got shape {tuple(pred.shape)} {pred.dtype}")
        if pred.shape != target.shape:
            raise BetterConvError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        if pred.device != target.device:
            raise BetterConvError(f"pred is on {pred.device} and target on {target.device}")
        return pred.long(), target.long()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Adds a batch: `pred` (B, H, W) class indices or (B, C, H, W) logits/scores (argmax over C), `target`
        (B, H, W) class indices or `ignore_index`. A single (H, W) map (or (C, H, W) scores) is one image."""
        pred, target = self._labels(pred, target)
        if target.device != self.device:
            self.to(target.device)
        c = self.num_classes
        if self.ignore_index is None:
            valid = torch.ones_like(target, dtype=torch.bool)
        else:
            valid = target != self.ignore_index
        bad = (valid & ((target < 0) | (target >= c))) | (valid & ((pred < 0) | (pred >= c)))
        if bool(bad.any()):
            t_bad = target[valid & ((target < 0) | (target >= c))].unique().tolist()
            p_bad = pred[valid & ((pred < 0) | (pred >= c))].unique().tolist()
            raise BetterConvError(f"labels outside 0..{c - 1} (ignore_index {self.ignore_index}): "
                                  f"target {t_bad[:5]}, pred {p_bad[:5]}")
        # invalid pixels land in an extra bin, dropped: no boolean indexing, so no host sync for the counting
        index = torch.where(valid, target * c + pred, c * c)
        self.confusion_matrix += torch.bincount(index.flatten(), minlength=c * c + 1)[:c * c].view(c, c)
        if self.trimap_widths:
            k = len(self.trimap_widths)
            band = trimap_bands(target, self.trimap_widths, self.ignore_index) & valid  # (K, B, H, W)
            offset = torch.arange(k, device=target.device).view(k, 1, 1, 1) * (c * c + 1)
            # bin k * (c*c + 1) + c*c collects width k's pixels outside its band, dropped below
            band_index = offset + torch.where(band, index.unsqueeze(0), c * c)
            counts = torch.bincount(band_index.flatten(), minlength=k * (c * c + 1)).view(k, c * c + 1)
            self.trimap_confusion += counts[:, :c * c].view(k, c, c)
        if self.boundary_tolerance is not None:
            f, present = boundary_f_scores(pred, target, c, self.boundary_tolerance, self.ignore_index)
            fd = self.bf_class_sum.dtype
            self.bf_class_sum += f.to(fd).sum(0)
            self.bf_class_count += present.sum(0)
            n_present = present.sum(1)
            image_score = f.to(fd).sum(1) / n_present.clamp_min(1)
            self.bf_image_sum += image_score.sum()
            self.bf_image_count += (n_present > 0).sum()

    def merge(self, other: SegmentationMetric) -> SegmentationMetric:
        """Adds the accumulators of another metric with the same settings (e.g. from another worker)."""
        if (other.num_classes, other.ignore_index, other.boundary_tolerance, other.trimap_widths) != \
                (self.num_classes, self.ignore_index, self.boundary_tolerance, self.trimap_widths):
            raise BetterConvError("cannot merge segmentation metrics with different num_classes, ignore_index, "
                                  "boundary_tolerance or trimap_widths")
        for name, value in self.accumulators().items():
            value += getattr(other, name).to(device=value.device, dtype=value.dtype)
        return self

    def all_reduce_(self, group=None) -> SegmentationMetric:
        """Sums the accumulators over the processes of `group` in place when torch.distributed is initialised
        (a no-op otherwise). Every process must call it; the accumulators must be on a device the backend
        supports (CUDA for NCCL: update on CUDA or construct with `device`)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            for value in self.accumulators().values():
                dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
        return self

    sync = all_reduce_

    def compute(self) -> dict:
        """The scores as plain Python floats, lists and None (JSON-ready); None where a score is undefined."""
        cm = self.confusion_matrix.to("cpu", torch.float64)
        tp = cm.diagonal()
        true_count = cm.sum(1)
        total = float(true_count.sum())
        iou, miou = _iou_and_miou(self.confusion_matrix)
        acc = [float(tp[i] / true_count[i]) if true_count[i] > 0 else None for i in range(self.num_classes)]
        defined_acc = [v for v in acc if v is not None]
        out: dict = {
            "miou": miou,
            "pixel_acc": float(tp.sum()) / total if total > 0 else None,
            "mean_acc": math.fsum(defined_acc) / len(defined_acc) if defined_acc else None,
            "fw_iou": math.fsum(float(true_count[i]) * iou[i] for i in range(self.num_classes)
                                if true_count[i] > 0) / total if total > 0 else None,
            "per_class_iou": iou,
            "per_class_acc": acc,
            "num_pixels": int(total),
        }
        if self.boundary_tolerance is None:
            out["boundary_f"], out["per_class_boundary_f"] = None, [None] * self.num_classes
        else:
            class_sum = self.bf_class_sum.to("cpu", torch.float64)
            class_count = self.bf_class_count.cpu()
            images = int(self.bf_image_count)
            out["boundary_f"] = float(self.bf_image_sum) / images if images > 0 else None
            out["per_class_boundary_f"] = [float(class_sum[i]) / int(class_count[i]) if class_count[i] > 0
                                           else None for i in range(self.num_classes)]
        out["trimap"] = None
        if self.trimap_widths:
            out["trimap"] = {str(w): _iou_and_miou(cm_w)[1] for w, cm_w in zip(self.trimap_widths,
                                                                               self.trimap_confusion)}
        return out
