"""YOLOv2 inference: raw region-layer output -> per-image detections (darknet's `validate_detector`: decode, keep
every (box, class) whose score objectness * P(class | object) is above a low threshold, class-wise NMS, clip) and
the COCO results format.

Darknet's VOC/COCO evaluation uses ``thresh = .005`` and ``nms = .45``; its `do_nms_sort` suppresses, class by class,
a box whose IoU with a higher-scoring one is above the threshold, which is what `torchvision.ops.batched_nms` does
with the class as the group. Boxes are clipped to the image after NMS, as darknet does when it prints them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from torchvision.ops import batched_nms
from torchvision.transforms.v2.functional import resize
from tqdm import tqdm

from ..data.det_transforms import unresize_boxes
from ..data.detection import collate_detection
from ..errors import BetterConvError
from .detection_metrics import evaluate_detections
from .region import decode_region

__all__ = ["nms_best", "postprocess", "to_coco_results"]


def _hw(size: int | Sequence[int], what: str) -> tuple[float, float]:
    if isinstance(size, int):
        return float(size), float(size)
    if len(size) != 2:
        raise BetterConvError(f"{what} must be (height, width) or one int, got {size!r}")
    return float(size[0]), float(size[1])


def model_outputs(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A detector's output as a list with one (B, A_i*(5+C), H_i, W_i) tensor per prediction scale."""
    return [out] if isinstance(out, torch.Tensor) else list(out)


def nms_best(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
             max_det: int) -> torch.Tensor:
    """``batched_nms(boxes, scores, labels, iou_threshold)[:max_det]``, computed on as few candidates as it needs.

    Greedy NMS decides each box from the boxes scored above it only, so NMS over the k best candidates keeps,
    among them, exactly the boxes NMS over all candidates keeps. Once the k best give `max_det` survivors, the
    others cannot change the answer: k starts at 2 * `max_det` and doubles until they do (at most about twice the
    work of one NMS over everything, and far less when many candidates pass the threshold, as they do at the mAP
    threshold 0.005)."""
    order = scores.argsort(descending=True, stable=True)
    k = min(len(order), 2 * max_det)
    while True:
        best = order[:k]
        keep = best[batched_nms(boxes[best], scores[best], labels[best], iou_threshold)]
        if len(keep) >= max_det or k == len(order):
            return keep[:max_det]
        k = min(len(order), 2 * k)


def postprocess(raw: torch.Tensor | Sequence[torch.Tensor],
                anchors: torch.Tensor | Sequence[Sequence[float]] | Sequence[torch.Tensor], num_classes: int,
                input_size: int | tuple[int, int], conf_thresh: float = 0.005, nms_iou: float = 0.45,
                max_det: int = 300, *, image_sizes: Sequence[tuple[int, int]] | None = None,
                clip: bool = True, pre_nms_top_k: int | None = 3000,
                location: str = "sigmoid") -> list[dict[str, torch.Tensor]]:
    """Detections per image from `raw` ``(B, A * (5 + num_classes), H, W)``, or from several prediction scales
    (a sequence of such outputs, with one anchor set each, as `model.head_anchors()` gives them).

    One candidate per (box, class) with score = objectness * softmax class probability > `conf_thresh`; class-aware
    NMS at IoU `nms_iou`; the `max_det` best kept. Only the `pre_nms_top_k` best candidates enter NMS (as
    torchvision's detectors do: at the mAP threshold of 0.005 an untrained or uncertain network passes nearly every
    one of YOLOv2's 845 x C candidates, and NMS, quadratic in the worst case, would cost more than the forward
    pass); `None` keeps every candidate. NMS runs on as few of them as give the same result (`nms_best`).
    `location`: the model's (`tasks.region`). Boxes are x1, y1, x2, y2 in pixels of `input_size` ((height, width)
    of the network input), or of ``image_sizes[b]`` when given (the original images, resized without letterboxing
    to the input, as darknet's YOLOv2 did). Returns per image a dict with ``boxes`` (D, 4), ``scores``
    (D,) and ``labels`` (D,) int64, sorted by decreasing score."""
    outputs = [raw] if isinstance(raw, torch.Tensor) else list(raw)
    anchor_sets = [anchors] if isinstance(raw, torch.Tensor) else list(anchors)
    if len(anchor_sets) != len(outputs):
        raise BetterConvError(f"got {len(anchor_sets)} anchor sets for {len(outputs)} prediction scales")
    batch = outputs[0].shape[0]
    if image_sizes is not None and len(image_sizes) != batch:
        raise BetterConvError(f"got {len(image_sizes)} image sizes for a batch of {batch}")
    in_h, in_w = _hw(input_size, "input_size")
    with torch.no_grad():
        decoded = [decode_region(r.detach(), a, num_classes, (int(in_h), int(in_w)), location=location)
                   for r, a in zip(outputs, anchor_sets)]
        all_boxes = torch.cat([d.boxes for d in decoded], dim=1)  # (B, N, 4) over every scale
        all_scores = torch.cat([d.scores for d in decoded], dim=1)  # (B, N, C)
        out = []
        for b in range(batch):
            scores = all_scores[b]  # (N, C)
            box_i, labels = (scores > conf_thresh).nonzero(as_tuple=True)  # (K,), (K,)
            boxes, scores = all_boxes[b][box_i], scores[box_i, labels]  # (K, 4), (K,)
            if pre_nms_top_k is not None and len(scores) > pre_nms_top_k:
                top = scores.topk(pre_nms_top_k).indices
                boxes, scores, labels = boxes[top], scores[top], labels[top]
            keep = nms_best(boxes.float(), scores.float(), labels, nms_iou, max_det)  # by decreasing score
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            img_h, img_w = in_h, in_w
            if image_sizes is not None:
                img_h, img_w = _hw(image_sizes[b], "image size")
                boxes = boxes * boxes.new_tensor([img_w / in_w, img_h / in_h, img_w / in_w, img_h / in_h])
            if clip:
                boxes = torch.stack([boxes[:, 0].clamp(0, img_w), boxes[:, 1].clamp(0, img_h),
                                     boxes[:, 2].clamp(0, img_w), boxes[:, 3].clamp(0, img_h)], dim=-1)
            out.append({"boxes": boxes, "scores": scores, "labels": labels})
    return out


