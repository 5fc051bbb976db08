"""SegmentationMetric against hand-computed confusion matrices and boundary F-scores (numbers worked out on paper
in the comments, not by the code under test)."""
import json
from fractions import Fraction as Fr

import pytest
import torch

from betterconv.errors import BetterConvError
from betterconv.tasks.segmentation_metrics import SegmentationMetric

I = 255  # ignore

# Batch A, one 2x4 image. The ignored column is predicted 4 and 0: it must not count.
A_TARGET = [[[0, 0, 1, I], [1, 2, 2, I]]]
A_PRED = [[[0, 1, 1, 4], [1, 2, 3, 0]]]
# Batch B, two 2x2 images. Image 1 has only class 0 in its target; image 2 has no class 0 in its target but
# predicts one.
B_TARGET = [[[0, 0], [0, 0]], [[1, 1], [I, 2]]]
B_PRED = [[[0, 0], [0, 2]], [[1, 0], [1, 2]]]
# (true, pred) pairs of valid pixels:
#   A:  (0,0) (0,1) (1,1) (1,1) (2,2) (2,3)
#   B1: (0,0) (0,0) (0,0) (0,2)
#   B2: (1,1) (1,0) (2,2)
# Class 3 is only predicted (never in the target); class 4 appears nowhere at a valid pixel.
HAND_CM = [
    [4, 1, 1, 0, 0],  # t_0 = 6
    [1, 3, 0, 0, 0],  # t_1 = 4
    [0, 0, 2, 1, 0],  # t_2 = 3
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
]
# column sums p = 5, 4, 3, 1, 0; N = 13, diagonal sum 9
HAND_IOU = [Fr(4, 6 + 5 - 4), Fr(3, 4 + 4 - 3), Fr(2, 3 + 3 - 2), Fr(0, 1), None]
HAND_ACC = [Fr(4, 6), Fr(3, 4), Fr(2, 3), None, None]


def t(x):
    return torch.tensor(x, dtype=torch.long)


def approx_list(values):
    return [None if v is None else pytest.approx(float(v), abs=1e-12) for v in values]


def hand_set_metric(**kw):
    m = SegmentationMetric(5, **kw)
    m.update(t(A_PRED), t(A_TARGET))
    m.update(t(B_PRED), t(B_TARGET))
    return m


def test_confusion_matrix_and_scores_by_hand():
    m = hand_set_metric()
    assert m.confusion_matrix.tolist() == HAND_CM
    r = m.compute()
    assert r["num_pixels"] == 13
    assert r["pixel_acc"] == pytest.approx(float(Fr(9, 13)), abs=1e-12)
    assert r["per_class_iou"] == approx_list(HAND_IOU)
    assert r["per_class_iou"][4] is None
    # mIoU over the classes with a non-zero union: 0, 1, 2 and the only-predicted 3 (IoU 0); not 4
    assert r["miou"] == pytest.approx(float((Fr(4, 7) + Fr(3, 5) + Fr(1, 2) + 0) / 4), abs=1e-12)
    assert r["per_class_acc"] == approx_list(HAND_ACC)
    assert r["mean_acc"] == pytest.approx(float((Fr(2, 3) + Fr(3, 4) + Fr(2, 3)) / 3), abs=1e-12)
    assert r["fw_iou"] == pytest.approx(float((6 * Fr(4, 7) + 4 * Fr(3, 5) + 3 * Fr(1, 2)) / 13), abs=1e-12)
    assert json.loads(json.dumps(r, allow_nan=False)) == r


def test_ignore_index_and_class_absent_from_image():
    # image B2 alone: target has no class 0, pred has one class-0 pixel, the ignored pixel is predicted 1
    m = SegmentationMetric(3, boundary_tolerance=None)
    m.update(t(B_PRED[1:]), t(B_TARGET[1:]))
    assert m.confusion_matrix.tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 1]]
    r = m.compute()
    assert r["per_class_iou"] == approx_list([Fr(0), Fr(1, 2), Fr(1)])
    assert r["miou"] == pytest.approx(float(Fr(1, 2)), abs=1e-12)
    assert r["pixel_acc"] == pytest.approx(float(Fr(2, 3)), abs=1e-12)
    assert r["per_class_acc"] == approx_list([None, Fr(1, 2), Fr(1)])
    assert r["mean_acc"] == pytest.approx(float(Fr(3, 4)), abs=1e-12)
    assert r["boundary_f"] is None


def test_other_ignore_index_and_none():
    m = SegmentationMetric(3, ignore_index=-1, boundary_tolerance=None)
    m.update(t([[0, -1], [2, 1]]), t([[0, -1], [1, 1]]))
    assert m.confusion_matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    m = SegmentationMetric(3, ignore_index=None, boundary_tolerance=None)
    m.update(t([[0, 1]]), t([[0, 2]]))
    assert m.confusion_matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]


