"""YOLOv2's region loss against darknet's src/region_layer.c (transcribed below in plain loops), hand-built cases,
and inference post-processing (decode + class-aware NMS + COCO results)."""
from __future__ import annotations

import math

import pytest
import torch

from betterconv.errors import BetterConvError
from betterconv.tasks.detection import nms_best, postprocess, to_coco_results
from betterconv.tasks.region import decode_region
from betterconv.tasks.region_loss import RegionLoss


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _overlap(x1: float, w1: float, x2: float, w2: float) -> float:
    return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)


def _box_iou(a: tuple, b: tuple) -> float:
    """darknet's src/box.c box_iou on (x, y, w, h)."""
    w, h = _overlap(a[0], a[2], b[0], b[2]), _overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if w < 0 or h < 0 else w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def darknet_region_delta(x: list[float], batch: int, w: int, h: int, n_anchors: int, classes: int,
                         biases: list[float], truths: list[list[tuple]], seen: int, *, thresh: float = .6,
                         object_scale: float = 5, noobject_scale: float = 1, class_scale: float = 1,
                         coord_scale: float = 1, rescore: bool = True, bias_match: bool = True) -> list[float]:
    """darknet's forward_region_layer (softmax=1, coords=4, no tree, no background, no map) then
    backward_region_layer_gpu's logistic gradient on x, y and objectness, transcribed. `x` is the layer input,
    flat in darknet's layout (batch, anchor, entry, row, column); `truths[b]` lists (x, y, w, h, class) relative."""
    coords = 4
    outputs = h * w * n_anchors * (coords + classes + 1)

    def entry_index(b: int, location: int, entry: int) -> int:
        n, loc = location // (w * h), location % (w * h)
        return b * outputs + n * w * h * (coords + classes + 1) + entry * w * h + loc

    def get_region_box(out, n, index, i, j, stride):
        return ((i + out[index + 0 * stride]) / w, (j + out[index + 1 * stride]) / h,
                math.exp(out[index + 2 * stride]) * biases[2 * n] / w,
                math.exp(out[index + 3 * stride]) * biases[2 * n + 1] / h)

    def delta_region_box(truth, out, n, index, i, j, delta, scale, stride):
        pred = get_region_box(out, n, index, i, j, stride)
        iou = _box_iou(pred, truth)
        tx, ty = truth[0] * w - i, truth[1] * h - j
        tw, th = math.log(truth[2] * w / biases[2 * n]), math.log(truth[3] * h / biases[2 * n + 1])
        delta[index + 0 * stride] = scale * (tx - out[index + 0 * stride])
        delta[index + 1 * stride] = scale * (ty - out[index + 1 * stride])
        delta[index + 2 * stride] = scale * (tw - out[index + 2 * stride])
        delta[index + 3 * stride] = scale * (th - out[index + 3 * stride])
        return iou

    def delta_region_class(out, delta, index, cls, scale, stride):
        for n in range(classes):
            delta[index + stride * n] = scale * ((1 if n == cls else 0) - out[index + stride * n])

    out = list(x)
    for b in range(batch):  # activate x, y and objectness; softmax the classes
        for n in range(n_anchors):
            index = entry_index(b, n * w * h, 0)
            for k in range(2 * w * h):
                out[index + k] = _logistic(out[index + k])
            index = entry_index(b, n * w * h, coords)
            for k in range(w * h):
                out[index + k] = _logistic(out[index + k])
            index = entry_index(b, n * w * h, coords + 1)
            for loc in range(w * h):
                vals = [x[index + c * w * h + loc] for c in range(classes)]
                m = max(vals)
                e = [math.exp(v - m) for v in vals]
                for c in range(classes):
                    out[index + c * w * h + loc] = e[c] / sum(e)
    delta = [0.0] * (outputs * batch)
    for b in range(batch):
        for j in range(h):
            for i in range(w):
                for n in range(n_anchors):
                    box_index = entry_index(b, n * w * h + j * w + i, 0)
                    pred = get_region_box(out, n, box_index, i, j, w * h)
                    best_iou = 0.0
                    for truth in truths[b]:
                        iou = _box_iou(pred, truth[:4])
                        if iou > best_iou:
                            best_iou = iou
                    obj_index = entry_index(b, n * w * h + j * w + i, coords)
                    delta[obj_index] = noobject_scale * (0 - out[obj_index])
                    if best_iou > thresh:
                        delta[obj_index] = 0
                    if seen < 12800:
                        truth = ((i + .5) / w, (j + .5) / h, biases[2 * n] / w, biases[2 * n + 1] / h)
                        delta_region_box(truth, out, n, box_index, i, j, delta, .01, w * h)
        for truth in truths[b]:
            best_iou, best_n = 0.0, 0
            i, j = int(truth[0] * w), int(truth[1] * h)
            truth_shift = (0, 0, truth[2], truth[3])
            for n in range(n_anchors):
                box_index = entry_index(b, n * w * h + j * w + i, 0)
                pred = get_region_box(out, n, box_index, i, j, w * h)
                if bias_match:
                    pred = (pred[0], pred[1], biases[2 * n] / w, biases[2 * n + 1] / h)
                pred = (0, 0, pred[2], pred[3])
                iou = _box_iou(pred, truth_shift)
                if iou > best_iou:
                    best_iou, best_n = iou, n
            box_index = entry_index(b, best_n * w * h + j * w + i, 0)
            iou = delta_region_box(truth[:4], out, best_n, box_index, i, j, delta,
                                   coord_scale * (2 - truth[2] * truth[3]), w * h)
            obj_index = entry_index(b, best_n * w * h + j * w + i, coords)
            delta[obj_index] = object_scale * (1 - out[obj_index])
            if rescore:
                delta[obj_index] = object_scale * (iou - out[obj_index])
            class_index = entry_index(b, best_n * w * h + j * w + i, coords + 1)
            delta_region_class(out, delta, class_index, truth[4], class_scale, w * h)
    for b in range(batch):  # backward_region_layer_gpu: gradient_array(LOGISTIC) on x, y and objectness
        for n in range(n_anchors):
            index = entry_index(b, n * w * h, 0)
            for k in list(range(2 * w * h)) + [coords * w * h + k for k in range(w * h)]:
                o = out[index + k]
                delta[index + k] *= o * (1 - o)
    return delta


