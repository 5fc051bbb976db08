"""Detection datasets, joint box transforms and dimension clusters: real coco128 / coco8 files and small
synthetic VOC / YOLO layouts."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from betterconv.data.class_names import VOC_CLASSES, coco_classes
from betterconv.data.det_transforms import (eval_transform, letterbox, letterbox_params, resize, train_transform,
                                            unletterbox_boxes, unresize_boxes)
from betterconv.data.detection import (BadSampleError, COCODetection, DataWarning,
                                       VOCDetection, YOLODetection, collate_detection, detection_dataset,
                                       read_data_yaml, to_voc_coordinates)
from betterconv.errors import BetterConvError
from betterconv.tasks.anchors import (anchors_report, compare_anchors, dataset_boxes, faster_rcnn_anchors,
                                      kmeans_anchors)

from conftest import save_random_image


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return fn(*args, **kwargs)


# --- coco128: YOLO txt and COCO json agree ---------------------------------------------------------------------

def test_coco128_yolo_and_json_give_the_same_boxes(shared_data):
    root = shared_data / "coco128"
    with pytest.warns(DataWarning, match="2 images without a label file.*2 label files without an image"):
        yolo = detection_dataset(f"yolo:{root}", "train")
    coco = detection_dataset(f"coco:{root}", "train")
    assert len(yolo) == len(coco) == 128 and coco.num_classes == yolo.num_classes == 80
    assert coco.class_names == coco_classes() and coco.category_ids[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    assert sorted(p.stem for p in yolo.orphan_labels) == ["000000000656", "000000000659"]
    assert yolo.clipped == yolo.dropped == coco.clipped == coco.dropped == 0
    by_stem = {r.image.stem: r for r in coco.records}
    empty = []
    for i, record in enumerate(yolo.records):
        if not record.annotation.exists():
            empty.append(record.image_id)
        other = by_stem[record.image_id]
        assert other.image_id == int(record.image_id)  # COCO: the int id, YOLO: the stem
        keep = ~other.difficult  # the YOLO labels were made without the crowd boxes
        w, h = other.size
        ours = np.concatenate([record.boxes * [w, h, w, h], record.labels[:, None]], 1)
        theirs = np.concatenate([other.boxes[keep], other.labels[keep][:, None]], 1)
        assert ours.shape == theirs.shape, record.image_id
        if len(ours):  # each box has a twin within a pixel with the same label, both ways
            gap = np.abs(ours[:, None] - theirs[None]).max(axis=2)
            assert gap.min(axis=0).max() < 1.0 and gap.min(axis=1).max() < 1.0, record.image_id
        if i < 4:  # the loaded sample: the same boxes in pixels of the image file
            _, target = yolo[i]
            assert target["boxes"].canvas_size == (h, w) and target["image_id"] == record.image_id
            assert np.allclose(target["boxes"].numpy(), ours[:, :4], atol=1e-3)
    assert sorted(empty) == ["000000000250", "000000000508"]
    assert {by_stem[s].image_id for s in empty} == {250, 508} and all(len(by_stem[s].boxes) == 0 for s in empty)
    crowd = sum(int(r.difficult.sum()) for r in coco.records)
    assert crowd == 10 and sum(len(r.boxes) for r in coco.records) == 939
    image, target = coco[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape[0] == 3
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].dtype == torch.float32
    assert target["boxes"].canvas_size == tuple(image.shape[1:]) == target["orig_size"]
    assert target["labels"].dtype == torch.int64 and target["difficult"].dtype == torch.bool
    assert isinstance(target["image_id"], int)


def test_coco8_yaml_names_and_splits(shared_data):
    root = shared_data / "coco8"
    for spec in (f"yolo:{root}", f"yolo:{root / 'coco8.yaml'}"):
        val = detection_dataset(spec, "val")
        assert val.class_names == coco_classes() and len(val) == 4
        assert val.image_ids == ["000000000036", "000000000042", "000000000049", "000000000061"]
    train = detection_dataset(f"yolo:{root}", "train")
    assert len(train) == 4 and all(len(r.boxes) for r in train.records)
    config = read_data_yaml(root / "coco8.yaml")
    assert config["train"] == "images/train" and config["path"] is None and config["names"]["79"] == "toothbrush"


def test_simple_yaml_forms(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("path: .  # root\ntrain: [a/images, 'b/images']\nval: list.txt\nnames:\n  - cat\n  - 'dog # 2'\n"
                    "other: {0: x, 1: y}\n")
    config = read_data_yaml(path)
    assert config == {"path": ".", "train": ["a/images", "b/images"], "val": "list.txt",
                      "names": ["cat", "dog # 2"], "other": {"0": "x", "1": "y"}}


# --- VOC XML ---------------------------------------------------------------------------------------------------

def _voc_xml(objects, width=64, height=48, size=True) -> str:
    parts = ["<annotation>", "  <filename>x.jpg</filename>"]
    if size:
        parts.append(f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    for name, difficult, (x1, y1, x2, y2) in objects:
        parts += ["  <object>", f"    <name>{name}</name>", f"    <difficult>{difficult}</difficult>",
                  f"    <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>",
                  "  </object>"]
    return "\n".join(parts + ["</annotation>"]) + "\n"


def _voc_tree(root: Path, year: str, samples: dict[str, str], split: str = "trainval") -> Path:
    folder = root / "VOCdevkit" / f"VOC{year}"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    for i, (image_id, xml) in enumerate(samples.items()):
        (folder / "Annotations" / f"{image_id}.xml").write_text(xml)
        save_random_image(folder / "JPEGImages" / f"{image_id}.jpg", 48, 64, seed=i)
    (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(samples) + "\n")
    return folder


def test_voc_xml_boxes_difficult_and_years(tmp_path):
    _voc_tree(tmp_path, "2007", {"000001": _voc_xml([("dog", 0, (1, 1, 10, 20)), ("person", 1, (5, 6, 64, 48))]),
                                 "000002": _voc_xml([]),
                                 "000003": _voc_xml([("car", "0", (3, 4, 30, 40))], size=False)})
    _voc_tree(tmp_path, "2012", {"2008_000001": _voc_xml([("cat", 0, (2, 2, 3, 3))])})
    ds = detection_dataset(f"voc:{tmp_path}", "2007_trainval+2012_trainval")
    assert len(ds) == 4 and ds.class_names == VOC_CLASSES
    assert ds.image_ids == ["000001", "000002", "000003", "2008_000001"]
    image, target = ds[0]
    assert image.shape == (3, 48, 64) and target["image_id"] == "000001"
    # 1-based inclusive pixels -> (xmin - 1, ymin - 1, xmax, ymax): widths keep VOC's +1
    assert target["boxes"].tolist() == [[0, 0, 10, 20], [4, 5, 64, 48]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert target["difficult"].tolist() == [False, True]
    assert to_voc_coordinates(target["boxes"].as_subclass(torch.Tensor)).tolist() == [[1, 1, 10, 20], [5, 6, 64, 48]]
    assert ds[1][1]["boxes"].shape == (0, 4) and ds[1][1]["labels"].shape == (0,)  # no objects is fine
    assert ds.records[2].size == (64, 48)  # no <size>: read from the image
    assert ds[3][1]["boxes"].tolist() == [[1, 1, 3, 3]]
    assert ds.clipped == ds.dropped == 0
    with pytest.raises(BetterConvError, match="name the year"):
        VOCDetection(tmp_path, "trainval")
    assert len(VOCDetection(tmp_path / "VOCdevkit" / "VOC2007", "trainval")) == 3
    with pytest.raises(BetterConvError, match="no VOC2010"):
        VOCDetection(tmp_path, "2010_trainval")


def test_voc_bad_annotations_name_file_and_line(tmp_path):
    folder = _voc_tree(tmp_path, "2007", {"a": _voc_xml([("dog", 0, (1, 1, 10, 10)), ("unicorn", 0, (1, 1, 5, 5))]),
                                          "b": _voc_xml([("dog", 0, (1, 1, "ten", 10))]),
                                          "c": _voc_xml([("dog", 0, (1, 1, 10, 10))])})
    with pytest.raises(BadSampleError, match=r"a\.xml:10: class 'unicorn' is not one of the 20 classes"):
        VOCDetection(folder, "trainval")
    ds = _quiet(VOCDetection, folder, "trainval", skip_bad=True)
    assert ds.image_ids == ["c"] and len(ds.skipped) == 2
    assert any(r"b.xml:7: <xmax> 'ten' is not a number" in message for _, message in ds.skipped)
    (folder / "Annotations" / "x.xml").write_text("<annotation><object></annotation>")
    (folder / "ImageSets" / "Main" / "bad.txt").write_text("x\n")
    with pytest.raises(BadSampleError, match=r"x\.xml:1: malformed XML"):
        VOCDetection(folder, "bad")


# --- YOLO txt: bad data ----------------------------------------------------------------------------------------

def _yolo_tree(root: Path, labels: dict[str, str], names=("a", "b", "c"), size=(40, 50)) -> Path:
    (root / "labels" / "train").mkdir(parents=True)
    for i, (stem, text) in enumerate(labels.items()):
        save_random_image(root / "images" / "train" / f"{stem}.jpg", size[1], size[0], seed=i)
        if text is not None:
            (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def test_yolo_clipping_and_zero_area_are_counted(tmp_path):
    root = _yolo_tree(tmp_path, {"ok": "0 0.5 0.5 0.5 0.5\n", "empty": "", "nolabel": None,
                                 "edge": "1 0.9 0.5 0.4 0.2\n2 0.1 0.1 0.2 0.2\n0 1.5 0.5 0.2 0.2\n1 0.5 0.5 0 0.3\n"})
    with pytest.warns(DataWarning) as record:
        ds = YOLODetection(root, "train")
    assert len(record) == 1  # one summary line
    message = str(record[0].message)
    assert "clipped 1 boxes" in message and "dropped 2 boxes" in message and "1 images without a label file" in message
    assert ds.clipped == 1 and ds.dropped == 2 and ds.class_names == ("a", "b", "c")
    index = ds.image_ids.index("edge")
    image, target = ds[index]
    assert image.shape == (3, 50, 40)
    assert torch.allclose(target["boxes"], torch.tensor([[28.0, 20.0, 40.0, 30.0], [0.0, 0.0, 8.0, 10.0]]))
    assert target["labels"].tolist() == [1, 2]
    for stem in ("empty", "nolabel"):
        assert ds[ds.image_ids.index(stem)][1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("text, pattern", [
    ("0 0.5 0.5 0.1 0.1\n\n3 0.5 0.5 0.1 0.1\n", r"bad\.txt:3: class id 3 is outside the 3 classes \(0-2\)"),
    ("0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1\n", r"bad\.txt:2: expected 'class cx cy w h'"),
    ("1 0.5 x 0.1 0.1\n", r"bad\.txt:1: coordinate 'x' is not a number"),
    ("-1 0.5 0.5 0.1 0.1\n", r"bad\.txt:1: class id -1 is outside"),
    ("1.5 0.5 0.5 0.1 0.1\n", r"bad\.txt:1: class id '1.5' is not an integer"),
    ("0 0.5 0.5 -0.1 0.1\n", r"bad\.txt:1: negative width"),
    ("0 320 240 50 60\n", r"bad\.txt:1: coordinates .* are not normalised"),
])
def test_yolo_bad_lines_name_file_and_line(tmp_path, text, pattern):
    root = _yolo_tree(tmp_path, {"good": "0 0.5 0.5 0.1 0.1\n", "bad": text})
    with pytest.raises(BadSampleError, match=pattern):
        YOLODetection(root, "train")
    ds = _quiet(YOLODetection, root, "train", skip_bad=True)
    assert ds.image_ids == ["good"] and len(ds.skipped) == 1 and ds.skipped[0][0].endswith("bad.txt")


def test_missing_image_and_polygons(tmp_path):
    root = _yolo_tree(tmp_path, {"one": "0 0.5 0.5 0.2 0.2\n", "two": "2 0.1 0.2 0.5 0.2 0.3 0.6\n"})
    lst = tmp_path / "list.txt"
    lst.write_text("images/train/one.jpg\nimages/train/gone.jpg\n" + str(root / "images/train/two.jpg") + "\n")
    with pytest.warns(DataWarning, match="1 images without a label file"):
        ds = detection_dataset(f"yolo:{lst}", "anything")
    assert ds.image_ids == ["one", "gone", "two"]
    with pytest.raises(BadSampleError, match=r"missing image file .*gone\.jpg"):
        ds[1]
    assert torch.allclose(ds[2][1]["boxes"], torch.tensor([[4.0, 10.0, 20.0, 30.0]]))  # the polygon's box
    ds = _quiet(detection_dataset, f"yolo:{lst}", "anything", skip_bad=True)
    assert ds.image_ids == ["one", "two"] and "gone.jpg" in ds.skipped[0][1]


def test_coco_json_errors_and_crowd(tmp_path):
    import json

    save_random_image(tmp_path / "images" / "val" / "a.jpg", 30, 40)
    save_random_image(tmp_path / "images" / "val" / "b.jpg", 30, 40, seed=1)
    data = {"categories": [{"id": 7, "name": "x"}, {"id": 3, "name": "y"}],
            "images": [{"id": 11, "file_name": "a.jpg", "width": 40, "height": 30},
                       {"id": 12, "file_name": "b.jpg", "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 11, "category_id": 3, "bbox": [1, 2, 10, 5], "iscrowd": 0},
                            {"id": 2, "image_id": 11, "category_id": 7, "bbox": [30, 20, 20, 20], "iscrowd": 1},
                            {"id": 3, "image_id": 12, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(data))
    with pytest.raises(BadSampleError, match=r"instances_val\.json: annotation 3 of image b\.jpg has unknown "
                                             r"category_id 5"):
        COCODetection(tmp_path, "val")
    with pytest.warns(DataWarning, match="clipped 1 boxes.*skipped 1 samples"):
        ds = COCODetection(tmp_path, "val", skip_bad=True)
    assert ds.class_names == ("x", "y") and ds.category_ids == [7, 3] and ds.image_ids == [11]
    _, target = ds[0]
    assert target["boxes"].tolist() == [[1, 2, 11, 7], [30, 20, 40, 30]]
    assert target["labels"].tolist() == [1, 0] and target["difficult"].tolist() == [False, True]


def test_factory_errors(tmp_path):
    with pytest.raises(BetterConvError, match="KIND:PATH"):
        detection_dataset("pascal:/x", "train")
    with pytest.raises(BetterConvError):
        detection_dataset(f"yolo:{tmp_path / 'nothing'}", "train")


# --- transforms ------------------------------------------------------------------------------------------------

def _red_boxes_sample(seed: int):
    """A black image with red filled rectangles exactly at its boxes."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    boxes = []
    for half in range(2):  # one in each half: apart from each other
        x1, y1 = int(rng.integers(half * w // 2, (half + 1) * w // 2 - 24)), int(rng.integers(0, h - 20))
        x2, y2 = x1 + int(rng.integers(12, 20)), y1 + int(rng.integers(12, 20))
        image[0, y1:y2, x1:x2] = 255
        boxes.append((x1, y1, x2, y2))
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY",
                                                canvas_size=(h, w)),
              "labels": torch.tensor([3, 5]), "difficult": torch.tensor([False, True]), "image_id": "x",
              "orig_size": (h, w)}
    return tv_tensors.Image(image), target


