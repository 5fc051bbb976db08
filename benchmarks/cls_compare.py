"""Issue 6 (a): MobileNetV2 vs MobileNetV1 vs ShuffleNet (2x, g=3) vs a plain-convolution network of the same
depth ("Conv MobileNet", MobileNetV1 Table 4: every depthwise separable pair a full 3x3 convolution), trained with
the same budget and recipe on Fashion-MNIST and on CIFAR-10 (the 10,000 images of ../shared/data/cifar10-test split
80/20 per class into train and test). Reports test top-1, MACs and parameters at the training size, and measured
batch-1 latency at the training size and at 224x224 (eager PyTorch, same run, same threads).

Then the int8 check of issue 6: the MobileNetV2 trained on each dataset is exported to ONNX (batch norm folded),
quantised with onnxruntime's static quantisation (per-channel int8, calibrated on 256 training images), and its
test top-1 under onnxruntime is compared with PyTorch's (the acceptance: at most 1 point lost).

    python benchmarks/cls_compare.py                       # both datasets, the budget below
    python benchmarks/cls_compare.py --datasets cifar10 --epochs-cifar10 2   # a quick look

Writes benchmarks/results/cls_compare.json (figures, budget, command, date) and docs/cls_compare.png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FASHION = Path("/usr/share/datasets/fashion-mnist")

# label, registered model, keywords
MODELS = [
    ("MobileNetV2 1.0", "mobilenet_v2", {}),
    ("MobileNetV1 1.0", "mobilenet_v1", {}),
    ("ShuffleNet 2x (g=3)", "shufflenet_v1", {"groups": 3, "scale": 2.0}),
    ("Conv MobileNet (plain 3x3)", "mobilenet_v1", {"separable": False}),
]


def latency_ms(model: torch.nn.Module, size: int, repeats: int) -> float:
    """Median batch-1 latency of eager PyTorch (eval, no grad) over `repeats` runs after 3 warm-up runs."""
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            t = time.perf_counter()
            model(x)
            if i >= 3:
                times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def int8_check(model: torch.nn.Module, train_set, test_set, size: int, work: Path) -> dict:
    """Top-1 of the float model (PyTorch) and of its onnxruntime int8 quantisation on `test_set`."""
    from betterconv.deploy.export import export_onnx, onnx_session, run_onnx
    from betterconv.deploy.quantize import quantize_onnx_static

    model = model.eval()
    float_path, int8_path = work / "model.onnx", work / "model_int8.onnx"
    export_onnx(model, float_path, (3, size, size))  # takes normalised images, as the eval transform gives
    rng = np.random.default_rng(0)
    calib = [train_set[int(i)][0].numpy() for i in rng.choice(len(train_set), 256, replace=False)]
    quantize_onnx_static(float_path, int8_path, calib, check=False)
    session = onnx_session(int8_path)
    correct = {"pytorch": 0, "onnxruntime_int8": 0}
    loader = torch.utils.data.DataLoader(test_set, batch_size=100)
    with torch.inference_mode():
        for images, labels in loader:
            correct["pytorch"] += int((model(images).argmax(1) == labels).sum())
            correct["onnxruntime_int8"] += int((torch.from_numpy(run_onnx(session, images.numpy())).argmax(1)
                                                == labels).sum())
    top1 = {k: v / len(test_set) for k, v in correct.items()}
    return {**top1, "drop_points": 100 * (top1["pytorch"] - top1["onnxruntime_int8"]),
            "int8_file_bytes": int8_path.stat().st_size, "float_file_bytes": float_path.stat().st_size,
            "calibration_images": 256}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="fashion-mnist,cifar10")
    p.add_argument("--epochs-fashion-mnist", type=int, default=1)
    p.add_argument("--epochs-cifar10", type=int, default=6)
    p.add_argument("--input-size", type=int, default=32, help="training and test size (28x28 images are resized)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--latency-repeats", type=int, default=30)
    p.add_argument("--max-steps-per-epoch", type=int, help="a smoke test of the script, not a benchmark")
    p.add_argument("--output", default=str(ROOT / "runs" / "cls_compare"))
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from betterconv.files import write_atomic
    from betterconv.analysis.profile import profile
    from betterconv.cli import main as cli
    from betterconv.data.classification import classification_dataset, eval_transform, held_out_split
    from betterconv import create_model
    from betterconv.tasks.classification import evaluate_classifier

    specs = {"fashion-mnist": f"fashion-mnist:{FASHION}", "cifar10": f"folder:{DATA / 'cifar10-test'}"}
    wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for name in wanted:
        if name not in specs:
            sys.exit(f"unknown dataset {name!r}: choose from {', '.join(specs)}")
    missing = [n for n, d in (("fashion-mnist", FASHION), ("cifar10", DATA / "cifar10-test"))
               if n in wanted and not d.is_dir()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)} (Fashion-MNIST: apt-get install dataset-fashion-mnist)")

    size = args.input_size
    latency = {}  # per model: batch-1 ms at the training size and at 224, independent of the dataset
    for label, name, kwargs in MODELS:
        model = create_model(name, num_classes=10, **kwargs).eval()
        latency[label] = {f"ms_{s}": round(latency_ms(model, s, args.latency_repeats), 3) for s in (size, 224)}
        print(f"{label}: batch-1 latency {latency[label]}")

    report = {"benchmark": "cls_compare", "command": "python benchmarks/cls_compare.py " + shlex.join(sys.argv[1:]),
              "date": datetime.date.today().isoformat(),
              "recipe": {"optimizer": "sgd", "momentum": 0.9, "schedule": "cosine", "lr": args.lr,
                         "batch_size": args.batch_size, "input_size": size, "augmentation": "padded random crop "
                         "and flip (betterconv's small-image train transform)", "seed": 0},
              "budget": {"device": "cpu", "threads": torch.get_num_threads()}, "datasets": {}}
    for dataset in wanted:
        spec, epochs = specs[dataset], getattr(args, f"epochs_{dataset.replace('-', '_')}")
        test_split = held_out_split(spec)
        test_set = classification_dataset(spec, test_split, transform=eval_transform(size))
        rows = []
        for label, name, kwargs in MODELS:
            run = Path(args.output) / f"{dataset}_{label.split()[0].lower()}_{len(rows)}"
            argv = ["train", "cls", "--model", name, "--data", spec, "--input-size", str(size), "--epochs",
                    str(epochs), "--batch-size", str(args.batch_size), "--optimizer", "sgd", "--schedule", "cosine",
                    "--lr", str(args.lr), "--weight-decay", "4e-5", "--eval-every", str(epochs), "--output", str(run),
                    *(["--resume"] if (run / "last.pt").is_file() else []), "--channels-last", "--workers", "1"]
            if args.max_steps_per_epoch:
                argv += ["--max-steps-per-epoch", str(args.max_steps_per_epoch)]
            for key, value in kwargs.items():
                argv += ["--arg", f"{key}={value}"]
            if cli(argv):
                sys.exit(f"training {label} on {dataset} failed")
            # the epochs' own times, so that a run resumed (or re-read when complete) reports its whole training
            seconds = sum(h["seconds"] for h in json.loads((run / "history.json").read_text()))
            model = create_model(name, weights=run / "model.safetensors").eval()
            result = evaluate_classifier(model, test_set, "cpu", 100)
            prof = profile(model, (3, size, size))
            row = {"model": label, "name": name, "kwargs": kwargs, "top1": result["top1"], "top5": result["top5"],
                   "params": prof.params, "macs": prof.macs, "train_seconds": round(seconds),
                   "epochs": epochs, **latency[label]}
            if name == "mobilenet_v2":
                train_set = classification_dataset(spec, "train", transform=eval_transform(size))
                with tempfile.TemporaryDirectory() as tmp:
                    row["int8"] = int8_check(model, train_set, test_set, size, Path(tmp))
            rows.append(row)
            print(json.dumps(row))
        report["datasets"][dataset] = {"spec": spec, "test_split": test_split, "test_images": len(test_set),
                                       "epochs": epochs, "rows": rows}
    smoke = bool(args.max_steps_per_epoch)  # a smoke test's figures stay in its output folder
    out = (Path(args.output) if smoke else ROOT / "benchmarks" / "results") / "cls_compare.json"
    write_atomic(out, json.dumps(report, indent=2).encode())
    print(f"wrote {out}")
    plot(report, (Path(args.output) if smoke else ROOT / "docs") / "cls_compare.png")


def plot(report: dict, path: Path) -> None:
    """Top-1 against MACs and against measured latency, one marker per model and dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from betterconv.files import write_atomic

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"fashion-mnist": "o", "cifar10": "s"}
    for dataset, block in report["datasets"].items():
        for i, row in enumerate(block["rows"]):
            colour = f"C{i}"
            for ax, x in zip(axes, (row["macs"] / 1e6, row["ms_224"])):
                ax.scatter(x, 100 * row["top1"], marker=markers[dataset], color=colour,
                           label=f"{row['model']} ({dataset})")
    axes[0].set_xlabel(f"MACs (millions) at {report['recipe']['input_size']}x{report['recipe']['input_size']}")
    axes[1].set_xlabel("batch-1 latency at 224x224 (ms, eager PyTorch, 2 threads)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Same budget and recipe: accuracy vs cost (benchmarks/cls_compare.py)")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())


if __name__ == "__main__":
    main()
