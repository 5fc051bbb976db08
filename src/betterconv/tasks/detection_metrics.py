"""Object detection metrics: PASCAL VOC average precision (VOC2007 11-point and VOC2010+ all-point) and the COCO
AP family through pycocotools.

Input format (what `voc_ap` and `evaluate_detections` take, one entry per image, in the same image order):

* detections:   dict(boxes=(N, 4) xyxy, scores=(N,), labels=(N,))
* ground truth: dict(boxes=(M, 4) xyxy, labels=(M,), difficult=(M,) optional, iscrowd=(M,) optional,
                 area=(M,) optional: the annotation's own area, as a COCO json stores it)

Tensors (any device) or numpy arrays; labels are class indices 0 .. num_classes - 1.

PASCAL VOC AP (`voc_ap`). Written here rather than taken from a library: the VOC2007 11-point metric with VOC's
treatment of "difficult" objects has no maintained library implementation (pycocotools has no VOC07 metric and no
`difficult`; torchmetrics' mean AP is COCO-style), and the original is the devkit's MATLAB `VOCevalDet.m` /
`VOCap.m`. The rules, per class c, follow the devkit:

* Positives. n_pos(c) = ground-truth objects of class c that are neither difficult nor crowd. A class with
  n_pos = 0 has AP None and is left out of the mean (the devkit divides by zero there).
* Order. The class's detections over all images are sorted by score, descending. Ties keep their input order
  (image order, then the order within the image): a stable sort, as MATLAB's `sort` in the devkit is.
* Assignment. Each detection is compared with every ground-truth object of class c in its image (matched or not)
  and assigned the one of highest IoU (the lowest index on a tie). If that IoU >= `iou_thresh` (the devkit's
  `ovmax >= minoverlap`): a difficult (or crowd) object makes the detection ignored -- neither TP nor FP, however
  many detections land on it; otherwise the first detection (in the sorted order) assigned to the object is a TP
  and any later one a FP (duplicate). Below the threshold, or with no object of the class in the image, it is a FP.
  Note that, as in the devkit, a detection whose best object is already taken is a FP even when another free
  object overlaps it by more than the threshold (COCO's matching would try the next object; VOC does not).
* IoU. With `pixel_inclusive=True` (the VOC convention, for VOC's integer pixel coordinates, where a box x1..x2
  covers x2 - x1 + 1 pixels) widths and heights are x2 - x1 + 1; with `pixel_inclusive=False` (continuous
  coordinates: COCO, YOLO txt, model outputs in pixels of a resized image) they are x2 - x1. Boxes that do not
  overlap (intersection width or height <= 0) have IoU 0. IoU = intersection / (area_det + area_gt - intersection).
* Curve. Ignored detections are dropped; over the rest, tp and fp are cumulative sums, recall = tp / n_pos and
  precision = tp / (tp + fp).
* VOC2007 11-point AP: the mean over t in {0, 0.1, ..., 1} of the highest precision at recall >= t (0 when recall
  never reaches t). The thresholds are those of the reference code everyone compares with, py-faster-rcnn's
  `voc_eval` (used by mmdetection and others): `np.arange(0., 1.1, 0.1)`, whose floating-point values are not
  exactly k / 10 (0.30000000000000004, 0.6000000000000001, 0.7000000000000001), so an exact recall of 3/10, 6/10
  or 7/10 does not reach that threshold. `voc07_thresholds="exact"` uses k / 10 instead.
* VOC2010+ all-point AP: the area under the monotone precision envelope, with the curve extended by (recall 0,
  precision 0) at the start and (recall 1, precision 0) at the end: precision is replaced by its running maximum
  from the right, then summed over the recall steps.
* mAP: the mean of the per-class APs that are not None (None when no class has a positive).

COCO AP (`coco_map`). pycocotools' COCOeval, bbox: AP at IoU 0.50:0.95, 0.50, 0.75, and small / medium / large
(COCOeval.stats[0:6]) and average recall at 1, 10 and 100 detections and for small / medium / large objects
(stats[6:12]); a statistic pycocotools reports as -1 (nothing to evaluate there) is None here. Crowd
objects (`iscrowd`) are respected as pycocotools does (matches to them are ignored). The small / medium / large
split uses the ground-truth annotation's `area`, the official COCO rule: from a COCO json, the area stored there
(the segmentation's area for COCO's own files), or the box area when the annotation has none; for per-image
ground truth (`to_coco_ground_truth`), its `area` entry when given (the COCO loader passes the json's), else the
box area (YOLO and VOC data). Converted VOC "difficult" objects become crowd objects, the nearest
COCO has to VOC's "neither TP nor FP" (a detection matching one is ignored, duplicates included).

pycocotools needs integer image ids. Images named by file stem (YOLO txt data) are mapped by `coco_image_ids`:
when every stem is a decimal number and the numbers are distinct (COCO's own file names, "000000397133"), the id
is that number; otherwise the stems are sorted and numbered from 1. Ground truth and predictions converted in one
call use the same mapping. Category ids default to label + 1.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import BetterConvError

__all__ = [
    "voc_ap", "average_precision", "box_iou", "coco_image_ids", "to_coco_ground_truth", "to_coco_detections",
    "coco_map", "evaluate_detections", "COCO_KEYS",
]

COCO_KEYS = ("coco_map", "coco_map50", "coco_map75", "coco_map_small", "coco_map_medium", "coco_map_large",
             "coco_ar1", "coco_ar10", "coco_ar100", "coco_ar_small", "coco_ar_medium", "coco_ar_large")
# py-faster-rcnn voc_eval's recall thresholds for the VOC2007 11-point AP (see the module docstring)
VOC07_THRESHOLDS = {"reference": np.arange(0.0, 1.1, 0.1), "exact": np.array([k / 10 for k in range(11)])}


# ---------------------------------------------------------------------------------------------------------------
# input handling

def _array(value: Any, dtype, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise BetterConvError(f"{name}: cannot read as an array ({exc})") from None


def _boxes(entry: Mapping, where: str) -> np.ndarray:
    if "boxes" not in entry:
        raise BetterConvError(f"{where}: no 'boxes'")
    boxes = _array(entry["boxes"], np.float64, f"{where} boxes")
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BetterConvError(f"{where}: boxes must be (N, 4) xyxy, got shape {tuple(boxes.shape)}")
    if not np.isfinite(boxes).all():
        raise BetterConvError(f"{where}: boxes are not all finite")
    return boxes


def _vector(entry: Mapping, key: str, n: int, dtype, where: str, default=None) -> np.ndarray:
    if key not in entry or entry[key] is None:
        if default is None:
            raise BetterConvError(f"{where}: no '{key}'")
        return np.full(n, default, dtype=dtype)
    v = _array(entry[key], dtype, f"{where} {key}").reshape(-1)
    if v.shape[0] != n:
        raise BetterConvError(f"{where}: {n} boxes but {v.shape[0]} {key}")
    return v


def _labels(entry: Mapping, n: int, num_classes: int, where: str) -> np.ndarray:
    raw = _vector(entry, "labels", n, np.float64, where)
    labels = raw.astype(np.int64)
    if (labels != raw).any() or (labels < 0).any() or (labels >= num_classes).any():
        raise BetterConvError(f"{where}: labels must be integers in [0, {num_classes - 1}]")
    return labels


def _read_detections(entry: Mapping, num_classes: int, where: str):
    boxes = _boxes(entry, where)
    scores = _vector(entry, "scores", len(boxes), np.float64, where)
    if not np.isfinite(scores).all():
        raise BetterConvError(f"{where}: scores are not all finite")
    return boxes, scores, _labels(entry, len(boxes), num_classes, where)


def _read_ground_truth(entry: Mapping, num_classes: int, where: str):
    boxes = _boxes(entry, where)
    labels = _labels(entry, len(boxes), num_classes, where)
    difficult = _vector(entry, "difficult", len(boxes), bool, where, default=False)
    crowd = _vector(entry, "iscrowd", len(boxes), bool, where, default=False)
    return boxes, labels, difficult, crowd


def _check_lengths(detections: Sequence, ground_truth: Sequence) -> None:
    if len(detections) != len(ground_truth):
        raise BetterConvError(f"{len(detections)} images of detections but {len(ground_truth)} of ground truth")


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise BetterConvError(f"num_classes must be a positive integer, got {num_classes!r}")


# ---------------------------------------------------------------------------------------------------------------
# PASCAL VOC

def box_iou(a: np.ndarray, b: np.ndarray, pixel_inclusive: bool = False) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU; see the module notes for `pixel_inclusive`."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if pixel_inclusive else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    overlap = (iw > 0) & (ih > 0)
    inter = np.where(overlap, iw * ih, 0.0)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(overlap & (union > 0), iou, 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool,
                      voc07_thresholds: str = "reference") -> float:
    """AP of one precision/recall curve (in detection order): VOC2007 11-point (at py-faster-rcnn's thresholds, or
    exact tenths with `voc07_thresholds="exact"`) or VOC2010+ all-point."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        if voc07_thresholds not in VOC07_THRESHOLDS:
            raise BetterConvError(f"voc07_thresholds must be one of {', '.join(VOC07_THRESHOLDS)}")
        total = 0.0
        for t in VOC07_THRESHOLDS[voc07_thresholds]:
            reached = recall >= t
            total += float(precision[reached].max()) if reached.any() else 0.0
        return total / 11
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the monotone envelope
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def voc_ap(detections: Sequence[Mapping], ground_truth: Sequence[Mapping], num_classes: int,
           iou_thresh: float = 0.5, use_07_metric: bool = True, pixel_inclusive: bool = True,
           voc07_thresholds: str = "reference") -> dict:
    """PASCAL VOC per-class AP and mAP, both the VOC2007 11-point and the VOC2010+ all-point values in one pass.

    Returns a dict: `voc07_ap` and `voc_ap` (per class, None where the class has no non-difficult ground truth),
    `voc07_map` and `voc_map` (their means over the classes that are not None), `ap` / `map` (the one that
    `use_07_metric` selects), `num_positives` (non-difficult, non-crowd objects per class) and `num_detections`
    (per class). Rules and conventions: see the module docstring.
    """
    _check_classes(num_classes)
    _check_lengths(detections, ground_truth)
    if not 0 < iou_thresh <= 1:
        raise BetterConvError(f"iou_thresh must be in (0, 1], got {iou_thresh}")

    scores_all, labels_all, gt_all, ignored_all = [], [], [], []
    num_positives = np.zeros(num_classes, dtype=np.int64)
    gt_offset = 0
    for i, (det, gt) in enumerate(zip(detections, ground_truth)):
        d_boxes, d_scores, d_labels = _read_detections(det, num_classes, f"detections[{i}]")
        g_boxes, g_labels, g_difficult, g_crowd = _read_ground_truth(gt, num_classes, f"ground_truth[{i}]")
        g_ignore = g_difficult | g_crowd
        num_positives += np.bincount(g_labels[~g_ignore], minlength=num_classes)
        # the ground-truth object each detection is assigned to (a global index), -1 when none reaches the threshold
        assigned = np.full(len(d_boxes), -1, dtype=np.int64)
        ignored = np.zeros(len(d_boxes), dtype=bool)
        if len(d_boxes) and len(g_boxes):
            iou = box_iou(d_boxes, g_boxes, pixel_inclusive)
            iou[d_labels[:, None] != g_labels[None, :]] = -np.inf  # only objects of the detection's class
            best = iou.argmax(axis=1)  # first index on a tie
            hit = iou[np.arange(len(d_boxes)), best] >= iou_thresh
            assigned[hit] = best[hit] + gt_offset
            ignored = hit & g_ignore[best]
        gt_offset += len(g_boxes)
        scores_all.append(d_scores)
        labels_all.append(d_labels)
        gt_all.append(assigned)
        ignored_all.append(ignored)

    scores = np.concatenate(scores_all) if scores_all else np.zeros(0)
    labels = np.concatenate(labels_all) if labels_all else np.zeros(0, dtype=np.int64)
    assigned = np.concatenate(gt_all) if gt_all else np.zeros(0, dtype=np.int64)
    ignored = np.concatenate(ignored_all) if ignored_all else np.zeros(0, dtype=bool)

    ap07: list[float | None] = []
    ap_all: list[float | None] = []
    num_detections = np.bincount(labels, minlength=num_classes)
    for c in range(num_classes):
        if num_positives[c] == 0:
            ap07.append(None)
            ap_all.append(None)
            continue
        index = np.flatnonzero(labels == c)
        index = index[np.argsort(-scores[index], kind="stable")]
        index = index[~ignored[index]]
        target = assigned[index]
        tp = np.zeros(len(index), dtype=bool)
        hits = np.flatnonzero(target >= 0)
        _, first = np.unique(target[hits], return_index=True)  # the first detection on each object is its TP
        tp[hits[first]] = True
        tp_cum = np.cumsum(tp)
        fp_cum = np.cumsum(~tp)
        recall = tp_cum / num_positives[c]
        precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
        ap07.append(average_precision(recall, precision, True, voc07_thresholds))
        ap_all.append(average_precision(recall, precision, False))

    out = {
        "voc07_ap": ap07, "voc07_map": _mean(ap07), "voc_ap": ap_all, "voc_map": _mean(ap_all),
        "num_positives": num_positives.tolist(), "num_detections": num_detections.tolist(),
    }
    out["ap"] = out["voc07_ap"] if use_07_metric else out["voc_ap"]
    out["map"] = out["voc07_map"] if use_07_metric else out["voc_map"]
    return out