def _red_extent(image: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """The bounding box of the clearly red pixels near `box`."""
    red = (image[0] > 0.5) & (image[1] < 0.2) & (image[2] < 0.2)
    x1, y1, x2, y2 = box.tolist()
    window = torch.zeros_like(red)
    window[max(0, int(y1) - 3):int(y2) + 3, max(0, int(x1) - 3):int(x2) + 3] = True
    ys, xs = torch.nonzero(red & window, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def test_train_transform_keeps_boxes_on_their_pixels():
    torch.manual_seed(0)
    t = train_transform(96, jitter=0.3, hsv=False)
    checked = 0
    for seed in range(16):
        image, target = _red_boxes_sample(seed)
        out, out_target = t(image, target)
        assert out.dtype == torch.float32 and out.shape == (3, 96, 96) and 0 <= out.min() and out.max() <= 1
        boxes = out_target["boxes"]
        assert boxes.canvas_size == (96, 96) and len(boxes) == len(out_target["labels"]) == \
            len(out_target["difficult"])
        assert out_target["image_id"] == "x" and out_target["orig_size"] == target["orig_size"]
        for box in boxes:
            if (box[2:] - box[:2]).min() < 4:
                continue  # cut down to a sliver by the crop
            assert torch.allclose(_red_extent(out, box), box, atol=2.0), (seed, box)
            checked += 1
    assert checked >= 16


def test_hsv_keeps_geometry_and_range():
    torch.manual_seed(3)
    t = train_transform(64, jitter=0.0, hflip=0)
    image, target = _red_boxes_sample(1)
    out, out_target = t(image, target)
    expected = target["boxes"] * torch.tensor([64 / image.shape[2], 64 / image.shape[1]] * 2)
    assert torch.allclose(out_target["boxes"], expected, atol=1e-4) and 0 <= out.min() and out.max() <= 1
    plain, _ = train_transform(64, jitter=0.0, hflip=0, hsv=False)(image, target)
    same, _ = train_transform(64, jitter=0.0, hflip=0, hue=0, saturation=1, exposure=1)(image, target)
    assert torch.allclose(same, plain, atol=1e-6) and not torch.allclose(out, plain, atol=1e-2)
    gray = torch.full((3, 8, 8), 0.5)
    for _ in range(5):  # gray has no hue or saturation: only the exposure changes it, by 1/1.5 .. 1.5
        empty = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(8, 8)),
                 "labels": torch.zeros(0, dtype=torch.int64)}
        out, _ = train_transform(32, jitter=0.0, hflip=0)(tv_tensors.Image(gray), empty)
        assert (out - out[0, 0, 0]).abs().max() < 1e-6 and 0.5 / 1.5 - 1e-6 <= out[0, 0, 0] <= 0.75 + 1e-6


