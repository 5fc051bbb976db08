"""Inference speed of betterconv's deployment paths against torchvision eager, on the CPU (issue 6, acceptance (c)).

For MobileNetV2 at 224x224, DeepLabv3-MobileNetV2 at 513x513 and YOLOv2 at 416x416, at batch 1 and 8, measured by
`betterconv.analysis.infer_bench.measure_inference` (the same as `betterconv bench infer NAME`):

    torchvision eager fp32          the peer, where torchvision has the architecture (MobileNetV2 only)
    betterconv eager fp32           contiguous memory
    betterconv fused + channels-last
    betterconv fused + Winograd     3x3 stride-1 convolutions as direct or Winograd, per layer (not for MobileNets)
    onnxruntime fp32                the graph `betterconv.deploy.export_onnx` writes
    onnxruntime int8                that graph after `quantize_onnx_static`, calibrated on a few images
    ncnn fp32                       the graph `betterconv.deploy.export_ncnn` writes, run by ncnn image by image

Run it on an idle machine: each variant's calls run in one block after its own warm-up, and onnxruntime's threads
busy-wait between operators as PyTorch's OpenMP threads do (interleaved rounds, `--interleave`, suit a shared
machine but there each engine's spinning threads slow the next engine's call: torchvision MobileNetV2 batch 1 at 2
threads went from 12.8 to 59.6 ms). Reported are medians (and minima). Acceptance, checked where torchvision has
the model: betterconv eager takes at most 5% longer than torchvision eager, and the fastest betterconv path is at
least 3x faster than torchvision eager at batch 1. Writes `benchmarks/results/bench_infer.json` atomically
(figures, machine, load average, versions, command, date).

Every model is measured with 2 threads (both cores) and then with 1. On a 2-core machine that another process keeps
busy, PyTorch's two OpenMP threads wait for each other at every parallel region and eager calls take 10-100 times
their unloaded time, erratically (onnxruntime with `--no-ort-spinning` suffers far less); the 1-thread figures are
the ones such load leaves comparable. A batch size's rounds stop after `--time-budget` seconds (once 3 ran).

    .venv/bin/python benchmarks/bench_infer.py                    # about 6 minutes on 2 loaded cores
    .venv/bin/python benchmarks/bench_infer.py --models mobilenet_v2 --scale 0.5 --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from betterconv.files import write_atomic
from betterconv.analysis.infer_bench import bench_record, measure_inference
from betterconv.analysis.timing import load_average

# model, input size, timed rounds per batch size, warm-up calls (a big model's batch of 8 takes seconds)
PLAN = {
    "mobilenet_v2": ((224, 224), {1: 20, 8: 8}, 2),
    "deeplabv3_mobilenet_v2": ((513, 513), {1: 6, 8: 3}, 1),
    "yolov2": ((416, 416), {1: 4, 8: 2}, 1),
}
CALIBRATION = ("cat.bmp", "grace_hopper.bmp", "parrot.jpg", "pets.jpg")  # in ../shared/data/coral/images


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(PLAN), default=list(PLAN))
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                   help="PyTorch and onnxruntime intra-op threads; each count measures every model (default: 2 1)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every model's timed rounds (at least 1)")
    p.add_argument("--time-budget", type=float, default=25.0, metavar="S",
                   help="stop a batch size's rounds after S seconds, once 3 have run (default 25)")
    p.add_argument("--calib", type=Path, default=here.parent.parent / "shared" / "data" / "coral" / "images",
                   help="folder holding the calibration images (random images when absent)")
    p.add_argument("--no-ort-spinning", action="store_true",
                   help="onnxruntime's threads sleep between operators (default: they busy-wait, as PyTorch's do)")
    p.add_argument("--interleave", action="store_true",
                   help="interleaved rounds (a shared machine) instead of one block of calls per variant (idle)")
    p.add_argument("--output", type=Path, default=here / "results" / "bench_infer.json")
    p.add_argument("--plot", type=Path, default=here.parent / "docs" / "bench_infer.png",
                   help="bar chart of the batch-1 latencies (default docs/bench_infer.png)")
    args = p.parse_args(argv)

    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)
    files = [args.calib / f for f in CALIBRATION]
    calibration = files if all(f.is_file() for f in files) else None
    log(f"threads {args.threads}, load average {load_average()}, int8 calibration: "
        f"{'coral images ' + ', '.join(CALIBRATION) if calibration else 'random images'}")

    results = []
    for threads in args.threads:
        for name in args.models:
            size, rounds, warmup = PLAN[name]
            repeats = {b: max(1, round(rounds.get(b, min(rounds.values())) * args.scale)) for b in args.batch}
            results.append(measure_inference(name, input_size=size, batches=args.batch, repeats=repeats,
                                             warmup=warmup, threads=threads, calibration=calibration,
                                             calibration_count=len(CALIBRATION), time_budget_s=args.time_budget,
                                             ort_spinning=not args.no_ort_spinning, interleave=args.interleave,
                                             log=log))
            log(f"{name}, {threads} thread(s) done ({results[-1].elapsed_s:.0f} s)")
    elapsed = time.perf_counter() - start

    for r in results:
        print()
        print(r.format())
    print("\nacceptance (where torchvision has the model): betterconv eager time <= 1.05 x torchvision eager; "
          "fastest betterconv path >= 3x faster than torchvision eager at batch 1")
    for r in results:
        acc = r.acceptance()
        if acc:
            eager = ", ".join(f"batch {b} {v['betterconv_over_torchvision_time']:.3f}"
                              for b, v in acc["eager_within_5_percent"].items())
            best = acc.get("fastest_batch1", {})
            print(f"  {r.model}, {r.threads} thread(s): eager time ratio {eager} -> "
                  f"{'pass' if acc['eager_passes'] else 'FAIL'}; fastest "
                  f"{best.get('variant')} {best.get('speedup_vs_torchvision', float('nan')):.2f}x -> "
                  f"{'pass' if best.get('passes') else 'FAIL'}")
    data = bench_record(results, elapsed_s=round(elapsed, 1),
                        settings={"dtype": "float32 (int8 for onnxruntime_int8)", "batches": args.batch,
                                  "threads": args.threads, "scale": args.scale, "time_budget_s": args.time_budget,
                                  "plan": {k: {"input_size": v[0], "repeats": v[1], "warmup": v[2]}
                                           for k, v in PLAN.items()},
                                  "calibration": [str(f) for f in files] if calibration else "random images",
                                  "weights": "random initialisation, batch-norm statistics from one random batch; "
                                             "torchvision's and betterconv's models share them"})
    write_atomic(args.output, (json.dumps(data, indent=2) + "\n").encode())
    print(f"\nwrote {args.output} ({elapsed:.0f} s)")
    if args.plot:
        plot(data, args.plot)
        print(f"wrote {args.plot}")
    return 0


def plot(data: dict, path: Path) -> None:
    """Batch-1 median latency per deployment path, one panel per model, at the first thread count measured."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = data["settings"]["threads"][0]
    results = [r for r in data["results"] if r["threads"] == threads]
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False)
    for ax, r in zip(axes[0], results):
        rows = [row for row in r["rows"] if row["batch"] == 1]
        labels = [row["label"].replace(" fp32", "").replace("betterconv ", "") for row in rows]
        bars = ax.barh(labels, [row["median_ms"] for row in rows],
                       color=["C7" if row["variant"].startswith("torchvision") else "C0" for row in rows])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("batch-1 median latency (ms)")
        ax.set_title(f"{r['model']} {r['input_size'][0]}x{r['input_size'][1]}", fontsize=10)
    fig.suptitle(f"betterconv deployment paths vs torchvision eager (grey), {threads} thread(s), "
                 f"{data['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
