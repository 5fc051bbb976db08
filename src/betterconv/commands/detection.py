"""`betterconv anchors`, `betterconv train det`, `betterconv eval det`, `betterconv predict det`."""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image

from ..files import write_atomic
from ..data.class_names import default_class_names
from ..data.det_transforms import eval_transform, train_transform, unresize_boxes
from ..data.detection import DataWarning, collate_detection, detection_dataset
from ..deploy import NcnnModel, export_ncnn
from ..engine import Trainer, TrainConfig, prepare_output
from ..data.images import open_image
from ..errors import BetterConvError
from ..models import DetRecipe, model_arguments, model_info
from ..models.info import DARKNET_MEAN, DARKNET_STD, TF_MEAN
from ..tasks.anchors import (FASTER_RCNN_SHORT_SIDE, anchors_report, compare_anchors, dataset_boxes,
                             faster_rcnn_anchors, kmeans_anchors)
from ..tasks.detection import (check_slicing, detect_dataset, evaluate_detector, ground_truth_entry, model_outputs,
                               postprocess, sliced_detections, to_coco_results)
from ..tasks.detection_metrics import coco_image_ids, evaluate_detections
from ..tasks.region_loss import DetectionLoss
from ..tasks.drawing import draw_detections
from ..weights import backbone_classifier, backbone_keywords, create_model, save_weights, weights_preprocessing
from ._common import (TRAIN_NUMBERS, add_data_arguments, add_model_arguments, add_run_arguments,
                      add_train_arguments, device_for, init_from, load_backbone, load_model,
                      parse_model_args, positive_int, report_skipped)
from ._common import (IMAGES_HELP, distinct_stems, input_images, output_folder, refuse_overwriting, warn)
from ._video import INPUTS_HELP, add_video_arguments, check_video_outputs, output_help, predict_video, video_input