def test_flip_and_labels_follow():
    from torchvision.transforms import v2

    image, target = _red_boxes_sample(2)
    w = image.shape[2]
    out, out_target = v2.RandomHorizontalFlip(1.0)(image, target)
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    assert torch.equal(out_target["boxes"], torch.stack([w - x2, y1, w - x1, y2], 1))
    assert torch.equal(out, image.flip(-1))
    # a box pushed fully out of the image disappears with its label and flag
    target["boxes"] = tv_tensors.wrap(torch.tensor([[0.0, 0, 10, 10], [w + 5.0, 0, w + 20, 10]]), like=target["boxes"])
    _, kept = train_transform(64, jitter=0, hflip=0, hsv=False)(image, target)
    assert kept["labels"].tolist() == [3] and kept["difficult"].tolist() == [False] and kept["boxes"].shape == (1, 4)


def test_letterbox_round_trip():
    image, target = _red_boxes_sample(5)
    h, w = image.shape[1:]
    boxes = target["boxes"].as_subclass(torch.Tensor)
    for size in (64, (96, 128), 416):
        out, out_target = letterbox(size)(image, target)
        new_h, new_w, top, left = letterbox_params((h, w), size)
        assert out.shape[1:] == ((size, size) if isinstance(size, int) else size) and out.dtype == torch.uint8
        assert (out[:, :top] == 127).all() and (out[:, top + new_h:] == 127).all()
        assert (out[:, :, :left] == 127).all() and (out[:, :, left + new_w:] == 127).all()
        assert torch.allclose(unletterbox_boxes(out_target["boxes"], (h, w), size), boxes, atol=1e-3)
        out, out_target = resize(size)(image, target)
        assert torch.allclose(unresize_boxes(out_target["boxes"], (h, w), size), boxes, atol=1e-3)
    assert letterbox_params((480, 640), 416) == (312, 416, 52, 0)
    out, out_target = eval_transform(416, letterbox=True)(image, target)
    assert out.dtype == torch.float32 and abs(float(out[0, 0, 0]) - 127 / 255) < 1e-6
    assert torch.allclose(unletterbox_boxes(out_target["boxes"], (h, w), 416), boxes, atol=1e-3)
    target["boxes"] = tv_tensors.wrap(torch.tensor([[3.0, 4.0, 3.5, 4.2]]), like=target["boxes"])
    target["labels"], target["difficult"] = target["labels"][:1], target["difficult"][:1]
    _, out_target = eval_transform(32)(image, target)
    assert len(out_target["boxes"]) == 1  # evaluation keeps even sub-pixel boxes


