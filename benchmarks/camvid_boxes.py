"""A detection dataset from CamVid's semantic labels, for the detection benchmarks that need a real train/test
split (issue 5 (b) the YOLOv2 ablation ladder, (c) AP_small with and without the second scale). PASCAL VOC is not
in ../shared; CamVid is, with 701 road scenes full of small objects (far cars, pedestrians, signs).

Each connected region (8-connectivity, OpenCV `connectedComponentsWithStats`) of one of the object classes below in
a 480x360 label image becomes a box. What this makes is not an instance annotation: touching objects of one class
(a queue of parked cars, a group of pedestrians) merge into one box, and an object cut in two by an occluder
(a pole in front of a car) gives two. Regions under `--min-area` pixels are dropped (label noise and slivers).

    python benchmarks/camvid_boxes.py --output runs/camvid_boxes

Writes the YOLO txt layout the loaders read (`yolo:PATH`): images/{trainval,test}/*.jpg (copies),
labels/{trainval,test}/*.txt (class cx cy w h, normalised) and classes.txt; trainval = CamVid's train + val
(468 images), test = its test split (233 images). Prints per-split box counts and the COCO size mix.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"
# CamVid label value -> detection class (SegNet's 11-class CamVid: 6 SignSymbol, 8 Car, 9 Pedestrian, 10 Bicyclist)
CLASSES = {8: "car", 9: "pedestrian", 10: "bicyclist", 6: "sign"}
SPLITS = {"trainval": ("train.txt", "val.txt"), "test": ("test.txt",)}


def boxes_from_label(label, min_area: int) -> list[tuple[int, int, int, int, int]]:
    """(class index, x0, y0, x1, y1) in pixels, x1/y1 exclusive, one per connected region of an object class."""
    import cv2
    import numpy as np

    out = []
    for index, value in enumerate(CLASSES):
        mask = (label == value).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for x, y, w, h, area in stats[1:count]:  # row 0 is the background
            if area >= min_area:
                out.append((index, int(x), int(y), int(x + w), int(y + h)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camvid", default=str(CAMVID))
    p.add_argument("--output", default=str(ROOT / "runs" / "camvid_boxes"))
    p.add_argument("--min-area", type=int, default=30, help="smallest region kept, in pixels")
    args = p.parse_args()
    try:
        import cv2
    except ImportError:
        sys.exit('OpenCV not installed: pip install "opencv-python-headless<5"')
    camvid, out = Path(args.camvid), Path(args.output)
    if not (camvid / "train.txt").is_file():
        sys.exit(f"CamVid not found at {camvid} (needs train.txt, val.txt, test.txt)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    for split, lists in SPLITS.items():
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "labels" / split).mkdir(parents=True)
        counts = {name: 0 for name in CLASSES.values()}
        sizes = {"small": 0, "medium": 0, "large": 0}  # COCO's areas: < 32^2, < 96^2, larger
        images = 0
        for listing in lists:
            for line in (camvid / listing).read_text().split("\n"):
                if not line.strip():
                    continue
                image_rel, label_rel = line.split()
                label = cv2.imread(str(camvid / label_rel), cv2.IMREAD_UNCHANGED)
                if label is None:
                    sys.exit(f"{camvid / label_rel}: not a readable label image")
                h, w = label.shape
                rows = []
                for cls, x0, y0, x1, y1 in boxes_from_label(label, args.min_area):
                    bw, bh = x1 - x0, y1 - y0
                    rows.append(f"{cls} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {bw / w:.6f} {bh / h:.6f}")
                    counts[list(CLASSES.values())[cls]] += 1
                    area = bw * bh
                    sizes["small" if area < 32 ** 2 else "medium" if area < 96 ** 2 else "large"] += 1
                image = camvid / image_rel
                shutil.copyfile(image, tmp / "images" / split / image.name)
                (tmp / "labels" / split / (image.stem + ".txt")).write_text("".join(r + "\n" for r in rows))
                images += 1
        summary[split] = {"images": images, "boxes": counts, "sizes": sizes}
    (tmp / "classes.txt").write_text("".join(name + "\n" for name in CLASSES.values()))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
