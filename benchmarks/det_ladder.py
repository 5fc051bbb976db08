"""Issue 5 (b): the YOLOv2 ablation ladder (YOLOv2 Table 2, "the path from YOLO to YOLOv2"), each rung trained with
the same schedule and evaluated on held-out images, so that each step's change is measured:

    1 anchors      anchor boxes without priors: Faster R-CNN's 9 hand-picked anchors, anchor-offset location
                   (t_x * p_w from the cell centre, unconstrained), no passthrough, single-scale training
    2 priors       + dimension priors (IoU k-means, k=5) and direct location prediction (sigmoid)
    3 passthrough  + the passthrough layer (26x26 features reorganised onto the 13x13 map)
    4 multiscale   + multi-scale training (a new size from 320..608 every 10 batches)
    5 hires        the rung-4 model evaluated at a higher test resolution (--hires-size, default 544)

    python benchmarks/det_ladder.py --data voc:/data/VOCdevkit --train-split 2007_trainval --val-split 2007_test \\
        --model yolov2 --epochs 160 [--backbone-weights darknet19_448.weights]

`--model yolov2_tiny` has no passthrough: rung 3 is then skipped. Writes benchmarks/results/det_ladder.json
(per rung: VOC07 11-point mAP, VOC all-point mAP, COCO AP / AP50 / AP_small, the change from the rung before,
training seconds; the budget, command and date). A long job: on a 2-core CPU only tiny widths fit; the figures
the issue asks for need a GPU or a night of CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# rung -> (train det options, model keywords); each rung keeps the ones before it
RUNGS = [
    ("anchors", ["--anchors", "hand", "--no-multiscale"], {"location": "offset", "passthrough": False}),
    ("priors", ["--anchors", "auto", "--no-multiscale"], {"location": "sigmoid", "passthrough": False}),
    ("passthrough", ["--anchors", "auto", "--no-multiscale"], {"location": "sigmoid", "passthrough": True}),
    ("multiscale", ["--anchors", "auto"], {"location": "sigmoid", "passthrough": True}),
]
KEYS = ("voc07_map", "voc_map", "coco_map", "coco_map50", "coco_map_small")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="KIND:PATH")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--model", choices=("yolov2", "yolov2_tiny"), default="yolov2")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="more model keywords")
    p.add_argument("--input-size", type=int, default=416)
    p.add_argument("--hires-size", type=int, default=544)
    p.add_argument("--epochs", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-args", default="", help="more `train det` options, e.g. '--optimizer adamw --lr 1e-3'")
    p.add_argument("--backbone-weights")
    p.add_argument("--rungs", default=",".join(r[0] for r in RUNGS) + ",hires")
    p.add_argument("--output", default=str(ROOT / "runs" / "det_ladder"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "det_ladder.json"))
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from betterconv._io import write_atomic
    from betterconv.cli import main as cli
    from betterconv.commands.detection import _dataset
    from betterconv.data.det_transforms import eval_transform
    from betterconv.models import create_model
    from betterconv.tasks.detection import evaluate_detector

    wanted = args.rungs.split(",")
    rows, previous = [], None
    for name, options, kwargs in RUNGS:
        if name not in wanted:
            continue
        if args.model == "yolov2_tiny":
            if name == "passthrough":
                continue
            kwargs = {k: v for k, v in kwargs.items() if k != "passthrough"}
        run = Path(args.output) / name
        argv = ["train", "det", "--model", args.model, "--data", args.data, "--train-split", args.train_split,
                "--val-split", args.val_split, "--input-size", str(args.input_size), "--epochs", str(args.epochs),
                "--batch-size", str(args.batch_size), "--output", str(run), "--resume", *options,
                *args.train_args.split()]
        for key, value in kwargs.items():
            argv += ["--arg", f"{key}={value}"]
        for extra in args.arg:
            argv += ["--arg", extra]
        if args.backbone_weights:
            argv += ["--backbone-weights", args.backbone_weights]
        started = time.time()
        if cli(argv):
            sys.exit(f"rung {name}: training failed")
        seconds = time.time() - started
        model = create_model(args.model, weights=run / "model.safetensors").eval()
        sizes = [args.input_size] + ([args.hires_size] if name == "multiscale" and "hires" in wanted else [])
        for size in sizes:
            dataset = _dataset(args.data, args.val_split, eval_transform(size), False)
            r = evaluate_detector(model, dataset, size, "cpu" if not torch.cuda.is_available() else "cuda")
            row = {"rung": name if size == args.input_size else "hires", "test_size": size, "model_kwargs": kwargs,
                   "train_options": options, **{k: r[k] for k in KEYS}, "train_seconds": round(seconds)}
            if previous is not None:
                row["change_voc07_map"] = row["voc07_map"] - previous["voc07_map"]
            rows.append(row)
            previous = row
            print(json.dumps(row))
    report = {"benchmark": "det_ladder", "model": args.model, "data": args.data, "train_split": args.train_split,
              "val_split": args.val_split, "input_size": args.input_size, "epochs": args.epochs,
              "batch_size": args.batch_size, "train_args": args.train_args,
              "backbone_weights": args.backbone_weights, "command": "python benchmarks/det_ladder.py "
              + " ".join(sys.argv[1:]), "date": datetime.date.today().isoformat(),
              "budget": {"device": "cuda" if torch.cuda.is_available() else "cpu",
                         "threads": torch.get_num_threads()}, "rows": rows}
    write_atomic(Path(args.results), json.dumps(report, indent=2).encode())
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