def _dataset(spec: str, split: str, transform, skip_bad: bool, json_output: bool = False):
    """The dataset, its `DataWarning`s printed as warning lines on stderr and its skipped samples counted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        dataset = detection_dataset(spec, split, transform=transform, skip_bad=skip_bad)
    for w in caught:
        if issubclass(w.category, DataWarning):
            warn(f"warning: {w.message}")
        else:  # not ours to judge: back to the warnings machinery, which prints on stderr
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return report_skipped(dataset, f"{spec} {split}", json_output)


def _split_note(spec: str, split: str) -> str | None:
    """What to tell the user when a YOLO dataset has no `split` of its own and every split reads the same images
    (a folder without images/{split}/ falls back to images/, a list file is the same list for any split): scoring
    it scores the training images."""
    kind, _, path = spec.partition(":")
    root = Path(path).expanduser()
    if kind.strip().lower() != "yolo" or split in ("train", "train2017"):
        return None
    if root.is_file() and root.suffix.lower() not in (".yaml", ".yml"):
        return (f"warning: {root} is one list of images for every split: the {split!r} images scored are the ones "
                "it trains on")
    if root.is_dir() and len(list(root.glob("*.yaml")) + list(root.glob("*.yml"))) != 1:
        folders = [root / "images" / s for s in ([split] + ([f"{split}2017"] if split in ("train", "val") else []))]
        if not any(f.is_dir() for f in folders):
            return (f"warning: {root} has no {split} split ({folders[0]} is missing): scoring all the images under "
                    f"{root / 'images'}, the training images included")
    return None


def cmd_anchors(args: argparse.Namespace) -> None:
    dataset = _dataset(args.data, args.split, None, args.skip_bad, args.json)
    wh, sizes = dataset_boxes(dataset, image_sizes=args.compare)
    source = f"{args.data} {args.split}"
    if not args.json:
        print(anchors_report(wh, args.k, args.input_size, args.compare, sizes, source=source))
        return
    if args.input_size % 32:
        raise BetterConvError(f"input size must be a multiple of 32, got {args.input_size}")
    clusters = kmeans_anchors(wh, args.k, "iou")
    result: dict[str, Any] = {
        "source": source, "boxes": len(wh), "k": args.k, "input_size": args.input_size,
        "avg_iou": float(clusters.avg_iou),
        "anchors": [[float(w), float(h)] for w, h in clusters.anchors(args.input_size)]}
    if args.compare:
        result["compare"] = [{"method": row.method, "k": row.k, "avg_iou": float(row.avg_iou)}
                             for row in compare_anchors(wh, tuple(sorted({5, 9, args.k})), image_sizes=sizes)]
    print(json.dumps(result, indent=2))


def _anchor_kwargs(args: argparse.Namespace, dataset) -> dict[str, Any]:
    if args.anchors == "hand":
        # YOLOv2 §2's starting point, "hand picked priors": Faster R-CNN's 9 anchors, from its 600-pixel frame to
        # the input, in grid cells of 32 pixels
        anchors = faster_rcnn_anchors() * (args.input_size / FASTER_RCNN_SHORT_SIDE) / 32
        return {"anchors": [tuple(float(v) for v in a) for a in anchors]}
    if args.anchors != "auto":
        return {}
    wh, _ = dataset_boxes(dataset)
    k = args.num_anchors
    anchors = kmeans_anchors(wh, k).anchors(args.input_size)
    warn(f"anchors (IoU k-means, k={k}, grid units at {args.input_size}): "
         + ", ".join(f"{w:.3f}x{h:.3f}" for w, h in anchors))
    return {"anchors": [tuple(float(v) for v in a) for a in anchors]}


def build_detector(args: argparse.Namespace, dataset) -> nn.Module:
    """`--model` for the dataset's classes with the `--anchors` asked for, its backbone from `--backbone-weights`
    or all of it from `--init-from`."""
    kwargs = {"num_classes": dataset.num_classes, **_anchor_kwargs(args, dataset), **parse_model_args(args.arg)}
    classifier = None
    if args.backbone_weights:
        classifier = backbone_classifier(args.model, args.backbone_weights, args.trusted)
        # what the classifier's weights impose (TensorFlow padding) and, for a detector that normalises its own
        # input, the normalisation they were trained with; --arg still wins
        implied = backbone_keywords(args.model, classifier)
        if "input_normalization" in model_arguments(args.model):
            mean = weights_preprocessing(model_info(args.model).backbone_classifier, args.backbone_weights)["mean"]
            implied["input_normalization"] = "tensorflow" if tuple(mean) == TF_MEAN else "imagenet"
        kwargs = {**implied, **kwargs}
    model = create_model(args.model, **kwargs)
    if classifier is not None:
        load_backbone(model, classifier, args.backbone_weights)
    if args.init_from:
        init_from(model, args.init_from, args.trusted)
    return model


def _recipe(model_name: str) -> dict[str, Any]:
    """The training defaults recorded for a detector (its `ModelInfo.recipe`), as `TrainConfig` keywords."""
    recipe = model_info(model_name).recipe
    if not isinstance(recipe, DetRecipe):
        raise BetterConvError(f"{model_name} is not a detector")
    return recipe.as_config()


def cmd_train(args: argparse.Namespace) -> None:
    prepare_output(args.output, args.resume, args.overwrite)
    recipe = _recipe(args.model)
    recipe.update({k: getattr(args, k) for k in ("optimizer", "lr", "momentum", "weight_decay", "schedule",
                                                 "batch_size", "epochs") if getattr(args, k) is not None})
    if args.milestones is not None:
        recipe["milestones"] = tuple(args.milestones)
    if args.warmup_steps is not None:
        recipe["warmup_steps"] = args.warmup_steps
    load_size = max(608, args.input_size) if args.multiscale else args.input_size
    augment = train_transform(load_size, jitter=args.jitter, hsv=not args.no_hsv)
    train_set = _dataset(args.data, args.train_split, augment, args.skip_bad)
    val_set = _dataset(args.data, args.val_split, eval_transform(args.input_size), args.skip_bad)
    model = build_detector(args, train_set)
    device = device_for(args.device)

    def evaluate(m: nn.Module) -> dict:
        r = evaluate_detector(m, val_set, args.input_size, device, max_images=args.eval_images, coco=False)
        return {"val_voc07_map": r["voc07_map"], "val_voc_map": r["voc_map"]}

    config = TrainConfig(**recipe, workers=args.workers, seed=args.seed, amp=not args.no_amp, sync_bn=args.sync_bn,
                         eval_every=args.eval_every, max_steps_per_epoch=args.max_steps_per_epoch,
                         output=args.output, grad_clip=10.0,
                         extra={"task": "det", "model": args.model, "model_kwargs": model.model_kwargs,
                                "data": args.data, "class_names": list(train_set.class_names),
                                "input_size": args.input_size, "multiscale": args.multiscale})
    per_process = config.batch_size // max(1, int(os.environ.get("WORLD_SIZE", "1")))
    loss = DetectionLoss(model, per_process, args.multiscale, args.seed)
    trainer = Trainer(model, train_set, loss, config, evaluate_fn=evaluate, collate_fn=collate_detection,
                      best_metric="val_voc_map", device=device)
    if args.resume and trainer.resume(trusted=args.trusted):
        print(f"resuming from {Path(args.output) / 'last.pt'} at epoch {trainer.start_epoch + 1}")
    trainer.fit()
    if trainer.dist.is_main:
        best = Path(args.output) / "best.pt"
        if best.is_file():
            model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
        save_weights(model, Path(args.output) / "model.safetensors", class_names=list(train_set.class_names),
                     input_size=(3, args.input_size, args.input_size), mean=DARKNET_MEAN, std=DARKNET_STD)
        print(f"wrote {Path(args.output) / 'model.safetensors'}")


def _load_detector(args: argparse.Namespace) -> nn.Module:
    if not args.weights:
        raise BetterConvError(f"{args.command} det needs --weights" + (", or --predictions FILE" if
                                                                      args.command == "eval" else ""))
    return load_model(args).eval()


def cmd_eval(args: argparse.Namespace) -> None:
    if args.slice:
        check_slicing(args.slice, args.overlap)
    note = _split_note(args.data, args.split)
    if note:
        warn(note)
    dataset = _dataset(args.data, args.split, eval_transform(args.input_size), args.skip_bad, args.json)
    if args.predictions:
        detections, ground_truth = _detections_from_json(Path(args.predictions), dataset, args.input_size,
                                                         args.max_images)
    else:
        model = _load_detector(args)
        forward, device = None, device_for(args.device)
        if args.engine == "ncnn":
            if args.device not in (None, "cpu"):
                raise BetterConvError(f"--engine ncnn runs on the CPU; drop --device {args.device}")
            forward, device = _ncnn_forward(model, args.input_size), torch.device("cpu")
        detections, ground_truth = detect_dataset(model.to(device), dataset, args.input_size, device,
                                                  conf_thresh=args.conf_thresh, max_images=args.max_images,
                                                  forward=forward, slice_size=args.slice, overlap=args.overlap)
    n = len(detections)
    result = evaluate_detections(detections, ground_truth, dataset.num_classes, class_names=dataset.class_names,
                                 image_ids=dataset.image_ids[:n], category_ids=getattr(dataset, "category_ids", None),
                                 pixel_inclusive=False)
    if args.json:
        print(json.dumps(result, indent=2))
        return

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    print(f"VOC07 mAP {pct(result['voc07_map'])}  VOC mAP {pct(result['voc_map'])}  COCO AP {pct(result['coco_map'])}"
          f"  AP50 {pct(result['coco_map50'])}  AP75 {pct(result['coco_map75'])}  APs {pct(result['coco_map_small'])}"
          f"  APm {pct(result['coco_map_medium'])}  APl {pct(result['coco_map_large'])}  ({n} images)")
    for row in result["per_class"]:
        if row["voc_ap"] is not None:
            print(f"  {row['name']:16s} VOC07 {pct(row['voc07_ap'])}  VOC {pct(row['voc_ap'])}")


def _detections_from_json(path: Path, dataset, input_size: int,
                          limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """Per-image detections from a COCO results file (image_id = COCO id, or the file stem for YOLO data; see
    DETECTIONS_FORMAT) and the dataset's ground truth in original pixels, for the first `limit` images (all without
    one); detections of later images are left out."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BetterConvError(f"{path}: not a COCO results file ({type(e).__name__})") from None
    if not isinstance(results, list):
        raise BetterConvError(f"{path}: a COCO results file is a JSON list")
    category_ids = getattr(dataset, "category_ids", None) or [c + 1 for c in range(dataset.num_classes)]
    label_of = {cid: i for i, cid in enumerate(category_ids)}
    ids = [str(i) for i in dataset.image_ids]
    index = {i: n for n, i in enumerate(ids)}  # the id as the dataset has it (COCO id or file stem) ...
    if not all(isinstance(i, int) for i in dataset.image_ids):  # ... or the integer COCO id a stem maps to
        index.update({str(number): index[stem] for stem, number in coco_image_ids(ids).items()})
    count = min(limit or len(ids), len(ids))
    per_image: list[list] = [[] for _ in ids]
    for k, r in enumerate(results):
        if not isinstance(r, dict):
            raise BetterConvError(f"{path}: entry {k} is not a JSON object ({json.dumps(r)[:80]})")
        if not isinstance(r.get("category_id"), int) or r["category_id"] not in label_of:
            kind = "the annotation file's category ids" if getattr(dataset, "category_ids", None) else \
                f"class index + 1, 1-{dataset.num_classes}"
            raise BetterConvError(f"{path}: entry {k} has category_id {json.dumps(r.get('category_id'))[:20]}, not "
                                  f"one of this dataset's ({kind})")
        try:
            n, label = index[str(r["image_id"])], label_of[r["category_id"]]
            x, y, w, h = (float(v) for v in r["bbox"])
            per_image[n].append((x, y, x + w, y + h, float(r["score"]), label))
        except (KeyError, TypeError, ValueError):
            raise BetterConvError(f"{path}: entry {k} has an unknown image_id, or no bbox/score "
                                  f"({json.dumps(r)[:80]})") from None
    detections = []
    for rows in per_image[:count]:
        t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
        detections.append({"boxes": t[:, :4], "scores": t[:, 4], "labels": t[:, 5].long()})
    ground_truth = []
    for i in range(count):
        _, target = dataset[i]
        size = tuple(int(v) for v in target["orig_size"])
        ground_truth.append(ground_truth_entry(target, unresize_boxes(target["boxes"], size, input_size, clip=False)))
    return detections, ground_truth


