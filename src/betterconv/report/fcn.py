"""Section 2, FCN (survey §II-A): a convolutionalised classifier gives a class heat-map (Fig. 2), computed live with
Google's MobileNetV2 when the reference data is there; FCN-32s/16s/8s on CamVid (Figs. 3-4, 13) from results."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..analysis.heatmap import to_tensor
from ..data.images import open_image
from ..weights import create_model, output_class_names, weights_preprocessing
from .context import Context, png_bytes, pyplot
from .records import (DOES_NOT_HOLD, HOLDS, IN_DIRECTION, Claim, Column, Figure, Section, Source,
                      Table, Verdict, not_measured)
from .results import Result

CLASSIFIER = "coral/mobilenet_v2_1.0_224_quant.tflite"
CLASSIFIER_SIZE = 224  # the classifier's own input: its last feature map is then 7x7, one window
# (image, its object mask, how the mask marks the object and the pixels left out of both sides)
HEATMAP_IMAGES = (
    ("coral/images/bird_segmentation.bmp", "coral/images/bird_segmentation_mask.bmp", "bird mask: > 0 is the bird"),
    ("coral/images/dog_segmentation.bmp", "coral/images/dog_segmentation_mask.bmp",
     "Oxford-pets trimap: 0 is the pet, 1 the background, 2 the border (left out)"),
)
CONCENTRATION = 2.0  # "the heat is on the object": mean probability inside >= 2x outside
FCN_FILES = (("FCN-32s", "seg_camvid_fcn32s.json"), ("FCN-16s", "seg_camvid_fcn16s.json"),
             ("FCN-8s", "seg_camvid_fcn8s.json"))


class SlidingClassifier(nn.Module):
    """FCN §3.1 for a classifier that ends in global average pooling and a linear layer (MobileNetV2): the pooling
    becomes a `window` x `window` average pool with stride 1 over the last feature map (`window` = that map's side
    at the classifier's own input size) and the linear layer a 1x1 convolution with the same weights. Each output
    position is then the classifier applied to one window of the input (exactly, up to the padding the inner
    convolutions see at the window's border); at the classifier's own input size the output is 1x1 and equals the
    classifier's logits. `betterconv.convolutionalize` does the same for VGG's fully connected layers."""

    def __init__(self, classifier: nn.Module, window: int = CLASSIFIER_SIZE // 32) -> None:
        super().__init__()
        self.classifier = classifier
        self.window = window
        linear = classifier.classifier[-1]
        self.score = nn.Conv2d(linear.in_features, linear.out_features, 1)
        with torch.no_grad():
            self.score.weight.copy_(linear.weight[:, :, None, None])  # (K, C) -> (K, C, 1, 1)
            self.score.bias.copy_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.classifier
        features = c.head(c.forward_features(x)[c.feature_info[-1].name])  # (B, 1280, H/32, W/32)
        return self.score(F.avg_pool2d(features, self.window, stride=1))  # (B, K, H/32 - window + 1, ...)


def mask_sides(mask: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """(inside, outside) boolean maps of an object mask: kind 0 = bird mask (> 0 object), kind 1 = pets trimap."""
    if kind == 0:
        return mask > 0, mask == 0
    return mask == 0, mask == 1


def class_map(sliding: nn.Module, image: Image.Image, index: int, pre: dict[str, Any], short_side: int) \
        -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The probability of class `index` over `image` resized to `short_side`, upsampled back to the image: (H, W)
    in [0, 1], with the resized input's (width, height) and the score map's (h, w)."""
    scale = short_side / min(image.size)
    resized = image.resize((max(CLASSIFIER_SIZE, round(image.width * scale)),
                            max(CLASSIFIER_SIZE, round(image.height * scale))), Image.BILINEAR)
    with torch.no_grad():
        prob = sliding(to_tensor(resized, pre["mean"], pre["std"])).softmax(1)[:, index:index + 1]  # (1, 1, h, w)
        heat = F.interpolate(prob, size=(image.height, image.width), mode="bilinear", align_corners=False)
    return heat[0, 0].clamp(0, 1).numpy(), resized.size, tuple(prob.shape[-2:])


def heatmap_panels(image: Image.Image, heats: list[tuple[int, np.ndarray]], name: str) -> bytes:
    """The image with the class probability over it, one panel per resized short side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(heats), figsize=(4 * len(heats), 4.4), squeeze=False)
    for ax, (side, heat) in zip(axes[0], heats):
        ax.imshow(image)
        shown = ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"short side {side}: peak {heat.max():.2f}", fontsize=9)
        ax.axis("off")
    fig.colorbar(shown, ax=list(axes[0]), fraction=0.02, pad=0.01, label="probability")
    fig.suptitle(f"'{name}': the convolutionalised MobileNetV2's probability (FCN §3.1)")
    return png_bytes(fig)


def heatmap_rows(ctx: Context, model: nn.Module, pre: dict[str, Any]) -> tuple[list[tuple], list[Figure], float]:
    """Per image and size: (image, top-1 class, input, score map, peak, mean inside, mean outside, ratio); one
    figure per image; the largest |sliding - plain classifier| at the classifier's own size."""
    names = output_class_names(model)
    sliding = SlidingClassifier(model).eval()
    rows, figures = [], []
    check = 0.0
    for kind, (image_rel, mask_rel, _) in enumerate(HEATMAP_IMAGES):
        image = open_image(ctx.data / image_rel, mode="RGB")
        mask = np.asarray(Image.open(ctx.data / mask_rel))
        inside, outside = mask_sides(mask, kind)
        small = to_tensor(image.resize((CLASSIFIER_SIZE, CLASSIFIER_SIZE), Image.BILINEAR), pre["mean"], pre["std"])
        with torch.no_grad():
            logits = model(small)  # (1, K)
            check = max(check, float((sliding(small).flatten(1) - logits).abs().max()))
        scores = logits[0].clone()
        if names and names[0] == "background":  # TensorFlow's 1001 classes: never the answer
            scores[0] = -float("inf")
        index = int(scores.argmax())
        name = names[index] if names else str(index)
        heats = []
        for side in sorted(ctx.settings.heatmap_sizes):
            heat, (w, h), (mh, mw) = class_map(sliding, image, index, pre, side)
            heats.append((side, heat))
            mean_in, mean_out = float(heat[inside].mean()), float(heat[outside].mean())
            rows.append((Path(image_rel).name, name, f"{w}x{h}", f"{mh}x{mw}", float(heat.max()), mean_in, mean_out,
                         mean_in / mean_out))
        figures.append(Figure(f"heatmap_{Path(image_rel).stem}", f"Heat-maps of '{name}' on {Path(image_rel).name}",
                              heatmap_panels(image, heats, name),
                              Source("computation", f"SlidingClassifier(MobileNetV2 from {CLASSIFIER}) on "
                                                    f"{image_rel} resized to each short side")))
    return rows, figures, check


def heatmap_claim(ctx: Context) -> Claim:
    ctx.progress("FCN heat-map")
    rule = (f"holds when, on every image with an object mask and at every size, the mean probability of the "
            f"classifier's top class inside the object is at least {CONCENTRATION:g}x the mean outside it and the "
            "sliding classifier equals the classifier at its own input size (max |difference| < 1e-3); holds in "
            "direction when inside > outside everywhere")
    survey = ("Replacing a classifier's fully connected layers by convolutions lets it run on an image of any "
              "size and output a coarse map of class scores (a heat-map) instead of one vector: the starting point "
              "of FCN.")
    commands = ("betterconv report --data ../shared/data",
                "betterconv heatmap IMAGE --model vgg16 --weights vgg16.pth --class 'tabby'")
    missing = [rel for rel in (CLASSIFIER, *(p for image, mask, _ in HEATMAP_IMAGES for p in (image, mask)))
               if ctx.data_path(rel) is None]
    if missing:
        return Claim("2.1", "A convolutionalised classifier gives a heat-map", "§II-A, Fig. 2", survey,
                     not_measured(rule, "the reference data (Google's MobileNetV2 and the masked test images) is "
                                        "absent; no result file records a heat-map"),
                     commands, notes=(ctx.no_data_line(missing[0], "The live heat-maps"),))
    weights = ctx.data_path(CLASSIFIER)
    model = create_model("mobilenet_v2", weights=weights).eval()
    pre = weights_preprocessing("mobilenet_v2", weights)
    rows, figures, check = heatmap_rows(ctx, model, pre)
    ratios = [r[-1] for r in rows]
    value = (HOLDS if all(r >= CONCENTRATION for r in ratios) and check < 1e-3
             else IN_DIRECTION if all(r > 1 for r in ratios) else DOES_NOT_HOLD)
    reason = ("inside / outside: " + ", ".join(f"{r[0]} at {r[2]} {r[-1]:.1f}x" for r in rows)
              + f"; sliding vs plain classifier at {CLASSIFIER_SIZE}: max |difference| {check:.2g}")
    source = Source("computation", f"SlidingClassifier (FCN §3.1) of create_model('mobilenet_v2', weights={CLASSIFIER}"
                                   f"); top-1 class at {CLASSIFIER_SIZE}x{CLASSIFIER_SIZE}; probability map "
                                   "upsampled bilinearly to the image; means over the mask's pixels")
    table = Table("The classifier's top class, and where its probability is", (
        Column("image"), Column("top-1 class"), Column("input"), Column("score map"),
        Column("peak probability", ".3f"), Column("mean inside the object", ".3f"),
        Column("mean outside", ".3f"), Column("inside / outside", ".1f")), tuple(rows), source)
    return Claim("2.1", "A convolutionalised classifier gives a heat-map", "§II-A, Fig. 2", survey,
                 Verdict(value, rule, reason), commands, (table,), tuple(figures),
                 tuple(f"Mask of {Path(img).name}: {how}." for img, _, how in HEATMAP_IMAGES))


def seg_results(ctx: Context, files: tuple[tuple[str, str], ...]) -> list[tuple[str, Result]]:
    return [(label, ctx.result(name)) for label, name in files]


def test_entry(data: dict[str, Any]) -> dict[str, Any]:
    """The single-scale test evaluation of a segmentation result file ("test" for FCN, "test_os16" for DeepLab)."""
    results = data.get("results", {})
    return results.get("test") or results.get("test_os16") or {}


def fcn_chart(labels: list[str], entries: list[dict[str, Any]]) -> bytes:
    plt = pyplot()
    metrics = (("mIoU", "miou"), ("pixel accuracy", "pixel_acc"), ("boundary F (2 px)", "boundary_f"))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(labels)
    for i, (label, e) in enumerate(zip(labels, entries)):
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(xs, [100 * e[key] for _, key in metrics], width, label=label)
    ax.set_xticks(range(len(metrics)), [m for m, _ in metrics])
    ax.set_ylabel("% (CamVid test, 233 images)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("FCN-32s / 16s / 8s on CamVid (MobileNetV2 backbone)")
    return png_bytes(fig)


def fcn_claim(ctx: Context) -> Claim:
    found = seg_results(ctx, FCN_FILES)
    ok = [(label, r) for label, r in found if r.ok]
    rule = ("holds when mIoU and boundary F both rise from FCN-32s to 16s to 8s; holds in direction when FCN-16s "
            "and FCN-8s both beat FCN-32s on both; all three result files are needed")
    survey = ("Skip connections from finer layers (FCN-16s, then FCN-8s) add back the detail that the 32-pixel "
              "output stride of FCN-32s loses: each finer skip gives sharper, more accurate masks.")
    commands = tuple(r.command for _, r in found)
    notes = tuple(r.missing_line() for _, r in found if not r.ok)
    tables, figures = [], []
    if ok:
        entries = [test_entry(r.data) for _, r in ok]
        rows = tuple((label, e.get("miou"), e.get("pixel_acc"), e.get("boundary_f"),
                      r.data.get("budget", {}).get("train_seconds"), r.name) for (label, r), e in zip(ok, entries))
        sources = "; ".join(r.source().describe() for _, r in ok)
        tables.append(Table("CamVid test (233 images at 360x480, single scale)", (
            Column("model"), Column("mIoU", ".2%"), Column("pixel accuracy", ".1%"), Column("boundary F (2 px)", ".1%"),
            Column("training seconds"), Column("result file")), rows, Source("file", sources)))
        classes = list(entries[0].get("per_class_iou", {}))
        tables.append(Table("Per-class IoU", (Column("class"), *(Column(label, ".1%") for label, _ in ok)),
                            tuple((c, *(e.get("per_class_iou", {}).get(c) for e in entries)) for c in classes),
                            Source("file", sources)))
        figures.append(Figure("fcn_camvid", "FCN-32s / 16s / 8s on CamVid", fcn_chart([lb for lb, _ in ok], entries),
                              Source("file", sources)))
    if len(ok) < len(found):
        verdict = not_measured(rule, f"{len(found) - len(ok)} of the {len(found)} result files are missing")
    else:
        (m32, b32), (m16, b16), (m8, b8) = [(e["miou"], e["boundary_f"]) for e in entries]
        value = (HOLDS if m32 < m16 < m8 and b32 < b16 < b8
                 else IN_DIRECTION if min(m16, m8) > m32 and min(b16, b8) > b32 else DOES_NOT_HOLD)
        reason = (f"mIoU {100 * m32:.2f} / {100 * m16:.2f} / {100 * m8:.2f}, boundary F {100 * b32:.1f} / "
                  f"{100 * b16:.1f} / {100 * b8:.1f} (32s / 16s / 8s)")
        verdict = Verdict(value, rule, reason)
    return Claim("2.2", "FCN-32s, 16s, 8s: finer skips, finer detail", "§II-A, Figs. 3-4", survey, verdict, commands,
                 tuple(tables), tuple(figures), notes)


def trimap_claim(ctx: Context) -> Claim:
    """The trimap curve (mIoU within a band around the true boundaries) and sample predictions side by side, read
    from the FCN result files when they record them (`"trimap": {"W": mIoU}` in their test evaluation)."""
    found = seg_results(ctx, FCN_FILES)
    curves = {label: test_entry(r.data).get("trimap") for label, r in found if r.ok}
    curves = {label: c for label, c in curves.items() if isinstance(c, dict) and c}
    rule = ("holds when, at every band width, the trimap mIoU rises from FCN-32s to 16s to 8s; holds in direction "
            "when FCN-8s beats FCN-32s at the narrowest band")
    survey = ("The finer FCNs differ most near object boundaries: the error concentrates in a band around them "
              "(the trimap), and predictions side by side show the coarse 32s output smoothing detail away.")
    commands = tuple(f"betterconv eval seg --model {m}_mobilenet_v2 --weights runs/clip/seg_camvid_{m}/"
                     f"model.safetensors --data camvid:../shared/data/camvid --split test --trimap 1,2,4,8,16,32 "
                     "--json" for m in ("fcn32s", "fcn16s", "fcn8s")) + (
        "betterconv predict seg --model fcn8s_mobilenet_v2 --weights runs/clip/seg_camvid_fcn8s/model.safetensors "
        "--output pred/fcn8s IMAGES",)
    notes = ["No result file records predicted masks, so no sample predictions are shown; the predict command "
             "above writes them."]
    if len(curves) < len(FCN_FILES):
        return Claim("2.3", "Detail near boundaries: the trimap curve and sample predictions", "§II-A, Fig. 13",
                     survey, not_measured(rule, "the FCN result files record no trimap evaluation (`trimap` in "
                                                "their test results)"), commands, notes=tuple(notes))
    widths = sorted({w for c in curves.values() for w in c}, key=float)
    labels = [label for label, _ in FCN_FILES]
    table = Table("Trimap mIoU by band width (pixels)", (Column("band width"), *(Column(lb, ".2%") for lb in labels)),
                  tuple((w, *(curves[lb].get(w) for lb in labels)) for w in widths),
                  Source("file", "; ".join(r.source().describe() for _, r in found)))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for lb in labels:
        ax.plot([float(w) for w in widths], [100 * (curves[lb].get(w) or 0) for w in widths], marker="o", label=lb)
    ax.set_xscale("log")
    ax.set_xlabel("band width around the true boundaries (px)")
    ax.set_ylabel("mIoU in the band (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    figure = Figure("fcn_trimap", "Trimap curve", png_bytes(fig), table.source)
    rising = all(curves["FCN-32s"][w] < curves["FCN-16s"][w] < curves["FCN-8s"][w] for w in widths)
    value = HOLDS if rising else IN_DIRECTION if curves["FCN-8s"][widths[0]] > curves["FCN-32s"][widths[0]] \
        else DOES_NOT_HOLD
    reason = f"at {widths[0]} px: " + " / ".join(f"{100 * curves[lb][widths[0]]:.2f}" for lb in labels)
    return Claim("2.3", "Detail near boundaries: the trimap curve and sample predictions", "§II-A, Fig. 13", survey,
                 Verdict(value, rule, reason), commands, (table,), (figure,), tuple(notes))


def fcn(ctx: Context) -> Section:
    return Section(2, "FCN: fully convolutional networks", (heatmap_claim(ctx), fcn_claim(ctx), trimap_claim(ctx)))