def test_multi_batch_equals_one_shot_and_merge():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (6, 17, 23), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = I
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.7, target.clamp(max=5),
                       torch.randint(0, 6, target.shape, generator=g))
    one = SegmentationMetric(6, boundary_tolerance=1)
    one.update(pred, target)
    parts = SegmentationMetric(6, boundary_tolerance=1)
    for s in (slice(0, 1), slice(1, 4), slice(4, 6)):
        parts.update(pred[s], target[s])
    for name, value in one.accumulators().items():
        torch.testing.assert_close(getattr(parts, name), value, rtol=0, atol=1e-12)
    r1, r2 = one.compute(), parts.compute()
    assert r1.keys() == r2.keys()
    for k in r1:
        assert r2[k] == pytest.approx(r1[k], abs=1e-12), k
    a, b = SegmentationMetric(6, boundary_tolerance=1), SegmentationMetric(6, boundary_tolerance=1)
    a.update(pred[:2], target[:2])
    b.update(pred[2:], target[2:])
    r3 = a.merge(b).compute()
    for k in r1:
        assert r3[k] == pytest.approx(r1[k], abs=1e-12), k
    assert one.compute()["num_pixels"] == int((target != I).sum())
    one.reset()
    assert one.compute()["miou"] is None and one.compute()["boundary_f"] is None


def test_logits_accepted():
    pred = t(B_PRED)
    logits = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).float() * 3 + 0.1 * torch.randn(2, 5, 2, 2)
    a, b = SegmentationMetric(5), SegmentationMetric(5)
    a.update(pred, t(B_TARGET))
    b.update(logits, t(B_TARGET))
    assert a.compute() == b.compute()
    with pytest.raises(BetterConvError):
        b.update(logits[:, :4], t(B_TARGET))


def test_bad_inputs():
    m = SegmentationMetric(3)
    with pytest.raises(BetterConvError):
        m.update(t([[[0, 1]]]), t([[[0, 3]]]))  # target label out of range
    with pytest.raises(BetterConvError):
        m.update(t([[[0, 5]]]), t([[[0, 1]]]))  # predicted label out of range
    m.update(t([[[0, 7]]]), t([[[0, I]]]))  # anything may be predicted on an ignored pixel
    with pytest.raises(BetterConvError):
        m.update(t([[[0, 1, 2]]]), t([[[0, 1]]]))
    with pytest.raises(BetterConvError):
        m.update(torch.zeros(1, 1, 2), t([[[0, 1]]]))  # float maps are not labels
    with pytest.raises(BetterConvError):
        SegmentationMetric(0)
    with pytest.raises(BetterConvError):
        SegmentationMetric(3, boundary_tolerance=-1)


def square(x0, y0=2, size=4, hw=8, cls=1, background=0):
    m = torch.full((hw, hw), background, dtype=torch.long)
    m[y0:y0 + size, x0:x0 + size] = cls
    return m


def bf(pred, target, tolerance, num_classes=2, **kw):
    m = SegmentationMetric(num_classes, boundary_tolerance=tolerance, **kw)
    m.update(pred if pred.dim() == 3 else pred[None], target if target.dim() == 3 else target[None])
    return m.compute()


def test_boundary_identical_is_one():
    for tol in (0, 1, 2):
        r = bf(square(2), square(2), tol)
        assert r["boundary_f"] == 1.0 and r["per_class_boundary_f"] == [1.0, 1.0]
    # a whole-image class predicted over the whole image has no boundary on either side: F = 1
    assert bf(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long), 0)["boundary_f"] == 1.0


def test_boundary_shift_by_one():
    # target: 4x4 square of class 1 at rows 2-5, cols 2-5 of an 8x8 image; prediction: the same square at cols 3-6
    target, pred = square(2), square(3)
    assert bf(pred, target, 1)["boundary_f"] == 1.0
    assert bf(pred, target, 2)["boundary_f"] == 1.0
    # tolerance 0, by hand (4-neighbour inner boundaries):
    #   class 1: true ring = rows 2,5 x cols 2-5 (8) + cols 2,5 x rows 3,4 (4) = 12; predicted ring likewise at cols
    #     3-6 (12); shared = rows 2,5 x cols 3-5 = 6  ->  P = R = 1/2, F = 1/2
    #   class 0: true = background pixels 4-adjacent to the square: rows 1,6 x cols 2-5 (8) + cols 1,6 x rows 2-5
    #     (8) = 16; predicted = rows 1,6 x cols 3-6 + cols 2,7 x rows 2-5 = 16; shared = rows 1,6 x cols 3-5 = 6
    #     ->  P = R = 3/8, F = 3/8
    #   image: mean over the two present classes = (1/2 + 3/8) / 2 = 7/16
    r = bf(pred, target, 0)
    assert r["per_class_boundary_f"] == pytest.approx([3 / 8, 1 / 2], abs=1e-12)
    assert r["boundary_f"] == pytest.approx(7 / 16, abs=1e-12)