def _ncnn_forward(model: nn.Module, input_size: int):
    """`model` exported to ncnn at `input_size` (float32, checked against PyTorch) and loaded: an `NcnnModel`
    (ncnn holds the weights in memory; the files are removed)."""
    with tempfile.TemporaryDirectory(prefix="betterconv-ncnn-") as folder:
        param = Path(folder) / "model.param"
        export_ncnn(model, param, (3, input_size, input_size))
        return NcnnModel(param)


DETECTIONS_FORMAT = """\
detections.json is a COCO results file: a JSON list of {"image_id", "category_id", "bbox": [x, y, width, height],
"score"}, boxes in pixels of the image as displayed (EXIF orientation applied; with --data, in the raw pixel order
the dataset's labels use). With --data, the ids are that dataset's, so that `betterconv eval det --predictions
detections.json --data (the same)` scores it: COCO data: category_id is the annotation file's category id and
image_id its image id (for the images of the dataset); YOLO and VOC data: category_id = class index + 1 and
image_id the file's stem. Without --data: category_id = class index + 1 (the YOLO/VOC convention) and
image_id = the output stem: the file's stem (a digit-only stem, as COCO's 000000000009, as a number), with the
folder's name in front for images that share a stem, and a counter where a name is still taken, so that every
image has its own id and drawing."""


