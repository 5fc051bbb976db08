"""`betterconv train cls`, `betterconv eval cls`, `betterconv predict cls`."""
from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2.functional import pil_to_tensor

from ..data.classification import classification_dataset, eval_transform, held_out_split, train_transform
from ..engine import Trainer, TrainConfig, prepare_output
from ..data.images import open_image
from ..errors import BetterConvError
from ..models import model_arguments
from ..models.info import IMAGENET_MEAN, IMAGENET_STD
from ..tasks.classification import (ModelEMA, class_names_for, classification_loss, ema_state_to_model,
                                    evaluate_classifier, predict_topk, recipe_for)
from ..weights import create_model, num_outputs, save_weights, weights_preprocessing
from ._common import (TRAIN_NUMBERS, add_data_arguments, add_model_arguments, add_run_arguments, add_train_arguments,
                      device_for, init_from, load_model, non_negative_float, parse_model_args, positive_float,
                      positive_int, report_skipped, unit_interval)
from ._common import IMAGES_HELP, input_images, tensorflow_weights

DEFAULT_INPUT_SIZE = 224
CROP_RATIO = 0.875  # --crop: 224 of 256, ImageNet's convention


def _dataset(spec: str, split: str, transform, skip_bad: bool, json_output: bool = False):
    return report_skipped(classification_dataset(spec, split, transform=transform, skip_bad=skip_bad),
                          f"{spec} {split}", json_output)


def _width_kwargs(model_name: str, width: float | None) -> dict[str, Any]:
    """`--width` as the model's own width keyword (MobileNets: width_mult, ShuffleNet: scale)."""
    if width is None:
        return {}
    accepted = model_arguments(model_name)
    for key in ("width_mult", "scale"):
        if key in accepted:
            return {key: width}
    raise BetterConvError(f"{model_name} has no width multiplier; --width applies to MobileNets and ShuffleNet")


def build_classifier(args: argparse.Namespace, num_classes: int) -> nn.Module:
    """`--model` for `num_classes` classes at `--width`, started from `--init-from` when given."""
    kwargs = {"num_classes": num_classes, **_width_kwargs(args.model, args.width), **parse_model_args(args.arg)}
    model = create_model(args.model, **kwargs)
    if args.init_from:
        init_from(model, args.init_from, args.trusted)
    return model


