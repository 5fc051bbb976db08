"""Gridding, lost detail and degenerate ASPP rates measured on CamVid (issue 16, section 3): three comparisons of
segmentation heads and backbones on the ImageNet MobileNetV2 backbone, each model trained with the same schedule
for every seed and tested on CamVid's 233 test images at full 360x480 resolution.

Experiments (`--experiments`, comma-separated, default all):

  hdc      DeepLabv3-MobileNetV2 (`deeplabv3_mobilenet_v2`, ASPP at the paper's rates: `atrous_rates=None`, with
           image pooling) at output stride 8 in training and test: plain dilation vs `dilation_pattern=hdc`
           (hybrid dilated convolution, Wang et al., WACV 2018, §3.2: a sawtooth of rates that leaves no hole).
  decoder  DeepLabv3 (`deeplabv3_mobilenet_v2` with the same full ASPP as DeepLabv3+, `atrous_rates=None`) vs
           DeepLabv3+ (`deeplabv3plus_mobilenet_v2`, Chen et al., ECCV 2018, §3.1) vs FCN-8s
           (`fcn8s_mobilenet_v2`), output stride 16: the detail FCN loses when it upsamples (the survey's Fig. 13),
           as accuracy near boundaries (trimap) and boundary F.
  heads    DeepLabv3 §3.3's head ablation on full-frame crops (`--full-frame-crop`, 360: the largest square crop
           inside a 360x480 frame; `train seg` takes square crops): no ASPP (1x1 branch only) / ASPP / ASPP +
           image pooling, at the paper's rates (6, 12, 18) and at `aspp_crop_size=<crop>` (the rates scaled to the
           crop, `betterconv.models.deeplabv3.scaled_rates`), output stride 16.

Every training: `python -m betterconv train seg` on CamVid train (367 images), the backbone from
`--backbone-weights` (default: ../shared/data/coral/mobilenet_v2_1.0_224_quant.tflite), SGD momentum 0.9, poly
learning rate from 0.007, weight decay 4e-5 (benchmarks/seg_camvid.py's recipe), random scale 0.5-2.0, crop, flip,
colour jitter, plus `--train-args` (default: gradient clipping at norm 5 and a 100-step warm-up, which FCN-8s needs
at lr 0.007, given to every model so that the recipe is the same). The last epoch's weights are tested (`--export
last`; the end-of-training check on `--train-eval-images` val images is reported, never used to choose).

The budget: `--time-budget SECONDS` per run (default 1200, 20 CPU-minutes). Each variant of an experiment first
trains PROBE_EPOCHS short epochs of PROBE_STEPS steps (OUTPUT/EXPERIMENT/probe), `--jobs` at a time as the real
runs go; the second epoch's seconds per step times the steps of a full epoch give each variant's epoch time, and
the slowest variant sets the epochs: every model of an experiment trains the same epochs (the same schedule), the
slowest within the budget. `--epochs N` skips the probe. The budget counts training epochs only (process start,
the end-of-training check and the test evaluation come on top); every run's epoch seconds are recorded.

Runs go `--jobs` at a time (benchmarks/side_by_side.py), each logging to OUTPUT/EXPERIMENT/VARIANT_sSEED/train.log.
Resumable: a rerun continues a training that has last.pt (`--resume`), skips finished ones (model.safetensors and
all epochs in history.json) and evaluations already done (eval_test.json beside the weights), and reuses the probe.

Each model is evaluated with `betterconv eval seg --split test --json --trimap 2,4,8,16,32` (mIoU, pixel accuracy,
boundary F at 2 px, per-class IoU, DeepLab's trimap mIoU within w pixels of a true boundary). With several seeds
each figure is given as mean and spread (min, max, sample standard deviation).

Writes, per experiment, benchmarks/results/seg_detail_EXPERIMENT.json (command, date, machine, budget, seeds, per
run and mean/spread), docs/seg_trimap_EXPERIMENT.png (trimap mIoU vs band width, one line per model, the mean over
seeds with the min-max range), for `decoder` also docs/seg_samples.png (three test images: image, ground truth,
DeepLabv3, DeepLabv3+, FCN-8s of the first seed, in CamVid's colours), and prints a Markdown table.

    python benchmarks/seg_detail.py --experiments hdc,decoder,heads --seeds 0,1 --time-budget 1200 \\
        --jobs 2 --workers 0

`--smoke`: the whole path in minutes: 1 epoch of 2 steps at batch 2 on 96x96 crops, 2 test images, into a
temporary folder (results and figures there too unless `--results-dir` / `--figures-dir` are given):

    python benchmarks/seg_detail.py --smoke --experiments decoder --seeds 0
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from side_by_side import run_side_by_side  # benchmarks/side_by_side.py, beside this script

from betterconv.analysis.timing import cpu_model
from betterconv.data.segmentation import read_label_png, segmentation_dataset
from betterconv.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TFLITE = DATA / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
PROBE_EPOCHS = 2  # the first epoch pays for warm-up; the second is timed
PROBE_STEPS = 6   # steps per probe epoch (seconds per step x steps of a full epoch = an epoch's seconds)
METRICS = ("miou", "boundary_f", "pixel_acc")
# CamVid's own colour coding (Brostow et al. 2009) of the 11 SegNet classes, in the dataset's class order (sky,
# building, pole, road, pavement = CamVid's sidewalk, tree, sign, fence, car, pedestrian, bicyclist), as
# mmsegmentation's CamVidDataset has it; black = void. The library's `palette` is PASCAL VOC's, hence this table.
CAMVID_COLOURS = np.array([(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192),
                           (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)],
                          dtype=np.uint8)
VOID_COLOUR = (0, 0, 0)


@dataclass(frozen=True)
class Variant:
    """One model of an experiment: `train seg --model MODEL --arg K=V ...`."""
    name: str
    label: str
    model: str
    args: tuple[str, ...] = ()  # `--arg` values, NAME=VALUE


@dataclass(frozen=True)
class Experiment:
    name: str
    question: str
    crop_size: int
    variants: tuple[Variant, ...]


def experiments(args: argparse.Namespace) -> dict[str, Experiment]:
    crop, full = args.crop_size, args.full_frame_crop
    paper = "atrous_rates=None"  # the paper's rates for the output stride (DeepLabv3 §3.3)
    return {
        "hdc": Experiment(
            "hdc", "DeepLabv3 at output stride 8: plain dilation vs hybrid dilated convolution (Wang et al. §3.2)",
            crop, (Variant("plain", "DeepLabv3 OS8, plain dilation", "deeplabv3_mobilenet_v2",
                           ("output_stride=8", paper)),
                   Variant("hdc", "DeepLabv3 OS8, HDC", "deeplabv3_mobilenet_v2",
                           ("output_stride=8", paper, "dilation_pattern=hdc")))),
        "decoder": Experiment(
            "decoder", "DeepLabv3 vs DeepLabv3+ (decoder, §3.1) vs FCN-8s at output stride 16: detail near "
                       "boundaries", crop,
            (Variant("deeplabv3", "DeepLabv3", "deeplabv3_mobilenet_v2", (paper,)),
             Variant("deeplabv3plus", "DeepLabv3+", "deeplabv3plus_mobilenet_v2"),
             Variant("fcn8s", "FCN-8s", "fcn8s_mobilenet_v2"))),
        "heads": Experiment(
            "heads", f"DeepLabv3 §3.3 head ablation on {full}x{full} crops (full-frame height), output stride 16: "
                     f"paper rates vs rates scaled to the crop", full,
            (Variant("no_aspp", "no ASPP (1x1 only)", "deeplabv3_mobilenet_v2",
                     ("atrous_rates=()", "image_pooling=False")),
             Variant("aspp_paper", "ASPP, paper rates", "deeplabv3_mobilenet_v2", (paper, "image_pooling=False")),
             Variant("aspp_pool_paper", "ASPP + pooling, paper rates", "deeplabv3_mobilenet_v2", (paper,)),
             Variant("aspp_scaled", f"ASPP, rates scaled to {full}", "deeplabv3_mobilenet_v2",
                     (paper, f"aspp_crop_size={full}", "image_pooling=False")),
             Variant("aspp_pool_scaled", f"ASPP + pooling, rates scaled to {full}", "deeplabv3_mobilenet_v2",
                     (paper, f"aspp_crop_size={full}")))),
    }


# --- training ----------------------------------------------------------------------------------------------------

def train_argv(args: argparse.Namespace, exp: Experiment, variant: Variant, seed: int, run: Path, epochs: int,
               max_steps: int | None, eval_images: int) -> list[str]:
    argv = ["train", "seg", "--model", variant.model, "--data", args.data, "--train-split", "train",
            "--val-split", "val", "--epochs", str(epochs), "--crop-size", str(exp.crop_size),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--momentum", "0.9", "--schedule", "poly",
            "--weight-decay", "4e-5", "--eval-images", str(eval_images),
            "--eval-every", str(epochs), "--export", "last", "--workers", str(args.workers), "--seed", str(seed),
            "--channels-last", "--output", str(run)]
    if (run / "last.pt").is_file():  # a rerun continues (or, when only the export is missing, writes it)
        argv.append("--resume")
    if max_steps:
        argv += ["--max-steps-per-epoch", str(max_steps)]
    if args.backbone_weights:
        argv += ["--backbone-weights", args.backbone_weights]
    for pair in variant.args:
        argv += ["--arg", pair]
    return argv + shlex.split(args.train_args)


def run_settings(argv: list[str]) -> list[str]:
    """A training's options that a rerun must share: its `train seg` arguments without --resume and without the
    epoch count (--epochs, --eval-every), which may grow."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in ("--epochs", "--eval-every"):
            skip = True
        elif item != "--resume":
            kept.append(item)
    return kept