# ---------------------------------------------------------------------------------------------------------------
# COCO

def coco_image_ids(stems: Sequence[str]) -> dict[str, int]:
    """Integer image ids for images named by file stem: the number itself when every stem is a distinct decimal
    number, else 1 .. N in sorted stem order."""
    stems = [str(s) for s in stems]
    if len(set(stems)) != len(stems):
        raise BetterConvError("image stems are not unique")
    if stems and all(s.isascii() and s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return {s: int(s) for s in stems}
    return {s: i + 1 for i, s in enumerate(sorted(stems))}


def _resolve_image_ids(image_ids: Sequence | None, n: int) -> list[int]:
    if image_ids is None:
        return list(range(1, n + 1))
    image_ids = list(image_ids)
    if len(image_ids) != n:
        raise BetterConvError(f"{len(image_ids)} image ids for {n} images")
    if all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in image_ids):
        ids = [int(i) for i in image_ids]
        if len(set(ids)) != n:
            raise BetterConvError("image ids are not unique")
        return ids
    mapping = coco_image_ids([os.fspath(i) if isinstance(i, os.PathLike) else str(i) for i in image_ids])
    return [mapping[str(os.fspath(i) if isinstance(i, os.PathLike) else i)] for i in image_ids]


def _resolve_category_ids(category_ids: Sequence[int] | None, num_classes: int) -> list[int]:
    if category_ids is None:
        return list(range(1, num_classes + 1))
    ids = [int(i) for i in category_ids]
    if len(ids) != num_classes or len(set(ids)) != num_classes:
        raise BetterConvError(f"category_ids must be {num_classes} distinct integers, one per class")
    return ids


