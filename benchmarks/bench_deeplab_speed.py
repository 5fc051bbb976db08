"""Speed of betterconv's `deeplabv3_resnet50` against torchvision's, on CPU, in the same run.

Issue 4's acceptance: betterconv's training step and inference are at least as fast as torchvision's
`deeplabv3_resnet50` at 512x512 on CPU, i.e. ratio = torchvision time / betterconv time >= 0.95.

Both models have the same architecture — torchvision's `deeplabv3_resnet50(aux_loss=False)` is betterconv's
`deeplabv3_resnet50(output_stride=8, multi_grid=None, extra_conv=True, aspp_dropout=0.5)` — and the same
weights: torchvision's state dict is loaded into betterconv's model with `map_torchvision_state_dict`, and the
script checks that their eval-mode outputs agree before timing anything.

Measured, per memory format (contiguous and channels_last, each model and its input converted):

* inference: eval mode, under `torch.inference_mode()`, batch `--batch`;
* training step: train mode, forward, cross-entropy on random labels (10% of them 255, `ignore_index=255`),
  backward, SGD step (momentum 0.9, weight decay 1e-4), batch `--train-batch`. Batch 1 cannot train either model:
  the ASPP image-pooling branch's batch norm sees a (1, 256, 1, 1) tensor, one value per channel.

The machine is shared, so the variants are interleaved: every round runs each variant once, in an order rotated
from round to round, after one untimed warm-up call per variant. Reported per variant: median (and min) wall time
and median process CPU time over the rounds. Ratios are torchvision / betterconv at the same memory format:
`ratio` from the medians, `paired_ratio` the median of per-round ratios (both measured within one round, so
less exposed to load drifting over the run), `min_ratio` from the fastest rounds (other processes only ever
add time, so the minimum is the least disturbed figure). Process CPU time counts all threads of this process and is less
affected by other processes taking the cores than wall time.

    .venv/bin/python benchmarks/bench_deeplab_speed.py                       # about 6 minutes on 2 cores
    .venv/bin/python benchmarks/bench_deeplab_speed.py --repeats 3 --train-repeats 2 --size 256
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import betterconv
from betterconv.analysis.timing import cpu_model, load_average
from betterconv.interop.torchvision import map_torchvision_state_dict

IMPLS = ("torchvision", "betterconv")
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
NUM_CLASSES = 21


def build_models(seed: int) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    tv = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False)
    bc = betterconv.create_model("deeplabv3_resnet50", output_stride=8, multi_grid=None, extra_conv=True,
                                 aspp_dropout=0.5)
    bc.load_state_dict(map_torchvision_state_dict(bc, tv.state_dict(), source="torchvision deeplabv3_resnet50"))
    return {"torchvision": tv, "betterconv": bc}


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["out"] if isinstance(out, dict) else out  # torchvision returns {"out": ...}


def check_same(models: dict[str, nn.Module], size: int) -> float:
    """Largest absolute difference of the two models' eval-mode logits on one input; they must agree."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = (logits(models[k].eval(), x) for k in IMPLS)
    if a.shape != b.shape:
        raise SystemExit(f"output shapes differ: torchvision {tuple(a.shape)}, betterconv {tuple(b.shape)}")
    diff = (a - b).abs().max().item()
    if not diff <= 1e-4 * max(1.0, a.abs().max().item()):
        raise SystemExit(f"the two models disagree (max |difference| {diff:.3g}); not comparing their speed")
    return diff