def finished(run: Path, epochs: int) -> bool:
    """Whether `run` holds a finished training of `epochs` epochs (its weights and every epoch in history.json)."""
    history_path = run / "history.json"
    if not (run / "model.safetensors").is_file() or not history_path.is_file():
        return False
    done = len(json.loads(history_path.read_text()))
    if done > epochs:
        sys.exit(f"{run} has trained {done} epochs, more than the {epochs} asked: give --epochs {done} or more, or "
                 f"another --output")
    return done == epochs and (run / "model.safetensors").stat().st_mtime >= history_path.stat().st_mtime


def train_runs(args: argparse.Namespace, exp: Experiment, jobs: dict[str, tuple[Variant, int]], folder: Path,
               epochs: int, max_steps: int | None, eval_images: int) -> dict[str, float]:
    """Train the unfinished `jobs` (name -> (variant, seed)) `args.jobs` at a time; the wall seconds of those run."""
    settings = {name: run_settings(train_argv(args, exp, *jobs[name], folder / name, epochs, max_steps, eval_images))
                for name in jobs}
    for name in jobs:  # a folder trained with other options is never skipped or continued as if it matched
        recorded = folder / name / "settings.json"
        if recorded.is_file() and json.loads(recorded.read_text()) != settings[name]:
            sys.exit(f"{folder / name} was trained with other options (its settings.json): rerun with the same "
                     f"ones, or give another --output")
    for name in jobs:
        (folder / name).mkdir(parents=True, exist_ok=True)
        write_atomic(folder / name / "settings.json", json.dumps(settings[name], indent=2).encode())
    todo = [name for name in jobs if not finished(folder / name, epochs)]
    for name in jobs:
        if name not in todo:
            print(f"{exp.name}/{name}: finished, skipped", flush=True)
    if not todo:
        return {}
    env = dict(os.environ)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in env:  # the cores shared by the side-by-side jobs
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, min(args.jobs, len(todo)))))
    def argv_for(name: str, run: Path) -> list[str]:
        return train_argv(args, exp, *jobs[name], run, epochs, max_steps, eval_images)

    return run_side_by_side(todo, argv_for, folder, args.jobs, env)