def _xywh(boxes: np.ndarray, pixel_inclusive: bool) -> np.ndarray:
    one = 1.0 if pixel_inclusive else 0.0
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0] + one, boxes[:, 3] - boxes[:, 1] + one],
                    axis=1) if len(boxes) else np.zeros((0, 4))


def to_coco_ground_truth(ground_truth: Sequence[Mapping], num_classes: int, *, image_ids: Sequence | None = None,
                         category_ids: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                         image_sizes: Sequence[tuple[int, int]] | None = None,
                         pixel_inclusive: bool = False) -> dict:
    """Per-image ground truth -> a COCO dataset dict. `image_ids`: ints, or file stems (see `coco_image_ids`),
    default 1 .. N; `image_sizes`: (height, width) per image, optional. Area = the entry's `area` when given (a
    COCO json's own, for the official small / medium / large split), else the box area; difficult or crowd
    objects get iscrowd = 1. `pixel_inclusive` adds 1 to widths and heights (use the same for the detections)."""
    _check_classes(num_classes)
    ids = _resolve_image_ids(image_ids, len(ground_truth))
    cats = _resolve_category_ids(category_ids, num_classes)
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise BetterConvError(f"{len(names)} class names for {num_classes} classes")
    if image_sizes is not None and len(image_sizes) != len(ground_truth):
        raise BetterConvError(f"{len(image_sizes)} image sizes for {len(ground_truth)} images")
    images, annotations = [], []
    for i, gt in enumerate(ground_truth):
        image = {"id": ids[i]}
        if image_sizes is not None:
            image["height"], image["width"] = int(image_sizes[i][0]), int(image_sizes[i][1])
        images.append(image)
        boxes, labels, difficult, crowd = _read_ground_truth(gt, num_classes, f"ground_truth[{i}]")
        xywh = _xywh(boxes, pixel_inclusive)
        areas = _vector(gt, "area", len(boxes), np.float64, f"ground_truth[{i}]", default=np.nan)
        areas = np.where(np.isnan(areas), xywh[:, 2] * xywh[:, 3], areas) if len(boxes) else areas
        for box, label, ignore, area in zip(xywh.tolist(), labels.tolist(), (difficult | crowd).tolist(),
                                            areas.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": ids[i], "category_id": cats[label],
                                "bbox": box, "area": area, "iscrowd": int(ignore)})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": n} for c, n in zip(cats, names)]}


