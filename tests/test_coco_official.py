"""COCO metrics by the official rules on real data: the three evaluation paths (`eval det --predictions`, the
model path through `detect_dataset`, `evaluate_detections` on per-image ground truth from the COCO loader) give
pycocotools' 12 statistics on the original annotation file, for exactly the images evaluated: the objects' own
`area` decides small / medium / large and crowds are ignored, as pycocotools applies them."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from betterconv.data.det_transforms import eval_transform, unresize_boxes
from betterconv.data.detection import detection_dataset
from betterconv.tasks.detection import ground_truth_entry
from betterconv.tasks.detection_metrics import COCO_KEYS, evaluate_detections

INPUT = 416


@pytest.fixture
def coco128(shared_data):
    root = shared_data / "coco128"
    if not (root / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"{root}/annotations/instances_train2017.json is absent")
    return root


def perturbed_results(annotation_file, image_ids, seed=0):
    """COCO results near the ground truth: boxes jittered by up to 15% of their size, random scores, a fifth of
    the objects missed, some false positives: an AP strictly between 0 and 1 in every size class."""
    data = json.loads(annotation_file.read_text())
    rng = np.random.default_rng(seed)
    results = []
    for ann in data["annotations"]:
        if ann["image_id"] not in image_ids or rng.random() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        dx, dy, dw, dh = rng.uniform(-0.15, 0.15, 4)
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "bbox": [x + dx * w, y + dy * h, max(1.0, w * (1 + dw)), max(1.0, h * (1 + dh))],
                        "score": float(rng.random())})
        if rng.random() < 0.1:
            results.append({**results[-1], "bbox": [x + w, y + h, w, h], "score": float(rng.random())})
    return results


def pycocotools_stats(annotation_file, results, image_ids):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        dt = gt.loadRes(results)
        e = COCOeval(gt, dt, "bbox")
        e.params.imgIds = sorted(image_ids)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [float(s) for s in e.stats]


def check(result, stats):
    for key, want in zip(COCO_KEYS, stats):
        got = -1.0 if result[key] is None else result[key]
        assert got == pytest.approx(want, abs=1e-4), key


@pytest.mark.parametrize("max_images", [None, 40])
def test_predictions_path_equals_pycocotools(coco128, tmp_path, cli, max_images):
    annotations = coco128 / "annotations" / "instances_train2017.json"
    dataset = detection_dataset(f"coco:{coco128}", "train2017", eval_transform(INPUT))
    ids = dataset.image_ids[:max_images] if max_images else dataset.image_ids
    results = perturbed_results(annotations, set(ids))
    predictions = tmp_path / "detections.json"
    predictions.write_text(json.dumps(results))
    args = ["eval", "det", "--data", f"coco:{coco128}", "--split", "train2017", "--predictions", str(predictions),
            "--json"] + (["--max-images", str(max_images)] if max_images else [])
    code, out, err = cli(*args)
    assert code == 0, err
    result = json.loads(out)
    stats = pycocotools_stats(annotations, results, ids)
    assert 0 < stats[3] < 1 and 0 < stats[4] < 1  # small and medium objects present and scored
    check(result, stats)


def test_loader_ground_truth_equals_pycocotools(coco128):
    """The model path: ground truth from the loader's targets through the eval transform and back (what
    `detect_dataset` builds), evaluated against detections given per image."""
    annotations = coco128 / "annotations" / "instances_train2017.json"
    dataset = detection_dataset(f"coco:{coco128}", "train2017", eval_transform(INPUT))
    results = perturbed_results(annotations, set(dataset.image_ids), seed=1)
    label_of = {cid: i for i, cid in enumerate(dataset.category_ids)}
    detections, ground_truth = [], []
    for i, image_id in enumerate(dataset.image_ids):
        _, target = dataset[i]
        size = tuple(int(v) for v in target["orig_size"])
        ground_truth.append(ground_truth_entry(target, unresize_boxes(target["boxes"], size, INPUT, clip=False)))
        rows = [r for r in results if r["image_id"] == image_id]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rows)]).reshape(-1, 4)
        detections.append({"boxes": boxes, "scores": torch.tensor([r["score"] for r in rows]),
                           "labels": torch.tensor([label_of[r["category_id"]] for r in rows], dtype=torch.long)})
    result = evaluate_detections(detections, ground_truth, dataset.num_classes, image_ids=dataset.image_ids,
                                 category_ids=dataset.category_ids, pixel_inclusive=False)
    check(result, pycocotools_stats(annotations, results, dataset.image_ids))
    # the box area instead of the annotation's own moves objects between size classes: a different answer
    boxes_only = [{k: v for k, v in g.items() if k != "area"} for g in ground_truth]
    other = evaluate_detections(detections, boxes_only, dataset.num_classes, image_ids=dataset.image_ids,
                                category_ids=dataset.category_ids, pixel_inclusive=False)
    assert other["coco_map_small"] != pytest.approx(result["coco_map_small"], abs=1e-4)
