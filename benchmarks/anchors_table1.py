"""YOLOv2 Table 1 on a real dataset: average IoU of boxes with their closest prior for IoU k-means, squared-
Euclidean k-means and Faster R-CNN's hand-picked anchors (k = 5 and 9).

    python benchmarks/anchors_table1.py [--data yolo:../shared/data/coco128 --split train2017]

Writes benchmarks/results/anchors_table1.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=f"yolo:{ROOT.parent / 'shared' / 'data' / 'coco128'}")
    p.add_argument("--split", default="train2017")
    p.add_argument("--input-size", type=int, default=416)
    args = p.parse_args()
    from betterconv.files import write_atomic
    from betterconv.data.detection import detection_dataset
    from betterconv.tasks.anchors import compare_anchors, dataset_boxes, kmeans_anchors

    dataset = detection_dataset(args.data, args.split)
    wh, sizes = dataset_boxes(dataset, image_sizes=True)
    rows = [{"method": r.method, "k": r.k, "avg_iou": r.avg_iou} for r in compare_anchors(wh, (5, 9), sizes)]
    for r in rows:
        print(f"{r['method']:24s} k={r['k']}  avg IoU {100 * r['avg_iou']:.2f}")
    anchors = kmeans_anchors(wh, 5).anchors(args.input_size)
    report = {"benchmark": "anchors_table1", "data": f"{args.data} {args.split}", "boxes": int(len(wh)),
              "rows": rows, "iou_kmeans_k5_anchors_grid_units": [[float(a), float(b)] for a, b in anchors],
              "input_size": args.input_size, "paper_voc2007": {"cluster_sse_5": 0.587, "cluster_iou_5": 0.610,
                                                                "anchor_boxes_9": 0.609, "cluster_iou_9": 0.672},
              "command": "python benchmarks/anchors_table1.py " + shlex.join(sys.argv[1:]),
              "date": datetime.date.today().isoformat()}
    out = ROOT / "benchmarks" / "results" / "anchors_table1.json"
    write_atomic(out, json.dumps(report, indent=2).encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