def _relative_truths(targets, img_h, img_w):
    rel = []
    for t in targets:
        rel.append([(((x1 + x2) / 2) / img_w, ((y1 + y2) / 2) / img_h, (x2 - x1) / img_w, (y2 - y1) / img_h, int(c))
                    for (x1, y1, x2, y2), c in zip(t["boxes"].tolist(), t["labels"].tolist())])
    return rel


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), "labels": torch.tensor(labels)}


def _raw(a: int, c: int, h: int, w: int, fill: float = 0.0, obj: float = -30.0) -> torch.Tensor:
    raw = torch.full((1, a, 5 + c, h, w), fill, dtype=torch.float64)
    raw[:, :, 4] = obj
    return raw


def _set(raw: torch.Tensor, n: int, j: int, i: int, tx=None, ty=None, tw=None, th=None, obj=None, cls=None):
    for k, v in enumerate((tx, ty, tw, th, obj)):
        if v is not None:
            raw[0, n, k, j, i] = v
    if cls is not None:
        raw[0, n, 5:, j, i] = torch.as_tensor(cls, dtype=raw.dtype)


@pytest.mark.parametrize("seen,rescore,bias_match", [(0, True, True), (20000, True, True), (12799, False, True),
                                                     (12800, True, False)])
def test_gradient_equals_darknet_delta(seen, rescore, bias_match):
    g = torch.Generator().manual_seed(seen + 7 * rescore + 3 * bias_match)
    bsz, a, c, h, w, img_h, img_w = 2, 3, 4, 3, 4, 96, 128
    anchors = [(0.8, 1.1), (2.2, 1.5), (3.0, 2.6)]
    raw = torch.randn(bsz, a * (5 + c), h, w, generator=g, dtype=torch.float64)
    targets = [
        # two truths in one cell with the same shape: the later one replaces the earlier, as in darknet
        _target([[10, 8, 60, 50], [5, 40, 120, 90], [12, 9, 61, 52], [70, 3, 100, 30]], [1, 3, 0, 2]),
        _target([[33.3, 20.1, 90.7, 77.9]], [2]),
    ]
    # make some predictions overlap a truth above the threshold, so the ignore rule is exercised
    x5 = raw.view(bsz, a, 5 + c, h, w)
    # truth 0 of image 1: centre (62, 49) -> cell (1, 1), 57.4x57.8 pixels -> anchor 1; anchors 0 and 2 of that
    # cell are set to boxes with IoU ~.9 and ~.5 with it
    x5[1, 0, 0:4, 1, 1] = torch.tensor([_logit(62 / 32 - 1), _logit(51 / 32 - 1), math.log(55 / 32 / 0.8),
                                        math.log(55 / 32 / 1.1)], dtype=torch.float64)
    x5[1, 2, 0:4, 1, 1] = torch.tensor([0.1, -0.1, math.log(50 / 32 / 3.0), math.log(50 / 32 / 2.6)],
                                       dtype=torch.float64)
    raw = raw.detach().requires_grad_(True)

    crit = RegionLoss(anchors, c, rescore=rescore, bias_match=bias_match)
    loss, parts = crit(raw, targets, (img_h, img_w), images_seen=seen)
    loss.backward()
    ours = (-bsz * raw.grad).reshape(-1)

    biases = crit.anchors.double().reshape(-1).tolist()  # darknet's float biases
    delta = darknet_region_delta(raw.detach().reshape(-1).tolist(), bsz, w, h, a, c, biases,
                                 _relative_truths(targets, img_h, img_w), seen, rescore=rescore, bias_match=bias_match)
    torch.testing.assert_close(ours, torch.tensor(delta, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert torch.isclose(sum(parts[k] for k in ("coord", "obj", "class", "noobj", "prior")), loss.detach())
    if bias_match:  # (without it, anchor 0 of cell (1, 1) has the best predicted shape and is matched)
        assert int(parts["num_matched"]) == 4  # 5 truths, one replaced
        # objectness of cell (1, 1), image 1: anchor 0 ignored (IoU > .6), anchor 2 pays the no-object term
        d_obj = torch.tensor(delta, dtype=torch.float64).view(bsz, a, 5 + c, h, w)[1, :, 4, 1, 1]
        g_obj = raw.grad.view(bsz, a, 5 + c, h, w)[1, :, 4, 1, 1]
        assert float(d_obj[0]) == 0.0 == float(g_obj[0]) and float(d_obj[2]) != 0.0
    assert (float(parts["prior"]) > 0) == (seen < 12800)


def test_perfect_prediction_has_zero_coordinate_and_class_loss():
    a, c, h, w = 2, 3, 4, 4  # 128x128 input: cells of 32 pixels
    anchors = [(1.0, 1.0), (2.0, 3.0)]
    crit = RegionLoss(anchors, c)
    # truth: centre (80, 48) -> cell (2, 1), offsets (0.5, 0.5); 64x96 pixels = 2x3 cells -> anchor 1, t_w = t_h = 0
    raw = _raw(a, c, h, w)
    _set(raw, 1, 1, 2, tx=0.0, ty=0.0, tw=0.0, th=0.0, obj=30.0, cls=[-60.0, 60.0, -60.0])
    loss, parts = crit(raw.reshape(1, -1, h, w), [_target([[48, 0, 112, 96]], [1])], 128, images_seen=10 ** 6)
    assert float(parts["coord"]) == 0.0 and float(parts["class"]) == 0.0
    assert float(parts["avg_iou"]) == 1.0 and float(parts["num_matched"]) == 1
    assert float(parts["obj"]) < 1e-20 and float(parts["noobj"]) < 1e-20 and float(parts["prior"]) == 0.0

    # an off-centre truth of a non-anchor size, encoded exactly: coordinate loss ~0 in float64
    raw = _raw(a, c, h, w)
    box = [40.0, 10.0, 40.0 + 1.7 * 32, 10.0 + 2.9 * 32]  # centre (67.2, 56.4): cell (2, 1), offset (.1, .7625)
    _set(raw, 1, 1, 2, tx=_logit(67.2 / 32 - 2), ty=_logit(56.4 / 32 - 1), tw=math.log(1.7 / 2), th=math.log(2.9 / 3),
         obj=30.0, cls=[-60.0, -60.0, 60.0])
    loss, parts = crit(raw.reshape(1, -1, h, w), [_target([box], [2])], 128, images_seen=10 ** 6)
    assert float(parts["coord"]) < 1e-25 and float(parts["class"]) == 0.0
    assert float(parts["avg_iou"]) == pytest.approx(1.0, abs=1e-12)


def test_no_object_term_ignores_predictions_overlapping_a_truth():
    a, c, h, w = 3, 2, 4, 4
    anchors = [(2.0, 2.0), (1.0, 3.0), (3.0, 1.0)]
    crit = RegionLoss(anchors, c)
    raw = _raw(a, c, h, w, obj=0.0)
    # truth: 64x64 centred on (64, 64) -> cell (2, 2) at offset 0, anchor 0 (2x2 cells)
    _set(raw, 1, 2, 2, tx=_logit(0.001), ty=_logit(0.001), tw=math.log(2 / 1), th=math.log(1.8 / 3))  # 2x1.8: IoU .9
    _set(raw, 2, 2, 2, tx=_logit(0.001), ty=_logit(0.001), tw=math.log(0.8 / 3), th=math.log(2 / 1))  # 0.8x2: IoU .4
    raw = raw.reshape(1, -1, h, w).requires_grad_(True)
    loss, parts = crit(raw, [_target([[32, 32, 96, 96]], [0])], 128, images_seen=10 ** 6)
    loss.backward()
    grad_obj = raw.grad.view(1, a, 5 + c, h, w)[0, :, 4]  # (A, H, W)
    assert float(grad_obj[1, 2, 2]) == 0.0  # IoU ~.9 > .6: ignored
    assert float(grad_obj[2, 2, 2]) == pytest.approx(1 * 0.5 * 0.25)  # IoU .4: d/dt 0.5 sigma^2 = sigma * sigma'
    assert float(grad_obj[0, 2, 2]) != 0.0  # the matched anchor: object term
    # every other prediction is far from the truth and pays the no-object term: sigma(0) = .5
    assert float(parts["noobj"]) == pytest.approx(0.5 * 0.25 * (a * h * w - 2))


def test_prior_term_active_before_12800_images_only():
    a, c, h, w = 2, 2, 2, 2
    crit = RegionLoss([(1.0, 1.0), (1.5, 0.5)], c)
    raw = _raw(a, c, h, w, fill=0.3).reshape(1, -1, h, w)
    for seen, active in [(0, True), (12799, True), (12800, False), (50000, False)]:
        x = raw.clone().requires_grad_(True)
        loss, parts = crit(x, [_target([], [])], 64, images_seen=seen)
        loss.backward()
        gxy = x.grad.view(1, a, 5 + c, h, w)[0, :, :4]  # (A, 4, H, W)
        if active:
            s = _logistic(0.3)
            expect = 0.005 * a * h * w * (2 * (s - 0.5) ** 2 + 2 * 0.3 ** 2)
            assert float(parts["prior"]) == pytest.approx(expect)
            torch.testing.assert_close(gxy[:, :2], torch.full_like(gxy[:, :2], 0.01 * (s - 0.5) * s * (1 - s)))
            torch.testing.assert_close(gxy[:, 2:], torch.full_like(gxy[:, 2:], 0.01 * 0.3))
        else:
            assert float(parts["prior"]) == 0.0 and not bool(gxy.any())


def test_rescore_target_is_the_iou():
    a, c, h, w = 1, 2, 2, 2
    raw = _raw(a, c, h, w, obj=0.0)
    # truth 32x32 centred (32, 32) -> cell (1, 1) offset 0; prediction: same size, centre shifted by 8 pixels
    _set(raw, 0, 1, 1, tx=_logit(0.25), ty=_logit(1e-9), tw=0.0, th=0.0)
    iou = (24 * 32) / (2 * 32 * 32 - 24 * 32)
    target = [_target([[16, 16, 48, 48]], [1])]
    for rescore, goal in [(True, iou), (False, 1.0)]:
        _, parts = RegionLoss([(1.0, 1.0)], c, rescore=rescore)(raw.reshape(1, -1, h, w), target, 64, 10 ** 6)
        assert float(parts["avg_iou"]) == pytest.approx(iou, rel=1e-7)
        assert float(parts["obj"]) == pytest.approx(0.5 * 5 * (0.5 - goal) ** 2, rel=1e-7)


def test_batch_normalisation_and_errors():
    a, c, h, w = 2, 2, 2, 2
    crit = RegionLoss([(1.0, 1.0), (1.5, 0.5)], c)
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, a * (5 + c), h, w, generator=g)
    t = _target([[4, 4, 40, 30]], [1])
    l1, _ = crit(one, [t], 64, 0)
    l2, _ = crit(one.repeat(2, 1, 1, 1), [t, t], 64, 0)
    assert l1.dtype == torch.float32 and torch.isclose(l1, l2)  # sum over the batch divided by B
    with pytest.raises(BetterConvError, match="labels"):
        crit(one, [_target([[4, 4, 40, 30]], [2])], 64, 0)
    with pytest.raises(BetterConvError, match="targets for a batch"):
        crit(one, [t, t], 64, 0)
    with pytest.raises(BetterConvError, match=r"\(B, 14, H, W\)"):
        crit(one[:, :5], [t], 64, 0)


def test_loss_trains_tiny_yolov2_output():
    from betterconv.models.yolov2 import TinyYOLOv2
    model = TinyYOLOv2(num_classes=3)
    crit = RegionLoss(model.anchors, 3)
    raw = model(torch.randn(2, 3, 64, 64))
    loss, parts = crit(raw, [_target([[0, 0, 40, 50]], [0]), _target([], [])], 64, images_seen=0)
    loss.backward()
    assert torch.isfinite(loss) and model.pred.weight.grad is not None
    assert bool(torch.isfinite(model.pred.weight.grad).all())


# ----------------------------------------------------------------------------------------------------------------
# post-processing


def test_postprocess_nms_is_class_aware():
    a, c, h, w = 4, 2, 2, 2  # 64x64 input
    anchors = [(1.0, 1.0)] * a
    raw = _raw(a, c, h, w, obj=-20.0)
    _set(raw, 0, 0, 0, tx=0.0, ty=0.0, tw=0.0, th=0.0, obj=5.0, cls=[10.0, -10.0])  # class 0, best
    _set(raw, 1, 0, 0, tx=0.1, ty=0.0, tw=0.0, th=0.0, obj=4.0, cls=[10.0, -10.0])  # duplicate of class 0
    _set(raw, 2, 0, 0, tx=0.0, ty=0.1, tw=0.0, th=0.0, obj=3.0, cls=[-10.0, 10.0])  # overlapping, class 1
    _set(raw, 3, 1, 1, tx=0.0, ty=0.0, tw=0.0, th=0.0, obj=2.0, cls=[0.0, 0.0])  # one box, two classes at .5
    raw = raw.reshape(1, -1, h, w).float()
    (det,) = postprocess(raw, anchors, c, 64)
    s = [_logistic(v) for v in (5.0, 3.0, 2.0)]
    torch.testing.assert_close(det["scores"], torch.tensor([s[0], s[1], s[2] / 2, s[2] / 2]), rtol=1e-5, atol=0)
    assert det["labels"][:2].tolist() == [0, 1] and sorted(det["labels"][2:].tolist()) == [0, 1]
    torch.testing.assert_close(det["boxes"][0], torch.tensor([0.0, 0.0, 32.0, 32.0]))
    torch.testing.assert_close(det["boxes"][2], det["boxes"][3])
    assert det["labels"].dtype == torch.int64

    (det,) = postprocess(raw, anchors, c, 64, max_det=2)
    assert len(det["scores"]) == 2
    (det,) = postprocess(raw, anchors, c, 64, conf_thresh=0.999)
    assert det["boxes"].shape == (0, 4) and len(det["labels"]) == 0
    (det,) = postprocess(raw, anchors, c, 64, image_sizes=[(100, 200)])
    torch.testing.assert_close(det["boxes"][0], torch.tensor([0.0, 0.0, 100.0, 50.0]))
    (no_clip,) = postprocess(raw, anchors, c, 64, clip=False)  # boxes centred on (16, 16) of size 32: inside
    torch.testing.assert_close(no_clip["boxes"][0], torch.tensor([0.0, 0.0, 32.0, 32.0]))


def test_postprocess_batch_matches_single_images():
    g = torch.Generator().manual_seed(1)
    raw = torch.randn(3, 3 * 7, 4, 5, generator=g) * 2
    anchors = [(1.0, 2.0), (2.0, 1.0), (3.0, 3.0)]
    batch = postprocess(raw, anchors, 2, (128, 160))
    for b in range(3):
        (one,) = postprocess(raw[b:b + 1], anchors, 2, (128, 160))
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(batch[b][k], one[k])
        assert bool((one["scores"] > 0.005).all()) and bool((one["scores"][:-1] >= one["scores"][1:]).all())
        assert bool((one["boxes"] >= 0).all()) and bool((one["boxes"][:, [0, 2]] <= 160).all())


def test_to_coco_results():
    dets = [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 5.0, 5.0]]),
             "scores": torch.tensor([0.9, 0.25]), "labels": torch.tensor([0, 2])},
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    res = to_coco_results(dets, [42, 7], [1, 2, 18])
    assert res == [{"image_id": 42, "category_id": 1, "bbox": [10.0, 20.0, 40.0, 60.0], "score": pytest.approx(0.9)},
                   {"image_id": 42, "category_id": 18, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.25}]
    assert all(type(v) in (int, float) for r in res for v in (r["image_id"], r["category_id"], r["score"]))
    assert to_coco_results(dets, [1, 2], {0: 5, 2: 9})[1]["category_id"] == 9
    with pytest.raises(BetterConvError, match="label 2"):
        to_coco_results(dets, [1, 2], {0: 5})
    with pytest.raises(BetterConvError, match="image ids"):
        to_coco_results(dets, [1], [1, 2, 18])