def to_coco_results(detections: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int | str],
                    label_to_category: Mapping[int, int] | Sequence[int]) -> list[dict]:
    """COCO results JSON entries ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` for `detections`
    (as `postprocess` returns them, boxes x1, y1, x2, y2 in pixels of the original image) of images `image_ids`.
    `label_to_category` maps a label index to its COCO category id (a sequence is indexed by label)."""
    if len(detections) != len(image_ids):
        raise BetterConvError(f"got {len(detections)} detection sets for {len(image_ids)} image ids")
    results: list[dict] = []
    for det, image_id in zip(detections, image_ids):
        boxes = torch.as_tensor(det["boxes"]).detach().float().cpu().reshape(-1, 4)  # (D, 4)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()  # (D, 4) x, y, w, h
        scores = torch.as_tensor(det["scores"]).detach().float().cpu().reshape(-1).tolist()
        labels = torch.as_tensor(det["labels"]).detach().cpu().reshape(-1).tolist()
        category = {}
        for lb in set(labels):
            try:
                category[lb] = int(label_to_category[lb])
            except (KeyError, IndexError):
                raise BetterConvError(f"label {lb} has no COCO category") from None
        cats = [category[lb] for lb in labels]
        if isinstance(image_id, str) and image_id.isascii() and image_id.isdigit():
            image_id = int(image_id)  # COCO's file stems are its ids; other stems stay strings
        results.extend({"image_id": image_id, "category_id": cat, "bbox": box, "score": score}
                       for cat, box, score in zip(cats, xywh, scores))
    return results


def check_slicing(slice_size: int, overlap: float) -> None:
    """Sliced inference's options: tiles of at least 32 pixels (one stride-32 cell), overlap in [0, 1)."""
    if isinstance(slice_size, bool) or not isinstance(slice_size, int) or slice_size < 32:
        raise BetterConvError(f"slice size must be an integer >= 32, got {slice_size!r}")
    if not 0 <= overlap < 1:
        raise BetterConvError(f"slice overlap must be in [0, 1), got {overlap!r}")


