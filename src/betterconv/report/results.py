"""Training and timing results read from `benchmarks/results/*.json` (or the folder `--results` names): each with
its date, machine and command. A missing file, one that is not JSON, or one a smoke test wrote, is not an error:
it becomes a `Result` that is not `ok` and says which command produces the real one."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import Source

# result file -> the command that produces it (as benchmarks/README.md records them; `python` = .venv/bin/python)
PRODUCERS: dict[str, str] = {
    "anchors_table1.json": "python benchmarks/anchors_table1.py",
    "bench_conv.json": "python benchmarks/bench_conv.py --repeats 10",
    "bench_infer.json": "python benchmarks/bench_infer.py --threads 2 1",
    "bench_yolov2_speed.json": "python benchmarks/bench_yolov2_speed.py --threads 2 --rounds 10 --blocks 3",
    "cls_compare.json": "python benchmarks/cls_compare.py",
    "det_coco128.json": "python benchmarks/det_coco128.py --epochs 300 --jitter 0.1 --output runs/det_coco128_j01",
    "det_ladder.json": "python benchmarks/det_ladder.py --data yolo:runs/camvid_boxes --train-split trainval "
                       "--val-split test --model yolov2 --batch-size 32 --jobs 5 --workers 3 --time-budget 270 "
                       "--train-args '--optimizer adamw --lr 1e-3 --schedule cosine --warmup-steps 50'",
    "det_second_scale_cpu.json": "python benchmarks/det_ladder.py --data yolo:runs/camvid_boxes --train-split "
                                 "trainval --val-split test --model yolov2 --arg width_mult=0.25 --rungs "
                                 "passthrough,second_scale --batch-size 16 --jobs 2 --workers 1 --time-budget 2700 "
                                 "'--train-args=--no-multiscale --optimizer adamw --lr 1e-3 --schedule cosine "
                                 "--warmup-steps 50' --output runs/det_second_scale_cpu "
                                 "--results benchmarks/results/det_second_scale_cpu.json",
    "det_second_scale_cpu_long.json": "python benchmarks/det_ladder.py --data yolo:runs/camvid_boxes --train-split "
                                      "trainval --val-split test --model yolov2 --arg width_mult=0.25 --rungs "
                                      "passthrough,second_scale --batch-size 16 --jobs 2 --workers 1 --time-budget "
                                      "4800 '--train-args=--no-multiscale --optimizer adamw --lr 1e-3 --schedule "
                                      "cosine --warmup-steps 50' --output runs/det_second_scale_cpu_long "
                                      "--results benchmarks/results/det_second_scale_cpu_long.json",
    "det_small_objects.json": "python benchmarks/det_small_objects.py --data yolo:runs/camvid_boxes --train-split "
                              "trainval --test-split test --backbones mobilenet_v2,darknet19 --seeds 0,1,2 "
                              "--time-budget 2400 --jobs 2",
    "seg_camvid_fcn32s.json": "python benchmarks/seg_camvid.py --experiment fcn32s --model fcn32s_mobilenet_v2 "
                              "--epochs 12 --crop-size 256 --batch-size 8 --grad-clip 5 --warmup-steps 100 "
                              "--workers 0 --output runs/clip",
    "seg_camvid_fcn16s.json": "python benchmarks/seg_camvid.py --experiment fcn16s --model fcn16s_mobilenet_v2 "
                              "--epochs 12 --crop-size 256 --batch-size 8 --grad-clip 5 --warmup-steps 100 "
                              "--workers 0 --output runs/clip",
    "seg_camvid_fcn8s.json": "python benchmarks/seg_camvid.py --experiment fcn8s --model fcn8s_mobilenet_v2 "
                             "--epochs 12 --crop-size 256 --batch-size 8 --grad-clip 5 --warmup-steps 100 "
                             "--workers 0 --output runs/clip",
    "seg_camvid_no_aspp.json": "python benchmarks/seg_camvid.py --experiment no_aspp --atrous-rates '' "
                               "--no-image-pooling --epochs 12 --crop-size 256 --batch-size 8",
    "seg_camvid_aspp.json": "python benchmarks/seg_camvid.py --experiment aspp --atrous-rates 6,12,18 "
                            "--no-image-pooling --epochs 12 --crop-size 256 --batch-size 8",
    "seg_camvid_aspp_pool.json": "python benchmarks/seg_camvid.py --experiment aspp_pool --atrous-rates 6,12,18 "
                                 "--epochs 12 --crop-size 256 --batch-size 8",
    "seg_camvid_pretrained.json": "python benchmarks/seg_camvid.py --experiment pretrained --epochs 20 "
                                  "--crop-size 256 --batch-size 8",
    "seg_camvid_scratch.json": "python benchmarks/seg_camvid.py --experiment scratch --scratch --epochs 20 "
                               "--crop-size 256 --batch-size 8",
    "seg_camvid_pretrained_mfb.json": "python benchmarks/seg_camvid.py --experiment pretrained_mfb --class-weights "
                                      "median-frequency --epochs 20 --crop-size 256 --batch-size 8",
    "seg_camvid_pretrained_50ep.json": "python benchmarks/seg_camvid.py --experiment pretrained_50ep --epochs 50 "
                                       "--crop-size 256 --batch-size 8",
    "seg_camvid_final.json": "python benchmarks/seg_camvid.py --experiment final --train-split train+val "
                             "--class-weights median-frequency --epochs 120 --crop-size 256 --batch-size 8 "
                             "--ms-flip-output-stride 16 --workers 0",
}

SMOKE_FLAGS = ("--smoke", "--max-steps-per-epoch")


@dataclass(frozen=True)
class Result:
    name: str
    path: Path
    status: str  # "ok", "missing", "smoke" or "unreadable"
    data: dict[str, Any] | None  # None unless ok
    command: str  # the recorded command when ok, else the command that produces the file

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def source(self) -> Source:
        if not self.ok:
            return Source("missing", f"{self.path} ({self.why})", command=self.command)
        return Source("file", str(self.path), date=str(self.data.get("date") or "") or None,
                      machine=machine_text(self.data), command=self.command)

    @property
    def why(self) -> str:
        return {"missing": "not found", "smoke": "a smoke test's output, not a measurement",
                "unreadable": "not a JSON object", "ok": "read"}[self.status]

    def missing_line(self) -> str:
        return f"{self.name}: {self.why}; `{self.command}` produces it"


def read_result(folder: Path, name: str) -> Result:
    """The result file `name` in `folder`; never raises for a missing, unreadable or smoke file."""
    path = Path(folder) / name
    producer = PRODUCERS.get(name, f"the benchmark script that writes {name} (benchmarks/README.md)")
    if not path.is_file():
        return Result(name, path, "missing", None, producer)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return Result(name, path, "unreadable", None, producer)
    if not isinstance(data, dict):
        return Result(name, path, "unreadable", None, producer)
    recorded = str(data.get("command") or "")
    if data.get("smoke") is True or any(flag in recorded.split() for flag in SMOKE_FLAGS):
        return Result(name, path, "smoke", None, producer)
    return Result(name, path, "ok", data, recorded.strip() or producer)


def machine_text(data: dict[str, Any]) -> str | None:
    """The machine a result file records, in words (None when it records none)."""
    machine = data.get("machine")
    if isinstance(machine, dict):
        parts = [str(machine.get("cpu") or "CPU model not recorded")]
        if machine.get("logical_cpus"):
            parts.append(f"{machine['logical_cpus']} logical CPUs")
        threads = machine.get("threads")
        if threads:
            parts.append(f"threads {', '.join(map(str, threads)) if isinstance(threads, list) else threads}")
        if machine.get("device") and machine.get("device") != "cpu":
            parts.append(str(machine["device"]))
        return ", ".join(parts)
    budget = data.get("budget")
    if isinstance(budget, dict):
        parts = [str(budget.get("device") or "device not recorded")]
        if budget.get("cpu"):
            parts.append(f"CPU {budget['cpu']}")
        if budget.get("threads"):
            parts.append(f"{budget['threads']} threads")
        if budget.get("cpu_cores"):
            parts.append(f"{budget['cpu_cores']} CPU cores")
        return ", ".join(parts)
    if data.get("threads"):
        torch_version = f", torch {data['torch']}" if data.get("torch") else ""
        return f"CPU model not recorded, {data['threads']} threads{torch_version}"
    return None