def _dataset_ids(args: argparse.Namespace, images: list[Path], stems: list[str],
                 num_classes: int) -> tuple[list[int], list[int | str]]:
    """The category id of each class and the image id of each image (DETECTIONS_FORMAT)."""
    if not args.data:
        return list(range(1, num_classes + 1)), list(stems)
    dataset = _dataset(args.data, args.split, None, False)
    category_ids = list(getattr(dataset, "category_ids", None) or range(1, dataset.num_classes + 1))
    if len(category_ids) != num_classes:
        raise BetterConvError(f"the model has {num_classes} classes, {args.data} {args.split} has "
                              f"{len(category_ids)}")
    by_file = {os.path.realpath(image): image_id for (image, _), image_id in zip(dataset.files, dataset.image_ids)}
    ids = [by_file.get(os.path.realpath(path), stem) for path, stem in zip(images, stems)]
    seen: dict[str, Path] = {}
    for path, image_id in zip(images, ids):
        key = str(int(image_id)) if str(image_id).isascii() and str(image_id).isdigit() else str(image_id)
        if key in seen:
            raise BetterConvError(f"{path} and {seen[key]} would both be image_id {image_id}; give them apart")
        seen[key] = path
    return category_ids, ids


def _detect(forward, model: nn.Module, pixels: torch.Tensor, args: argparse.Namespace, resize_to_input,
            device: torch.device) -> dict[str, torch.Tensor]:
    """The detections in one image, `pixels` (3, H, W) uint8 (a photo or a video frame): boxes in its pixels,
    scores and labels, on the CPU."""
    if args.slice:
        det = sliced_detections(forward, model, pixels.to(device).float() / 255, args.input_size, args.slice,
                                args.overlap, args.conf_thresh, args.nms_iou)
    else:
        x = resize_to_input(tv_tensors.Image(pixels))[None].to(device)  # (1, 3, S, S) in [0, 1], as in eval
        with torch.no_grad():
            det = postprocess(model_outputs(forward(x)), model.head_anchors(), model.num_classes, args.input_size,
                              args.conf_thresh, args.nms_iou, image_sizes=[tuple(pixels.shape[-2:])],
                              location=getattr(model, "location", "sigmoid"))[0]
    return {k: v.cpu() for k, v in det.items()}