def sliced_detections(forward: Callable[[torch.Tensor], Any], model: torch.nn.Module, image: torch.Tensor,
                      input_size: int, slice_size: int, overlap: float = 0.2, conf_thresh: float = 0.005,
                      nms_iou: float = 0.45, max_det: int = 300, full_image: bool = True) -> dict[str, torch.Tensor]:
    """Sliced inference (SAHI, Akyon et al., ICIP 2022): the image cut into `slice_size` tiles overlapping by
    `overlap` of their side (sahi's `get_slice_bboxes` lays them out), each tile resized to the network input as a
    whole image is, its detections moved back into the image; with `full_image` the whole image's detections join
    them (sahi's "standard prediction"), and class-aware NMS at `nms_iou` merges the lot. A small object covers more
    input cells in a tile than in the resized image.

    `image`: (3, H, W) float in [0, 1], as the model's eval transform gives it before resizing; `forward` computes
    the raw outputs (the model itself, or an engine running it); `model` gives anchors, classes and location rule.
    Returns boxes (D, 4) in pixels of `image`, scores, labels, sorted by score."""
    import sahi.slicing  # an optional dependency, imported only where slicing is asked for

    check_slicing(slice_size, overlap)
    _, height, width = image.shape
    tiles = sahi.slicing.get_slice_bboxes(height, width, slice_size, slice_size, False, overlap, overlap)
    if full_image:
        tiles = [[0, 0, width, height], *tiles]
    crops = torch.stack([resize(image[:, y1:y2, x1:x2], [input_size, input_size], antialias=True)
                         for x1, y1, x2, y2 in tiles])  # (T, 3, S, S)
    with torch.no_grad():
        per_tile = postprocess(model_outputs(forward(crops)), model.head_anchors(), model.num_classes, input_size,
                               conf_thresh, nms_iou, max_det, location=getattr(model, "location", "sigmoid"),
                               image_sizes=[(y2 - y1, x2 - x1) for x1, y1, x2, y2 in tiles])
    offsets = [torch.tensor([x1, y1, x1, y1], dtype=torch.float32) for x1, y1, _, _ in tiles]
    boxes = torch.cat([d["boxes"].cpu() + o for d, o in zip(per_tile, offsets)])  # (N, 4) in pixels of the image
    scores = torch.cat([d["scores"].cpu() for d in per_tile])
    labels = torch.cat([d["labels"].cpu() for d in per_tile])
    keep = nms_best(boxes, scores, labels, nms_iou, max_det)
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def ground_truth_entry(target: Mapping[str, Any], boxes: torch.Tensor) -> dict[str, Any]:
    """A dataset target as `evaluate_detections` takes ground truth: `boxes` in pixels of the original image, the
    labels, VOC's difficult flags and, for COCO data, each object's own area (the official size rule)."""
    entry = {"boxes": boxes, "labels": target["labels"], "difficult": target["difficult"]}
    if "area" in target:
        entry["area"] = target["area"]
    return entry


def detect_dataset(model: torch.nn.Module, dataset, input_size: int, device: torch.device | str = "cpu",
                   conf_thresh: float = 0.005, nms_iou: float = 0.45, batch_size: int = 8,
                   max_images: int | None = None, progress: bool = True,
                   forward: Callable[[torch.Tensor], Any] | None = None, slice_size: int | None = None,
                   overlap: float = 0.2) -> tuple[list[dict], list[dict]]:
    """Run a YOLOv2-style model over `dataset` (whose transform is `eval_transform(input_size)`, a plain resize).
    `forward` computes the raw outputs in the model's place (an `NcnnModel` of it, say); the model still gives the
    anchors, classes and location rule. `slice_size`: sliced inference (`sliced_detections`) on the untransformed
    images instead.

    Returns per image the detections and the ground truth, both in pixels of the original image."""
    module = model.module if hasattr(model, "module") else model
    was_training = module.training
    module.eval()
    if slice_size is not None:
        count = len(dataset) if max_images is None else min(max_images, len(dataset))
        detections, ground_truth = [], []
        for i in tqdm(range(count), desc="detecting (sliced)", unit="img", disable=not progress, leave=False):
            image, target = dataset.load(i)  # untransformed: uint8 (3, H, W), boxes in its pixels
            x = image.to(device).float() / 255
            det = sliced_detections(forward or module, module, x, input_size, slice_size, overlap, conf_thresh,
                                    nms_iou)
            detections.append(det)
            ground_truth.append(ground_truth_entry(target, torch.as_tensor(target["boxes"]).float()))
        module.train(was_training)
        return detections, ground_truth
    subset = dataset if max_images is None else Subset(dataset, range(min(max_images, len(dataset))))
    loader = DataLoader(subset, batch_size, collate_fn=collate_detection)
    detections, ground_truth = [], []
    with torch.no_grad(), tqdm(total=len(subset), desc="detecting", unit="img", disable=not progress,
                               leave=False) as bar:
        for images, targets in loader:
            sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]  # (H, W) of the originals
            dets = postprocess(model_outputs((forward or module)(images.to(device))), module.head_anchors(),
                               module.num_classes, images.shape[-2:], conf_thresh, nms_iou, image_sizes=sizes,
                               location=getattr(module, "location", "sigmoid"))
            detections += [{k: v.cpu() for k, v in d.items()} for d in dets]
            ground_truth += [ground_truth_entry(t, unresize_boxes(t["boxes"], size, input_size, clip=False))
                             for t, size in zip(targets, sizes)]
            bar.update(len(targets))
    module.train(was_training)
    return detections, ground_truth


def evaluate_detector(model: torch.nn.Module, dataset, input_size: int, device: torch.device | str = "cpu",
                      max_images: int | None = None, coco: bool = True, progress: bool = True) -> dict:
    """VOC07 / VOC / COCO metrics of the model on `dataset` (see `evaluate_detections`)."""
    detections, ground_truth = detect_dataset(model, dataset, input_size, device, max_images=max_images,
                                              progress=progress)
    n = len(detections)
    return evaluate_detections(detections, ground_truth, dataset.num_classes, class_names=dataset.class_names,
                               image_ids=dataset.image_ids[:n], category_ids=getattr(dataset, "category_ids", None),
                               pixel_inclusive=False, coco=coco)