def steps_per_epoch(args: argparse.Namespace) -> int:
    """Steps of a full epoch: the trainer drops the last partial batch."""
    return len(segmentation_dataset(args.data, "train")) // args.batch_size


def choose_epochs(args: argparse.Namespace, exp: Experiment, folder: Path) -> tuple[int, dict]:
    """The probe: every variant trains PROBE_EPOCHS epochs of `probe_steps` steps side by side; the second epoch's
    seconds per step, times a full epoch's steps, give each variant's epoch seconds; the slowest sets the epochs
    that fit `args.time_budget`. A probe already done (history.json complete) is reused."""
    probe_steps = args.max_steps_per_epoch or PROBE_STEPS
    jobs = {v.name: (v, args.seeds[0]) for v in exp.variants}
    wall = train_runs(args, exp, jobs, folder / "probe", PROBE_EPOCHS, probe_steps, 1)  # 1 val image: timing only
    full_steps = args.max_steps_per_epoch or steps_per_epoch(args)
    per_epoch = {}
    for v in exp.variants:
        history = json.loads((folder / "probe" / v.name / "history.json").read_text())
        per_epoch[v.name] = float(history[-1]["seconds"]) / probe_steps * full_steps
    slowest = max(per_epoch.values())
    epochs = max(1, math.floor(args.time_budget / slowest))
    times = ", ".join(f"{k} ~{s:.0f} s" for k, s in per_epoch.items())
    print(f"{exp.name} probe: an epoch of {full_steps} steps takes {times} ({args.jobs} side by side) -> {epochs} "
          f"epochs within {args.time_budget:.0f} s a run", flush=True)
    return epochs, {"epochs": PROBE_EPOCHS, "steps_per_epoch": probe_steps, "wall_seconds": wall,
                    "full_epoch_steps": full_steps,
                    "predicted_epoch_seconds": {k: round(s, 1) for k, s in per_epoch.items()},
                    "epochs_chosen": epochs}


