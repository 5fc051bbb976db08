"""`betterconv train seg`, `betterconv eval seg`, `betterconv predict seg`."""
from __future__ import annotations

import argparse
import functools
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..analysis.heatmap import to_tensor
from ..data.segmentation import segmentation_dataset
from ..data.transforms import eval_transform, train_transform
from ..engine import Trainer, TrainConfig, prepare_output
from ..data.images import open_image
from ..errors import BetterConvError
from ..models.info import IMAGENET_MEAN, IMAGENET_STD
from ..tasks.drawing import draw_segmentation
from ..tasks.segmentation import (evaluate_prediction_files, evaluate_segmentation, median_frequency_weights,
                                  predict_probabilities, recipe_for, segmentation_loss, write_prediction)
from ..weights import backbone_classifier, backbone_keywords, create_model, save_weights, weights_preprocessing
from ._common import (TRAIN_NUMBERS, add_data_arguments, add_model_arguments, add_run_arguments,
                      add_train_arguments, device_for, init_from, load_backbone,
                      load_model, non_negative_float, parse_floats, parse_model_args, report_skipped)
from ._common import (IMAGES_HELP, distinct_stems, input_images, output_folder, refuse_overwriting,
                      tensorflow_weights)
from ._video import INPUTS_HELP, add_video_arguments, check_video_outputs, output_help, predict_video, video_input