def test_multiscale_size_and_loader(shared_data):
    t = train_transform(416)
    t.size = 352
    assert t.size == (352, 352)
    with pytest.raises(BetterConvError, match="multiple of 32"):
        t.size = 350
    with pytest.raises(BetterConvError):
        train_transform(100)
    from betterconv.tasks.multiscale import MultiScale

    ds = detection_dataset(f"yolo:{shared_data / 'coco8'}", "train", transform=train_transform(608, hsv=False))
    images, targets = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate_detection)))
    multiscale = MultiScale(every=10, seed=1)
    sizes = []
    for step in range(100):  # YOLOv2 §2: a new size every 10 batches, from 320, 352, ..., 608
        resized, scaled, size = multiscale(images, targets, step)
        assert resized.shape == (2, 3, size, size) and size in range(320, 609, 32)
        torch.testing.assert_close(scaled[0]["boxes"], targets[0]["boxes"] * size / 608)
        sizes.append(size)
    assert all(len(set(sizes[i:i + 10])) == 1 for i in range(0, 100, 10)) and len(set(sizes)) > 3
    with pytest.raises(BetterConvError, match="differ in size"):
        collate_detection([(torch.zeros(3, 4, 4), {}), (torch.zeros(3, 4, 5), {})])


# --- dimension clusters ----------------------------------------------------------------------------------------