# --- evaluation ----------------------------------------------------------------------------------------------------

def evaluate(args: argparse.Namespace, run: Path) -> dict:
    """`betterconv eval seg --json --trimap ...` on the test split for the weights of `run` (cached in
    run/eval_test.json, redone when the weights or the evaluation settings are newer)."""
    cache = run / "eval_test.json"
    weights = run / "model.safetensors"
    settings = {"split": "test", "trimap": args.trimap, "max_images": args.max_images}
    if cache.is_file() and cache.stat().st_mtime >= weights.stat().st_mtime:
        cached = json.loads(cache.read_text())
        if cached.get("settings") == settings:
            return cached
    argv = [sys.executable, "-m", "betterconv", "eval", "seg", "--weights", str(weights), "--data", args.data,
            "--split", "test", "--trimap", args.trimap, "--json"]
    if args.max_images:
        argv += ["--max-images", str(args.max_images)]
    started = time.time()
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{shlex.join(argv[1:])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    result = {"settings": settings, "command": "python " + shlex.join(argv[1:]),
              "seconds": round(time.time() - started, 1), **result}
    write_atomic(cache, json.dumps(result, indent=2).encode())
    return result


def spread(values: list) -> dict:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "min": None, "max": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(present), "min": min(present), "max": max(present),
            "std": statistics.stdev(present) if len(present) > 1 else 0.0, "n": len(present)}


def summarise(exp: Experiment, runs: list[dict], widths: list[str]) -> list[dict]:
    summary = []
    for v in exp.variants:
        group = [r for r in runs if r["variant"] == v.name]
        classes = group[0]["class_names"]
        summary.append({
            "variant": v.name, "label": v.label, "model": v.model, "args": list(v.args),
            "seeds": [r["seed"] for r in group],
            **{k: spread([r[k] for r in group]) for k in METRICS},
            "trimap": {w: spread([r["trimap"][w] for r in group]) for w in widths},
            "per_class_iou": {c: spread([r["per_class_iou"][c] for r in group]) for c in classes},
            "train_epoch_seconds": spread([r["train_epoch_seconds"] for r in group]),
        })
    return summary


# --- figures -------------------------------------------------------------------------------------------------------

