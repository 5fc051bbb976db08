"""Small objects: YOLOv2's weakness measured by the official rules, then fixed (issue 15).

YOLOv2 predicts from one 13x13 map (stride 32): an object under 32x32 pixels falls inside one cell and is seen
through coarse features only. This benchmark trains, for each backbone and seed, a single-scale YOLOv2 and a
3-scale one (`--arg scales=3`: YOLOv3's prediction across scales, strides 32, 16 and 8), with the same schedule
and budget, and tests them on held-out images in the five configurations of the issue's table:

    | YOLOv2 single scale | + 608 input | + sliced | 3-scale head | 3-scale + sliced |
      single               single+608    single+sliced  3-scale    3-scale+sliced      (the rows' names here)

- single: the single-scale model at the training size (`--input-size`, 416).
- single+608: the same weights at a 608x608 input (`eval det --input-size 608`): every object 1.46x larger on the
  grid, at 2.1x the MACs. With the default single-scale training (`--no-multiscale`) 608 is a size the model never
  saw in training; `--multiscale` trains every model at 320-608 (darknet's multi-scale training) instead.
- single+sliced: SAHI sliced inference (`eval det --slice N --overlap 0.2`): tiles of N x N pixels of the ORIGINAL
  image (sahi's `get_slice_bboxes`), each resized to the 416 input, plus the whole image, merged by NMS. The
  default N = 240 suits CamVid's 480x360 images (6 tiles + the whole image = 7 forward passes per image).
- 3-scale, 3-scale+sliced: the 3-scale model, at 416 and sliced.

Backbones (`--backbones`): `mobilenet_v2` = model `yolov2_mobilenet_v2` started from the ImageNet MobileNetV2 of
`--backbone-weights` (default ../shared/data/coral/mobilenet_v2_1.0_224_quant.tflite when present: `train det`
then sets `padding=tf_same` and `input_normalization=tensorflow` itself); `darknet19` = model `yolov2` (Darknet-19)
at `--darknet-width` (default 0.5, `--arg width_mult`), from scratch unless `--darknet-weights` names a classifier.

Metrics per row, by the official rules (`tasks.detection_metrics.evaluate_detections`: pycocotools COCO AP, COCO's
size classes from each box's area; py-faster-rcnn's VOC07 11-point AP): coco_map, coco_map50, coco_map_small,
coco_map_medium, coco_ar_small, voc07_map. The cost of each row: MACs at batch 1 (`betterconv.profile`; sliced
rows: the 416 MACs x (mean tiles per test image + 1)) and the measured milliseconds per image at batch 1 on the
CPU (median of `--timing-calls` calls after a warm-up on one real test image: resize + forward + decode + NMS, or
`sliced_detections` for the sliced rows, at the mAP threshold 0.005), with the CPU model recorded. Recall vs
object size: the test split's non-difficult ground-truth boxes binned by sqrt(box area) in pixels of the original
image (0-16, 16-32, 32-48, 48-64, 64-96, 96-128, 128-256, 256+), each counted as found when any detection of its
class with score >= `--recall-score` (0.25, predict det's default) overlaps it at IoU >= 0.5; plotted to
docs/det_small_objects.png (one panel per backbone, one line per row, the mean over seeds). With several seeds
the table gives the mean and the range (min-max), the JSON also the standard deviation.

The data: CamVid boxes (PASCAL VOC is not available offline), made once by

    python benchmarks/camvid_boxes.py --output runs/camvid_boxes

(468 trainval images, 233 test images, 4 classes, 83% of the test boxes COCO-small). The full run:

    python benchmarks/det_small_objects.py --data yolo:runs/camvid_boxes --train-split trainval \\
        --test-split test --backbones mobilenet_v2,darknet19 --seeds 0,1,2 --time-budget 2400 --jobs 2

Trainings run `--jobs` at a time, each a `python -m betterconv train det` process logging to
OUTPUT/NAME/train.log (NAME = BACKBONE_single_sSEED or BACKBONE_3scale_sSEED), `--resume`d when rerun. Every
model gets the same epochs. `--time-budget SECONDS` chooses them: each (backbone, head) pair first trains 2 epochs
(a probe in OUTPUT/probe, `--jobs` at a time), and the second epochs' seconds, scheduled over `--jobs` slots in
the order the trainings run, set how many epochs keep the whole training phase within the budget. The budget
counts training epochs only: process start, anchors, the end-of-training validation (`--train-eval-images`
images of `--val-split`, default the test split: reported in history.json, never used to pick a checkpoint: the
last epoch's weights are evaluated) and the evaluation here come on top; the wall seconds of every training are
recorded. Be honest about the budget in what is published: on a 2-core CPU a 2,400 s budget buys some tens of
epochs at most (the probe says how many; docs/detection.md: a width-0.25 Darknet-19 YOLOv2 took 19 epochs in
2,700 s), far from the paper's 160; small-object AP stayed near zero at such budgets there, so a GPU session
(`--jobs 4` or more) is the place for the figures the issue asks for.

`--smoke`: 1 epoch of 2 steps, batch 2, Darknet-19 at width 0.25, MobileNetV2 head 32 channels, into a temporary
folder (results and plot there too unless `--results` / `--plot` are given): the whole path in a few minutes, e.g.

    python benchmarks/det_small_objects.py --smoke --data yolo:../shared/data/coco8 --train-split train \\
        --val-split val --test-split val --backbones mobilenet_v2,darknet19

Writes benchmarks/results/det_small_objects.json (`--results`: command, date, machine, budget, data, rows, the
per-row recall-vs-size curves and the means over seeds) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from side_by_side import run_side_by_side  # benchmarks/side_by_side.py, beside this script
from torchvision.ops import box_iou
from torchvision.transforms.v2.functional import resize

from betterconv import create_model, profile
from betterconv.analysis.timing import cpu_model
from betterconv.data.det_transforms import eval_transform
from betterconv.data.detection import detection_dataset
from betterconv.files import write_atomic
from betterconv.tasks.detection import detect_dataset, model_outputs, postprocess, sliced_detections
from betterconv.tasks.detection_metrics import evaluate_detections

ROOT = Path(__file__).resolve().parents[1]
TFLITE = ROOT.parent / "shared" / "data" / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
BACKBONES = {"mobilenet_v2": "yolov2_mobilenet_v2", "darknet19": "yolov2"}
HEADS = {"single": 1, "3scale": 3}  # trained variant -> `scales`
# row -> (trained variant, test input (None: --input-size), sliced)
ROWS = {"single": ("single", None, False), "single+608": ("single", 608, False),
        "single+sliced": ("single", None, True), "3-scale": ("3scale", None, False),
        "3-scale+sliced": ("3scale", None, True)}
METRICS = ("coco_map", "coco_map50", "coco_map_small", "coco_map_medium", "coco_ar_small", "voc07_map")
EDGES = (0, 16, 32, 48, 64, 96, 128, 256, math.inf)  # sqrt(box area) in pixels of the original image
BINS = [f"{a}-{b}" if b != math.inf else f"{a}+" for a, b in zip(EDGES, EDGES[1:])]
PROBE_EPOCHS = 2
EVAL_CONF = 0.005  # darknet's and `eval det`'s mAP threshold


# --- training ----------------------------------------------------------------------------------------------------

def train_argv(args: argparse.Namespace, job: dict, run: Path, epochs: int) -> list[str]:
    argv = ["train", "det", "--model", BACKBONES[job["backbone"]], "--data", args.data,
            "--train-split", args.train_split, "--val-split", args.val_split or args.test_split,
            "--input-size", str(args.input_size), "--epochs", str(epochs), "--batch-size", str(args.batch_size),
            "--workers", str(args.workers), "--anchors", "auto", "--seed", str(job["seed"]),
            "--eval-every", str(epochs + 1), "--eval-images", str(args.train_eval_images),
            "--output", str(run), "--arg", f"scales={HEADS[job['head']]}"]
    if (run / "last.pt").is_file():  # a rerun continues (or, when done, just rewrites the weights)
        argv.append("--resume")
    if not args.multiscale:
        argv.append("--no-multiscale")
    if job["backbone"] == "darknet19":
        argv += ["--arg", f"width_mult={args.darknet_width}"]
        if args.darknet_weights:
            argv += ["--backbone-weights", args.darknet_weights]
    else:
        if args.mobilenet_head_channels:
            argv += ["--arg", f"head_channels={args.mobilenet_head_channels}"]
        if args.backbone_weights:
            argv += ["--backbone-weights", args.backbone_weights]
    return argv + shlex.split(args.train_args)


def train_all(args: argparse.Namespace, jobs: list[dict], folder: Path, epochs: int) -> dict[str, float]:
    """Train `jobs` `args.jobs` at a time, each in its own process logging to FOLDER/NAME/train.log; the wall
    seconds each took."""
    env = dict(os.environ)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in env:  # the cores shared by the side-by-side jobs
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, min(args.jobs, len(jobs)))))
    by_name = {job["name"]: job for job in jobs}
    return run_side_by_side(list(by_name), lambda name, run: train_argv(args, by_name[name], run, epochs), folder,
                            args.jobs, env)


def makespan(durations: list[float], slots: int) -> float:
    """Wall time of running `durations` in order on `slots` parallel slots, each job taking the first free one."""
    free = [0.0] * max(1, min(slots, len(durations)))
    for d in durations:
        free[free.index(min(free))] += d
    return max(free)


def choose_epochs(args: argparse.Namespace, jobs: list[dict], output: Path) -> tuple[int, dict]:
    """The probe: each (backbone, head) trains PROBE_EPOCHS epochs; its last epoch's seconds, scheduled like the
    real run, give the epochs that fit `args.time_budget`."""
    probe_jobs, seen = [], set()
    for job in jobs:
        if (job["backbone"], job["head"]) not in seen:
            seen.add((job["backbone"], job["head"]))
            probe_jobs.append(job)
    wall = train_all(args, probe_jobs, output / "probe", PROBE_EPOCHS)
    per_epoch = {}
    for job in probe_jobs:
        history = json.loads((output / "probe" / job["name"] / "history.json").read_text())
        per_epoch[(job["backbone"], job["head"])] = float(history[-1]["seconds"])
    epoch_wall = makespan([per_epoch[(j["backbone"], j["head"])] for j in jobs], args.jobs)
    epochs = max(1, math.floor(args.time_budget / epoch_wall))
    print(f"probe: one epoch of all {len(jobs)} trainings, {args.jobs} at a time, ~{epoch_wall:.1f} s "
          f"-> {epochs} epochs", flush=True)
    return epochs, {"epochs": PROBE_EPOCHS, "wall_seconds": wall,
                    "last_epoch_seconds": {f"{b}_{h}": s for (b, h), s in per_epoch.items()},
                    "predicted_seconds_per_epoch_of_all": round(epoch_wall, 1), "epochs_chosen": epochs}


# --- evaluation --------------------------------------------------------------------------------------------------

def recall_by_size(detections: list[dict], ground_truth: list[dict], min_score: float, iou: float = 0.5) -> dict:
    """Per sqrt(area) bin: the non-difficult truths, and those that a detection of their class with score >=
    `min_score` overlaps at IoU >= `iou` (any such detection; no one-to-one assignment)."""
    truths, found = np.zeros(len(BINS), int), np.zeros(len(BINS), int)
    small = [0, 0]
    for det, gt in zip(detections, ground_truth):
        keep = ~torch.as_tensor(gt["difficult"]).bool()
        boxes = torch.as_tensor(gt["boxes"]).float().reshape(-1, 4)[keep]
        labels = torch.as_tensor(gt["labels"])[keep]
        if not len(boxes):
            continue
        side = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt().numpy()
        confident = det["scores"] >= min_score
        dboxes, dlabels = det["boxes"][confident].float().cpu(), det["labels"][confident].cpu()
        if len(dboxes):
            hit = ((box_iou(boxes, dboxes) >= iou) & (labels[:, None] == dlabels[None, :])).any(1).numpy()
        else:
            hit = np.zeros(len(boxes), bool)
        index = np.digitize(side, EDGES[1:-1])
        np.add.at(truths, index, 1)
        np.add.at(found, index, hit.astype(int))
        small[0] += int(hit[side < 32].sum())
        small[1] += int((side < 32).sum())
    return {"bins": BINS, "truths": truths.tolist(), "found": found.tolist(),
            "recall": [f / t if t else None for f, t in zip(found.tolist(), truths.tolist())],
            "recall_small": small[0] / small[1] if small[1] else None}


def median_ms(fn, calls: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def cpu_ms(model, image: torch.Tensor, size: int, sliced: bool, args: argparse.Namespace) -> float:
    """Milliseconds for one image at batch 1 on the CPU, from the decoded image (3, H, W) in [0, 1] to detections."""
    height, width = image.shape[-2:]

    def whole() -> None:
        with torch.no_grad():
            out = model(resize(image, [size, size], antialias=True)[None])
            postprocess(model_outputs(out), model.head_anchors(), model.num_classes, size, EVAL_CONF,
                        image_sizes=[(height, width)], location=getattr(model, "location", "sigmoid"))

    def tiles() -> None:
        sliced_detections(model, model, image, size, args.slice, args.overlap, EVAL_CONF)

    return median_ms(tiles if sliced else whole, args.timing_calls)


def spread(values: list) -> dict:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "min": None, "max": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(present), "min": min(present), "max": max(present),
            "std": statistics.stdev(present) if len(present) > 1 else 0.0, "n": len(present)}


def plot(summary: list[dict], backbones: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(backbones), figsize=(6.5 * len(backbones), 4.6), squeeze=False)
    x = np.arange(len(BINS))
    for ax, backbone in zip(axes[0], backbones):
        counts = None
        for entry in (s for s in summary if s["backbone"] == backbone):
            recall = [np.nan if r is None else r for r in entry["recall_by_size"]["recall"]]
            ax.plot(x, recall, marker="o", label=entry["row"])
            counts = entry["recall_by_size"]["truths"]
        ax.set_xticks(x, BINS, rotation=30)
        ax.set_xlabel("ground-truth box sqrt(area), pixels of the original image")
        ax.set_ylabel("recall (IoU >= 0.5)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_title(f"{backbone} ({BACKBONES[backbone]})")
        if counts is not None:
            twin = ax.twinx()
            twin.bar(x, counts, color="0.85", zorder=0, width=0.6)
            twin.set_ylabel("test boxes per bin", color="0.5")
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(textwrap.fill(title, 90), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(stats: dict, digits: int = 3) -> str:
    if stats["mean"] is None:
        return "n/a"
    text = f"{stats['mean']:.{digits}f}"
    if stats["n"] > 1:
        text += f" ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"
    return text


def markdown(summary: list[dict]) -> str:
    head = ["backbone", "row", "input", "GMACs", "CPU ms/img", "COCO AP", "AP50", "AP_small", "AP_medium",
            "AR_small", "VOC07 mAP", "recall <32 px"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for s in summary:
        cells = [s["backbone"], s["row"], s["input"], f"{s['gmacs']:.2f}", fmt(s["ms_per_image"], 0),
                 *(fmt(s[k]) for k in METRICS), fmt(s["recall_small"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=f"yolo:{ROOT / 'runs' / 'camvid_boxes'}", metavar="KIND:PATH")
    p.add_argument("--train-split", default="trainval")
    p.add_argument("--val-split", help="`train det`'s end-of-training check (default: the test split; never used "
                                       "to choose weights)")
    p.add_argument("--test-split", default="test")
    p.add_argument("--backbones", default="mobilenet_v2", help="comma-separated: mobilenet_v2, darknet19")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--backbone-weights", default=str(TFLITE) if TFLITE.is_file() else None,
                   help="MobileNetV2 ImageNet weights for mobilenet_v2 (default: the Coral TFLite when present)")
    p.add_argument("--darknet-weights", help="Darknet-19 classifier weights for darknet19 (default: from scratch)")
    p.add_argument("--darknet-width", type=float, default=0.5, help="darknet19's width_mult")
    p.add_argument("--mobilenet-head-channels", type=int, help="yolov2_mobilenet_v2's head_channels (default 256)")
    p.add_argument("--input-size", type=int, default=416)
    p.add_argument("--hires-size", type=int, default=608, help="the test input of the single+608 row")
    p.add_argument("--slice", type=int, default=240, help="tile side in pixels of the original image (CamVid: "
                                                          "480x360 -> 6 tiles of 240 at overlap 0.2)")
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--multiscale", action=argparse.BooleanOptionalAction, default=False,
                   help="darknet's multi-scale training (320-608); default: single-scale at --input-size")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="choose the epochs from a 2-epoch probe so that the training phase fits this many seconds")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--jobs", type=int, default=2, help="trainings side by side")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes per training")
    # darknet's recipe (SGD 1e-3 after a 1000-step burn-in) spends a CPU budget of a few epochs warming up: at batch
    # 16 on CamVid's 468 images the burn-in alone is 34 epochs; det_coco128.py's AdamW recipe learns in the budget
    p.add_argument("--train-args", default="--optimizer adamw --lr 1e-3 --schedule cosine --warmup-steps 50",
                   help="more `train det` options (default: AdamW 1e-3, cosine, 50 warm-up steps, as det_coco128.py; "
                        "'' for the paper's recipe)")
    p.add_argument("--train-eval-images", type=int, default=32,
                   help="validation images `train det` evaluates after its last epoch")
    p.add_argument("--recall-score", type=float, default=0.25, help="a detection's score to count in recall")
    p.add_argument("--timing-calls", type=int, default=5, help="timed calls per row (median), after a warm-up")
    p.add_argument("--max-images", type=int, help="evaluate the first N test images only")
    p.add_argument("--smoke", action="store_true", help="a few-minute end-to-end check (see above)")
    p.add_argument("--output", help="training runs (default: runs/det_small_objects; --smoke: a temp folder)")
    p.add_argument("--results", help="default: benchmarks/results/det_small_objects.json (--smoke: in --output)")
    p.add_argument("--plot", help="default: docs/det_small_objects.png (--smoke: in --output)")
    args = p.parse_args()
    if args.smoke:
        args.epochs, args.batch_size, args.timing_calls, args.train_eval_images = 1, 2, 2, 2
        args.darknet_width, args.mobilenet_head_channels = 0.25, args.mobilenet_head_channels or 32
        args.train_args = f"--max-steps-per-epoch 2 {args.train_args}".strip()
        args.output = args.output or tempfile.mkdtemp(prefix="det_small_objects_")
    output = Path(args.output or ROOT / "runs" / "det_small_objects")
    results = Path(args.results or (output / "det_small_objects.json" if args.smoke else
                                    ROOT / "benchmarks" / "results" / "det_small_objects.json"))
    plot_path = Path(args.plot or (output / "det_small_objects.png" if args.smoke else
                                   ROOT / "docs" / "det_small_objects.png"))
    backbones = [b for b in args.backbones.split(",") if b]
    unknown = set(backbones) - set(BACKBONES)
    if unknown or not backbones:
        sys.exit(f"unknown backbones: {', '.join(sorted(unknown)) or '(none given)'} (known: {', '.join(BACKBONES)})")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    kind, _, path = args.data.partition(":")
    if kind == "yolo" and not Path(path).exists():
        sys.exit(f"{path}: no such dataset (CamVid boxes: python benchmarks/camvid_boxes.py --output {path})")
    if "mobilenet_v2" in backbones and not args.backbone_weights:
        print("note: no --backbone-weights: yolov2_mobilenet_v2 trains from scratch", flush=True)

    import sahi.slicing  # the optional `slicing` extra

    jobs = [{"name": f"{b}_{h}_s{s}", "backbone": b, "head": h, "seed": s}
            for s in seeds for b in backbones for h in HEADS]
    epochs, probe = args.epochs, None
    if args.time_budget:
        epochs, probe = choose_epochs(args, jobs, output)
    started = time.time()
    train_seconds = train_all(args, jobs, output, epochs)
    train_wall = time.time() - started

    # --- evaluation: every model on the test split, in its rows ---
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = sorted({args.input_size, args.hires_size})
    datasets = {s: detection_dataset(args.data, args.test_split, transform=eval_transform(s)) for s in sizes}
    test = datasets[args.input_size]
    count = len(test) if args.max_images is None else min(args.max_images, len(test))
    from PIL import Image
    image_sizes = []
    for image_path, _ in test.files[:count]:
        with Image.open(image_path) as im:
            image_sizes.append((im.height, im.width))
    tiles = [len(sahi.slicing.get_slice_bboxes(h, w, args.slice, args.slice, False, args.overlap, args.overlap))
             for h, w in image_sizes]
    mean_tiles = statistics.fmean(tiles)
    timing_image = test.load(0)[0].float() / 255  # (3, H, W) in [0, 1]
    rows, truth_counts = [], None
    for job in jobs:
        model = create_model(BACKBONES[job["backbone"]], weights=output / job["name"] / "model.safetensors").eval()
        on_device = model.to(device)
        for row, (head, hires, sliced) in ROWS.items():
            if head != job["head"]:
                continue
            size = args.hires_size if hires else args.input_size
            dataset = datasets[size]
            detections, ground_truth = detect_dataset(on_device, dataset, size, device, max_images=count,
                                                      progress=False, slice_size=args.slice if sliced else None,
                                                      overlap=args.overlap)
            r = evaluate_detections(detections, ground_truth, dataset.num_classes, class_names=dataset.class_names,
                                    image_ids=dataset.image_ids[:count],
                                    category_ids=getattr(dataset, "category_ids", None), pixel_inclusive=False)
            curve = recall_by_size(detections, ground_truth, args.recall_score)
            truth_counts = curve["truths"]
            cpu = model.cpu()
            macs = profile(cpu, input_size=(3, size, size)).macs
            passes = mean_tiles + 1 if sliced else 1
            ms = cpu_ms(cpu, timing_image, size, sliced, args)
            on_device = model.to(device)
            entry = {"backbone": job["backbone"], "model": BACKBONES[job["backbone"]], "seed": job["seed"],
                     "row": row, "trained": job["name"], "scales": HEADS[head], "input_size": size,
                     "slice": {"size": args.slice, "overlap": args.overlap, "mean_tiles": mean_tiles}
                     if sliced else None, "model_kwargs": dict(getattr(model, "model_kwargs", {}) or {}),
                     **{k: r[k] for k in METRICS}, "recall_small": curve["recall_small"],
                     "macs": round(macs * passes), "gmacs": macs * passes / 1e9, "ms_per_image": round(ms, 1),
                     "train_seconds": train_seconds[job["name"]], "recall_by_size": curve}
            rows.append(entry)
            print(f"{job['name']} {row}: AP {r['coco_map']}, AP_small {r['coco_map_small']}, "
                  f"recall<32 {curve['recall_small']}, {ms:.0f} ms", flush=True)

    summary = []
    for backbone in backbones:
        for row in ROWS:
            group = [e for e in rows if e["backbone"] == backbone and e["row"] == row]
            first = group[0]
            found = np.sum([e["recall_by_size"]["found"] for e in group], axis=0)
            curve_mean = [statistics.fmean(v) if v else None for v in
                          ([e["recall_by_size"]["recall"][i] for e in group
                            if e["recall_by_size"]["recall"][i] is not None] for i in range(len(BINS)))]
            summary.append({"backbone": backbone, "row": row, "seeds": [e["seed"] for e in group],
                            "input": f"{first['input_size']}" + (f", {args.slice} px tiles x{mean_tiles:.1f} + whole"
                                                                 if first["slice"] else ""),
                            "gmacs": first["gmacs"], "ms_per_image": spread([e["ms_per_image"] for e in group]),
                            **{k: spread([e[k] for e in group]) for k in (*METRICS, "recall_small")},
                            "recall_by_size": {"bins": BINS, "truths": first["recall_by_size"]["truths"],
                                               "found_all_seeds": found.tolist(), "recall": curve_mean}})

    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    truths = np.array(truth_counts or [0] * len(BINS))
    report = {
        "benchmark": "det_small_objects",
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": gpu or "cpu", "timing_device": "cpu", "timing_threads": torch.get_num_threads(),
                    "load_average": os.getloadavg()},
        "budget": {"time_budget": args.time_budget, "epochs": epochs, "probe": probe, "jobs": args.jobs,
                   "workers_per_training": args.workers, "batch_size": args.batch_size,
                   "multiscale_training": args.multiscale, "train_args": args.train_args,
                   "train_wall_seconds": round(train_wall), "train_seconds": train_seconds,
                   "note": "the budget covers training epochs only (probe, startup, end-of-training validation and "
                           "this evaluation come on top)"},
        "data": {"spec": args.data, "train_split": args.train_split,
                 "val_split": args.val_split or args.test_split, "test_split": args.test_split,
                 "test_images": count, "image_sizes": sorted({f"{w}x{h}" for h, w in image_sizes}),
                 "test_boxes_non_difficult": int(truths.sum()),
                 "test_boxes_coco_small": int(truths[:2].sum()), "test_boxes_per_size_bin": dict(zip(BINS,
                                                                                                    truths.tolist()))},
        "setup": {"backbones": {b: BACKBONES[b] for b in backbones}, "seeds": seeds,
                  "backbone_weights": args.backbone_weights, "darknet_weights": args.darknet_weights,
                  "darknet_width": args.darknet_width, "mobilenet_head_channels": args.mobilenet_head_channels,
                  "input_size": args.input_size, "hires_size": args.hires_size, "anchors": "auto (IoU k-means, 5)",
                  "slice": args.slice, "overlap": args.overlap, "mean_tiles_per_image": mean_tiles,
                  "eval_conf_thresh": EVAL_CONF},
        "recall_rule": f"a non-difficult ground-truth box counts as found when any detection of its class with score "
                       f">= {args.recall_score} overlaps it at IoU >= 0.5 (no one-to-one assignment); bins by "
                       f"sqrt(box area) in pixels of the original image; recall_small: sqrt(area) < 32",
        "cost_rule": "MACs at batch 1 from betterconv.profile at the test input (sliced rows: x (mean tiles + 1)); "
                     "ms: median CPU time per image at batch 1 on one real test image (resize + forward + decode + "
                     f"NMS at conf {EVAL_CONF}; sliced rows: sliced_detections), after a warm-up call",
        "summary": summary,
        "rows": rows,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(results, json.dumps(report, indent=2).encode())
    plot(summary, backbones, plot_path, f"recall vs object size on {args.data} {args.test_split} "
         f"(score >= {args.recall_score}, IoU >= 0.5; {epochs} epochs, seeds {args.seeds})")
    print()
    print(markdown(summary))
    print(f"\nCPU {report['machine']['cpu']} ({os.cpu_count()} logical CPUs), torch {torch.__version__}, "
          f"train on {gpu or 'cpu'}; {epochs} epochs; training phase {train_wall:.0f} s")
    print(f"wrote {results} and {plot_path}")


if __name__ == "__main__":
    main()