def build_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    """`--model` for `num_classes` classes, its backbone from `--backbone-weights` or all of it from `--init-from`."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, **parse_model_args(args.arg)}
    classifier = None
    if getattr(args, "backbone_weights", None):
        classifier = backbone_classifier(args.model, args.backbone_weights, args.trusted)
        kwargs = {**backbone_keywords(args.model, classifier), **kwargs}
    model = create_model(args.model, **kwargs)
    if classifier is not None:
        load_backbone(model, classifier, args.backbone_weights)
    if getattr(args, "init_from", None):
        init_from(model, args.init_from, args.trusted)
    return model


def cmd_train(args: argparse.Namespace) -> None:
    prepare_output(args.output, args.resume, args.overwrite)
    recipe = recipe_for(args.model)
    fields = ("optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size", "crop_size", "epochs",
              "aux_weight")
    overrides = {k: getattr(args, k) for k in fields if getattr(args, k) is not None}
    recipe = replace(recipe, **overrides)
    train_set = segmentation_dataset(args.data, args.train_split, transform=train_transform(recipe.crop_size),
                                     skip_bad=args.skip_bad)
    val_set = segmentation_dataset(args.data, args.val_split, transform=eval_transform(), skip_bad=args.skip_bad)
    for ds in (train_set, val_set):
        report_skipped(ds, args.data)
    model = build_model(args, train_set.num_classes)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = device_for(args.device)

    def evaluate(m: nn.Module) -> dict:
        result = evaluate_segmentation(m, val_set, val_set.num_classes, device, max_images=args.eval_images,
                                       boundary_tolerance=2)
        return {"val_miou": result["miou"], "val_pixel_acc": result["pixel_acc"],
                "val_boundary_f": result["boundary_f"]}

    config = TrainConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                         optimizer=recipe.optimizer, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                         schedule=recipe.schedule, workers=args.workers, seed=args.seed, amp=not args.no_amp,
                         sync_bn=args.sync_bn, freeze_bn=args.freeze_bn, eval_every=args.eval_every,
                         max_steps_per_epoch=args.max_steps_per_epoch, output=args.output,
                         grad_clip=args.grad_clip, warmup_steps=args.warmup_steps,
                         extra={"task": "seg", "model": args.model, "model_kwargs": model.model_kwargs,
                                "data": args.data, "class_names": list(train_set.class_names),
                                "recipe": recipe.source})
    weights = None
    if args.class_weights == "median-frequency":
        weights = median_frequency_weights(train_set, train_set.num_classes)
        print("class weights (median frequency): " + ", ".join(
            f"{name} {w:.2f}" for name, w in zip(train_set.class_names, weights.tolist())))
    loss_fn = functools.partial(segmentation_loss, class_weights=weights, aux_weight=recipe.aux_weight)
    trainer = Trainer(model, train_set, loss_fn, config, evaluate_fn=evaluate, best_metric="val_miou",
                      device=device)
    if args.resume and trainer.resume(trusted=args.trusted):
        print(f"resuming from {Path(args.output) / 'last.pt'} at epoch {trainer.start_epoch + 1}")
    trainer.fit()
    if trainer.dist.is_main:
        _export_weights(model, Path(args.output), list(train_set.class_names), recipe.crop_size,
                        use_best=args.export == "best")


def _export_weights(model: nn.Module, output: Path, class_names: list[str], crop: int, use_best: bool = True) -> None:
    best = output / "best.pt"
    if use_best and best.is_file():
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
    save_weights(model, output / "model.safetensors", class_names=class_names, input_size=(3, crop, crop),
                 mean=IMAGENET_MEAN, std=IMAGENET_STD)
    print(f"wrote {output / 'model.safetensors'}")


def _load_for_eval(args: argparse.Namespace) -> nn.Module:
    # another output stride changes the dilation only: the same weights fit
    return load_model(args, **({"output_stride": args.output_stride} if args.output_stride else {}))


class FixedInputSize(nn.Module):
    """A segmentation model run at one input size (H, W): each input is resized to it first (bilinear,
    antialiased), as a fixed-size graph (TFLite's DeepLab: 513x513) sees every image; the logits come back at that
    size and `predict_probabilities` resizes them to the image's."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.size = model, (int(size[0]), int(size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.model(x)


def _run_size(args: argparse.Namespace, pre: dict[str, Any]) -> tuple[int, int] | None:
    """The (H, W) the model runs at, None for each image's own size: `--input-size` (HxW, N for NxN, or "native"),
    else the input size recorded with TensorFlow (Lite) weights (graphs of one fixed size; `tensorflow_weights`),
    else each image's own size (fully convolutional models trained on crops, as `train seg` writes them)."""
    given = args.input_size
    if given is None:
        return (int(pre["input_size"][1]), int(pre["input_size"][2])) if tensorflow_weights(pre, args.weights) \
            else None
    if given.strip().lower() == "native":
        return None
    try:
        sides = [int(v) for v in given.lower().replace(",", "x").split("x")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise BetterConvError(f"--input-size takes HxW, N (for NxN) or 'native', got {given!r}")
    return sides[0], sides[-1]


def _segmenter(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    """The model of `--weights` (run at `_run_size`), in eval mode on `--device`, and its preprocessing."""
    if not args.weights:
        raise BetterConvError(f"{args.command} seg needs --weights" + (", or --predictions DIR" if
                                                                      args.command == "eval" else ""))
    model = _load_for_eval(args).eval()
    pre = weights_preprocessing(args.model, args.weights)
    size = _run_size(args, pre)
    return (FixedInputSize(model, size) if size else model).to(device_for(args.device)), pre


def trimap_widths(text: str) -> tuple[int, ...]:
    """argparse `type=` of `--trimap`: comma-separated band widths, each an integer >= 1."""
    parts = text.split(",")
    # ASCII digits only: int() would also take "+4", "4_0" and other scripts' digits
    if not all(re.fullmatch(r"\s*[0-9]+\s*", p) and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"band widths are comma-separated integers >= 1 (pixels), e.g. "
                                         f"2,4,8,16,32; got {text!r}")
    return tuple(sorted({int(p) for p in parts}))


class _FirstImages:
    """The first `count` samples of a segmentation dataset, as `evaluate_prediction_files` reads them."""

    def __init__(self, dataset: Any, count: int) -> None:
        self.dataset, self.files = dataset, dataset.files[:count]

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Any:
        return self.dataset.load(index)


def cmd_eval(args: argparse.Namespace) -> None:
    if args.max_images is not None and args.max_images < 1:
        raise BetterConvError(f"--max-images must be at least 1, got {args.max_images}")
    model = pre = None
    if not args.predictions:
        model, pre = _segmenter(args)
    transform = eval_transform(pre["mean"], pre["std"]) if pre else eval_transform()
    dataset = report_skipped(segmentation_dataset(args.data, args.split, transform=transform, skip_bad=args.skip_bad),
                             f"{args.data} {args.split}", args.json)
    count = min(args.max_images or len(dataset), len(dataset))
    if args.predictions:
        result = evaluate_prediction_files(Path(args.predictions), _FirstImages(dataset, count), dataset.num_classes,
                                           trimap_widths=args.trimap)
    else:
        result = evaluate_segmentation(model, dataset, dataset.num_classes, device_for(args.device),
                                       scales=parse_floats(args.scales), flip=args.flip, max_images=count,
                                       trimap_widths=args.trimap)
    result["class_names"] = list(dataset.class_names)
    result["num_images"] = count
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"mIoU {100 * result['miou']:.2f}   pixel accuracy {100 * result['pixel_acc']:.2f}   "
          f"boundary F {100 * result['boundary_f']:.2f}   ({count} images of {args.data} {args.split})")
    for width, miou in (result["trimap"] or {}).items():
        print(f"trimap mIoU within {width:>3s} px of a true boundary: {'-' if miou is None else f'{100 * miou:.2f}'}")
    for name, iou in zip(dataset.class_names, result["per_class_iou"]):
        print(f"  {name:16s} {'-' if iou is None else f'{100 * iou:.2f}'}")


def cmd_predict(args: argparse.Namespace) -> None:
    # the cheap checks first: nothing is built or written when an output would replace an input
    video = video_input(args.images, args)
    if video is not None:
        info = check_video_outputs(args, video)
    else:
        images = input_images(args.images)
        output = output_folder(args.output)
        stems = distinct_stems(images, PREDICTION_FILES)
        refuse_overwriting([output / pattern.format(stem) for stem in stems for pattern in PREDICTION_FILES],
                           [*images, args.weights])
    model, pre = _segmenter(args)
    device = device_for(args.device)
    scales = parse_floats(args.scales)
    num_classes = (model.model if isinstance(model, FixedInputSize) else model).num_classes

    def segment(image: Image.Image) -> torch.Tensor:
        """The class of each pixel of `image`, (H, W) int64 on the CPU."""
        x = to_tensor(image, pre["mean"], pre["std"]).to(device)  # (1, 3, H, W)
        prob = predict_probabilities(model, x, scales, args.flip)  # (1, C, H, W)
        return prob.argmax(1)[0].cpu()

    if video is not None:
        names = list(pre["class_names"] or [str(c) for c in range(num_classes)])

        def histogram(index: int, label: torch.Tensor) -> dict[str, Any]:
            counts = torch.bincount(label.flatten(), minlength=num_classes).tolist()
            return {"pixels": {name: n for name, n in zip(names, counts) if n}}

        def segment_frame(frame: torch.Tensor) -> torch.Tensor:
            return segment(Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy()))  # (3, H, W) -> (H, W, 3)

        predict_video(args, info, segment_frame, lambda frame, label: draw_segmentation(frame, label, num_classes),
                      histogram)
        return
    for path, stem in zip(images, stems):
        image = open_image(path, mode="RGB", exif=True)
        label = segment(image)
        write_prediction(label.numpy(), image, output, stem, num_classes)
        print(f"{path} -> {output / PREDICTION_FILES[0].format(stem)}")


PREDICTION_FILES = ("{}.png", "{}_overlay.png")  # what `write_prediction` writes for an image


DATA_HELP = "voc:, sbd:, camvid:, coco:, coco-all: or folder: followed by the dataset root"


def add_parsers(train_sub, eval_sub, predict_sub) -> None:
    """Register `train seg`, `eval seg` and `predict seg` on the task groups' sub-command parsers."""
    p = train_sub.add_parser("seg", help="train FCN or DeepLabv3 with the paper's recipe")
    add_train_arguments(p, "runs/seg", "start from another run's weights where names match (FCN 32s->16s->8s)")
    add_data_arguments(p, DATA_HELP)
    p.add_argument("--train-split", default="train", help="the split to train on (default: train)")
    p.add_argument("--val-split", default="val", help="the split to evaluate on after epochs (default: val)")
    p.add_argument("--backbone-weights", help="ImageNet classifier weights for the backbone (any format)")
    for name in ("epochs", "batch-size", "crop-size", "lr", "momentum", "weight-decay"):
        p.add_argument(f"--{name}", type=TRAIN_NUMBERS[name], help="override the recipe")
    p.add_argument("--aux-weight", type=functools.partial(non_negative_float, what="the auxiliary loss weight"),
                   help="override the recipe")
    p.add_argument("--optimizer", choices=("sgd", "rmsprop", "adamw"), help="override the recipe")
    p.add_argument("--schedule", choices=("poly", "cosine", "constant", "exponential"),
                   help="learning-rate schedule; overrides the recipe")
    p.add_argument("--class-weights", choices=("none", "median-frequency"), default="none",
                   help="weight the loss per class (median frequency balancing, as SegNet on CamVid)")
    p.add_argument("--eval-images", type=TRAIN_NUMBERS["eval-images"],
                   help="evaluate on the first N validation images only")
    p.add_argument("--export", choices=("best", "last"), default="best",
                   help="which weights model.safetensors holds: the best epoch on the validation split, or the last "
                        "(when the validation split is the test set, so that no choice is made on it)")
    p.add_argument("--grad-clip", type=TRAIN_NUMBERS["grad-clip"], help="clip the gradients' global norm to this value")
    p.add_argument("--warmup-steps", type=TRAIN_NUMBERS["warmup-steps"], default=0, help="linear learning-rate warm-up")
    add_run_arguments(p)
    p.add_argument("--freeze-bn", action="store_true", help="keep batch-norm statistics fixed")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on CPU)")
    p.set_defaults(func=cmd_train)

    def model_arguments(p: argparse.ArgumentParser) -> None:
        add_model_arguments(p)
        p.add_argument("--output-stride", type=int, help="evaluate at another output stride (DeepLabv3: 8)")
        p.add_argument("--scales", default="1.0", help="comma-separated input scales, e.g. 0.5,0.75,1,1.25,1.5,1.75")
        p.add_argument("--flip", action="store_true", help="also average left-right flipped predictions")
        p.add_argument("--input-size", metavar="HxW",
                       help="run the model on each image resized to HxW (or N: NxN), its labels resized back; "
                            "'native': at each image's own size. Default: the input size recorded with TensorFlow "
                            "(Lite) weights, whose graphs have one fixed size; each image's own size for others")

    p = eval_sub.add_parser("seg", help="mIoU, pixel accuracy, per-class IoU and boundary F")
    model_arguments(p)
    add_data_arguments(p, DATA_HELP)
    p.add_argument("--split", default="val", help="the split to evaluate (default: val)")
    p.add_argument("--predictions", help="folder of label PNGs (<image stem>.png) to evaluate instead of a model")
    p.add_argument("--max-images", type=int, help="evaluate the first N images only")
    p.add_argument("--trimap", type=trimap_widths, default=(), metavar="W1,W2,...",
                   help="also the trimap mIoU (DeepLab §4.1): mIoU of the pixels within W pixels (Euclidean) of a "
                        "ground-truth boundary, per W; widths are in pixels of the label maps, at whose full "
                        "resolution evaluation happens (JSON: \"trimap\": {\"W\": mIoU})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)

    p = predict_sub.add_parser("seg", help="label PNG and colour overlay per image")
    model_arguments(p)
    p.add_argument("--output", required=True,
                   help="output folder: <stem>.png (class indices) and <stem>_overlay.png per image; images that "
                        "share a stem get their folder's name in front (a_x.png, b_x.png), a name still taken a "
                        "counter (x-2.png); never one of the inputs" + output_help("the colour overlay"))
    add_video_arguments(p, "\"pixels\": {class name: pixel count} of the classes present")
    p.add_argument("images", nargs="+", help=IMAGES_HELP + INPUTS_HELP)
    p.set_defaults(func=cmd_predict)