def plot_trimap(summary: list[dict], widths: list[str], path: Path, title: str) -> None:
    import matplotlib  # optional plotting dependency, imported only when a figure is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [int(w) for w in widths]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for s in summary:
        mean = [np.nan if s["trimap"][w]["mean"] is None else 100 * s["trimap"][w]["mean"] for w in widths]
        line, = ax.plot(x, mean, marker="o", label=f"{s['label']} (mIoU {100 * s['miou']['mean']:.1f})")
        if max(s["trimap"][w]["n"] for w in widths) > 1:
            low = [np.nan if s["trimap"][w]["min"] is None else 100 * s["trimap"][w]["min"] for w in widths]
            high = [np.nan if s["trimap"][w]["max"] is None else 100 * s["trimap"][w]["max"] for w in widths]
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("trimap band width w (pixels around the true boundaries, 360x480 labels)")
    ax.set_ylabel("mIoU within the band (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def colourise(label: np.ndarray) -> np.ndarray:
    """(H, W) class indices (255 = void) -> (H, W, 3) CamVid colours."""
    rgb = np.zeros((*label.shape, 3), np.uint8)
    rgb[:] = VOID_COLOUR
    known = label < len(CAMVID_COLOURS)
    rgb[known] = CAMVID_COLOURS[label[known]]
    return rgb


def sample_figure(args: argparse.Namespace, exp: Experiment, folder: Path, seed: int, path: Path) -> list[str]:
    """Image, ground truth and each variant's prediction (`betterconv predict seg`, the `seed` run) for the
    `args.sample_images` test images, in CamVid's colours. Returns the images' file names."""
    import matplotlib  # optional plotting dependency, imported only when a figure is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    test = segmentation_dataset(args.data, "test")
    indices = args.sample_images or [round(i * (len(test) - 1) / 2) for i in range(3)]
    images = [Path(test.files[i][0]) for i in indices]
    predictions = {}
    for v in exp.variants:
        out = folder / "samples" / f"{v.name}_s{seed}"
        weights = folder / f"{v.name}_s{seed}" / "model.safetensors"
        if not all((out / f"{p.stem}.png").is_file() and (out / f"{p.stem}.png").stat().st_mtime >=
                   weights.stat().st_mtime for p in images):
            argv = [sys.executable, "-m", "betterconv", "predict", "seg", "--weights", str(weights), "--output",
                    str(out), *map(str, images)]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{shlex.join(argv[1:])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        predictions[v.name] = [read_label_png(out / f"{p.stem}.png") for p in images]
    columns = ["image", "ground truth", *(v.label for v in exp.variants)]
    fig, axes = plt.subplots(len(images), len(columns), figsize=(2.6 * len(columns), 2.05 * len(images) + 0.7),
                             squeeze=False)
    for row, (index, image_path) in enumerate(zip(indices, images)):
        _, mask = test.load(index)
        panels = [np.asarray(Image.open(image_path).convert("RGB")), colourise(np.asarray(mask)),
                  *(colourise(predictions[v.name][row]) for v in exp.variants)]
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row][0].set_ylabel(image_path.stem, fontsize=7)
    handles = [Patch(color=CAMVID_COLOURS[c] / 255, label=name) for c, name in enumerate(test.class_names)]
    handles.append(Patch(color=np.array(VOID_COLOUR) / 255, label="void (ignored)"))
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [p.name for p in images]


# --- report --------------------------------------------------------------------------------------------------------

def fmt(stats: dict, scale: float = 100, digits: int = 1) -> str:
    if stats["mean"] is None:
        return "n/a"
    text = f"{scale * stats['mean']:.{digits}f}"
    if stats["n"] > 1:
        text += f" ({scale * stats['min']:.{digits}f}-{scale * stats['max']:.{digits}f})"
    return text


def markdown(summary: list[dict], widths: list[str]) -> str:
    head = ["model", "mIoU", "boundary F", "pixel acc", *(f"trimap {w} px" for w in widths), "train s (epochs)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for s in summary:
        cells = [s["label"], *(fmt(s[k]) for k in METRICS), *(fmt(s["trimap"][w]) for w in widths),
                 fmt(s["train_epoch_seconds"], 1, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_experiment(args: argparse.Namespace, exp: Experiment, output: Path, results_dir: Path,
                   figures_dir: Path) -> None:
    folder = output / exp.name
    jobs = {f"{v.name}_s{seed}": (v, seed) for seed in args.seeds for v in exp.variants}
    epochs, probe = args.epochs, None
    if not epochs:
        epochs, probe = choose_epochs(args, exp, folder)
    started = time.time()
    wall = train_runs(args, exp, jobs, folder, epochs, args.max_steps_per_epoch, args.train_eval_images)
    train_wall = time.time() - started

    widths = [w.strip() for w in args.trimap.split(",")]
    runs = []
    for name, (variant, seed) in jobs.items():
        run = folder / name
        r = evaluate(args, run)
        history = json.loads((run / "history.json").read_text())
        widths = sorted(r["trimap"], key=int)
        runs.append({"name": name, "variant": variant.name, "model": variant.model, "args": list(variant.args),
                     "seed": seed, "miou": r["miou"], "boundary_f": r["boundary_f"], "pixel_acc": r["pixel_acc"],
                     "trimap": r["trimap"], "class_names": r["class_names"],
                     "per_class_iou": dict(zip(r["class_names"], r["per_class_iou"])),
                     "test_images": r["num_images"], "eval_seconds": r["seconds"], "eval_command": r["command"],
                     "epochs": len(history), "train_epoch_seconds": round(sum(h["seconds"] for h in history), 1),
                     "train_wall_seconds_this_call": wall.get(name), "final_train_loss": history[-1]["train_loss"],
                     "val_check": {k: v for k, v in history[-1].items() if k.startswith("val_")}})
        bands = ", ".join(f"{w}: " + ("n/a" if r["trimap"][w] is None else f"{100 * r['trimap'][w]:.1f}")
                          for w in widths)
        print(f"{exp.name}/{name}: mIoU {100 * r['miou']:.2f}, boundary F {100 * r['boundary_f']:.2f}, trimap "
              f"{bands}", flush=True)
    summary = summarise(exp, runs, widths)

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    figures = {"trimap": str(figures_dir / f"seg_trimap_{exp.name}.png")}
    samples = None
    if exp.name == "decoder":
        figures["samples"] = str(figures_dir / "seg_samples.png")
        samples = sample_figure(args, exp, folder, args.seeds[0], Path(figures["samples"]))
    report = {
        "benchmark": f"seg_detail_{exp.name}",
        "question": exp.question,
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": gpu or "cpu", "load_average": [round(v, 2) for v in os.getloadavg()]},
        "budget": {"time_budget_seconds_per_run": None if args.epochs else args.time_budget, "epochs": epochs,
                   "probe": probe, "jobs": args.jobs, "workers_per_training": args.workers,
                   "batch_size": args.batch_size, "crop_size": exp.crop_size, "lr": args.lr,
                   "max_steps_per_epoch": args.max_steps_per_epoch, "train_args": args.train_args,
                   "train_wall_seconds_this_call": round(train_wall),
                   "note": "the budget covers training epochs only; every model of the experiment trains the same "
                           "epochs, the slowest within the budget (process start, end-of-training check and test "
                           "evaluation come on top)"},
        "seeds": args.seeds,
        "data": {"spec": args.data, "train_split": "train", "test_split": "test",
                 "test_images": runs[0]["test_images"], "resolution": "full 360x480, 11 classes, void ignored"},
        "recipe": "SGD momentum 0.9, poly (power 0.9) from lr, weight decay 4e-5, batch norm trained, random scale "
                  "0.5-2.0, crop, flip, colour jitter; last epoch's weights tested",
        "backbone": args.backbone_weights or "random initialisation",
        "evaluation": f"betterconv eval seg --split test --json --trimap {args.trimap}: mIoU, pixel accuracy, "
                      "boundary F (2 px), per-class IoU, trimap mIoU per band width (pixels)",
        "spread": "mean over seeds, min, max, sample standard deviation (std), n",
        "figures": figures,
        "sample_images": samples,
        "summary": summary,
        "runs": runs,
    }
    results = results_dir / f"seg_detail_{exp.name}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(results, json.dumps(report, indent=2).encode())
    plot_trimap(summary, widths, Path(figures["trimap"]),
                f"CamVid test, {exp.name}: {epochs} epochs, crop {exp.crop_size}, seeds "
                f"{','.join(map(str, args.seeds))} (mean, min-max band)")
    print(f"\n{exp.name}: {exp.question}; {epochs} epochs, seeds {args.seeds}, "
          f"crop {exp.crop_size}, batch {args.batch_size}; mean (min-max) in %\n")
    print(markdown(summary, widths))
    print(f"\nCPU {report['machine']['cpu']} ({os.cpu_count()} logical CPUs), trained on {gpu or 'cpu'}; wrote "
          f"{results} and {', '.join(figures.values())}\n", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", default="hdc,decoder,heads", help="comma-separated: hdc, decoder, heads")
    p.add_argument("--data", default=f"camvid:{DATA / 'camvid'}", metavar="camvid:PATH")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    p.add_argument("--backbone-weights", default=str(TFLITE) if TFLITE.is_file() else None,
                   help="ImageNet MobileNetV2 weights (default: the Coral TFLite file when present)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="training seconds per run; a probe turns them into epochs (default 1200)")
    p.add_argument("--epochs", type=int, help="train this many epochs instead of probing the budget")
    p.add_argument("--crop-size", type=int, default=256, help="square training crop of hdc and decoder")
    p.add_argument("--full-frame-crop", type=int, default=360,
                   help="square training crop of heads, and its aspp_crop_size (360: a full frame's height)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.007)
    p.add_argument("--train-args", default="--grad-clip 5 --warmup-steps 100",
                   help="more `train seg` options, the same for every model")
    p.add_argument("--train-eval-images", type=int, default=25, help="val images of the end-of-training check")
    p.add_argument("--max-steps-per-epoch", type=int, help="shorter epochs (the smoke test)")
    p.add_argument("--trimap", default="2,4,8,16,32", help="band widths of the trimap mIoU, pixels")
    p.add_argument("--max-images", type=int, help="evaluate the first N test images only")
    p.add_argument("--sample-images", help="decoder's sample figure: three test-split indices (default: first, "
                                           "middle, last)")
    p.add_argument("--jobs", type=int, default=2, help="trainings side by side")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes per training")
    p.add_argument("--smoke", action="store_true", help="a few-minute end-to-end check (see above)")
    p.add_argument("--output", help="training runs (default: runs/seg_detail; --smoke: a temporary folder)")
    p.add_argument("--results-dir", help="default: benchmarks/results (--smoke: --output)")
    p.add_argument("--figures-dir", help="default: docs (--smoke: --output)")
    args = p.parse_args()

    known = experiments(args)
    names = [e for e in args.experiments.split(",") if e]
    unknown = [e for e in names if e not in known]
    if unknown or not names:
        sys.exit(f"unknown experiments: {', '.join(unknown) or '(none given)'} (known: {', '.join(known)})")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
        args.sample_images = [int(i) for i in args.sample_images.split(",")] if args.sample_images else None
    except ValueError:
        sys.exit("--seeds and --sample-images take comma-separated integers")
    if not args.seeds:
        sys.exit("--seeds: give at least one seed")
    kind, _, path = args.data.partition(":")
    if kind != "camvid" or not Path(path).is_dir():
        sys.exit(f"{args.data}: not a CamVid folder (camvid:PATH; the reference copy is {DATA / 'camvid'})")
    if args.smoke:
        args.epochs = args.epochs or (None if args.time_budget else 1)
        args.batch_size, args.max_steps_per_epoch = 2, args.max_steps_per_epoch or 2
        args.crop_size = args.full_frame_crop = 96
        args.train_eval_images, args.max_images = 2, args.max_images or 2
        args.output = args.output or tempfile.mkdtemp(prefix="seg_detail_")
    if not args.epochs:
        args.time_budget = args.time_budget or 1200.0
    if not args.backbone_weights:
        print("note: no --backbone-weights: the backbones train from scratch", flush=True)
    known = experiments(args)  # again: the crops may have changed
    output = Path(args.output or ROOT / "runs" / "seg_detail")
    results_dir = Path(args.results_dir or (output if args.smoke else ROOT / "benchmarks" / "results"))
    figures_dir = Path(args.figures_dir or (output if args.smoke else ROOT / "docs"))
    for name in names:
        run_experiment(args, known[name], output, results_dir, figures_dir)


if __name__ == "__main__":
    main()
