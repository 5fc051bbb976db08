"""YOLOv2's region-layer training loss (darknet's src/region_layer.c, `forward_region_layer` + `backward_region_layer`),
written as an explicit loss whose gradient is darknet's delta.

Darknet does not define a loss function: its region layer writes a "delta" per raw output, the negative gradient
it back-propagates into the last convolution. Per prediction (image b, cell (i, j) of the H x W grid, anchor n with
size (p_w, p_h) in grid cells; raw outputs t_x, t_y, t_w, t_h, t_o, t_1..t_C; sigma the logistic function), the
delta with respect to the raw outputs is, in darknet's order of writing (a later write replaces an earlier one):

1. no object, every prediction:  d t_o = noobject_scale * (0 - sigma(t_o)) * sigma'(t_o), set to 0 when the
   prediction's box has IoU > thresh with any truth of its image;
2. anchor prior, every prediction while ``images_seen < prior_images`` (darknet: ``net.seen < 12800``), scale .01,
   the target being the anchor centred in its cell:
   d t_x = .01 * (.5 - sigma(t_x)) * sigma'(t_x),  d t_y likewise,  d t_w = .01 * (0 - t_w),  d t_h = .01 * (0 - t_h);
3. each truth (relative centre (x, y), size (w, h)) in order: cell i = floor(x W), j = floor(y H); anchor n = the one
   whose (p_w / W, p_h / H) has the best IoU with (w, h), both centred (bias_match; otherwise the predicted size);
   that prediction gets, with s = coord_scale * (2 - w h),
   d t_x = s * (x W - i - sigma(t_x)) * sigma'(t_x),   d t_y = s * (y H - j - sigma(t_y)) * sigma'(t_y),
   d t_w = s * (log(w W / p_w) - t_w),                 d t_h = s * (log(h H / p_h) - t_h),
   d t_o = object_scale * (IoU(pred, truth) - sigma(t_o)) * sigma'(t_o)   (target 1 instead of the IoU if not rescore),
   d t_c = class_scale * ([c == class] - softmax(t)_c)                     (darknet passes this delta straight to
   the convolution: it is the negative gradient of the softmax cross-entropy with respect to the logits).
   Two truths matched to the same prediction: the later one wins, as in darknet.

The loss here, for a batch of B images, is

    loss = (1 / B) * [ sum_matched  coord_scale * (2 - w h) / 2 * ((sigma(t_x) - tx)^2 + (sigma(t_y) - ty)^2
                                                                  + (t_w - tw)^2 + (t_h - th)^2)       "coord"
                     + sum_matched  object_scale / 2 * (sigma(t_o) - IoU)^2                            "obj"
                     + sum_matched  class_scale * cross_entropy(t_1..t_C, class)                       "class"
                     + sum_unmatched, IoU <= thresh  noobject_scale / 2 * sigma(t_o)^2                 "noobj"
                     + sum_unmatched, prior active  .01 / 2 * ((sigma(t_x) - .5)^2 + (sigma(t_y) - .5)^2
                                                              + t_w^2 + t_h^2) ]                       "prior"

With ``location="offset"`` (the anchor offsets of the ablation ladder, see `tasks.region`) sigma(t_x), sigma(t_y)
become t_x, t_y, their targets (x W - i - .5) / p_w and (y H - j - .5) / p_h, and the prior pulls t_x, t_y to 0.

The targets (tx, ty, tw, th, the IoU and the best-IoU test) are computed without gradient, so that
``-B * d loss / d raw`` equals darknet's delta exactly (its GPU backward and its CPU backward of the same era apply
sigma' to x, y and objectness and nothing to the class delta). Normalisation: darknet sums over the batch (its
printed cost is the squared norm of the delta, which is not the value of any loss with that gradient); dividing by
B keeps the gradient's scale independent of the batch size, so darknet's learning rate (given per image, since it
divides the update by the batch) carries over unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BetterConvError
from .detection import model_outputs
from .multiscale import MultiScale
from .region import cell_offsets, check_location

__all__ = ["RegionLoss"]

LOSS_TERMS = ("coord", "obj", "class", "noobj", "prior")


def _pairwise_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes (..., N, 4) with boxes (..., T, 4), both (cx, cy, w, h): (..., N, T). darknet's box_iou."""
    a, b = a[..., :, None, :], b[..., None, :, :]  # (..., N, 1, 4), (..., 1, T, 4)
    iw = (torch.minimum(a[..., 0] + a[..., 2] / 2, b[..., 0] + b[..., 2] / 2)
          - torch.maximum(a[..., 0] - a[..., 2] / 2, b[..., 0] - b[..., 2] / 2)).clamp(min=0)  # (..., N, T)
    ih = (torch.minimum(a[..., 1] + a[..., 3] / 2, b[..., 1] + b[..., 3] / 2)
          - torch.maximum(a[..., 1] - a[..., 3] / 2, b[..., 1] - b[..., 3] / 2)).clamp(min=0)  # (..., N, T)
    inter = iw * ih
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def _paired_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes a[k] with b[k], both (K, 4) (cx, cy, w, h): (K,)."""
    return _pairwise_iou_cxcywh(a[:, None, :], b[:, None, :])[:, 0, 0]  # (K, 1, 1) -> (K,)


class RegionLoss(nn.Module):
    """darknet's YOLOv2 region-layer loss; see the module docstring for the exact definition.

    `anchors` (A, 2) are (width, height) in grid cells, as the model's `anchors` buffer; the defaults are
    yolov2-voc.cfg's ``[region]`` settings (``bias_match=1``, ``rescore=1``, ``thresh=.6``, ``object_scale=5``,
    ``noobject_scale=1``, ``class_scale=1``, ``coord_scale=1``, softmax class scores)."""

    def __init__(self, anchors: torch.Tensor | Sequence[Sequence[float]], num_classes: int, *,
                 object_scale: float = 5.0, noobject_scale: float = 1.0, class_scale: float = 1.0,
                 coord_scale: float = 1.0, thresh: float = 0.6, rescore: bool = True, bias_match: bool = True,
                 prior_images: int = 12800, location: str = "sigmoid") -> None:
        super().__init__()
        self.location = check_location(location)
        anchors = torch.as_tensor(anchors, dtype=torch.float32).detach().clone()
        if anchors.dim() != 2 or anchors.shape[1] != 2 or anchors.shape[0] < 1 or not bool((anchors > 0).all()):
            raise BetterConvError(f"region loss anchors must be (A, 2) positive (width, height) pairs, "
                                  f"got shape {tuple(anchors.shape)}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise BetterConvError(f"region loss num_classes must be a positive integer, got {num_classes!r}")
        self.register_buffer("anchors", anchors)
        self.num_classes = num_classes
        self.object_scale, self.noobject_scale = float(object_scale), float(noobject_scale)
        self.class_scale, self.coord_scale = float(class_scale), float(coord_scale)
        self.thresh, self.rescore, self.bias_match = float(thresh), bool(rescore), bool(bias_match)
        self.prior_images = int(prior_images)

    def extra_repr(self) -> str:
        return (f"anchors={self.anchors.shape[0]}, num_classes={self.num_classes}, object_scale={self.object_scale}, "
                f"noobject_scale={self.noobject_scale}, class_scale={self.class_scale}, "
                f"coord_scale={self.coord_scale}, thresh={self.thresh}, rescore={self.rescore}, "
                f"location={self.location}, "
                f"bias_match={self.bias_match}, prior_images={self.prior_images}")

    def _truths(self, targets: Sequence[Mapping[str, torch.Tensor]], batch: int, img_h: float, img_w: float,
                device: torch.device, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All truths of the batch in order: (K, 4) relative (cx, cy, w, h), (K,) labels, (K,) image index, (K,)
        whether this layer is responsible for the truth (a target's optional ``assign`` mask, default all)."""
        if len(targets) != batch:
            raise BetterConvError(f"region loss got {len(targets)} targets for a batch of {batch}")
        boxes, labels, owner, assign = [], [], [], []
        for b, t in enumerate(targets):
            bx = torch.as_tensor(t["boxes"], device=device).to(dtype).reshape(-1, 4)
            lb = torch.as_tensor(t["labels"], device=device).reshape(-1).long()
            asg = torch.as_tensor(t.get("assign", torch.ones(len(lb), dtype=torch.bool)), device=device)
            asg = asg.reshape(-1)
            if len(lb) != len(bx) or len(asg) != len(bx):
                raise BetterConvError(f"region loss target {b} has {len(bx)} boxes, {len(lb)} labels and "
                                      f"{len(asg)} assignments")
            boxes.append(bx), labels.append(lb), owner.append(torch.full_like(lb, b)), assign.append(asg.bool())
        boxes, labels, owner, assign = torch.cat(boxes), torch.cat(labels), torch.cat(owner), torch.cat(assign)
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise BetterConvError(f"region loss labels must be in [0, {self.num_classes}), "
                                  f"got {int(labels.min())}..{int(labels.max())}")
        scale = boxes.new_tensor([img_w, img_h, img_w, img_h])
        x1, y1, x2, y2 = (boxes / scale).unbind(-1)  # (K,) each, relative to the input
        rel = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)  # (K, 4) cx, cy, w, h
        keep = (rel[:, 2] > 0) & (rel[:, 3] > 0)  # empty boxes have no log-size target
        return rel[keep], labels[keep], owner[keep], assign[keep]

    def forward(self, raw: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]],
                input_size: int | tuple[int, int], images_seen: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`raw` (B, A * (5 + C), H, W): the model's output. `targets`: one dict per image with ``boxes`` (N, 4)
        x1, y1, x2, y2 in pixels of the network input and ``labels`` (N,); boxes of zero width or height are
        dropped; an optional ``assign`` (N,) bool marks the truths this layer predicts (the others only silence
        the no-object term near them). `input_size`: the input's (height, width) or one int. `images_seen`:
        darknet's ``net.seen``, which darknet increments by the batch before the forward pass (pass the count
        including this batch to match it); the prior term is on while it is below `prior_images`.

        Returns the loss (a scalar, see the module docstring) and a dict of its terms ``coord``, ``obj``,
        ``class``, ``noobj``, ``prior`` (detached; they sum to the loss) plus ``avg_iou`` and ``recall``
        (IoU > .5) of the matched predictions and ``num_matched``, as darknet prints them."""
        a, c = self.anchors.shape[0], self.num_classes
        if raw.dim() != 4 or raw.shape[1] != a * (5 + c):
            raise BetterConvError(f"region loss input must be (B, {a * (5 + c)}, H, W) for {a} anchors and {c} "
                                  f"classes, got {tuple(raw.shape)}")
        img_h, img_w = (input_size, input_size) if isinstance(input_size, int) else input_size
        bsz, _, h, w = raw.shape
        dev, dt = raw.device, torch.promote_types(raw.dtype, torch.float32)  # float32, or float64 if given
        anchors = self.anchors.to(dev, dt)  # (A, 2)

        p = raw.to(dt).reshape(bsz, a, 5 + c, h, w).permute(0, 3, 4, 1, 2)  # (B, H, W, A, 5+C)
        p = p.reshape(bsz, h * w * a, 5 + c)  # (B, N, 5+C), N = H*W*A ordered (j, i, n)
        sx, sy, so = p[..., 0].sigmoid(), p[..., 1].sigmoid(), p[..., 4].sigmoid()  # (B, N) each
        tw, th = p[..., 2], p[..., 3]  # (B, N) each

        with torch.no_grad():
            gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
            gx = gx[:, :, None].expand(h, w, a).reshape(-1).to(dt)  # (N,)
            gy = gy[:, :, None].expand(h, w, a).reshape(-1).to(dt)  # (N,)
            anc = anchors.repeat(h * w, 1)  # (A, 2) -> (N, 2), anchor n of row k is k % A
            off_x, off_y = cell_offsets(p[..., 0], p[..., 1], anc[:, 0], anc[:, 1], self.location)  # (B, N) each
            pred = torch.stack([(gx + off_x) / w, (gy + off_y) / h, tw.exp() * anc[:, 0] / w,
                                th.exp() * anc[:, 1] / h], dim=-1)  # (B, N, 4) relative cx, cy, w, h

            truth, labels, owner, assign = self._truths(targets, bsz, float(img_h), float(img_w), dev, dt)
            k = len(labels)  # truth (K, 4), labels, owner, assign (K,)

            # 1. best IoU of each prediction with the truths of its image
            counts = torch.bincount(owner, minlength=bsz)  # (B,)
            tmax = int(counts.max()) if k else 0
            best_iou = torch.zeros(bsz, h * w * a, device=dev, dtype=dt)  # (B, N)
            if tmax:
                slot = torch.arange(k, device=dev) - (torch.cumsum(counts, 0) - counts)[owner]  # (K,) rank in image
                padded = torch.zeros(bsz, tmax, 4, device=dev, dtype=dt)  # (B, T, 4)
                padded[owner, slot] = truth
                valid = torch.zeros(bsz, 1, tmax, dtype=torch.bool, device=dev)  # (B, 1, T)
                valid[owner, 0, slot] = True
                ious = _pairwise_iou_cxcywh(pred, padded)  # (B, N, T)
                best_iou = torch.where(valid, ious.nan_to_num(0.0), 0.0).amax(dim=-1)  # (B, N)

            # 3. match each truth this layer is responsible for to (cell, anchor); a later truth replaces an
            # earlier one on the same prediction. (Step 1 used every truth: with several prediction scales, a box
            # another scale predicts is not a "no object" here either.)
            truth, labels, owner = truth[assign], labels[assign], owner[assign]
            k = len(labels)
            ci = (truth[:, 0] * w).long().clamp(0, w - 1)  # (K,)
            cj = (truth[:, 1] * h).long().clamp(0, h - 1)  # (K,)
            cell = (cj * w + ci) * a  # (K,) index of anchor 0 of the truth's cell
            if self.bias_match:
                shape = (anchors / anchors.new_tensor([w, h]))[None].expand(k, a, 2)  # (K, A, 2)
            else:
                rows = cell[:, None] + torch.arange(a, device=dev)  # (K, A)
                shape = pred[owner[:, None], rows, 2:]  # (K, A, 2)
            inter = torch.minimum(shape[..., 0], truth[:, None, 2]) * torch.minimum(shape[..., 1], truth[:, None, 3])
            shape_iou = inter / (shape[..., 0] * shape[..., 1] + (truth[:, 2] * truth[:, 3])[:, None] - inter)
            best_n = shape_iou.argmax(dim=1)  # (K,) first best, as darknet's strict '>'
            flat = owner * (h * w * a) + cell + best_n  # (K,) index into (B*N)
            order = torch.arange(k, device=dev)
            last = torch.full((bsz * h * w * a,), -1, dtype=torch.long, device=dev)
            last.scatter_reduce_(0, flat, order, reduce="amax")
            won = last[flat] == order  # (K,)
            truth, labels, flat, best_n, ci, cj = (v[won] for v in (truth, labels, flat, best_n, ci, cj))
            matched = torch.zeros(bsz * h * w * a, dtype=torch.bool, device=dev)
            matched[flat] = True
            matched = matched.view(bsz, h * w * a)  # (B, N)

            tx, ty = truth[:, 0] * w - ci, truth[:, 1] * h - cj  # (M,) position in the cell
            if self.location == "offset":  # anchor offsets: the raw t that puts the centre there
                tx, ty = (tx - 0.5) / anchors[best_n, 0], (ty - 0.5) / anchors[best_n, 1]
            tgt_w = torch.log(truth[:, 2] * w / anchors[best_n, 0])  # (M,)
            tgt_h = torch.log(truth[:, 3] * h / anchors[best_n, 1])  # (M,)
            coord_w = self.coord_scale * (2 - truth[:, 2] * truth[:, 3])  # (M,)
            iou = _paired_iou_cxcywh(pred.reshape(-1, 4)[flat], truth)  # (M,)
            obj_target = iou if self.rescore else torch.ones_like(iou)

            # 1. and 2. apply where 3. does not write
            noobj_mask = (best_iou <= self.thresh) & ~matched  # (B, N)
            prior_mask = ~matched if images_seen < self.prior_images else torch.zeros_like(matched)  # (B, N)

        # the coordinates the location loss and the prior act on: sigmoid(t) (YOLOv2) or raw t (anchor offsets)
        lx, ly = (sx, sy) if self.location == "sigmoid" else (p[..., 0], p[..., 1])  # (B, N) each
        centre = 0.5 if self.location == "sigmoid" else 0.0  # the anchor centred in its cell
        m_sx, m_sy, m_so = lx.reshape(-1)[flat], ly.reshape(-1)[flat], so.reshape(-1)[flat]  # (M,) each
        m_tw, m_th = tw.reshape(-1)[flat], th.reshape(-1)[flat]  # (M,) each
        coord = 0.5 * (coord_w * ((m_sx - tx) ** 2 + (m_sy - ty) ** 2 + (m_tw - tgt_w) ** 2
                                  + (m_th - tgt_h) ** 2)).sum()
        obj = 0.5 * self.object_scale * ((m_so - obj_target) ** 2).sum()
        cls = self.class_scale * F.cross_entropy(p.reshape(-1, 5 + c)[flat, 5:], labels, reduction="sum")
        noobj = 0.5 * self.noobject_scale * (so[noobj_mask] ** 2).sum()
        prior = 0.005 * ((lx - centre) ** 2 + (ly - centre) ** 2 + tw ** 2 + th ** 2)[prior_mask].sum()

        terms = {"coord": coord / bsz, "obj": obj / bsz, "class": cls / bsz, "noobj": noobj / bsz,
                 "prior": prior / bsz}
        loss = sum(terms.values())
        stats = {name: v.detach() for name, v in terms.items()}
        n_matched = len(iou)
        stats["avg_iou"] = iou.mean() if n_matched else iou.new_zeros(())
        stats["recall"] = (iou > 0.5).float().mean() if n_matched else iou.new_zeros(())
        stats["num_matched"] = torch.tensor(n_matched, device=dev)
        return loss, stats


def assign_to_scales(targets: Sequence[Mapping[str, torch.Tensor]], anchor_sets: Sequence[torch.Tensor],
                     strides: Sequence[float]) -> list[list[dict]]:
    """Targets for each prediction scale, with an ``assign`` mask: a truth belongs to the scale holding the anchor
    whose shape (in pixels: grid units x stride) overlaps it best, both centred (YOLOv3 §2.3). With one scale every
    truth is assigned."""
    if len(anchor_sets) == 1:
        return [list(targets)]
    pixels = torch.cat([a.detach().float().cpu() * s for a, s in zip(anchor_sets, strides)])  # (A_total, 2) pixels
    scale_of = torch.cat([torch.full((len(a),), i) for i, a in enumerate(anchor_sets)])  # (A_total,)
    out: list[list[dict]] = [[] for _ in anchor_sets]
    for t in targets:
        device = torch.as_tensor(t["boxes"]).device
        boxes = torch.as_tensor(t["boxes"]).float().reshape(-1, 4).cpu()
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)  # (N, 2)
        inter = torch.minimum(wh[:, None, 0], pixels[None, :, 0]) * torch.minimum(wh[:, None, 1], pixels[None, :, 1])
        union = (wh[:, 0] * wh[:, 1])[:, None] + (pixels[:, 0] * pixels[:, 1])[None] - inter  # (N, A_total)
        best = scale_of[(inter / union.clamp(min=1e-9)).argmax(dim=1)]  # (N,) scale index of each truth
        for i in range(len(anchor_sets)):
            out[i].append({**t, "assign": (best == i).to(device)})
    return out


class DetectionLoss:
    """Region loss on multi-scale batches: the step decides the input size (YOLOv2 §2), and `images_seen` (for
    the prior term of the first 12,800 images) counts whole batches as darknet does. With several prediction
    scales each truth is predicted by the scale holding its best-shaped anchor (YOLOv3 §2.3)."""

    def __init__(self, model: nn.Module, batch_size: int, multiscale: bool, seed: int) -> None:
        location = getattr(model, "location", "sigmoid")
        self.heads = [RegionLoss(a.cpu(), model.num_classes, location=location) for a in model.head_anchors()]
        self.multiscale = MultiScale(seed=seed) if multiscale else None
        self.batch_size = batch_size

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, list[dict]], step: int) -> torch.Tensor:
        images, targets = batch
        if self.multiscale is not None:
            images, targets, _ = self.multiscale(images, targets, step)
        outputs = model_outputs(model(images))  # (B, A_i*(5+C), H_i, W_i) per prediction scale
        size = tuple(images.shape[-2:])
        per_scale = assign_to_scales(targets, [h.anchors for h in self.heads], [size[0] / o.shape[-2] for o in outputs])
        total = 0.0
        for head, raw, scale_targets in zip(self.heads, outputs, per_scale):
            head.to(raw.device)
            loss, _ = head(raw, scale_targets, size, images_seen=(step + 1) * self.batch_size)
            total = total + loss
        return total