def to_coco_detections(detections: Sequence[Mapping], num_classes: int, *, image_ids: Sequence | None = None,
                       category_ids: Sequence[int] | None = None, pixel_inclusive: bool = False) -> list[dict]:
    """Per-image detections -> a COCO results list [{image_id, category_id, bbox (xywh), score}]."""
    _check_classes(num_classes)
    ids = _resolve_image_ids(image_ids, len(detections))
    cats = _resolve_category_ids(category_ids, num_classes)
    results = []
    for i, det in enumerate(detections):
        boxes, scores, labels = _read_detections(det, num_classes, f"detections[{i}]")
        for box, score, label in zip(_xywh(boxes, pixel_inclusive).tolist(), scores.tolist(), labels.tolist()):
            results.append({"image_id": ids[i], "category_id": cats[label], "bbox": box, "score": score})
    return results


def _coco_dataset(ground_truth) -> dict:
    """A COCO json path or dict -> a dict safe to hand to pycocotools (annotations copied, since COCOeval writes
    into them; a missing `area` is the box area, a missing `iscrowd` 0, a missing `id` numbered)."""
    if isinstance(ground_truth, str | os.PathLike):
        try:
            with open(ground_truth) as f:
                ground_truth = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise BetterConvError(f"cannot read COCO ground truth {os.fspath(ground_truth)}: {exc}") from None
    if not isinstance(ground_truth, Mapping) or "images" not in ground_truth or "categories" not in ground_truth:
        raise BetterConvError("COCO ground truth must have 'images' and 'categories'")
    dataset = dict(ground_truth)
    annotations = []
    used = {a["id"] for a in ground_truth.get("annotations", []) if "id" in a}
    next_id = max(used, default=0) + 1
    for a in ground_truth.get("annotations", []):
        a = dict(a)
        if "bbox" not in a or len(a["bbox"]) != 4:
            raise BetterConvError(f"COCO annotation without a bbox: {a.get('id')}")
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        a.setdefault("iscrowd", 0)
        if "id" not in a:
            a["id"], next_id = next_id, next_id + 1
        annotations.append(a)
    dataset["annotations"] = annotations
    dataset["images"] = list(ground_truth["images"])
    dataset["categories"] = list(ground_truth["categories"])
    return dataset


