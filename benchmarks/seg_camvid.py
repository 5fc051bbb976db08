"""CamVid segmentation benchmarks (issue 4) on an ImageNet MobileNetV2 backbone, evaluated on the 233 test images
at full 360x480 resolution (DeepLabv3 at output stride 16 and 8), with the training curve. Every run uses the same
recipe (SGD momentum 0.9, poly learning rate from 0.007, weight decay 4e-5), so heads can be compared:

  (a) FCN-32s vs FCN-16s vs FCN-8s, same MobileNetV2 backbone and schedule (VGG16 from scratch is out of reach of
      a 2-core CPU):
    python benchmarks/seg_camvid.py --experiment fcn32s --model fcn32s_mobilenet_v2 --epochs 12 ...

  (c) the ImageNet MobileNetV2 of Google's TFLite file as backbone vs from scratch (head: 1x1 + image pooling, the
      mobile variant of MobileNetV2 §6.3):
    python benchmarks/seg_camvid.py --experiment pretrained --epochs 20 --crop-size 256 --batch-size 8
    python benchmarks/seg_camvid.py --experiment scratch --scratch --epochs 20 --crop-size 256 --batch-size 8
    python benchmarks/seg_camvid.py --experiment pretrained_mfb --class-weights median-frequency ...
  (b) the head ablation, pretrained backbone: no ASPP / ASPP (6, 12, 18) / ASPP + image pooling:
    python benchmarks/seg_camvid.py --experiment no_aspp --atrous-rates "" --no-image-pooling ...
    python benchmarks/seg_camvid.py --experiment aspp --atrous-rates 6,12,18 --no-image-pooling ...
    python benchmarks/seg_camvid.py --experiment aspp_pool --atrous-rates 6,12,18 ...

Writes benchmarks/results/seg_camvid_<experiment>.json (figures, curve, model, command, date, CPU budget).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="name of the run and of its results file")
    p.add_argument("--model", default="deeplabv3_mobilenet_v2",
                   choices=("deeplabv3_mobilenet_v2", "fcn32s_mobilenet_v2", "fcn16s_mobilenet_v2",
                            "fcn8s_mobilenet_v2"))
    p.add_argument("--train-split", default="train", help='"train", or "train+val" for a final model')
    p.add_argument("--scratch", action="store_true", help="random backbone instead of the ImageNet one")
    p.add_argument("--atrous-rates", default="", help="ASPP's atrous rates at output stride 16; '' = ASPP off")
    p.add_argument("--no-image-pooling", action="store_true")
    p.add_argument("--class-weights", choices=("none", "median-frequency"), default="none")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.007)
    p.add_argument("--eval-images", type=int, default=25, help="validation images per epoch (for the curve)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--grad-clip", type=float, help="clip the gradients' global norm (FCN-8s diverged without)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--ms-flip-output-stride", type=int, choices=(8, 16),
                   help="also evaluate with scales 0.5-1.75 and flips at this output stride (DeepLabv3 only, ~12x)")
    p.add_argument("--output", default=str(ROOT / "runs"))
    args = p.parse_args()
    if not (DATA / "camvid").is_dir():
        sys.exit(f"CamVid not found at {DATA / 'camvid'}")
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from betterconv.files import write_atomic
    from betterconv.cli import main as cli
    from betterconv.data.segmentation import segmentation_dataset
    from betterconv.data.transforms import eval_transform
    from betterconv import create_model
    from betterconv.tasks.segmentation import evaluate_segmentation

    run = Path(args.output) / f"seg_camvid_{args.experiment}"
    deeplab = args.model.startswith("deeplabv3")
    argv = ["train", "seg", "--model", args.model, "--data", f"camvid:{DATA / 'camvid'}",
            "--train-split", args.train_split,
            # a final model trains on val too, so its curve is drawn on (a subset of) the test images; the model is
            # the last epoch's either way, never selected on the curve
            *(("--val-split", "test", "--export", "last") if "val" in args.train_split.split("+") else ()),
            "--epochs", str(args.epochs), "--crop-size", str(args.crop_size), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--momentum", "0.9", "--schedule", "poly", "--weight-decay", "4e-5",
            "--eval-images", str(args.eval_images), "--workers", str(args.workers),
            "--channels-last", "--output", str(run), *(["--resume"] if (run / "last.pt").is_file() else []),
            "--class-weights", args.class_weights]
    if args.grad_clip:
        argv += ["--grad-clip", str(args.grad_clip)]
    if args.warmup_steps:
        argv += ["--warmup-steps", str(args.warmup_steps)]
    if deeplab:
        argv += ["--arg", f"atrous_rates=({args.atrous_rates}{',' if args.atrous_rates else ''})",
                 "--arg", f"image_pooling={not args.no_image_pooling}"]
    if not args.scratch:
        argv += ["--backbone-weights", str(DATA / "coral" / "mobilenet_v2_1.0_224_quant.tflite")]
    started = time.time()
    code = cli(argv)
    if code:
        sys.exit(code)
    train_seconds = time.time() - started

    test = segmentation_dataset(f"camvid:{DATA / 'camvid'}", "test", transform=eval_transform())
    results = {}
    # (key, output stride, scales, flip): single-scale at every output stride, then DeepLabv3 §4.3's multi-scale
    # (0.5-1.75) + left-right flip inference when asked
    evaluations = [(f"test_os{os_}" if deeplab else "test", os_, (1.0,), False)
                   for os_ in ((16, 8) if deeplab else (32,))]
    if args.ms_flip_output_stride:
        evaluations.append((f"test_os{args.ms_flip_output_stride}_ms_flip", args.ms_flip_output_stride,
                            (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True))
    for key, output_stride, scales, flip in evaluations:
        model = create_model(args.model, weights=run / "model.safetensors",
                             **({"output_stride": output_stride} if deeplab else {})).eval()
        t = time.time()
        r = evaluate_segmentation(model, test, test.num_classes, scales=scales, flip=flip)
        results[key] = {"miou": r["miou"], "pixel_acc": r["pixel_acc"], "boundary_f": r["boundary_f"],
                        "per_class_iou": dict(zip(test.class_names, r["per_class_iou"])),
                        "seconds": round(time.time() - t, 1)}
        print(f"{key}: mIoU {100 * r['miou']:.2f}  pixel acc {100 * r['pixel_acc']:.2f}  "
              f"boundary F {100 * r['boundary_f']:.2f}")
    history = json.loads((run / "history.json").read_text())
    report = {
        "benchmark": f"seg_camvid_{args.experiment}",
        "model": f"{args.model}, output stride 16 in training" if deeplab else args.model,
        "head": {"atrous_rates": args.atrous_rates or "none (ASPP off)", "image_pooling": not args.no_image_pooling}
        if deeplab else "FCN skips at reductions " + {"fcn32s": "none", "fcn16s": "16", "fcn8s": "16, 8"}[
            args.model.split("_")[0]],
        "class_weights": args.class_weights,
        "backbone": "random initialisation" if args.scratch
        else "ImageNet MobileNetV2 from mobilenet_v2_1.0_224_quant.tflite",
        "data": f"CamVid (SegNet split): trained on {args.train_split} ({'367' if args.train_split == 'train' else '468'}"
                " images), evaluated on 233 test images at 360x480, 11 classes, void ignored",
        "recipe": "SGD momentum 0.9, poly power 0.9 from lr, weight decay 4e-5, batch norm trained",
        "command": "python benchmarks/seg_camvid.py " + shlex.join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "budget": {"device": "cpu", "threads": torch.get_num_threads(), "cpu": platform.processor() or "x86_64",
                   "train_seconds": round(train_seconds), "epochs": args.epochs,
                   "crop_size": args.crop_size, "batch_size": args.batch_size, "lr": args.lr,
                   "grad_clip": args.grad_clip, "warmup_steps": args.warmup_steps},
        "results": results,
        "curve": history,
    }
    out = ROOT / "benchmarks" / "results" / f"seg_camvid_{args.experiment}.json"
    write_atomic(out, json.dumps(report, indent=2).encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