@pytest.mark.parametrize("n,max_det,spread", [(3000, 300, 40.0), (3000, 300, 400.0), (50, 300, 40.0), (700, 10, 5.0),
                                              (0, 300, 40.0)])
def test_nms_best_equals_nms_over_every_candidate(n, max_det, spread):
    """The prefix shortcut against the reference it replaces: torchvision's batched_nms on every candidate, cut to
    max_det; dense overlapping boxes (spread 5-40 px) and sparse ones (400 px), few candidates and many."""
    from torchvision.ops import batched_nms

    g = torch.Generator().manual_seed(n + max_det)
    centre = torch.rand(n, 2, generator=g) * spread
    size = 5 + torch.rand(n, 2, generator=g) * 30
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)  # (n, 4)
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    expected = batched_nms(boxes, scores, labels, 0.45)[:max_det]
    assert torch.equal(nms_best(boxes, scores, labels, 0.45, max_det), expected)


def test_postprocess_pre_nms_top_k():
    # YOLOv2's 845 x 20 candidates from a random head: nearly all pass conf 0.005
    raw = torch.randn(1, 5 * 25, 13, 13, generator=torch.Generator().manual_seed(0))
    anchors = [(1.3, 1.7), (3.2, 4.0), (5.1, 8.1), (9.5, 4.8), (11.2, 10.0)]
    (every,) = postprocess(raw, anchors, 20, 416, pre_nms_top_k=None)
    (top,) = postprocess(raw, anchors, 20, 416)  # 3000 best candidates
    for k in ("boxes", "scores", "labels"):  # the 300 kept come from the best candidates
        torch.testing.assert_close(top[k], every[k])
    (few,) = postprocess(raw, anchors, 20, 416, pre_nms_top_k=10)
    assert len(few["scores"]) <= 10 and float(few["scores"][0]) == float(every["scores"][0])