def test_boundary_empty_prediction_is_zero():
    # the object is missed: class 1 has no predicted pixel, background has no predicted boundary
    r = bf(torch.zeros(8, 8, dtype=torch.long), square(2), 2)
    assert r["boundary_f"] == 0.0 and r["per_class_boundary_f"] == [0.0, 0.0]
    # a class only predicted: background has a predicted boundary and no true one, class 1 is not in the target
    pred = torch.zeros(4, 4, dtype=torch.long)
    pred[1, 1] = 1
    r = bf(pred, torch.zeros(4, 4, dtype=torch.long), 3)
    assert r["boundary_f"] == 0.0 and r["per_class_boundary_f"] == [0.0, 0.0]
    # class 1 fills the image in the target and is absent from the prediction: both boundaries empty, F = 0
    r = bf(torch.zeros(4, 4, dtype=torch.long), torch.ones(4, 4, dtype=torch.long), 0)
    assert r["boundary_f"] == 0.0


def test_boundary_ignore_region_and_averaging():
    # target: the square with a 1-pixel ignored band around it; the prediction paints the band as class 1 (a
    # 6x6 square). Restricted to valid pixels the masks are equal, so F = 1.
    target = square(2)
    band = square(1, y0=1, size=6, cls=I) == I
    target[band & (target == 0)] = I
    pred = square(1, y0=1, size=6)
    assert bf(pred, target, 0)["boundary_f"] == 1.0
    # mean over images: identical (1), shifted with tolerance 0 (7/16), wholly ignored (skipped);
    # class 2 never appears (None)
    preds = torch.stack([square(2), square(3), square(2)])
    targets = torch.stack([square(2), square(2), torch.full((8, 8), I)])
    r = bf(preds, targets, 0, num_classes=3)
    assert r["boundary_f"] == pytest.approx((1 + 7 / 16) / 2, abs=1e-12)
    assert r["per_class_boundary_f"] == approx_list([(1 + Fr(3, 8)) / 2, (1 + Fr(1, 2)) / 2, None])


def test_all_reduce_single_process(tmp_path):
    import torch.distributed as dist

    m = hand_set_metric()
    before = m.compute()
    assert m.all_reduce_().compute() == before  # not initialised: no-op
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert m.all_reduce_().compute() == before
    finally:
        dist.destroy_process_group()


def _brute_force_bf(pred, target, num_classes, tol, ignore=I):
    """Per-pixel loops over the definitions in the module docstring."""
    h, w = len(target), len(target[0])
    valid = [[target[y][x] != ignore for x in range(w)] for y in range(h)]

    def boundary(labels, c):
        inside = [[valid[y][x] and labels[y][x] == c for x in range(w)] for y in range(h)]
        return inside, {(y, x) for y in range(h) for x in range(w) if inside[y][x] and any(
            0 <= y + dy < h and 0 <= x + dx < w and not inside[y + dy][x + dx]
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)))}

    def matched(a, b):
        return sum(any(max(abs(y - v), abs(x - u)) <= tol for v, u in b) for y, x in a)

    scores = []
    for c in range(num_classes):
        in_t, bt = boundary(target, c)
        in_p, bp = boundary(pred, c)
        has_t, has_p = any(map(any, in_t)), any(map(any, in_p))
        if not (has_t or has_p):
            continue
        if not bt and not bp:
            scores.append(float(has_t and has_p))
        elif not bt or not bp:
            scores.append(0.0)
        else:
            p, r = matched(bp, bt) / len(bp), matched(bt, bp) / len(bt)
            scores.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    return sum(scores) / len(scores) if scores else None


def test_boundary_matches_brute_force_loops():
    g = torch.Generator().manual_seed(1)
    # blocky random maps, so that there are regions and not only noise
    target = torch.randint(0, 3, (3, 4, 5), generator=g).repeat_interleave(2, 1).repeat_interleave(2, 2)
    target[torch.rand(target.shape, generator=g) < 0.08] = I
    pred = target.clamp(max=2).roll(1, 2)
    pred[torch.rand(pred.shape, generator=g) < 0.15] = 1
    for tol in (0, 1, 2):
        per_image = [_brute_force_bf(pred[k].tolist(), target[k].tolist(), 3, tol) for k in range(3)]
        per_image = [s for s in per_image if s is not None]
        assert bf(pred, target, tol, num_classes=3)["boundary_f"] == pytest.approx(
            sum(per_image) / len(per_image), abs=1e-12)


def test_median_frequency_weights_by_hand():
    from betterconv.tasks.segmentation import median_frequency_weights

    a = torch.zeros(4, 4, dtype=torch.long)
    a[0] = 1  # 12 px of class 0, 4 px of class 1
    b = torch.zeros(4, 4, dtype=torch.long)
    b[3, :2] = 255  # 14 px of class 0, 2 ignored
    masks = [a, b]

    class Masks:  # what the function reads of a dataset: load(i) -> (image, mask)
        def __len__(self):
            return 2

        def load(self, i):
            return None, masks[i]

    weights = median_frequency_weights(Masks(), num_classes=3)
    f0, f1 = 26 / 30, 4 / 16  # class pixels / pixels of the images containing the class (ignored excluded)
    median = (f0 + f1) / 2
    torch.testing.assert_close(weights, torch.tensor([median / f0, median / f1, 0.0]))
