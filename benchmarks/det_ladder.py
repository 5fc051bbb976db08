"""Issue 5 (b): the YOLOv2 ablation ladder (YOLOv2 Table 2, "the path from YOLO to YOLOv2"), each rung trained with
the same schedule and evaluated on held-out images, so that each step's change is measured:

    1 anchors      anchor boxes without priors: Faster R-CNN's 9 hand-picked anchors, anchor-offset location
                   (t_x * p_w from the cell centre, unconstrained), no passthrough, single-scale training
    2 priors       + dimension priors (IoU k-means, k=5) and direct location prediction (sigmoid)
    3 passthrough  + the passthrough layer (26x26 features reorganised onto the 13x13 map)
    4 multiscale   + multi-scale training (a new size from 320..608 every 10 batches)
    5 hires        the rung-4 model evaluated at a higher test resolution (--hires-size, default 544)
    second_scale   not a rung of the paper: rung 4 plus the survey's small-object fix (a stride-16 prediction
                   scale, `second_scale=True`), compared with rung 4 at the same test size (issue 5 (c): AP_small)

    python benchmarks/det_ladder.py --data voc:/data/VOCdevkit --train-split 2007_trainval --val-split 2007_test \\
        --model yolov2 --epochs 160 [--backbone-weights darknet19_448.weights]

On a GPU the rungs can train side by side (`--jobs 6`, each a `python -m betterconv train det` process with its
own log), and `--time-budget SECONDS` picks the epoch count: every rung first trains 2 epochs side by side (a probe,
in OUTPUT/probe), and the slowest rung's second epoch sets how many epochs fit the budget.

`--model yolov2_tiny` has no passthrough and no second scale: those rungs are then skipped. Writes
benchmarks/results/det_ladder.json (per rung: VOC07 11-point mAP, VOC all-point mAP, COCO AP / AP50 / AP_small,
the change from the rung it builds on, training seconds; the budget, command and date). A long job: on a 2-core
CPU only tiny widths fit; the figures the issue asks for need a GPU or a night of CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from side_by_side import run_side_by_side  # benchmarks/side_by_side.py, beside this script

ROOT = Path(__file__).resolve().parents[1]

# rung -> (train det options, model keywords, the rung it is compared with)
RUNGS = {
    "anchors": (["--anchors", "hand", "--no-multiscale"], {"location": "offset", "passthrough": False}, None),
    "priors": (["--anchors", "auto", "--no-multiscale"], {"location": "sigmoid", "passthrough": False}, "anchors"),
    "passthrough": (["--anchors", "auto", "--no-multiscale"], {"location": "sigmoid", "passthrough": True},
                    "priors"),
    "multiscale": (["--anchors", "auto"], {"location": "sigmoid", "passthrough": True}, "passthrough"),
    "second_scale": (["--anchors", "auto"], {"location": "sigmoid", "passthrough": True, "second_scale": True},
                     "multiscale"),
}
KEYS = ("voc07_map", "voc_map", "coco_map", "coco_map50", "coco_map_small", "coco_map_medium", "coco_map_large")
PROBE_EPOCHS = 2


def train_argv(args: argparse.Namespace, name: str, run: Path, epochs: int) -> list[str]:
    options, kwargs, _ = RUNGS[name]
    argv = ["train", "det", "--model", args.model, "--data", args.data, "--train-split", args.train_split,
            "--val-split", args.val_split, "--input-size", str(args.input_size), "--epochs", str(epochs),
            "--batch-size", str(args.batch_size), "--eval-every", str(epochs + 1), "--workers", str(args.workers),
            "--output", str(run), *(["--resume"] if (run / "last.pt").is_file() else []), *options,
            *args.train_args.split()]
    for key, value in model_kwargs(args, name).items():
        argv += ["--arg", f"{key}={value}"]
    for extra in args.arg:
        argv += ["--arg", extra]
    if args.backbone_weights:
        argv += ["--backbone-weights", args.backbone_weights]
    return argv


def model_kwargs(args: argparse.Namespace, name: str) -> dict:
    kwargs = dict(RUNGS[name][1])
    if args.model == "yolov2_tiny":
        kwargs.pop("passthrough", None)
    return kwargs


def train_rungs(args: argparse.Namespace, names: list[str], folder: Path, epochs: int) -> dict[str, float]:
    """Train `names` with `args.jobs` at a time, each in its own process logging to <run>/train.log; the wall
    seconds each one took."""
    return run_side_by_side(names, lambda name, run: train_argv(args, name, run, epochs), folder, args.jobs)


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
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="choose the epochs from a 2-epoch probe so that training fits this many seconds")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--jobs", type=int, default=1, help="rungs trained at the same time")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per rung")
    p.add_argument("--train-args", default="", help="more `train det` options, e.g. '--optimizer adamw --lr 1e-3'")
    p.add_argument("--backbone-weights")
    p.add_argument("--rungs", default=",".join(RUNGS) + ",hires")
    p.add_argument("--output", default=str(ROOT / "runs" / "det_ladder"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "det_ladder.json"))
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from betterconv.files import write_atomic
    from betterconv.data.detection import detection_dataset
    from betterconv.data.det_transforms import eval_transform
    from betterconv import create_model
    from betterconv.tasks.detection import evaluate_detector

    wanted = args.rungs.split(",")
    unknown = set(wanted) - set(RUNGS) - {"hires"}
    if unknown:
        sys.exit(f"unknown rungs: {', '.join(sorted(unknown))} (known: {', '.join(RUNGS)}, hires)")
    tiny_lacks = {"passthrough", "second_scale"} if args.model == "yolov2_tiny" else set()
    names = [n for n in RUNGS if n in wanted and n not in tiny_lacks]
    output = Path(args.output)
    probe = None
    epochs = args.epochs
    if args.time_budget:
        probe_seconds = train_rungs(args, names, output / "probe", PROBE_EPOCHS)
        epoch_seconds = {n: json.loads((output / "probe" / n / "history.json").read_text())[-1]["seconds"]
                         for n in names}
        epochs = max(1, math.floor(args.time_budget / max(epoch_seconds.values())))
        probe = {"epochs": PROBE_EPOCHS, "wall_seconds": {n: round(s) for n, s in probe_seconds.items()},
                 "last_epoch_seconds": epoch_seconds, "epochs_chosen": epochs}
        print(f"probe: slowest epoch {max(epoch_seconds.values()):.1f} s -> {epochs} epochs", flush=True)
    started = time.time()
    seconds = train_rungs(args, names, output, epochs)
    train_wall = time.time() - started

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows: dict[str, dict] = {}
    for name in names:
        model = create_model(args.model, weights=output / name / "model.safetensors").eval().to(device)
        sizes = [(name, args.input_size)]
        if name == "multiscale" and "hires" in wanted:
            sizes.append(("hires", args.hires_size))
        for row_name, size in sizes:
            dataset = detection_dataset(args.data, args.val_split, transform=eval_transform(size))
            r = evaluate_detector(model, dataset, size, device, progress=False)
            base = "multiscale" if row_name == "hires" else RUNGS[name][2]
            while base is not None and base not in rows:  # a rung left out: compare with the one before it
                base = RUNGS[base][2]
            row = {"rung": row_name, "test_size": size, "model_kwargs": model_kwargs(args, name),
                   "train_options": RUNGS[name][0], **{k: r[k] for k in KEYS},
                   "train_seconds": round(seconds[name]), "compared_with": base}
            if base in rows:
                row.update({f"change_{k}": row[k] - rows[base][k] for k in ("voc07_map", "coco_map50",
                                                                              "coco_map_small")})
            rows[row_name] = row
            print(json.dumps(row), flush=True)
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    report = {"benchmark": "det_ladder", "model": args.model, "data": args.data, "train_split": args.train_split,
              "val_split": args.val_split, "input_size": args.input_size, "epochs": epochs,
              "batch_size": args.batch_size, "train_args": args.train_args,
              "backbone_weights": args.backbone_weights, "command": "python benchmarks/det_ladder.py "
              + shlex.join(sys.argv[1:]), "date": datetime.date.today().isoformat(),
              "budget": {"device": gpu or "cpu", "cpu_cores": os.cpu_count(), "cpu": platform.processor(),
                         "rungs_side_by_side": args.jobs, "workers_per_rung": args.workers,
                         "train_wall_seconds": round(train_wall), "time_budget": args.time_budget, "probe": probe,
                         "torch": torch.__version__},
              "rows": list(rows.values())}
    write_atomic(Path(args.results), json.dumps(report, indent=2).encode())
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
