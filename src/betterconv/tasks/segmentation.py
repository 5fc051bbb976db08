"""Semantic segmentation: the training loss, the papers' recipes, evaluation (multi-scale and flip as in DeepLabv3
§4.3) and prediction files."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from ..files import write_atomic
from ..data.segmentation import IGNORE_INDEX, read_label_png
from ..errors import BetterConvError
from ..models import SegRecipe, model_info
from .segmentation_metrics import SegmentationMetric

def segmentation_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int = 0,
                      ignore_index: int = IGNORE_INDEX, class_weights: torch.Tensor | None = None,
                      aux_weight: float = 0.5) -> torch.Tensor:
    """Per-pixel cross-entropy averaged over labelled pixels (the normalised form of FCN's per-pixel sum),
    optionally weighted per class; plus `aux_weight` times the auxiliary head's loss when the model has one
    (0.5 in torchvision's reference recipe, `SegRecipe.aux_weight`)."""
    images, masks = batch
    out = model(images)
    weight = None if class_weights is None else class_weights.to(images.device)
    if isinstance(out, tuple):  # (logits, auxiliary logits)
        main, aux = out
        return (F.cross_entropy(main, masks, weight=weight, ignore_index=ignore_index)
                + aux_weight * F.cross_entropy(aux, masks, weight=weight, ignore_index=ignore_index))
    return F.cross_entropy(out, masks, weight=weight, ignore_index=ignore_index)


def median_frequency_weights(dataset, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus, ICCV 2015, as SegNet trains CamVid): weight_c = median_f / f_c,
    where f_c = pixels of class c / pixels of the images that contain c. Classes never seen get weight 0."""
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for i in tqdm(range(len(dataset)), desc="class frequencies", unit="img", leave=False):
        _, mask = dataset.load(i)
        labels = np.asarray(mask).ravel()
        labels = labels[labels != ignore_index]
        counts = np.bincount(labels, minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels[counts > 0] += labels.size
    freq = np.where(image_pixels > 0, pixels / np.maximum(image_pixels, 1), 0.0)
    median = np.median(freq[freq > 0]) if (freq > 0).any() else 1.0
    return torch.tensor(np.where(freq > 0, median / np.maximum(freq, 1e-12), 0.0), dtype=torch.float32)


def recipe_for(model_name: str) -> SegRecipe:
    """The training recipe recorded for a segmentation model (its `ModelInfo.recipe`)."""
    recipe = model_info(model_name).recipe
    if not isinstance(recipe, SegRecipe):
        raise BetterConvError(f"{model_name} is not a segmentation model")
    return recipe


@torch.no_grad()
def predict_probabilities(model: nn.Module, image: torch.Tensor, scales: Sequence[float] = (1.0,),
                          flip: bool = False) -> torch.Tensor:
    """Class probabilities (B, C, H, W) averaged over rescaled (and left-right flipped) copies of `image`."""
    size = image.shape[-2:]
    total = None
    for scale in scales:
        x = image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear",
                                                     align_corners=False, recompute_scale_factor=False)
        for flipped in ((False, True) if flip else (False,)):
            inp = x.flip(-1) if flipped else x
            logits = model(inp)
            logits = logits.flip(-1) if flipped else logits
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            prob = logits.softmax(dim=1)
            total = prob if total is None else total + prob
    return total


def evaluate_segmentation(model: nn.Module, dataset, num_classes: int, device: torch.device | str = "cpu",
                          scales: Sequence[float] = (1.0,), flip: bool = False, max_images: int | None = None,
                          boundary_tolerance: int = 2, progress: bool = True,
                          trimap_widths: Sequence[int] = ()) -> dict:
    """mIoU, pixel accuracy, per-class IoU, boundary F and trimap mIoU at `trimap_widths` over `dataset` (one image
    at a time, full resolution)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    metric = SegmentationMetric(num_classes, ignore_index=IGNORE_INDEX, boundary_tolerance=boundary_tolerance,
                                trimap_widths=trimap_widths)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    with tqdm(total=count, desc="evaluating", unit="img", disable=not progress, leave=False) as bar:
        for i in range(count):
            image, mask = dataset[i]
            prob = predict_probabilities(model, image.unsqueeze(0).to(device), scales, flip)
            metric.update(prob.argmax(1).cpu(), torch.as_tensor(mask).unsqueeze(0).long())
            bar.update()
    model.train(was_training)
    return metric.compute()


def evaluate_prediction_files(predictions: Path, dataset, num_classes: int, boundary_tolerance: int = 2,
                              trimap_widths: Sequence[int] = ()) -> dict:
    """The same metrics for label PNGs already written, matched to the ground truth by file stem."""
    metric = SegmentationMetric(num_classes, ignore_index=IGNORE_INDEX, boundary_tolerance=boundary_tolerance,
                                trimap_widths=trimap_widths)
    for i in range(len(dataset)):
        image_path = Path(dataset.files[i][0])
        path = predictions / f"{image_path.stem}.png"
        if not path.is_file():
            raise BetterConvError(f"{path}: no prediction for {image_path.name}")
        _, mask = dataset.load(i)
        pred = torch.from_numpy(read_label_png(path).astype(np.int64))
        if pred.shape != mask.shape:
            raise BetterConvError(f"{path}: prediction is {tuple(pred.shape)}, ground truth {tuple(mask.shape)}")
        if int(pred.max()) >= num_classes:
            raise BetterConvError(f"{path}: class index {int(pred.max())} outside the {num_classes} classes")
        metric.update(pred.unsqueeze(0), torch.as_tensor(mask).unsqueeze(0).long())
    return metric.compute()


def palette(num_classes: int) -> np.ndarray:
    """PASCAL VOC's colour map (bit-interleaved class index), (num_classes, 3) uint8."""
    colours = np.zeros((max(num_classes, 1), 3), dtype=np.uint8)
    for c in range(num_classes):
        r = g = b = 0
        label = c
        for shift in range(7, -1, -1):
            r |= (label & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        colours[c] = (r, g, b)
    return colours


def write_prediction(label: np.ndarray, image: Image.Image, output: Path, stem: str, num_classes: int) -> None:
    """`<stem>.png` (class indices, 8-bit) and `<stem>_overlay.png` (colours blended over the image)."""
    import io

    def png(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    write_atomic(output / f"{stem}.png", png(Image.fromarray(label.astype(np.uint8), mode="L")))
    colour = Image.fromarray(palette(num_classes)[label])
    write_atomic(output / f"{stem}_overlay.png", png(Image.blend(image.convert("RGB"), colour, 0.5)))
