"""Trimap mIoU (DeepLab, TPAMI 2017, §4.1): the band against a brute-force distance computation and against OpenCV's
exact Euclidean distance transform, the per-width mIoU against numpy confusion matrices, the band wider than the
image, and `eval seg --trimap` on CamVid from a model and from prediction PNGs."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from betterconv import create_model
from betterconv.data.segmentation import segmentation_dataset
from betterconv.errors import BetterConvError
from betterconv.tasks.segmentation_metrics import SegmentationMetric, trimap_bands
from betterconv.weights import save_weights

I = 255  # ignore
WIDTHS = (1, 2, 3, 5, 8)


def random_maps(seed: int, b: int = 4, h: int = 11, w: int = 14, classes: int = 4) -> np.ndarray:
    """Blocky random label maps with scattered ignored pixels; image 0 is one class (no boundary), image 1 one
    class with an ignored patch (a boundary only around the patch)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (b, h // 3 + 1, w // 4 + 1))
    maps = coarse.repeat(3, 1).repeat(4, 2)[:, :h, :w].copy()
    maps[rng.random(maps.shape) < 0.08] = I
    maps[0] = 1
    maps[1] = 2
    maps[1, 3:5, 6:9] = I
    return maps


def brute_boundaries(labels: np.ndarray) -> np.ndarray:
    """A pixel by pixel loop: a valid pixel with an in-image 4-neighbour of another label (ignored included)."""
    h, w = labels.shape
    edge = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if labels[y, x] == I:
                continue
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and labels[ny, nx] != labels[y, x]:
                    edge[y, x] = True
    return edge


def brute_band(labels: np.ndarray, width: int) -> np.ndarray:
    """For every pixel, the minimum squared Euclidean distance to the boundary pixels, compared with width**2."""
    edge = brute_boundaries(labels)
    points = np.argwhere(edge)
    band = np.zeros(labels.shape, bool)
    if len(points) == 0:
        return band
    for y in range(labels.shape[0]):
        for x in range(labels.shape[1]):
            band[y, x] = ((points - (y, x)) ** 2).sum(1).min() <= width * width
    return band


def numpy_boundaries(labels: np.ndarray) -> np.ndarray:
    """The same boundaries with array shifts (for images too large for the loop)."""
    differ = np.zeros(labels.shape, bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    differ[1:] |= vertical
    differ[:-1] |= vertical
    differ[:, 1:] |= horizontal
    differ[:, :-1] |= horizontal
    return differ & (labels != I)


def opencv_band(labels: np.ndarray, width: int) -> np.ndarray:
    """OpenCV's exact Euclidean distance transform (Felzenszwalb's algorithm with DIST_MASK_PRECISE) to the
    boundary pixels, <= width."""
    import cv2  # optional: arrives with the test extra (sahi)

    edge = numpy_boundaries(labels)
    if not edge.any():
        return np.zeros(labels.shape, bool)
    distance = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= width


def numpy_confusion(target: np.ndarray, pred: np.ndarray, keep: np.ndarray, c: int) -> np.ndarray:
    keep = keep & (target != I)
    return np.bincount(target[keep] * c + pred[keep], minlength=c * c).reshape(c, c)


def numpy_miou(cm: np.ndarray) -> float | None:
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0])) if (union > 0).any() else None


