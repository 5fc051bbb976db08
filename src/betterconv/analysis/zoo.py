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
    write_atomic(output / "zoo.png", zoo_chart(rows))
    print(f"wrote {output / 'zoo.md'}, {output / 'zoo.json'}, {output / 'zoo.png'}")
    return rows


def receptive_field_bars(rows: list[dict]) -> tuple[list[float], list[bool]]:
    """The receptive-field panel's bar lengths and which of them are "global" (an output that sees the whole image,
    through global pooling or image-level features): a global field is larger than any finite one, so its bar is
    drawn the longest, at 1.5x the largest finite field or input side of the zoo, and labelled "global" in the
    chart."""
    finite = [float(r["receptive_field"]) for r in rows if r["receptive_field"] != "global"]
    is_global = [r["receptive_field"] == "global" for r in rows]
    longest = 1.5 * max(finite + [max(r["input_size"][1:]) for r in rows])
    return [longest if g else float(r["receptive_field"]) for r, g in zip(rows, is_global)], is_global


def zoo_chart(rows: list[dict], title: str = "betterconv model zoo") -> bytes:
    """The zoo as four log-scale bar panels (parameters, MACs, peak activations, receptive field), PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    fields, rf_globals = receptive_field_bars(rows)
    panels = [
        ("parameters (M)", [r["params"] / 1e6 for r in rows]),
        ("MACs (G) at the paper's input size", [r["macs"] / 1e9 for r in rows]),
        ("peak activations, Table 3 rule (MB)", [r["peak_activation_bytes"] / 1e6 for r in rows]),
        ("receptive field (px)", fields),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 0.35 * len(names) + 1.5), sharey=True)
    for ax, (title, values) in zip(axes, panels):
        bars = ax.barh(names, values, color="#4c72b0")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    rf_axis = axes[-1]
    if any(rf_globals):
        rf_axis.set_xlim(right=1.8 * max(fields))  # room for the "global" labels
    for bar, is_global in zip(bars, rf_globals):  # `bars`: the last panel's, the receptive fields
        if is_global:
            bar.set_color("#8c8c8c")
            rf_axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " global", va="center", fontsize=8)
    axes[0].invert_yaxis()  # shared y: first model on top
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
