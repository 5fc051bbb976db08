"""The project's main job at this stage: profile the whole zoo at each paper's input size, as a table, JSON
and a PNG chart."""
from __future__ import annotations

import io
import json
from pathlib import Path

from tqdm import tqdm

from ..files import write_atomic
from ..models import create_model, list_models, paper_input_size
from .profile import profile

def _fmt_rf(rf: int | str) -> str:
    return str(rf)  # an int, or "global" when the output sees the whole image


def profile_zoo(output: Path, input_size: tuple[int, int] | None = None) -> list[dict]:
    rows = []
    for name in (bar := tqdm(list_models(), desc="profiling", unit="model")):
        bar.set_postfix_str(name)
        size = tuple(input_size) if input_size else paper_input_size(name)
        p = profile(create_model(name), input_size=(3, *size))
        rows.append({"model": name, **p.to_dict(), "layers": None})
    lines = ["| model | input | params | MACs | FLOPs | output stride | receptive field | "
             "peak activations (Table 3 rule, 16-bit) | measured peak (float32) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input_size'][1]}x{r['input_size'][2]} | {r['params'] / 1e6:.2f}M | "
                     f"{r['macs'] / 1e9:.2f}G | {2 * r['macs'] / 1e9:.2f}G | {r['output_stride']} | "
                     f"{_fmt_rf(r['receptive_field'])} | {r['peak_activation_bytes'] / 1e6:.2f} MB | "
                     f"{r['measured_peak_activation_bytes'] / 1e6:.1f} MB |")
    table = "\n".join(lines)
    print(table)
    write_atomic(output / "zoo.md", (table + "\n\nMACs are multiply-accumulates; FLOPs = 2 x MACs.\n").encode())
    write_atomic(output / "zoo.json", json.dumps(rows, indent=2, default=str).encode())
    write_atomic(output / "zoo.png", _chart(rows))
    print(f"wrote {output / 'zoo.md'}, {output / 'zoo.json'}, {output / 'zoo.png'}")
    return rows


def _chart(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    panels = [
        ("parameters (M)", [r["params"] / 1e6 for r in rows]),
        ("MACs (G) at the paper's input size", [r["macs"] / 1e9 for r in rows]),
        ("peak activations, Table 3 rule (MB)", [r["peak_activation_bytes"] / 1e6 for r in rows]),
        ("receptive field (px; global = input)", [r["input_size"][1] if r["receptive_field"] == "global"
                                                 else r["receptive_field"] for r in rows]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 0.35 * len(names) + 1.5), sharey=True)
    for ax, (title, values) in zip(axes, panels):
        ax.barh(names, values, color="#4c72b0")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()  # shared y: first model on top
    fig.suptitle("betterconv model zoo")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