class Variant:
    """One model in one memory format, with its optimizer (training) and inputs."""

    def __init__(self, impl: str, fmt: str, model: nn.Module, mode: str, batch: int, size: int) -> None:
        self.impl, self.fmt, self.mode, self.batch = impl, fmt, mode, batch
        self.model = model.to(memory_format=FORMATS[fmt])
        g = torch.Generator().manual_seed(2)
        self.x = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=FORMATS[fmt])
        y = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=g)
        y[torch.rand(y.shape, generator=g) < 0.1] = 255
        self.y = y
        self.optimizer = (torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
                          if mode == "train" else None)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.losses: list[float] = []

    @property
    def name(self) -> str:
        return f"{self.impl}/{self.fmt}"

    def step(self) -> None:
        if self.mode == "inference":
            self.model.eval()
            with torch.inference_mode():
                logits(self.model, self.x)
            return
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits(self.model, self.x), self.y, ignore_index=255)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())

    def timed(self) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        self.step()
        t1, c1 = time.perf_counter(), time.process_time()
        self.wall.append(t1 - t0)
        self.cpu.append(c1 - c0)


def run_mode(models: dict[str, nn.Module], mode: str, batch: int, size: int, repeats: int, formats: list[str],
             log) -> list[Variant]:
    variants = [Variant(impl, fmt, copy.deepcopy(models[impl]), mode, batch, size)
                for fmt in formats for impl in IMPLS]
    for v in variants:  # warm-up: allocator, oneDNN primitive caches
        v.step()
    for r in range(repeats):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:  # rotate the order so that no variant always runs first
            v.timed()
        log(f"  {mode} batch {batch} round {r + 1}/{repeats}: "
            + ", ".join(f"{v.name} {v.wall[-1]:.2f}s" for v in variants))
    if mode == "train":
        for v in variants:
            if not all(map(lambda l: l == l and abs(l) < float("inf"), v.losses)):
                raise SystemExit(f"{v.name}: non-finite training loss {v.losses}")
    return variants


def summarise(variants: list[Variant], mode: str, batch: int) -> dict:
    rows = {}
    for v in variants:
        rows[v.name] = {
            "impl": v.impl, "memory_format": v.fmt,
            "wall_s": [round(t, 4) for t in v.wall], "cpu_s": [round(t, 4) for t in v.cpu],
            "median_s": statistics.median(v.wall), "min_s": min(v.wall),
            "median_cpu_s": statistics.median(v.cpu),
        }
        if v.losses:
            rows[v.name]["losses"] = [round(l, 4) for l in v.losses]
    ratios = {}
    by = {(v.impl, v.fmt): v for v in variants}
    for fmt in dict.fromkeys(v.fmt for v in variants):
        tv, bc = by[("torchvision", fmt)], by[("betterconv", fmt)]
        ratios[fmt] = {
            "ratio": statistics.median(tv.wall) / statistics.median(bc.wall),
            "paired_ratio": statistics.median(a / b for a, b in zip(tv.wall, bc.wall)),
            "min_ratio": min(tv.wall) / min(bc.wall),
            "cpu_ratio": statistics.median(tv.cpu) / statistics.median(bc.cpu),
        }
    best = {impl: min((v for v in variants if v.impl == impl), key=lambda v: statistics.median(v.wall))
            for impl in IMPLS}
    ratios["best_format"] = {
        "torchvision": best["torchvision"].fmt, "betterconv": best["betterconv"].fmt,
        "ratio": statistics.median(best["torchvision"].wall) / statistics.median(best["betterconv"].wall),
    }
    return {"mode": mode, "batch": batch, "rounds": len(variants[0].wall), "variants": rows, "ratios": ratios}