def cmd_predict(args: argparse.Namespace) -> None:
    if args.slice:
        check_slicing(args.slice, args.overlap)
    if args.engine == "ncnn" and args.device not in (None, "cpu"):
        raise BetterConvError(f"--engine ncnn runs on the CPU; drop --device {args.device}")
    # the cheap checks first: nothing is built or written when an output would replace an input
    video = video_input(args.images, args)
    if video is not None:
        if args.data:
            raise BetterConvError("--data: a video's frames have no dataset ids; drop it")
        info = check_video_outputs(args, video)
    else:
        images = input_images(args.images)
        output = output_folder(args.output)
        stems = distinct_stems(images, ("{}.png",))
        refuse_overwriting([output / f"{stem}.png" for stem in stems] + [output / "detections.json"],
                           [*images, args.weights])
    model = _load_detector(args)
    device = torch.device("cpu") if args.engine == "ncnn" else device_for(args.device)
    forward = _ncnn_forward(model, args.input_size) if args.engine == "ncnn" else model.to(device)
    resize_to_input = eval_transform(args.input_size)
    names = weights_preprocessing(args.model, args.weights)["class_names"] or \
        default_class_names(model.num_classes) or [str(c) for c in range(model.num_classes)]

    def detect(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return _detect(forward, model, pixels, args, resize_to_input, device)

    if video is not None:
        # one JSON line per frame: its detections as COCO results entries, image_id = the frame's index and
        # category_id = class index + 1, as `predict det` writes them for images without --data
        categories = list(range(1, model.num_classes + 1))
        predict_video(args, info, detect, lambda frame, det: draw_detections(frame, det, names),
                      lambda index, det: {"detections": to_coco_results([det], [index], categories)})
        return
    category_ids, ids = _dataset_ids(args, images, stems, model.num_classes)
    detections = []
    for path, stem in zip(images, stems):
        # photos as displayed; a dataset's images as its loader reads them (its boxes are in raw pixel order)
        pixels = pil_to_tensor(open_image(path, mode="RGB", exif=not args.data))  # (3, H, W) uint8
        det = detect(pixels)
        buf = io.BytesIO()
        to_pil_image(draw_detections(pixels, det, names)).save(buf, format="PNG")
        write_atomic(output / f"{stem}.png", buf.getvalue())
        detections.append(det)
        print(f"{path}: {len(det['scores'])} detections -> {output / f'{stem}.png'}")
    results = to_coco_results(detections, ids, category_ids)
    write_atomic(output / "detections.json", json.dumps(results).encode())
    print(f"wrote {output / 'detections.json'} ({len(results)} detections, category_id = "
          + (f"{args.data}'s category ids)" if args.data else "class index + 1)"))


DATA_HELP = "voc:, coco: or yolo: followed by the dataset root"


def add_parsers(sub, train_sub, eval_sub, predict_sub) -> None:
    """Register `anchors` on the top-level sub-command parsers and `train det`, `eval det`, `predict det` on the
    task groups'."""
    p = sub.add_parser("anchors", help="YOLOv2 dimension clusters: k-means with 1 - IoU on the boxes of a dataset")
    add_data_arguments(p, DATA_HELP)
    p.add_argument("--split", default="train", help="the split whose boxes are clustered (default: train)")
    p.add_argument("-k", type=int, default=5, help="number of clusters (default 5)")
    p.add_argument("--input-size", type=int, default=416, help="network input size the anchors are for (default 416)")
    p.add_argument("--compare", action="store_true",
                   help="YOLOv2 Table 1: IoU vs squared-Euclidean clusters vs hand-picked anchors, k = 5 and 9")
    p.add_argument("--json", action="store_true",
                   help="print JSON: boxes, average IoU, anchors (grid cells) and with --compare the table's rows")
    p.set_defaults(func=cmd_anchors)

    p = train_sub.add_parser("det", help="train YOLOv2 with the paper's recipe")
    add_train_arguments(p, "runs/det", "start from weights where names and shapes match (fine-tuning)")
    add_data_arguments(p, DATA_HELP)
    p.add_argument("--train-split", default="train", help="the split to train on (default: train)")
    p.add_argument("--val-split", default="val", help="the split to evaluate on after epochs (default: val)")
    p.add_argument("--input-size", type=TRAIN_NUMBERS["input-size"], default=416,
                   help="network input size (default 416)")
    p.add_argument("--no-multiscale", dest="multiscale", action="store_false",
                   help="train at --input-size only (default: a new size from 320-608 every 10 batches)")
    p.add_argument("--jitter", type=float, default=0.3,
                   help="darknet's crop jitter: each side moves by up to this fraction (cfg `jitter`, YOLOv2: 0.3)")
    p.add_argument("--no-hsv", action="store_true", help="no hue/saturation/exposure augmentation")
    p.add_argument("--anchors", choices=("default", "auto", "hand"), default="default",
                   help="auto: IoU k-means on the training boxes (YOLOv2 §2 dimension clusters); hand: Faster "
                        "R-CNN's 9 hand-picked anchors (the ablation ladder's start)")
    p.add_argument("--num-anchors", type=partial(positive_int, what="the number of anchors"), default=5,
                   help="anchors that --anchors auto clusters (default 5)")
    p.add_argument("--backbone-weights", help="Darknet-19 classifier weights (any format) for the backbone")
    for name in ("epochs", "batch-size", "lr", "momentum", "weight-decay", "warmup-steps"):
        p.add_argument(f"--{name}", type=TRAIN_NUMBERS[name], help="override the recipe")
    p.add_argument("--milestones", type=partial(positive_int, what="a milestone epoch"), nargs="*",
                   help="epochs where the step schedule divides the rate by 10")
    p.add_argument("--optimizer", choices=("sgd", "rmsprop", "adamw"), help="override the recipe")
    p.add_argument("--schedule", choices=("poly", "cosine", "constant", "exponential", "step"),
                   help="learning-rate schedule; overrides the recipe")
    p.add_argument("--eval-images", type=TRAIN_NUMBERS["eval-images"],
                   help="evaluate on the first N validation images only")
    add_run_arguments(p)
    p.set_defaults(func=cmd_train)

    def model_args(p: argparse.ArgumentParser) -> None:
        add_model_arguments(p)
        p.add_argument("--input-size", type=int, default=416, help="network input size (default 416)")
        p.add_argument("--conf-thresh", type=float, default=0.005,
                       help="keep detections at least this confident (default: 0.005 for eval, 0.25 for predict)")
        p.add_argument("--engine", choices=("pytorch", "ncnn"), default="pytorch",
                       help="ncnn: export the model to ncnn (float32, checked against PyTorch) and run that, on the "
                            "CPU")
        p.add_argument("--slice", type=positive_int, metavar="N",
                       help="sliced inference (SAHI): N x N tiles of the original image, each resized to the input "
                            "like a whole image, merged with the whole image's detections by NMS")
        p.add_argument("--overlap", type=float, default=0.2,
                       help="with --slice: the tiles' overlap, a fraction of their side (default 0.2)")

    p = eval_sub.add_parser("det", help="VOC07 11-point and all-point mAP, COCO AP (pycocotools)")
    model_args(p)
    add_data_arguments(p, DATA_HELP)
    p.add_argument("--split", default="val", help="the split to evaluate (default: val)")
    p.add_argument("--predictions",
                   help="a COCO results JSON to evaluate instead of a model (as `predict det --data` writes it: "
                        "COCO data: the annotation file's category ids; YOLO/VOC: class index + 1)")
    p.add_argument("--max-images", type=int, help="evaluate the first N images only")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)

    p = predict_sub.add_parser("det", help="boxes and labels drawn on each image, and one COCO results JSON",
                               epilog=DETECTIONS_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args(p)
    p.add_argument("--nms-iou", type=float, default=0.45, help="non-maximum suppression IoU threshold (default 0.45)")
    p.add_argument("--output", required=True,
                   help="output folder of the drawn images (<stem>.png) and detections.json; never one of the inputs"
                        + output_help("boxes, class names and scores drawn"))
    p.add_argument("--data", metavar="KIND:PATH",
                   help="the dataset the images come from (" + DATA_HELP + "): detections.json then uses its "
                        "category and image ids, as `eval det --predictions` reads them (see below)")
    p.add_argument("--split", default="val", help="the split of --data (default: val)")
    add_video_arguments(p, "\"detections\": [COCO results entries, image_id = the frame's index]")
    p.add_argument("images", nargs="+", help=IMAGES_HELP + INPUTS_HELP)
    p.set_defaults(func=cmd_predict, conf_thresh=0.25)
