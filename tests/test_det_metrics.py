"""Detection metrics: VOC AP against a plain loop-by-loop reference written here from the VOC devkit's description
(VOCevalDet.m / VOCap.m), hand-worked tiny cases, and COCO numbers against pycocotools' COCOeval run directly."""
import contextlib
import copy
import io
import json
import math
from fractions import Fraction as Fr

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from betterconv.errors import BetterConvError
from betterconv.tasks.detection_metrics import (
    COCO_KEYS, coco_image_ids, coco_map, evaluate_detections, to_coco_detections, to_coco_ground_truth, voc_ap)


# ---------------------------------------------------------------------------------------------------------------
# reference VOC evaluation: one class at a time, one detection at a time, as the devkit describes it

def _nanmax(a, b):
    # MATLAB's max ignores NaN
    if a != a:
        return b
    if b != b:
        return a
    return max(a, b)


def reference_voc(dets, gts, num_classes, use_07, thresh=0.5, inclusive=True):
    one = 1.0 if inclusive else 0.0
    aps = []
    for c in range(num_classes):
        gt = []
        npos = 0
        for g in gts:
            objs = [(list(map(float, b)), bool(d))
                    for b, l, d in zip(g["boxes"], g["labels"], g["difficult"]) if int(l) == c]
            gt.append({"bb": [o[0] for o in objs], "diff": [o[1] for o in objs], "det": [False] * len(objs)})
            npos += sum(1 for o in objs if not o[1])
        found = []
        for i, d in enumerate(dets):
            for b, s, l in zip(d["boxes"], d["scores"], d["labels"]):
                if int(l) == c:
                    found.append((float(s), i, list(map(float, b))))
        found.sort(key=lambda t: -t[0])  # Python's sort is stable, like MATLAB's
        tp, fp = [], []
        for _, i, bb in found:
            ovmax, jmax = -math.inf, -1
            for j, bbgt in enumerate(gt[i]["bb"]):
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + one
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + one
                if iw > 0 and ih > 0:
                    ua = ((bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                          + (bbgt[2] - bbgt[0] + one) * (bbgt[3] - bbgt[1] + one) - iw * ih)
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            if ovmax >= thresh:
                if gt[i]["diff"][jmax]:
                    tp.append(0)
                    fp.append(0)
                elif not gt[i]["det"][jmax]:
                    gt[i]["det"][jmax] = True
                    tp.append(1)
                    fp.append(0)
                else:
                    tp.append(0)
                    fp.append(1)
            else:
                tp.append(0)
                fp.append(1)
        if npos == 0:
            aps.append(None)
            continue
        rec, prec, ctp, cfp = [], [], 0, 0
        for a, b in zip(tp, fp):
            ctp += a
            cfp += b
            rec.append(ctp / npos)
            prec.append(ctp / (ctp + cfp) if ctp + cfp else math.nan)
        if use_07:
            ap = 0.0
            for t in np.arange(0.0, 1.1, 0.1):  # py-faster-rcnn voc_eval's thresholds, as published numbers use
                p = math.nan
                for r, q in zip(rec, prec):
                    if r >= t:
                        p = _nanmax(p, q)
                ap += (0.0 if p != p else p) / 11
        else:
            mrec = [0.0] + rec + [1.0]
            mpre = [0.0] + prec + [0.0]
            for k in range(len(mpre) - 2, -1, -1):
                mpre[k] = _nanmax(mpre[k], mpre[k + 1])
            ap = 0.0
            for k in range(1, len(mrec)):
                if mrec[k] != mrec[k - 1]:
                    ap += (mrec[k] - mrec[k - 1]) * mpre[k]
        aps.append(ap)
    return aps


def random_scene(seed, num_images=10, integer=True):
    """5 classes: 0-2 ordinary, 3 only ever difficult, 4 never in the ground truth (but predicted). Detections are
    jittered copies of the objects (0-3 each, so duplicates), some with a wrong class, plus random boxes; scores
    come from 8 values, so there are ties."""
    rng = np.random.default_rng(seed)
    dets, gts = [], []
    for _ in range(num_images):
        m = int(rng.integers(0, 7))
        xy = rng.uniform(0, 300, (m, 2))
        wh = rng.uniform(4, 150, (m, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        if integer:
            boxes = np.round(boxes)
        labels = rng.integers(0, 4, m)
        difficult = (rng.random(m) < 0.2) | (labels == 3)
        d_boxes, d_labels = [], []
        for b, l in zip(boxes, labels):
            for _ in range(int(rng.integers(0, 4))):
                w, h = b[2] - b[0], b[3] - b[1]
                jitter = rng.uniform(-0.25, 0.25, 4) * np.array([w, h, w, h])
                nb = b + jitter
                nb[2:] = np.maximum(nb[2:], nb[:2] + 1)
                d_boxes.append(np.round(nb) if integer else nb)
                d_labels.append(l if rng.random() < 0.85 else rng.integers(0, 5))
        for _ in range(int(rng.integers(0, 4))):
            xy = rng.uniform(0, 300, 2)
            nb = np.concatenate([xy, xy + rng.uniform(4, 150, 2)])
            d_boxes.append(np.round(nb) if integer else nb)
            d_labels.append(rng.integers(0, 5))
        n = len(d_boxes)
        dets.append({"boxes": np.array(d_boxes).reshape(n, 4), "scores": rng.choice(np.linspace(0.1, 0.8, 8), n),
                     "labels": np.array(d_labels, dtype=np.int64)})
        gts.append({"boxes": boxes, "labels": labels, "difficult": difficult})
    return dets, gts


@pytest.mark.parametrize("integer", [True, False])
def test_voc_equals_reference(integer):
    checked = 0
    for seed in range(25):
        dets, gts = random_scene(seed, integer=integer)
        # the implementation gets tensors, the reference plain numbers
        t_dets = [{k: torch.as_tensor(v) for k, v in d.items()} for d in dets]
        t_gts = [{k: torch.as_tensor(v) for k, v in g.items()} for g in gts]
        got = voc_ap(t_dets, t_gts, 5, pixel_inclusive=integer)
        for key, use_07 in (("voc07_ap", True), ("voc_ap", False)):
            want = reference_voc(dets, gts, 5, use_07, inclusive=integer)
            assert got[key][3] is None and got[key][4] is None  # only difficult / absent
            for a, b in zip(got[key], want):
                assert (a is None) == (b is None)
                if a is not None:
                    assert a == pytest.approx(b, abs=1e-12)
                    checked += 1
            present = [b for b in want if b is not None]
            mean = got["voc07_map" if use_07 else "voc_map"]
            assert mean == pytest.approx(sum(present) / len(present), abs=1e-12)
        assert got["ap"] == got["voc07_ap"] and got["map"] == got["voc07_map"]
    assert checked > 100


def _det(boxes, scores, labels=None):
    return {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "scores": np.array(scores, dtype=float),
            "labels": np.zeros(len(scores), dtype=int) if labels is None else np.array(labels)}


def _gt(boxes, labels=None, difficult=None):
    n = len(boxes)
    return {"boxes": np.array(boxes, dtype=float).reshape(-1, 4),
            "labels": np.zeros(n, dtype=int) if labels is None else np.array(labels),
            "difficult": np.zeros(n, dtype=bool) if difficult is None else np.array(difficult)}


A = [0, 0, 9, 9]
B = [100, 100, 119, 109]
FAR = [300, 300, 320, 320]


def test_tp_fp_tp_by_hand():
    # 2 objects; detections TP (0.9), FP (0.8), TP (0.7): recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # 11-point: t = 0 .. 0.5 (6 points) reach precision 1, t = 0.6 .. 1 (5 points) 2/3 -> (6 + 10/3) / 11 = 28/33.
    # all-point: envelope 1 up to recall 1/2, 2/3 after -> 1/2 * 1 + 1/2 * 2/3 = 5/6.
    out = voc_ap([_det([A, FAR, B], [0.9, 0.8, 0.7])], [_gt([A, B])], 1)
    assert out["voc07_ap"][0] == pytest.approx(float(Fr(28, 33)))
    assert out["voc_ap"][0] == pytest.approx(float(Fr(5, 6)))
    out = voc_ap([_det([A, FAR, B], [0.9, 0.8, 0.7])], [_gt([A, B])], 1, use_07_metric=False)
    assert out["map"] == pytest.approx(5 / 6)


def test_one_object_fp_then_tp():
    # FP (0.9) then TP (0.8) on the only object: recall 0, 1; precision 0, 1/2 -> both APs 1/2.
    # TP then FP: recall 1, 1; precision 1, 1/2 -> both APs 1.
    out = voc_ap([_det([FAR, A], [0.9, 0.8])], [_gt([A])], 1)
    assert out["voc07_ap"][0] == pytest.approx(0.5) and out["voc_ap"][0] == pytest.approx(0.5)
    out = voc_ap([_det([A, FAR], [0.9, 0.8])], [_gt([A])], 1)
    assert out["voc07_ap"][0] == pytest.approx(1.0) and out["voc_ap"][0] == pytest.approx(1.0)


def test_difficult_and_duplicates_by_hand():
    # objects A, B and a difficult D. In score order: on D (ignored), TP on A, duplicate on A (FP), TP on B,
    # second detection on D (ignored again). Without the ignored ones this is TP, FP, TP of the 2 positives:
    # 28/33 and 5/6 as above. Counting D's detections as FPs or D as a positive would change both.
    D = [50, 50, 69, 69]
    det = _det([D, A, [0, 0, 9, 8], B, [50, 50, 68, 69]], [0.95, 0.9, 0.8, 0.7, 0.6])
    out = voc_ap([det], [_gt([A, D, B], difficult=[False, True, False])], 1)
    assert out["num_positives"] == [2]
    assert out["voc07_ap"][0] == pytest.approx(28 / 33)
    assert out["voc_ap"][0] == pytest.approx(5 / 6)


def test_best_object_already_taken_is_fp():
    # VOC assigns a detection to its highest-IoU object, matched or not. A = [0,0,10,10], B = [2,0,12,10].
    # det1 = A -> TP on A. det2 = [0,0,11,10]: IoU with A = 121/132, with B = 110/143 (>= 0.5), best is A, taken
    # -> FP (COCO-style matching would give it B). Recall 1/2, 1/2; precision 1, 1/2: 11-point 6/11, all-point 1/2.
    out = voc_ap([_det([[0, 0, 10, 10], [0, 0, 11, 10]], [0.9, 0.8])], [_gt([[0, 0, 10, 10], [2, 0, 12, 10]])], 1)
    assert out["voc07_ap"][0] == pytest.approx(6 / 11)
    assert out["voc_ap"][0] == pytest.approx(0.5)


def test_ties_keep_input_order():
    # Equal scores: image 0's FP stays before image 1's TP -> recall 0, 1; precision 0, 1/2 -> AP 1/2.
    dets = [_det([FAR], [0.5]), _det([A], [0.5])]
    gts = [_gt([]), _gt([A])]
    assert voc_ap(dets, gts, 1)["voc07_ap"][0] == pytest.approx(0.5)
    assert voc_ap(dets[::-1], gts[::-1], 1)["voc07_ap"][0] == pytest.approx(1.0)


def test_recall_exactly_three_tenths():
    """10 objects, 3 TPs then a FP: recall reaches exactly 3/10. py-faster-rcnn's thresholds
    (np.arange(0, 1.1, 0.1)[3] = 0.30000000000000004) do not count it for t = 0.3: 11-point = 3/11; exact tenths
    do: 4/11."""
    boxes = [[20 * k, 0, 20 * k + 9, 9] for k in range(10)]
    dets, gts = [_det(boxes[:3] + [FAR], [0.9, 0.8, 0.7, 0.6])], [_gt(boxes)]
    out = voc_ap(dets, gts, 1)
    assert out["voc07_ap"][0] == pytest.approx(3 / 11)
    assert voc_ap(dets, gts, 1, voc07_thresholds="exact")["voc07_ap"][0] == pytest.approx(4 / 11)
    assert out["voc_ap"][0] == pytest.approx(0.3)


def test_pixel_inclusive_iou():
    # det [0,0,9,4] on object [0,0,9,9]: pixel-inclusive IoU = 10*5 / (10*10) = 0.5 (TP);
    # continuous IoU = 9*4 / (9*9) = 0.44 (FP).
    dets, gts = [_det([[0, 0, 9, 4]], [0.9])], [_gt([A])]
    assert voc_ap(dets, gts, 1, pixel_inclusive=True)["voc_ap"][0] == pytest.approx(1.0)
    assert voc_ap(dets, gts, 1, pixel_inclusive=False)["voc_ap"][0] == 0.0


def test_classes_without_positives_and_empty_input():
    gts = [_gt([A, B], labels=[0, 1], difficult=[False, True])]
    dets = [_det([A, B, FAR], [0.9, 0.9, 0.9], labels=[0, 1, 2])]
    out = voc_ap(dets, gts, 3)
    assert out["voc07_ap"] == [1.0, None, None] and out["voc07_map"] == 1.0
    assert out["num_positives"] == [1, 0, 0] and out["num_detections"] == [1, 1, 1]
    # no detections: AP 0 where there are positives
    out = voc_ap([_det([], [])], gts, 3)
    assert out["voc07_ap"] == [0.0, None, None] and out["voc_map"] == 0.0
    # no ground truth at all
    assert voc_ap([_det([], [])], [_gt([])], 2)["voc07_map"] is None


def test_bad_input():
    with pytest.raises(BetterConvError, match="labels"):
        voc_ap([_det([A], [0.9], labels=[3])], [_gt([A])], 2)
    with pytest.raises(BetterConvError, match="images"):
        voc_ap([_det([A], [0.9])], [], 1)
    with pytest.raises(BetterConvError, match=r"\(N, 4\)"):
        voc_ap([{"boxes": np.zeros((2, 3)), "scores": np.zeros(2), "labels": np.zeros(2)}], [_gt([A])], 1)
    with pytest.raises(BetterConvError, match="scores"):
        voc_ap([{"boxes": np.zeros((2, 4)), "scores": np.zeros(3), "labels": np.zeros(2)}], [_gt([A])], 1)


# ---------------------------------------------------------------------------------------------------------------
# COCO

def coco_scene(seed=0, num_images=12, num_classes=3):
    """Continuous boxes in 640x480 images of every size bin (small < 32^2 <= medium < 96^2 <= large), some crowd
    objects, jittered and duplicate detections plus random ones."""
    rng = np.random.default_rng(seed)
    dets, gts = [], []
    for _ in range(num_images):
        m = int(rng.integers(1, 8))
        side = rng.choice([12.0, 50.0, 180.0], m) * rng.uniform(0.7, 1.3, (m,))
        wh = np.stack([side * rng.uniform(0.7, 1.3, m), side * rng.uniform(0.7, 1.3, m)], 1)
        xy = rng.uniform(0, 400, (m, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, num_classes, m)
        crowd = rng.random(m) < 0.15
        d_boxes, d_labels = [], []
        for b, l in zip(boxes, labels):
            for _ in range(int(rng.integers(0, 3))):
                w, h = b[2] - b[0], b[3] - b[1]
                d_boxes.append(b + rng.uniform(-0.2, 0.2, 4) * np.array([w, h, w, h]))
                d_labels.append(l if rng.random() < 0.9 else rng.integers(0, num_classes))
        for _ in range(int(rng.integers(0, 3))):
            xy = rng.uniform(0, 500, 2)
            d_boxes.append(np.concatenate([xy, xy + rng.uniform(8, 120, 2)]))
            d_labels.append(rng.integers(0, num_classes))
        n = len(d_boxes)
        dets.append({"boxes": np.array(d_boxes).reshape(n, 4), "scores": rng.uniform(0.05, 1.0, n),
                     "labels": np.array(d_labels, dtype=np.int64)})
        gts.append({"boxes": boxes, "labels": labels, "iscrowd": crowd})
    return dets, gts


def hand_coco(dets, gts, image_ids, areas=None):
    """The COCO dicts, built directly: category id = label + 1, bbox = x, y, w, h."""
    images, anns, results = [], [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        images.append({"id": image_ids[i], "width": 640, "height": 480})
        for k, (b, l, c) in enumerate(zip(g["boxes"], g["labels"], g["iscrowd"])):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": image_ids[i], "category_id": int(l) + 1,
                         "bbox": [float(b[0]), float(b[1]), w, h], "iscrowd": int(c),
                         "area": w * h if areas is None else areas(w, h)})
        for b, s, l in zip(d["boxes"], d["scores"], d["labels"]):
            results.append({"image_id": image_ids[i], "category_id": int(l) + 1, "score": float(s),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    cats = [{"id": c + 1, "name": f"c{c}"} for c in range(3)]
    return {"images": images, "annotations": anns, "categories": cats}, results


def direct_cocoeval(dataset, results):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
        e = COCOeval(gt, dt, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [float(s) for s in e.stats[:12]]


def _compare(got, stats):
    assert list(got) == list(COCO_KEYS)
    for key, s in zip(COCO_KEYS, stats):
        assert got[key] == pytest.approx(s, abs=1e-12), key


def test_coco_equals_pycocotools_converted(capsys):
    dets, gts = coco_scene()
    dataset, results = hand_coco(dets, gts, list(range(1, 13)))
    stats = direct_cocoeval(dataset, results)
    assert all(s >= 0 for s in stats) and 0 < stats[0] < 1
    got = coco_map(dets, gts, num_classes=3, pixel_inclusive=False)
    _compare(got, stats)
    assert capsys.readouterr().out == ""  # pycocotools' prints swallowed
    # the same through the converters, and through a COCO dict and results list
    assert to_coco_ground_truth(gts, 3, class_names=["c0", "c1", "c2"]) == {
        **dataset, "images": [{"id": i} for i in range(1, 13)]}
    _compare(coco_map(to_coco_detections(dets, 3), dataset), stats)


def test_coco_json_areas_crowd_and_no_mutation(tmp_path):
    # areas from the json (here 0.6 of the box, as a polygon's would be), which moves objects between size bins
    dets, gts = coco_scene(seed=3)
    ids = [1000 + 7 * i for i in range(len(gts))]
    dataset, results = hand_coco(dets, gts, ids, areas=lambda w, h: 0.6 * w * h)
    assert any(a["iscrowd"] for a in dataset["annotations"])
    stats = direct_cocoeval(dataset, results)
    frozen_d, frozen_r = copy.deepcopy(dataset), copy.deepcopy(results)
    _compare(coco_map(results, dataset), stats)
    assert dataset == frozen_d and results == frozen_r
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(dataset))
    _compare(coco_map(results, path), stats)
    _compare(coco_map(dets, str(path), num_classes=3, image_ids=ids), stats)
    # box areas differ from json areas
    assert coco_map(dets, gts, num_classes=3, image_ids=ids) != coco_map(results, dataset)
    # per-image ground truth carrying the json's areas (as the COCO loader gives it) is the official rule again
    with_area = [{**g, "area": 0.6 * (g["boxes"][:, 2] - g["boxes"][:, 0]) * (g["boxes"][:, 3] - g["boxes"][:, 1])}
                 for g in gts]
    _compare(coco_map(dets, with_area, num_classes=3, image_ids=ids), stats)


def test_image_ids_from_stems():
    assert coco_image_ids(["000000397133", "000000000139"]) == {"000000397133": 397133, "000000000139": 139}
    assert coco_image_ids(["b", "a", "10"]) == {"10": 1, "a": 2, "b": 3}
    assert coco_image_ids(["1", "01"]) == {"01": 1, "1": 2}  # same number twice: sorted order instead
    with pytest.raises(BetterConvError):
        coco_image_ids(["a", "a"])
    dets, gts = coco_scene(seed=1, num_images=4)
    stems = ["dog", "cat", "img_2", "zebra"]
    got = to_coco_ground_truth(gts, 3, image_ids=stems)
    assert [im["id"] for im in got["images"]] == [2, 1, 3, 4]
    by_position = coco_map(dets, gts, num_classes=3)
    assert coco_map(dets, gts, num_classes=3, image_ids=stems) == by_position
    dataset, results = hand_coco(dets, gts, [2, 1, 3, 4])
    _compare(coco_map(dets, gts, num_classes=3, image_ids=stems), direct_cocoeval(dataset, results))


def test_coco_edge_cases():
    dets, gts = coco_scene(seed=2, num_images=3)
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, dtype=int)}] * 3
    got = coco_map(empty, gts, num_classes=3)
    assert all(got[k] in (0.0, None) for k in COCO_KEYS) and got["coco_map"] == 0.0
    dataset, results = hand_coco(dets, gts, [1, 2, 3])
    with pytest.raises(BetterConvError, match="not in the ground truth"):
        coco_map([{**results[0], "image_id": 99}], dataset)
    with pytest.raises(BetterConvError, match="num_classes"):
        coco_map(dets, gts)


# ---------------------------------------------------------------------------------------------------------------
# everything together

def test_perfect_detections_score_one():
    dets, gts = coco_scene(seed=4)
    perfect = [{"boxes": torch.as_tensor(g["boxes"]), "scores": torch.linspace(1, 0.5, len(g["boxes"])),
                "labels": torch.as_tensor(g["labels"])} for g in gts]
    gts = [{**g, "iscrowd": np.zeros(len(g["labels"]), dtype=bool)} for g in gts]
    out = evaluate_detections(perfect, gts, 3, class_names=["a", "b", "c"], pixel_inclusive=False)
    for key in ("voc07_map", "voc_map", *COCO_KEYS):
        if key != "coco_ar1":  # at most one detection per image: recall < 1 where an image has several objects
            assert out[key] == pytest.approx(1.0), key
    assert out["per_class"] == [{"name": n, "voc07_ap": 1.0, "voc_ap": 1.0} for n in "abc"]


def test_evaluate_detections_keys_and_routes(tmp_path):
    dets, gts = coco_scene(seed=5)
    voc_gts = [{"boxes": g["boxes"], "labels": g["labels"], "difficult": g["iscrowd"]} for g in gts]
    out = evaluate_detections(dets, voc_gts, 3, pixel_inclusive=False)
    assert list(out) == ["voc07_map", "voc_map", *COCO_KEYS, "per_class"]
    json.dumps(out)
    voc = voc_ap(dets, voc_gts, 3, pixel_inclusive=False)
    assert out["voc07_map"] == voc["voc07_map"] and out["voc_map"] == voc["voc_map"]
    assert [p["name"] for p in out["per_class"]] == ["0", "1", "2"]
    # difficult objects become crowd objects for COCO: the same numbers as pycocotools on the crowd dataset
    ids = [5 * i + 3 for i in range(len(gts))]
    dataset, results = hand_coco(dets, gts, ids)
    stats = direct_cocoeval(dataset, results)
    _compare({k: out[k] for k in COCO_KEYS}, stats)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(dataset))
    routed = evaluate_detections(dets, voc_gts, 3, image_ids=ids, coco_ground_truth=path, pixel_inclusive=False)
    _compare({k: routed[k] for k in COCO_KEYS}, stats)
    skipped = evaluate_detections(dets, voc_gts, 3, coco=False)
    assert all(skipped[k] is None for k in COCO_KEYS)