def noisy_prediction(target: np.ndarray, seed: int, classes: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    pred = np.where(target == I, 0, target)
    flip = rng.random(target.shape) < 0.25
    return np.where(flip, rng.integers(0, classes, target.shape), pred)


@pytest.mark.parametrize("seed", range(4))
def test_band_equals_brute_force(seed):
    maps = random_maps(seed)
    bands = trimap_bands(torch.from_numpy(maps), WIDTHS)
    assert bands.shape == (len(WIDTHS), *maps.shape) and bands.dtype == torch.bool
    for k, width in enumerate(WIDTHS):
        for i, labels in enumerate(maps):
            np.testing.assert_array_equal(bands[k, i].numpy(), brute_band(labels, width), err_msg=f"w={width} {i}")
    assert not bands[:, 0].any()  # one class, nothing ignored: no boundary, no band
    assert all(np.array_equal(brute_boundaries(m), numpy_boundaries(m)) for m in maps)


def test_band_equals_opencv_distance_transform():
    pytest.importorskip("cv2")
    maps = random_maps(7, b=3, h=45, w=70, classes=5)
    widths = (1, 2, 4, 7, 16, 40)
    bands = trimap_bands(torch.from_numpy(maps), widths)
    for k, width in enumerate(widths):
        for i, labels in enumerate(maps):
            np.testing.assert_array_equal(bands[k, i].numpy(), opencv_band(labels, width), err_msg=f"w={width} {i}")


@pytest.mark.parametrize("seed", range(3))
def test_trimap_miou_equals_numpy_confusion_matrices(seed):
    maps = random_maps(seed, b=5)
    preds = noisy_prediction(maps, seed)
    metric = SegmentationMetric(4, trimap_widths=(5, 1, 3, 2, 3), boundary_tolerance=None)
    assert metric.trimap_widths == (1, 2, 3, 5)
    for part in (slice(0, 2), slice(2, 3), slice(3, 5)):  # accumulated over batches
        metric.update(torch.from_numpy(preds[part]), torch.from_numpy(maps[part]))
    result = metric.compute()
    assert list(result["trimap"]) == ["1", "2", "3", "5"]
    for k, width in enumerate(metric.trimap_widths):
        cm = sum(numpy_confusion(t, p, brute_band(t, width), 4) for t, p in zip(maps, preds))
        np.testing.assert_array_equal(metric.trimap_confusion[k].numpy(), cm)
        assert result["trimap"][str(width)] == pytest.approx(numpy_miou(cm), abs=1e-12)
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_band_wider_than_the_image_is_the_miou_of_the_images_with_a_boundary():
    """For w >= the image diagonal every pixel of an image with a boundary pixel is in the band and an image
    without one has an empty band, so the confusion matrix is exactly that of the images with a boundary."""
    maps = random_maps(3, b=5)
    maps[2] = 0  # a second image without a boundary, wrongly predicted: it must not count
    preds = noisy_prediction(maps, 3)
    preds[2] = 3
    h, w = maps.shape[1:]
    diagonal = math.ceil(math.hypot(h - 1, w - 1))
    metric = SegmentationMetric(4, trimap_widths=(diagonal, 10_000), boundary_tolerance=None)
    metric.update(torch.from_numpy(preds), torch.from_numpy(maps))
    with_boundary = [i for i in range(len(maps)) if brute_boundaries(maps[i]).any()]
    assert with_boundary == [1, 3, 4]
    subset = SegmentationMetric(4, boundary_tolerance=None)
    subset.update(torch.from_numpy(preds[with_boundary]), torch.from_numpy(maps[with_boundary]))
    for k in range(2):
        assert torch.equal(metric.trimap_confusion[k], subset.confusion_matrix)
    result = metric.compute()
    assert result["trimap"][str(diagonal)] == result["trimap"]["10000"] == subset.compute()["miou"]
    assert result["trimap"]["10000"] != result["miou"]  # the images without a boundary make the difference


def test_trimap_merge_and_bad_widths():
    maps = random_maps(5)
    preds = noisy_prediction(maps, 5)
    one = SegmentationMetric(4, trimap_widths=(2, 4))
    one.update(torch.from_numpy(preds), torch.from_numpy(maps))
    a, b = SegmentationMetric(4, trimap_widths=(4, 2)), SegmentationMetric(4, trimap_widths=(2, 4))
    a.update(torch.from_numpy(preds[:1]), torch.from_numpy(maps[:1]))
    b.update(torch.from_numpy(preds[1:]), torch.from_numpy(maps[1:]))
    assert torch.equal(a.merge(b).trimap_confusion, one.trimap_confusion)
    assert SegmentationMetric(4).compute()["trimap"] is None
    for bad in ((0,), (-2,), (1.5,), (True,), "4"):
        with pytest.raises(BetterConvError):
            SegmentationMetric(4, trimap_widths=bad)
    with pytest.raises(BetterConvError):
        one.merge(SegmentationMetric(4, trimap_widths=(2,)))


# --- eval seg --trimap on CamVid ---------------------------------------------------------------------------------

TRIMAP = "2,4,8,16,32"


@pytest.fixture
def camvid(shared_data):
    root = shared_data / "camvid"
    if not root.is_dir():
        pytest.skip(f"reference data {root} is absent")
    return root


def test_eval_seg_trimap_from_a_model(camvid, cli, tmp_path):
    torch.manual_seed(0)
    model = create_model("deeplabv3_mobilenet_v2", num_classes=11, width_mult=0.35)
    weights = tmp_path / "random.safetensors"
    save_weights(model, weights, class_names=[str(i) for i in range(11)])
    argv = ["eval", "seg", "--model", "deeplabv3_mobilenet_v2", "--weights", weights, "--data", f"camvid:{camvid}",
            "--split", "val", "--max-images", "1", "--device", "cpu", "--trimap", TRIMAP]
    code, out, _ = cli(*argv, "--json")
    assert code == 0
    result = json.loads(out)
    assert {"miou", "boundary_f", "trimap"} <= set(result)
    assert list(result["trimap"]) == TRIMAP.split(",")
    assert all(0 <= v <= 1 for v in result["trimap"].values())
    code, out, _ = cli(*argv)
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("trimap mIoU")]
    assert len(lines) == 5 and all(f"{w} px" in line for w, line in zip(TRIMAP.split(","), lines))


def test_eval_seg_trimap_from_predictions_equals_opencv(camvid, cli, tmp_path):
    """Predictions = the ground truth shifted 3 pixels right: the trimap mIoU from the PNGs against OpenCV's
    distance transform and numpy confusion matrices."""
    pytest.importorskip("cv2")
    from PIL import Image

    dataset = segmentation_dataset(f"camvid:{camvid}", "val")
    folder = tmp_path / "pred"
    folder.mkdir()
    cms = {w: np.zeros((11, 11), np.int64) for w in (2, 8, 32)}
    for i in range(2):
        _, mask = dataset.load(i)
        target = np.asarray(mask).astype(np.int64)
        pred = np.roll(np.where(target == I, 0, target), 3, axis=1)
        Image.fromarray(pred.astype(np.uint8)).save(folder / f"{Path(dataset.files[i][0]).stem}.png")
        for w in cms:
            cms[w] += numpy_confusion(target, pred, opencv_band(target, w), 11)
    code, out, _ = cli("eval", "seg", "--predictions", folder, "--data", f"camvid:{camvid}", "--split", "val",
                       "--max-images", "2", "--trimap", "32,2,8", "--json")
    assert code == 0
    trimap = json.loads(out)["trimap"]
    assert list(trimap) == ["2", "8", "32"]
    for w, cm in cms.items():
        assert trimap[str(w)] == pytest.approx(numpy_miou(cm), abs=1e-12)


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "", "4,,8", "x", "2,0"])
def test_bad_trimap_widths_are_one_line(cli, value, tmp_path):
    code, out, err = cli("eval", "seg", "--predictions", tmp_path, "--data", f"folder:{tmp_path}",
                         f"--trimap={value}")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--trimap" in err and "Traceback" not in err