def test_anchor_offset_location_decodes_and_trains_exactly():
    # the ladder's "anchor boxes without priors": centre = cell + 0.5 + t * anchor size, unconstrained
    a, c, h, w = 2, 3, 4, 4  # 128x128 input: cells of 32 pixels
    anchors = [(1.0, 1.0), (2.0, 3.0)]
    box = [40.0, 10.0, 40.0 + 1.7 * 32, 10.0 + 2.9 * 32]  # centre (67.2, 56.4): cell (2, 1), offset (.1, .7625)
    tx, ty = (67.2 / 32 - 2 - 0.5) / 2.0, (56.4 / 32 - 1 - 0.5) / 3.0  # anchor 1 is 2x3 cells
    raw = _raw(a, c, h, w)
    _set(raw, 1, 1, 2, tx=tx, ty=ty, tw=math.log(1.7 / 2), th=math.log(2.9 / 3), obj=30.0, cls=[-60.0, -60.0, 60.0])
    raw = raw.reshape(1, -1, h, w)
    loss, parts = RegionLoss(anchors, c, location="offset")(raw, [_target([box], [2])], 128, images_seen=10 ** 6)
    assert float(parts["coord"]) < 1e-25 and float(parts["avg_iou"]) == pytest.approx(1.0, abs=1e-12)
    decoded = decode_region(raw, anchors, c, 128, location="offset")
    n = (1 * w + 2) * a + 1  # cell (2, 1), anchor 1
    torch.testing.assert_close(decoded.boxes[0, n], torch.tensor(box, dtype=raw.dtype))
    # the same raw output read as YOLOv2's sigmoid location is another box, and the loss sees it
    _, sigmoid_parts = RegionLoss(anchors, c)(raw, [_target([box], [2])], 128, images_seen=10 ** 6)
    assert float(sigmoid_parts["coord"]) > 1e-3
    # prior: raw t pulled to 0 (the anchor centred in its cell)
    empty = {"boxes": torch.zeros(0, 4, dtype=torch.float64), "labels": torch.zeros(0, dtype=torch.long)}
    _, early = RegionLoss(anchors, c, location="offset")(_raw(a, c, h, w).reshape(1, -1, h, w), [empty], 128, 0)
    assert float(early["prior"]) == 0.0
    with pytest.raises(BetterConvError, match="location"):
        RegionLoss(anchors, c, location="center")


def test_yolov2_without_passthrough():
    from betterconv.models.yolov2 import yolov2

    plain, full = yolov2(passthrough=False), yolov2()
    assert plain.passthrough is None and plain.fuse.conv.in_channels == 1024 and full.fuse.conv.in_channels == 1280
    with torch.no_grad():
        assert plain.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 125, 2, 3)
    assert yolov2(location="offset").location == "offset"