def _is_per_image(detections: Sequence) -> bool:
    return len(detections) > 0 and all(isinstance(d, Mapping) and "boxes" in d for d in detections)


def coco_map(detections: Sequence, ground_truth, *, num_classes: int | None = None,
             image_ids: Sequence | None = None, category_ids: Sequence[int] | None = None,
             pixel_inclusive: bool = False, verbose: bool = False) -> dict[str, float | None]:
    """COCO bbox AP and AR with pycocotools: {coco_map, coco_map50, coco_map75, coco_map_small, coco_map_medium,
    coco_map_large, coco_ar1, coco_ar10, coco_ar100, coco_ar_small, coco_ar_medium, coco_ar_large}
    (COCOeval.stats[0:12], None where pycocotools gives -1).

    `ground_truth`: a COCO json path or dict, or per-image ground-truth dicts (converted with
    `to_coco_ground_truth`; then `num_classes` is required and `image_ids` / `category_ids` / `pixel_inclusive`
    apply). `detections`: a COCO results list (image and category ids of the ground truth, bbox xywh), or per-image
    detection dicts (converted with `to_coco_detections` under the same ids). pycocotools' prints are swallowed
    unless `verbose`.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    per_image_gt = isinstance(ground_truth, Sequence) and not isinstance(ground_truth, str | bytes)
    if per_image_gt or _is_per_image(detections):
        if num_classes is None:
            raise BetterConvError("coco_map: num_classes is needed to convert per-image boxes")
    if per_image_gt:
        dataset = to_coco_ground_truth(ground_truth, num_classes, image_ids=image_ids, category_ids=category_ids,
                                       pixel_inclusive=pixel_inclusive)
    else:
        dataset = _coco_dataset(ground_truth)
    if _is_per_image(detections):
        if image_ids is None and not per_image_gt:
            raise BetterConvError("coco_map: per-image detections against a COCO json need the json's image_ids")
        results = to_coco_detections(detections, num_classes, image_ids=image_ids, category_ids=category_ids,
                                     pixel_inclusive=pixel_inclusive)
    else:
        results = [dict(r) for r in detections]  # loadRes writes into them
        for r in results:
            if not {"image_id", "category_id", "bbox", "score"} <= r.keys():
                raise BetterConvError("COCO results need image_id, category_id, bbox and score")
    known = {img["id"] for img in dataset["images"]}
    stray = {r["image_id"] for r in results} - known
    if stray:
        raise BetterConvError(f"detections on {len(stray)} image ids not in the ground truth, e.g. {min(stray)}")

    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": list(dataset["images"]), "categories": list(dataset["categories"]),
                          "annotations": []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(s) for s in evaluator.stats[:12]]
    return {k: (None if s < 0 else s) for k, s in zip(COCO_KEYS, stats)}


# ---------------------------------------------------------------------------------------------------------------
# both

def evaluate_detections(detections: Sequence[Mapping], ground_truth: Sequence[Mapping], num_classes: int, *,
                        class_names: Sequence[str] | None = None, image_ids: Sequence | None = None,
                        category_ids: Sequence[int] | None = None, coco_ground_truth=None,
                        pixel_inclusive: bool = True, iou_thresh: float = 0.5, coco: bool = True,
                        verbose: bool = False, voc07_thresholds: str = "reference") -> dict:
    """VOC and COCO metrics of per-image detections against per-image ground truth, as the CLI prints them:
    {voc07_map, voc_map, the `COCO_KEYS` (AP and AR), per_class: [{name, voc07_ap, voc_ap}]}.

    `pixel_inclusive`: True for VOC's integer pixel boxes, False for continuous coordinates (COCO json, YOLO txt).
    COCO metrics: against `coco_ground_truth` (a COCO json path or dict; then `image_ids` must be its integer ids,
    one per image, and `category_ids` its category id per class) when given, else against `ground_truth`
    converted in memory (image ids from `image_ids` -- ints or file stems -- or 1 .. N). `coco=False` skips them
    (their keys are None). `iou_thresh` is VOC's.
    """
    _check_classes(num_classes)
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise BetterConvError(f"{len(names)} class names for {num_classes} classes")
    voc = voc_ap(detections, ground_truth, num_classes, iou_thresh=iou_thresh, pixel_inclusive=pixel_inclusive,
                 voc07_thresholds=voc07_thresholds)
    out: dict[str, Any] = {"voc07_map": voc["voc07_map"], "voc_map": voc["voc_map"]}
    if coco:
        if coco_ground_truth is not None:
            if image_ids is None:
                raise BetterConvError("evaluate_detections: image_ids (the json's ids) are needed with a COCO json")
            results = to_coco_detections(detections, num_classes, image_ids=image_ids, category_ids=category_ids)
            out.update(coco_map(results, coco_ground_truth, verbose=verbose))
        else:
            out.update(coco_map(detections, ground_truth, num_classes=num_classes, image_ids=image_ids,
                                category_ids=category_ids, pixel_inclusive=pixel_inclusive, verbose=verbose))
    else:
        out.update(dict.fromkeys(COCO_KEYS))
    out["per_class"] = [{"name": n, "voc07_ap": a, "voc_ap": b}
                        for n, a, b in zip(names, voc["voc07_ap"], voc["voc_ap"])]
    return out
