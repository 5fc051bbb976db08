"""Segmentation datasets and joint transforms: real CamVid / coco128 files and small synthetic layouts."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from betterconv.data.class_names import VOC_SEGMENTATION_CLASSES
from betterconv.data.segmentation import (CAMVID_CLASSES, IGNORE_INDEX, BadSampleError, CamVid, COCOSegmentation,
                                          FolderSegmentation, SBDSegmentation, VOCSegmentation, decode_rle,
                                          segmentation_dataset)
from betterconv.data.transforms import eval_transform, train_transform
from betterconv.errors import BetterConvError

from conftest import save_random_image


def _voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _save_mask(path: Path, values: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.fromarray(values.astype(np.uint8), mode="L")
    if palette:
        mask = mask.convert("P")
        mask.putpalette(_voc_palette())
    mask.save(path)


def _blocks(height: int, width: int, classes: int, block: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, classes, (-(-height // block), -(-width // block)))
    return np.kron(small, np.ones((block, block), dtype=np.int64))[:height, :width]


# --- CamVid ---------------------------------------------------------------------------------------------------

def test_camvid_splits_shapes_and_void(shared_data):
    root = shared_data / "camvid"
    sizes = {split: len(segmentation_dataset(f"camvid:{root}", split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 367, "val": 101, "test": 233}
    joined = segmentation_dataset(f"camvid:{root}", "train+val")
    val = segmentation_dataset(f"camvid:{root}", "val")
    assert len(joined) == 468 and joined.files[367:] == val.files
    ds = CamVid(root, "train")
    assert ds.class_names == CAMVID_CLASSES and ds.num_classes == 11 and ds.ignore_index == IGNORE_INDEX == 255
    image, mask = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 360, 480)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (360, 480)
    raw = np.array(Image.open(ds.files[0][1]))
    assert (raw == 11).any()  # this frame has void pixels
    assert torch.equal(mask == 255, torch.from_numpy(raw == 11))
    assert torch.equal(mask[mask != 255], torch.from_numpy(raw[raw != 11]).long())


def test_camvid_train_transform_values(shared_data):
    ds = CamVid(shared_data / "camvid", "val", transform=train_transform(256))
    torch.manual_seed(0)
    allowed = set(range(11)) | {255}
    for i in range(0, 100, 25):
        image, mask = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 256, 256)
        assert mask.dtype == torch.int64 and mask.shape == (256, 256)
        assert set(mask.unique().tolist()) <= allowed
    loader = DataLoader(CamVid(shared_data / "camvid", "test", transform=eval_transform()), batch_size=2)
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 360, 480) and masks.shape == (2, 360, 480) and masks.dtype == torch.int64
    assert abs(float(images.mean())) < 1.5


# --- transforms -----------------------------------------------------------------------------------------------

def test_padding_uses_ignore_and_mean():
    image = tv_tensors.Image(torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 5, (20, 30)))
    t = train_transform(64, scale_range=(1.0, 1.0), color_jitter=None, hflip=0)
    out_image, out_mask = t(image, mask)
    assert out_image.shape == (3, 64, 64) and out_mask.shape == (64, 64) and out_mask.dtype == torch.int64
    assert torch.equal(out_mask[:20, :30], mask.as_subclass(torch.Tensor))  # padded at the bottom and right
    padded = torch.ones(64, 64, dtype=torch.bool)
    padded[:20, :30] = False
    assert (out_mask[padded] == 255).all()
    assert out_image[:, padded].abs().max() < 0.02  # the mean fill normalises to ~0


def test_transform_keeps_image_and_mask_aligned():
    # the image encodes the mask: grey level 20 * (label + 1); padding (mean 0) decodes to -1
    torch.manual_seed(1)
    classes = 10
    t = train_transform((96, 128), scale_range=(0.5, 2.0), mean=(0, 0, 0), std=(1, 1, 1), color_jitter=None)
    for seed in range(12):
        labels = _blocks(70 + 7 * seed, 90 + 5 * seed, classes, block=12, seed=seed)
        labels[:3, :] = 255  # an ignored band must travel with its pixels too
        grey = np.where(labels == 255, 250, 20 * (labels + 1)).astype(np.uint8)
        image = tv_tensors.Image(torch.from_numpy(np.repeat(grey[None], 3, axis=0)))
        mask = tv_tensors.Mask(torch.from_numpy(labels))
        out_image, out_mask = t(image, mask)
        decoded = torch.round(out_image[0] * 255 / 20).long() - 1
        decoded[decoded == 11] = 255  # 250 / 20 rounds to 12.5 -> 12 (banker's) or 13; both mean "ignored band"
        decoded[decoded == 12] = 255
        # compare where the mask is uniform over a 3x3 neighbourhood (blended image edges excluded): this fails
        # with torchvision's plain "nearest" mask resize, which is shifted by half an input pixel
        m = out_mask.as_subclass(torch.Tensor)[None, None].float()
        uniform = (torch.nn.functional.max_pool2d(m, 3, 1, 1) == -torch.nn.functional.max_pool2d(-m, 3, 1, 1))[0, 0]
        uniform[:2] = uniform[-2:] = uniform[:, :2] = uniform[:, -2:] = False  # edges: neighbours cropped away
        target = out_mask.as_subclass(torch.Tensor).clone()
        target[target == 255] = -2
        got = decoded.clone()
        got[got == 255] = -2
        got[got == -1] = -2  # padding: image at the mean, mask at ignore
        assert uniform.float().mean() > 0.3
        assert torch.equal(got[uniform], target[uniform]), seed
        assert set(out_mask.unique().tolist()) <= set(range(classes)) | {255}


def test_bad_transform_arguments():
    with pytest.raises(BetterConvError):
        train_transform(0)
    with pytest.raises(BetterConvError):
        train_transform(64, scale_range=(2.0, 0.5))


# --- COCO ------------------------------------------------------------------------------------------------------

def test_coco_json_to_voc_masks_matches_reference(shared_data):
    root = shared_data / "coco128"
    ds = segmentation_dataset(f"coco:{root}", "train")
    assert isinstance(ds, COCOSegmentation) and len(ds) == 128 and ds.class_names == VOC_SEGMENTATION_CLASSES
    agree = total = 0
    crowd = 0
    for i, (image_path, _) in enumerate(ds.files):
        image, mask = ds.load(i)
        mask = mask.numpy()  # numpy: much faster than torch for these small reductions
        reference = np.array(Image.open(root / "voc_semantic_masks" / f"{image_path.stem}.png"))
        assert mask.shape == reference.shape == tuple(image.shape[1:])
        agree += int(np.count_nonzero(mask == reference))
        total += reference.size
        crowd += int(np.count_nonzero(mask == 255))
    assert crowd > 0
    assert agree / total >= 0.999, agree / total  # the reference masks, to at most one pixel in a thousand
    everything = segmentation_dataset(f"coco-all:{root}", "train")
    assert everything.num_classes == 81 and everything.class_names[:2] == ("background", "person")


def test_rle_decoding_compressed_and_plain():
    plain = {"size": [3, 4], "counts": [2, 3, 4, 1, 2]}  # column-major runs, zeros first
    expected = np.zeros(12, dtype=bool)
    expected[2:5] = expected[9:10] = True
    assert np.array_equal(decode_rle(plain, 3, 4), expected.reshape(4, 3).T)
    # pycocotools' compressed string of the same runs: 5 bits a char + 48, from the 4th on as the difference to
    # the count two before (1 - 3 = -2 and 2 - 4 = -2 -> "N")
    assert np.array_equal(decode_rle({"size": [3, 4], "counts": "234NN"}, 3, 4), expected.reshape(4, 3).T)
    with pytest.raises(ValueError):
        decode_rle(plain, 4, 3)


def test_coco_synthetic_layout_and_bad_samples(tmp_path):
    import json
    save_random_image(tmp_path / "images" / "val2017" / "a.jpg", 20, 30)
    save_random_image(tmp_path / "images" / "val2017" / "c.jpg", 21, 30)
    save_random_image(tmp_path / "images" / "val2017" / "d.jpg", 20, 30)
    crowd_runs = [20 * 10, 20 * 5, 20 * 15]  # columns 10-14 (column-major runs)
    data = {
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 13, "name": "stop sign"},
                       {"id": 62, "name": "couch"}],
        "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30},
                   {"id": 2, "file_name": "b.jpg", "height": 20, "width": 30},
                   {"id": 3, "file_name": "c.jpg", "height": 20, "width": 30},
                   {"id": 4, "file_name": "d.jpg", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 62, "iscrowd": 0, "area": 300.0,
             "segmentation": [[0, 0, 29, 0, 29, 9, 0, 9]]},  # couch: top half
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0,
             "segmentation": [[2, 2, 5, 2, 5, 5, 2, 5]]},  # a person on the couch: drawn on top (smaller)
            {"id": 3, "image_id": 1, "category_id": 13, "iscrowd": 0, "area": 50.0,
             "segmentation": [[20, 12, 25, 12, 25, 17, 20, 17]]},  # not a VOC class: background
            {"id": 4, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 100.0,
             "segmentation": {"size": [20, 30], "counts": crowd_runs}},
            {"id": 5, "image_id": 4, "category_id": 99, "iscrowd": 0, "area": 1.0,
             "segmentation": [[0, 0, 1, 0, 1, 1]]}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    ds = segmentation_dataset(f"coco:{tmp_path}", "val")  # "val" finds val2017
    _, mask = ds[0]
    voc = VOC_SEGMENTATION_CLASSES
    assert mask[3, 3] == voc.index("person") and mask[0, 28] == voc.index("sofa") and mask[14, 22] == 0
    assert (mask[:, 10:15] == 255).all() and mask[15, 5] == 0
    with pytest.raises(BetterConvError, match=r"missing image file .*b\.jpg"):
        ds[1]
    with pytest.raises(BetterConvError, match=r"c\.jpg is 30x21 but .*says 30x20"):
        ds[2]
    with pytest.raises(BetterConvError, match=r"instances_val2017\.json.*d\.jpg.*unknown categories \[99\]"):
        ds[3]
    assert ds.validate() == {"ok": 1, "missing": 1, "size_mismatch": 1, "bad_label": 1}
    kept = COCOSegmentation(tmp_path, "val", skip_bad=True, categories="all")
    assert len(kept) == 1 and len(kept.skipped) == 3 and kept.images[0]["file_name"] == "a.jpg"
    assert kept.class_names == ("background", "person", "car", "stop sign", "couch")
    assert kept[0][1][14, 22] == 3


# --- VOC / SBD / folders -----------------------------------------------------------------------------------------

def test_voc_and_sbd_layouts(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    ids = ["2007_000001", "2007_000002", "2007_000003"]
    for k, name in enumerate(ids):
        save_random_image(voc / "JPEGImages" / f"{name}.jpg", 40, 50, seed=k)
        labels = _blocks(40, 50, 21, seed=k)
        labels[0, :] = 255  # boundary
        _save_mask(voc / "SegmentationClass" / f"{name}.png", labels, palette=True)
        _save_mask(voc / "SegmentationClassAug" / f"{name}.png", labels)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text(ids[2] + "\n")
    (voc / "train_aug.txt").write_text(f"/JPEGImages/{ids[0]}.jpg /SegmentationClassAug/{ids[0]}.png\n"
                                       f"{ids[1]}\n{ids[2]}\n")
    for root in (tmp_path, tmp_path / "VOCdevkit", voc):
        train = segmentation_dataset(f"voc:{root}", "train")
        assert isinstance(train, VOCSegmentation) and len(train) == 2
    assert len(VOCSegmentation(voc, "val")) == 1
    image, mask = VOCSegmentation(voc, "train")[1]
    expected = _blocks(40, 50, 21, seed=1)
    expected[0, :] = 255
    assert image.shape == (3, 40, 50) and torch.equal(mask, torch.from_numpy(expected))
    sbd = segmentation_dataset(f"sbd:{tmp_path}", "train")  # "train" means train_aug.txt
    assert isinstance(sbd, SBDSegmentation) and len(sbd) == 3 and sbd.class_names == VOC_SEGMENTATION_CLASSES
    assert sbd.files[0][1] == voc / "SegmentationClassAug" / f"{ids[0]}.png"
    assert torch.equal(sbd[1][1], mask)


def test_folder_dataset_with_classes_txt(tmp_path):
    for k in range(3):
        save_random_image(tmp_path / "images" / f"s{k}.png", 24, 32, seed=k)
        _save_mask(tmp_path / "masks" / f"s{k}.png", _blocks(24, 32, 3, seed=k))
    (tmp_path / "classes.txt").write_text("bg\nroad\ncar\n")
    ds = segmentation_dataset(f"folder:{tmp_path}", "train", transform=eval_transform())
    assert isinstance(ds, FolderSegmentation) and len(ds) == 3 and ds.class_names == ("bg", "road", "car")
    image, mask = ds[2]
    assert image.dtype == torch.float32 and torch.equal(mask, torch.from_numpy(_blocks(24, 32, 3, seed=2)))
    (tmp_path / "classes.txt").unlink()
    assert FolderSegmentation(tmp_path).class_names == ("class_0", "class_1", "class_2")  # scanned from masks


def test_bad_spec():
    for spec in ("camvid", "nope:/x", "voc:"):
        with pytest.raises(BetterConvError, match="KIND:PATH"):
            segmentation_dataset(spec, "train")
    with pytest.raises(BetterConvError, match="CamVid train list"):
        segmentation_dataset("camvid:/nonexistent", "train")


# --- bad data ----------------------------------------------------------------------------------------------------

@pytest.fixture
def bad_folder(tmp_path):
    for k in range(3):  # three good samples
        save_random_image(tmp_path / "images" / f"good{k}.png", 16, 20, seed=k)
        _save_mask(tmp_path / "masks" / f"good{k}.png", _blocks(16, 20, 3, block=4, seed=k))
    save_random_image(tmp_path / "images" / "nomask.png", 16, 20)  # its mask is missing
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg at all")
    _save_mask(tmp_path / "masks" / "broken.png", np.zeros((16, 20)))
    save_random_image(tmp_path / "images" / "outofrange.png", 16, 20)
    _save_mask(tmp_path / "masks" / "outofrange.png", np.full((16, 20), 7))
    save_random_image(tmp_path / "images" / "wrongsize.png", 16, 20)
    _save_mask(tmp_path / "masks" / "wrongsize.png", np.zeros((15, 20)))
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    return tmp_path


def test_each_bad_sample_names_its_file(bad_folder):
    ds = FolderSegmentation(bad_folder)
    assert len(ds) == 7
    index = {image.stem: i for i, (image, _) in enumerate(ds.files)}
    cases = {"nomask": ("missing", "nomask.png"), "broken": ("unreadable", "broken.jpg"),
             "outofrange": ("bad_label", "outofrange.png"), "wrongsize": ("size_mismatch", "wrongsize.png")}
    for stem, (kind, name) in cases.items():
        with pytest.raises(BetterConvError, match=name) as info:
            ds[index[stem]]
        assert isinstance(info.value, BadSampleError) and info.value.kind == kind
        assert "\n" not in str(info.value)
    assert "masks/nomask.png" in str(pytest.raises(BetterConvError, ds.__getitem__, index["nomask"]).value)
    counts = ds.validate()
    assert counts == {"ok": 3, "missing": 1, "unreadable": 1, "bad_label": 1, "size_mismatch": 1}
    assert len(ds) == 7 and len(ds.problems) == 4 and not ds.skipped


def test_skip_bad_drops_and_counts(bad_folder):
    ds = segmentation_dataset(f"folder:{bad_folder}", "train", transform=eval_transform(), skip_bad=True)
    assert len(ds) == 3 and len(ds.skipped) == 4
    assert sorted(Path(p).name for p, _ in ds.skipped) == ["broken.jpg", "nomask.png", "outofrange.png",
                                                           "wrongsize.png"]
    images, masks = next(iter(DataLoader(ds, batch_size=3)))
    assert images.shape == (3, 3, 16, 20) and masks.shape == (3, 16, 20)
    (bad_folder / "images" / "good0.png").unlink()
    (bad_folder / "images" / "good1.png").write_bytes(b"")
    (bad_folder / "images" / "good2.png").unlink()
    with pytest.raises(BetterConvError, match="all 5 samples are bad"):
        FolderSegmentation(bad_folder, skip_bad=True, image_dir=bad_folder / "images", mask_dir=bad_folder / "masks")


def test_voc_missing_image_named(tmp_path):
    voc = tmp_path / "VOC2012"
    save_random_image(voc / "JPEGImages" / "a.jpg", 10, 10)
    _save_mask(voc / "SegmentationClass" / "a.png", np.zeros((10, 10)), palette=True)
    _save_mask(voc / "SegmentationClass" / "b.png", np.zeros((10, 10)), palette=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    ds = VOCSegmentation(tmp_path)
    with pytest.raises(BetterConvError, match=r"missing image file .*JPEGImages/b\.jpg"):
        ds[1]
    assert len(VOCSegmentation(tmp_path, skip_bad=True)) == 1