def test_kmeans_recovers_three_shapes():
    rng = np.random.default_rng(0)
    shapes = np.array([[0.05, 0.1], [0.3, 0.15], [0.6, 0.8]])
    boxes = np.concatenate([s * rng.uniform(0.95, 1.05, (200, 2)) for s in shapes])
    for distance in ("iou", "euclidean"):
        result = kmeans_anchors(boxes, 3, distance, seed=1)
        assert np.allclose(result.centroids, shapes, rtol=0.03), distance
        assert result.avg_iou > 0.9
    again = kmeans_anchors(boxes, 3, seed=1)
    assert np.array_equal(again.centroids, kmeans_anchors(boxes, 3, seed=1).centroids)  # deterministic
    assert np.allclose(again.anchors(416), shapes * 13, rtol=0.03)
    with pytest.raises(BetterConvError):
        kmeans_anchors(boxes[:2], 3)


def test_faster_rcnn_anchor_values():
    assert faster_rcnn_anchors().tolist() == [[184, 96], [368, 192], [736, 384], [128, 128], [256, 256],
                                              [512, 512], [88, 176], [176, 352], [352, 704]]


def test_coco128_dimension_clusters(shared_data):
    ds = detection_dataset(f"coco:{shared_data / 'coco128'}", "train")
    wh, sizes = dataset_boxes(ds, image_sizes=True)
    assert wh.shape == sizes.shape == (929, 2)  # crowd boxes left out
    rows = {(r.method, r.k): r.avg_iou for r in compare_anchors(wh, (5, 9), image_sizes=sizes)}
    for k in (5, 9):
        assert rows[("IoU k-means", k)] >= rows[("Euclidean k-means", k)]
    assert rows[("IoU k-means", 9)] > rows[("Faster R-CNN anchors", 9)]
    report = anchors_report(wh, 5, 416, compare=True, image_sizes=sizes, source="coco128")
    print("\n" + report)
    assert "anchors = " in report and "Faster R-CNN anchors" in report
    assert rows[("IoU k-means", 5)] > 0.45