def table(results: list[dict]) -> str:
    head = (f"{'mode':<10}{'batch':>6}  {'memory format':<14}{'torchvision s':>14}{'betterconv s':>14}"
            f"{'ratio':>8}{'paired':>8}{'min':>7}{'cpu':>7}  ok (>= 0.95)")
    lines = [head, "-" * len(head)]
    for res in results:
        for fmt, r in res["ratios"].items():
            if fmt == "best_format":
                continue
            tv = res["variants"][f"torchvision/{fmt}"]
            bc = res["variants"][f"betterconv/{fmt}"]
            lines.append(f"{res['mode']:<10}{res['batch']:>6}  {fmt:<14}{tv['median_s']:>14.3f}{bc['median_s']:>14.3f}"
                         f"{r['ratio']:>8.3f}{r['paired_ratio']:>8.3f}{r['min_ratio']:>7.3f}{r['cpu_ratio']:>7.3f}  "
                         f"{'yes' if r['ratio'] >= 0.95 else 'NO'}")
        b = res["ratios"]["best_format"]
        tv_best, bc_best = (res["variants"][f"{impl}/{b[impl]}"]["median_s"] for impl in IMPLS)
        lines.append(f"{res['mode']:<10}{res['batch']:>6}  {'best of each':<14}{tv_best:>14.3f}{bc_best:>14.3f}"
                     f"{b['ratio']:>8.3f}{'':>22}  (torchvision {b['torchvision']}, betterconv {b['betterconv']})")
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed inference rounds (each runs every variant once)")
    p.add_argument("--train-repeats", type=int, default=3, help="timed training rounds (a step takes 10-30 s)")
    p.add_argument("--size", type=int, default=512, help="input height and width")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="inference batch size(s)")
    p.add_argument("--train-batch", type=int, nargs="+", default=[2], help="training batch size(s), >= 2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    p.add_argument("--modes", nargs="+", choices=["inference", "train"], default=["inference", "train"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=here / "results" / "deeplab_speed.json")
    args = p.parse_args(argv)
    if "train" in args.modes and min(args.train_batch) < 2:
        p.error("--train-batch must be >= 2: ASPP's image-pooling batch norm cannot train on one value per channel")

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)
    models = build_models(args.seed)
    diff = check_same(models, min(args.size, 256))
    log(f"models agree (max |logit difference| {diff:.2e}); threads {torch.get_num_threads()}, "
        f"load average {load_average()}")

    load_before = load_average()
    results = []
    plan = ([("inference", b, args.repeats) for b in args.batch] if "inference" in args.modes else []) + \
           ([("train", b, args.train_repeats) for b in args.train_batch] if "train" in args.modes else [])
    for mode, batch, repeats in plan:
        variants = run_mode(models, mode, batch, args.size, repeats, args.formats, log)
        results.append(summarise(variants, mode, batch))
        del variants
    elapsed = time.perf_counter() - start

    print()
    print(f"deeplabv3_resnet50, {args.size}x{args.size}, float32, {args.threads} threads, {cpu_model()}; "
          f"ratio = torchvision / betterconv median wall time (>= 1: betterconv faster)")
    print(table(results))

    data = {
        "benchmark": "deeplabv3_resnet50 speed, betterconv vs torchvision",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "platform": platform.platform(), "load_average_before": load_before,
                    "load_average_after": load_average()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "betterconv": getattr(betterconv, "__version__", None)},
        "settings": {"size": args.size, "dtype": "float32", "repeats": args.repeats,
                     "train_repeats": args.train_repeats, "formats": args.formats, "seed": args.seed,
                     "betterconv_model": "create_model('deeplabv3_resnet50', output_stride=8, multi_grid=None, "
                                         "extra_conv=True, aspp_dropout=0.5) with torchvision's weights",
                     "torchvision_model": "deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False)",
                     "train_step": "forward + cross_entropy(ignore_index=255, 10% of labels 255) + backward + "
                                   "SGD(lr=0.01, momentum=0.9, weight_decay=1e-4) step",
                     "ratio": "torchvision median wall time / betterconv median wall time at the same memory "
                              "format; >= 0.95 passes issue 4's speed criterion"},
        "max_abs_logit_difference": diff,
        "elapsed_s": round(elapsed, 1),
        "results": results,
        "passes": all(r["ratios"][f]["ratio"] >= 0.95 for r in results for f in r["ratios"] if f != "best_format"),
    }
    write_json(args.output, data)
    print(f"\nwrote {args.output} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