def train_config(args: argparse.Namespace, num_samples: int):
    """The TrainConfig and recipe of the model (see `tasks.classification.recipe_for`) with the command line's
    overrides; the learning rate scales with the batch unless --lr is given, and --warmup-epochs becomes steps of
    an epoch of `num_samples` images."""
    recipe = recipe_for(args.model)
    batch = args.batch_size or recipe.batch_size
    lr = args.lr if args.lr is not None else recipe.lr(batch)
    steps_per_epoch = max(1, min(num_samples // batch, args.max_steps_per_epoch or num_samples))

    def pick(name: str, default):
        value = getattr(args, name)
        return default if value is None else value

    return TrainConfig(epochs=pick("epochs", recipe.epochs), batch_size=batch, lr=lr,
                       optimizer=pick("optimizer", recipe.optimizer), momentum=pick("momentum", recipe.momentum),
                       weight_decay=pick("weight_decay", recipe.weight_decay),
                       rmsprop_decay=pick("rmsprop_decay", recipe.rmsprop_decay),
                       schedule=pick("schedule", recipe.schedule), lr_decay=pick("lr_decay", recipe.lr_decay),
                       warmup_steps=math.ceil(args.warmup_epochs * steps_per_epoch), workers=args.workers,
                       seed=args.seed, amp=not args.no_amp, sync_bn=args.sync_bn, eval_every=args.eval_every,
                       max_steps_per_epoch=args.max_steps_per_epoch, output=args.output), recipe


def cmd_train(args: argparse.Namespace) -> None:
    prepare_output(args.output, args.resume, args.overwrite)
    size = args.input_size
    train_set = _dataset(args.data, args.train_split, train_transform(size), args.skip_bad)
    val_split = args.val_split or held_out_split(args.data)
    val_set = _dataset(args.data, val_split, eval_transform(size), args.skip_bad)
    if val_set.class_names != train_set.class_names:
        raise BetterConvError(f"{args.data}: the {args.train_split} and {val_split} splits have different classes")
    torch.manual_seed(args.seed)  # the initial weights too follow --seed
    model = build_classifier(args, train_set.num_classes)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = device_for(args.device)
    config, recipe = train_config(args, len(train_set))
    ema = ModelEMA(model, decay=args.ema_decay) if args.ema else None
    overridden = [f"--{k.replace('_', '-')}" for k in ("optimizer", "lr", "momentum", "weight_decay", "rmsprop_decay",
                                                      "schedule", "lr_decay", "batch_size", "epochs")
                  if getattr(args, k) is not None]
    print(f"training: {config.optimizer}, lr {config.lr:g} for batch {config.batch_size}"
          + ("" if args.lr is not None else f" ({recipe.base_lr:g} x {config.batch_size}/{recipe.base_batch})")
          + f", {config.schedule} schedule, {config.epochs} epochs; recipe: {recipe.source}"
          + (f"; overridden by {', '.join(overridden)}" if overridden else ""))
    config.extra = {"task": "cls", "model": args.model, "model_kwargs": model.model_kwargs, "data": args.data,
                    "class_names": list(train_set.class_names), "input_size": size,
                    "label_smoothing": args.label_smoothing, "ema_decay": args.ema_decay if ema else None}

    def evaluate(m: nn.Module) -> dict:
        evaluated = ema.module if ema is not None else m
        r = evaluate_classifier(evaluated, val_set, device, args.eval_batch_size, max_images=args.eval_images)
        record = {"val_top1": r["top1"], "val_top5": r["top5"], "val_loss": r["loss"]}
        if ema is not None:  # the raw weights too, to see what the average adds
            record["val_top1_raw"] = evaluate_classifier(m, val_set, device, args.eval_batch_size,
                                                         max_images=args.eval_images)["top1"]
        return record

    trainer = Trainer(model, train_set, partial(classification_loss, label_smoothing=args.label_smoothing), config,
                      evaluate_fn=evaluate, best_metric="val_top1", device=device,
                      after_step=ema.update if ema is not None else None,
                      extra_state={"ema": ema} if ema is not None else None)
    if args.resume and trainer.resume(trusted=args.trusted):
        print(f"resuming from {Path(args.output) / 'last.pt'} at epoch {trainer.start_epoch + 1}")
    trainer.fit()
    if trainer.dist.is_main:
        export_weights(model, ema, Path(args.output), list(train_set.class_names), size)


def export_weights(model: nn.Module, ema, output: Path, class_names: list[str], size: int) -> Path:
    """`output/model.safetensors` from best.pt (else the final weights): the EMA weights when training kept them."""
    best = output / "best.pt"
    final = ema.module if ema is not None else model
    if best.is_file():
        ckpt = torch.load(best, map_location="cpu", weights_only=True)
        if ema is not None and "ema" in ckpt.get("extra_state", {}):
            final.load_state_dict(ema_state_to_model(ckpt["extra_state"]["ema"]))
        else:  # no EMA, or a best.pt from before --ema was turned on
            final = model
            final.load_state_dict(ckpt["model"])
    path = output / "model.safetensors"
    save_weights(final, path, model_name=model.model_name, model_kwargs=model.model_kwargs, class_names=class_names,
                 input_size=(3, size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    print(f"wrote {path}" + (" (EMA weights)" if final is not model else ""))
    return path


def _load_classifier(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    """The model with its weights, in eval mode, and its preprocessing (`weights_preprocessing`)."""
    if not args.weights:
        raise BetterConvError(f"{args.command} cls needs --weights: an untrained classifier's answers mean nothing")
    model = load_model(args).eval()
    return model, weights_preprocessing(args.model, args.weights)


def _input_size(args: argparse.Namespace, pre: dict[str, Any]) -> int:
    """`--input-size`, else the side of the input size that goes with the weights."""
    return int(args.input_size or pre["input_size"][-1])


def _transform(args: argparse.Namespace, pre: dict[str, Any]):
    """The evaluation transform the weights' model expects: a TensorFlow (Lite) classifier sees the whole image
    resized to its input (`tensorflow_weights`), others the ImageNet centre crop (`eval_transform`'s default);
    `--crop` / `--no-crop` decide instead when given."""
    crop = args.crop if args.crop is not None else (False if tensorflow_weights(pre, args.weights) else None)
    return eval_transform(_input_size(args, pre), pre["mean"], pre["std"],
                          crop_ratio=None if crop is None else (CROP_RATIO if crop else 1.0))


def cmd_eval(args: argparse.Namespace) -> None:
    model, pre = _load_classifier(args)
    size = _input_size(args, pre)
    dataset = _dataset(args.data, args.split, _transform(args, pre), args.skip_bad, args.json)
    classes = num_outputs(model)
    if classes != dataset.num_classes:
        raise BetterConvError(f"{args.weights}: the model has {classes} classes, {args.data} {args.split} has "
                              f"{dataset.num_classes}")
    recorded = pre["class_names"]
    if recorded and list(recorded) != list(dataset.class_names):
        if sorted(recorded) == sorted(dataset.class_names):  # the same classes in another order: relabel
            _relabel(dataset, [recorded.index(name) for name in dataset.class_names])
        else:
            print(f"warning: the class names of {args.weights} differ from those of {args.data}; "
                  "matching them by index", file=sys.stderr)
    device = device_for(args.device)
    result = evaluate_classifier(model, dataset, device, args.batch_size, max_images=args.max_images,
                                 workers=args.workers)
    result.update(split=args.split, data=args.data, input_size=size)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"top-1 {100 * result['top1']:.2f}   top-{result['k']} {100 * result['top5']:.2f}   loss "
          f"{result['loss']:.4f}   ({result['count']} images of {args.data} {args.split} at {size}x{size})")


def _relabel(dataset, mapping: list[int]) -> None:
    """Make the dataset's labels the model's class indices (`mapping[dataset label]`)."""
    if hasattr(dataset, "samples"):
        dataset.samples = [(path, mapping[label]) for path, label in dataset.samples]
    else:
        dataset._labels = torch.as_tensor(mapping)[torch.as_tensor(dataset._labels)].numpy()


def cmd_predict(args: argparse.Namespace) -> None:
    images = input_images(args.images)
    model, pre = _load_classifier(args)
    names = class_names_for(num_outputs(model), pre["class_names"])
    transform = _transform(args, pre)
    device = device_for(args.device)
    model.to(device)
    results = []
    for path in images:
        image = transform(pil_to_tensor(open_image(path, mode="RGB", exif=True))).unsqueeze(0).to(device)
        with torch.no_grad():
            probs, indices = predict_topk(model, image, args.top_k)
        top = [{"class": names[i], "index": i, "probability": p} for p, i in zip(probs[0].tolist(),
                                                                                 indices[0].tolist())]
        results.append({"image": str(path), "top": top})
        if not args.json:
            print(path)
            for row in top:
                print(f"  {row['probability']:.4f}  {row['class']}")
    if args.json:
        print(json.dumps(results, indent=2))


DATA_HELP = "folder:PATH (class folders), fashion-mnist:PATH or idx:PATH (MNIST-format files)"


def add_parsers(train_sub, eval_sub, predict_sub) -> None:
    """Register `train cls`, `eval cls` and `predict cls` on the task groups' sub-command parsers."""
    p = train_sub.add_parser("cls", help="train an image classifier (MobileNets: the MobileNetV2 paper's recipe)")
    add_train_arguments(p, "runs/cls", "start from weights where names and shapes match (fine-tuning)")
    add_data_arguments(p, DATA_HELP)
    p.add_argument("--train-split", default="train", help="the split to train on (default: train)")
    p.add_argument("--val-split", help="default: val where a folder dataset has one, else test")
    p.add_argument("--input-size", type=TRAIN_NUMBERS["input-size"], default=DEFAULT_INPUT_SIZE,
                   help="training crop (default 224)")
    p.add_argument("--width", type=partial(positive_float, what="the width multiplier"),
                   help="width multiplier (MobileNets' width_mult, ShuffleNet's scale)")
    p.add_argument("--epochs", type=TRAIN_NUMBERS["epochs"], help="override the recipe (MobileNets 300, others 90)")
    p.add_argument("--batch-size", type=TRAIN_NUMBERS["batch-size"],
                   help="override the recipe (MobileNets 96, others 256)")
    p.add_argument("--lr", type=TRAIN_NUMBERS["lr"],
                   help="override the recipe's rate (default: 0.045 x batch/96 for MobileNets, 0.1 x batch/256 "
                        "otherwise)")
    p.add_argument("--optimizer", choices=("sgd", "rmsprop", "adamw"), help="override the recipe")
    p.add_argument("--schedule", choices=("exponential", "cosine", "poly", "constant"),
                   help="learning-rate schedule; overrides the recipe")
    for name, kind in (("momentum", TRAIN_NUMBERS["momentum"]), ("weight-decay", TRAIN_NUMBERS["weight-decay"]),
                       ("rmsprop-decay", partial(unit_interval, what="RMSProp's decay")),
                       ("lr-decay", partial(positive_float, what="the exponential schedule's decay"))):
        p.add_argument(f"--{name}", type=kind, help="override the recipe")
    p.add_argument("--warmup-epochs", type=partial(non_negative_float, what="warm-up epochs"), default=0.0,
                   help="linear learning-rate warm-up")
    p.add_argument("--label-smoothing", type=partial(unit_interval, what="label smoothing"), default=0.0,
                   help="e.g. 0.1 (default 0: none)")
    p.add_argument("--ema", action="store_true", help="keep an exponential moving average of the weights; it is "
                                                      "what gets evaluated and exported")
    p.add_argument("--ema-decay", type=partial(unit_interval, what="the EMA decay"), default=0.9999,
                   help="decay of the moving average (default 0.9999)")
    p.add_argument("--eval-images", type=TRAIN_NUMBERS["eval-images"],
                   help="evaluate on N held-out images spread evenly over the split")
    p.add_argument("--eval-batch-size", type=partial(positive_int, what="the evaluation batch size"), default=64,
                   help="batch size of the evaluations (default 64)")
    add_run_arguments(p)
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.set_defaults(func=cmd_train)

    def model_arguments(p: argparse.ArgumentParser) -> None:
        add_model_arguments(p)
        p.add_argument("--input-size", type=int,
                       help="input side (default: the size recorded in the weights, else the model's)")
        p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=None,
                       help="--crop: resize the short side to input/0.875 and take the centre (ImageNet's "
                            "convention); --no-crop: resize the whole image to the input. Default: as the weights' "
                            "model expects: no crop for TensorFlow (Lite) classifiers, else the crop above 64 pixels")
        p.add_argument("--json", action="store_true", help="print JSON")

    p = eval_sub.add_parser("cls", help="top-1 / top-5 accuracy of a classifier")
    model_arguments(p)
    add_data_arguments(p, DATA_HELP)
    p.add_argument("--split", default="test", help="the split to evaluate (default: test)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    p.add_argument("--max-images", type=int, help="N images spread evenly over the split")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0: in this process)")
    p.set_defaults(func=cmd_eval)

    p = predict_sub.add_parser("cls", help="the most likely classes of each image, with probabilities")
    model_arguments(p)
    p.add_argument("--top-k", type=int, default=5, help="classes to list per image (default 5)")
    p.add_argument("images", nargs="+", help=IMAGES_HELP)
    p.set_defaults(func=cmd_predict)
