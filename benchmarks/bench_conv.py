"""Issue 6 (b): the depthwise-separable cost formula, measured. For k = 1, 3, 5, 7 at MobileNet's stage shapes:
analytic MACs, MACs counted by torch.utils.flop_counter and median CPU latency (batch 1, channels-last), standard
vs depthwise separable.

    python benchmarks/bench_conv.py [--repeats 20] [--threads 2]

Writes benchmarks/results/bench_conv.json and the plot docs/conv_cost.png.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from betterconv.files import write_atomic
    from betterconv.analysis.conv_cost import conv_cost_table, format_conv_cost, rows_to_dicts

    rows = conv_cost_table(repeats=args.repeats)
    print(format_conv_cost(rows))
    report = {"benchmark": "bench_conv", "rows": rows_to_dicts(rows), "threads": args.threads,
              "load_average": os.getloadavg(), "torch": torch.__version__,
              "command": "python benchmarks/bench_conv.py " + shlex.join(sys.argv[1:]),
              "date": datetime.date.today().isoformat()}
    write_atomic(ROOT / "benchmarks" / "results" / "bench_conv.json", json.dumps(report, indent=2).encode())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for k in sorted({r.kernel for r in rows}):
        sel = [r for r in rows if r.kernel == k]
        ax.plot([f"{r.channels}@{r.resolution}" for r in sel], [r.time_ratio for r in sel], "o-", label=f"k={k} time")
        ax.plot([f"{r.channels}@{r.resolution}" for r in sel], [r.mac_ratio for r in sel], "x--", alpha=0.5,
                label=f"k={k} MACs")
    ax.set_yscale("log")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("channels @ resolution")
    ax.set_ylabel("standard / depthwise separable")
    ax.set_title(f"Depthwise separable saving: MACs vs CPU time ({args.threads} threads)")
    ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(ROOT / "docs" / "conv_cost.png", buf.getvalue())
    print("wrote benchmarks/results/bench_conv.json and docs/conv_cost.png")


if __name__ == "__main__":
    main()
