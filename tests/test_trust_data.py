"""The data layer's trust boundary: dataset files and images made by someone else. Paths read from a dataset's files
stay inside its root, VOC XML cannot expand entities or read other files, the one image opener refuses decompression
bombs and converts 16-bit, float, alpha and CMYK images correctly, COCO json structure errors are one line. Every
bad input is made here, as small as it can be."""
import json
import os
import re
import struct
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from betterconv.data.dataset import path_inside
from betterconv.data.detection import COCODetection, DataWarning, VOCDetection, YOLODetection, parse_voc_xml
from betterconv.data.images import BadSampleError, ImageWarning, image_size, open_image
from betterconv.data.segmentation import CamVid, COCOSegmentation, SBDSegmentation, VOCSegmentation
from betterconv.errors import BetterConvError


def _image(path: Path, width: int = 8, height: int = 6, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (value, value, value)).save(path)
    return path


def _mask(path: Path, width: int = 8, height: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (width, height), 1).save(path)
    return path


def _raises(error, call, *args, **kwargs) -> str:
    """The message of the one-line `error` that `call` raises, with DataWarnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(error) as info:
            call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- paths read from dataset files stay inside the root ------------------------------------------------------

def test_path_inside_is_lexical(tmp_path):
    root = tmp_path / "root"
    assert path_inside(root, "a/../b/x.jpg", "list.txt", 3) == root / "b" / "x.jpg"
    assert path_inside(root, str(root / "x.jpg"), "list.txt", 3) == root / "x.jpg"  # absolute, but inside
    assert path_inside(root, "x.jpg", "list.txt", 3, base=root / "sub") == root / "sub" / "x.jpg"
    for bad in ("../x.jpg", "a/../../x.jpg", "/etc/passwd", str(tmp_path / "rootless" / "x.jpg")):
        with pytest.raises(BadSampleError, match=r"^list\.txt:3: path .* is outside the dataset root"):
            path_inside(root, bad, "list.txt", 3)
    with pytest.raises(BadSampleError, match="NUL"):
        path_inside(root, "a\0b", "list.txt", 3)


def test_camvid_list_line_outside_the_root_is_refused(tmp_path):
    outside = _image(tmp_path / "outside" / "x.jpg")
    _mask(tmp_path / "outside" / "x.png")
    root = tmp_path / "data" / "camvid"
    _image(root / "train" / "a.jpg"), _mask(root / "trainannot" / "a.png")
    (root / "train.txt").write_text("train/a.jpg trainannot/a.png\n../../outside/x.jpg ../../outside/x.png\n")
    assert outside.exists()  # the old code listed it, and loaded it
    message = _raises(BetterConvError, CamVid, root, "train")
    assert "train.txt:2: path '../../outside/x.jpg' is outside the dataset root" in message
    # SegNet's absolute paths are still resolved inside the root
    (root / "train.txt").write_text("/SegNet/CamVid/train/a.jpg /SegNet/CamVid/trainannot/a.png\n")
    assert CamVid(root, "train").files == [(root / "train" / "a.jpg", root / "trainannot" / "a.png")]


def test_voc_and_sbd_list_lines_outside_the_root_are_refused(tmp_path):
    _image(tmp_path / "outside" / "JPEGImages" / "x.jpg"), _mask(tmp_path / "outside" / "SegmentationClass" / "x.png")
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    _image(voc / "JPEGImages" / "a.jpg"), _mask(voc / "SegmentationClass" / "a.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n# a comment\n../../../outside/JPEGImages/x\n")
    message = _raises(BetterConvError, VOCSegmentation, tmp_path, "train")
    assert "train.txt:3: path 'JPEGImages/../../../outside/JPEGImages/x.jpg' is outside the dataset root" in message
    (voc / "train_aug.txt").write_text("/JPEGImages/a.jpg /SegmentationClass/a.png\n"
                                       "/JPEGImages/../../../outside/JPEGImages/x.jpg /SegmentationClass/a.png\n")
    assert "train_aug.txt:2: path" in _raises(BetterConvError, SBDSegmentation, tmp_path, "train")
    # detection: the ids of ImageSets/Main name Annotations/{id}.xml and JPEGImages/{id}.jpg
    voc07 = tmp_path / "VOC2007"
    (voc07 / "Annotations").mkdir(parents=True)
    (voc07 / "ImageSets" / "Main").mkdir(parents=True)
    (voc07 / "ImageSets" / "Main" / "test.txt").write_text("../../outside/x\n")
    (tmp_path / "outside" / "x.xml").write_text("<annotation><size><width>8</width><height>6</height></size>"
                                                "</annotation>")
    message = _raises(BetterConvError, VOCDetection, voc07, "test")
    assert "test.txt:1: path 'Annotations/../../outside/x.xml' is outside the dataset root" in message


def _coco(root: Path, images: list, annotations: list = (), categories: list | None = None) -> Path:
    _image(root / "images" / "val" / "a.jpg"), _image(root / "images" / "val" / "b.jpg", value=40)
    path = root / "annotations" / "instances_val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": list(annotations),
                                "categories": categories or [{"id": 1, "name": "person"}]}))
    return path


def _entry(image_id, name: str, **extra) -> dict:
    return {"id": image_id, "file_name": name, "width": 8, "height": 6, **extra}


@pytest.mark.parametrize("cls", [COCODetection, COCOSegmentation])
def test_coco_file_name_outside_the_root_is_refused(tmp_path, cls):
    secret = _image(tmp_path / "secret.jpg")  # an image the old code opened through an absolute file_name
    for name in ("../../../../etc/passwd", str(secret)):
        _coco(tmp_path / "coco", [_entry(1, "a.jpg"), _entry(2, name)])
        message = _raises(BetterConvError, cls, tmp_path / "coco", "val")
        assert f"instances_val.json: image 2: file_name {name!r} is outside the dataset root" in message
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            kept = cls(tmp_path / "coco", "val", skip_bad=True)
        assert [f.name for f, _ in kept.files] == ["a.jpg"] and "file_name" in kept.skipped[0][1]


def test_yolo_image_list_and_yaml_outside_the_root_are_refused(tmp_path):
    _image(tmp_path / "outside" / "images" / "x.jpg")
    root = tmp_path / "yolo"
    _image(root / "images" / "a.jpg")
    (root / "train.txt").write_text("images/a.jpg\n\n../outside/images/x.jpg\n")
    message = _raises(BetterConvError, YOLODetection, root / "train.txt", "train")
    assert "train.txt:3: path '../outside/images/x.jpg' is outside the dataset root" in message
    (root / "train.txt").write_text(f"images/a.jpg\n{root / 'images' / 'a.jpg'}\n")  # absolute, inside: fine
    assert len(_quiet(YOLODetection, root / "train.txt", "train")) == 2
    # a yaml's path and split entries, and the lines of the list files they name
    yaml_path = root / "data.yaml"
    cases = {"path: ../outside\ntrain: images\n": "path entry '../outside'",
             "train: ../outside/images\n": "train entry '../outside/images'",
             "path: images\ntrain: ../../outside/images\n": "train entry '../../outside/images'",
             f"val: {tmp_path / 'outside' / 'images'}\n": "val entry",
             "train: [images, ../outside/images]\n": "train entry '../outside/images'"}
    for text, expected in cases.items():
        yaml_path.write_text(text + "names: [a]\n")
        split = "val" if text.startswith("val") else "train"
        message = _raises(BetterConvError, YOLODetection, yaml_path, split)
        assert f"data.yaml: {expected}" in message and "is outside the dataset root" in message, message
    (root / "list.txt").write_text("images/a.jpg\n../outside/images/x.jpg\n")
    yaml_path.write_text("train: list.txt\nnames: [a]\n")
    assert "list.txt:2: path" in _raises(BetterConvError, YOLODetection, yaml_path, "train")


def _quiet(cls, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return cls(*args, **kwargs)


def test_a_symlink_inside_the_root_is_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _image(elsewhere / "a.jpg"), _mask(elsewhere / "a.png")
    root = tmp_path / "camvid"
    root.mkdir()
    try:
        os.symlink(elsewhere, root / "link", target_is_directory=True)
    except (OSError, NotImplementedError) as e:
        pytest.skip(f"no symlinks here: {e}")
    (root / "train.txt").write_text("link/a.jpg link/a.png\n")
    ds = CamVid(root, "train")
    assert ds.files == [(root / "link" / "a.jpg", root / "link" / "a.png")] and ds[0][0].shape == (3, 6, 8)
    (root / "train.txt").write_text("link/../../elsewhere/a.jpg link/a.png\n")  # `..` is lexical: out of the root
    assert "is outside the dataset root" in _raises(BetterConvError, CamVid, root, "train")


# --- VOC XML: no entity expansion, no external reads -------------------------------------------------------------

def test_voc_xml_billion_laughs_is_refused_at_once(tmp_path):
    lines = ['<?xml version="1.0"?>', "<!DOCTYPE annotation [", '  <!ENTITY lol0 "lollollollollollollollollollol">']
    lines += [f'  <!ENTITY lol{i} "' + f"&lol{i - 1};" * 10 + '">' for i in range(1, 10)]
    lines += ["]>", "<annotation><object><name>&lol9;</name></object></annotation>"]
    xml = tmp_path / "laughs.xml"
    xml.write_text("\n".join(lines))
    assert xml.stat().st_size < 1200  # 10**9 "lol"s once expanded
    start = time.perf_counter()
    message = _raises(BadSampleError, parse_voc_xml, xml, tmp_path / "x.jpg", "x", ["person"])
    assert time.perf_counter() - start < 0.5
    assert message.startswith(f"{xml}: refused XML") and "entity declarations" in message


_OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


def test_voc_xml_external_entities_read_nothing(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY leak SYSTEM "file://{secret}">')
    documents = {  # an external general entity, and an external DTD that would declare one
        "entity.xml": f'<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY leak SYSTEM "file://{secret}">]>\n'
                      "<annotation><object><name>&leak;</name></object></annotation>",
        "dtd.xml": f'<?xml version="1.0"?>\n<!DOCTYPE annotation SYSTEM "file://{dtd}">\n'
                   "<annotation><object><name>&leak;</name></object></annotation>"}
    if _audit not in getattr(sys, "_betterconv_audit_hooks", []):  # audit hooks cannot be removed: add it once
        sys.addaudithook(_audit)
        sys._betterconv_audit_hooks = [_audit]
    for name, text in documents.items():
        xml = tmp_path / name
        xml.write_text(text)
        _OPENED.clear()
        message = _raises(BadSampleError, parse_voc_xml, xml, tmp_path / "x.jpg", "x", ["person"])
        assert message.startswith(f"{xml}:") and "TOP-SECRET" not in message
        assert str(xml) in _OPENED and not [p for p in _OPENED if "secret" in p or "evil" in p], _OPENED
    xml.write_text(f'<!DOCTYPE annotation SYSTEM "file://{dtd}"><annotation><size><width>3</width><height>3</height>'
                   "</size></annotation>")  # an external DTD alone: the XML is read, the DTD is not
    _OPENED.clear()
    assert parse_voc_xml(xml, tmp_path / "x.jpg", "x", ["person"]).size == (3, 3)
    assert str(xml) in _OPENED and not [p for p in _OPENED if "evil" in p], _OPENED


# --- the image opener --------------------------------------------------------------------------------------------

def _blank_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of zeros, written row by row: tiny on disk, width x height pixels once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = _blank_png(tmp_path / "bomb.png", 12000, 12000)  # 144 M pixels: PIL only warns between 89 M and 179 M
    assert bomb.stat().st_size < 100_000
    assert Image.MAX_IMAGE_PIXELS < 12000 * 12000 < 2 * Image.MAX_IMAGE_PIXELS
    for read in (open_image, image_size):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            message = _raises(BadSampleError, read, bomb)
            assert time.perf_counter() - start < 0.5  # refused from the header: nothing decoded
        assert message.startswith(f"cannot read image {bomb}:") and "decompression bomb" in message
        assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000_000)  # above twice the limit: PIL's error, same line
    assert "decompression bomb" in _raises(BadSampleError, open_image, bomb, mode="RGB")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # no limit: the small test images below still open
    assert open_image(_blank_png(tmp_path / "small.png", 16, 4)).size == (16, 4)


def test_exif_orientation_is_applied_only_when_asked(tmp_path):
    image = Image.new("RGB", (30, 20), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 10, 8))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif, quality=95)
    raw = open_image(path, mode="RGB")
    assert raw.size == (30, 20) and raw.getpixel((2, 2))[0] > 200
    upright = open_image(path, mode="RGB", exif=True)
    assert upright.size == (20, 30)
    assert upright.getpixel((17, 2))[0] > 200 and upright.getpixel((2, 2))[0] < 50  # the corner went top-right


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    path = _save(tmp_path / "depth.png", Image.fromarray(np.array([[0, 1000, 30000, 65535]], np.uint16)))
    with Image.open(path) as stored:
        assert stored.mode == "I;16"
    with pytest.warns(ImageWarning, match=r"depth\.png is a I;16 image: 16-bit values scaled to 8 bits"):
        rgb = np.asarray(open_image(path, mode="RGB"))
    assert rgb[0, :, 0].tolist() == [0, 4, 117, 255] and (rgb[..., 0] == rgb[..., 2]).all()


@pytest.mark.parametrize("name, make, expected", [
    ("int.tif", lambda: Image.fromarray(np.array([[0, 257, 65535]], np.int32)), [0, 1, 255]),
    ("int8.tif", lambda: Image.fromarray(np.array([[0, 7, 255]], np.int32)), [0, 7, 255]),
    ("float.tif", lambda: Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), [0, 128, 255]),
])
def test_integer_and_float_images_are_read_by_their_range(tmp_path, name, make, expected):
    path = _save(tmp_path / name, make())
    with Image.open(path) as stored:
        assert stored.mode in ("I", "F")
    with pytest.warns(ImageWarning, match=name.replace(".", r"\.")):
        assert np.asarray(open_image(path, mode="RGB"))[0, :, 1].tolist() == expected


def test_alpha_and_cmyk_convert_with_a_warning(tmp_path):
    la = Image.fromarray(np.array([[[10, 255], [20, 0]]], np.uint8), "LA")
    with pytest.warns(ImageWarning, match=r"la\.png has transparent pixels"):
        assert np.asarray(open_image(_save(tmp_path / "la.png", la), mode="RGB"))[0, :, 0].tolist() == [10, 20]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putdata([0, 1])
    path = _save(tmp_path / "p.png", palette, transparency=0)  # palette index 0 transparent (a tRNS chunk)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's own "Palette images with Transparency" warning must not show
        with pytest.raises(ImageWarning, match=r"p\.png has transparent pixels"):
            open_image(path, mode="RGB")
    with pytest.warns(ImageWarning):
        assert np.asarray(open_image(path, mode="RGB")).tolist() == [[[0, 0, 0], [200, 100, 50]]]
    cmyk = _save(tmp_path / "cmyk.jpg", Image.new("CMYK", (4, 4), (0, 255, 255, 0)))
    with pytest.warns(ImageWarning, match=r"cmyk\.jpg is a CMYK image"):
        red = open_image(cmyk, mode="RGB").getpixel((1, 1))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an opaque RGBA image converts without a word
        assert open_image(_save(tmp_path / "rgba.png", Image.new("RGBA", (2, 2), (1, 2, 3, 255))), mode="RGB")


@pytest.mark.parametrize("values, problem", [
    (np.array([[-5, 10]], np.int32), r"values -5\.\.10 are outside 0-65535"),
    (np.array([[0.5, np.nan]], np.float32), "NaN or infinity"),
    (np.array([[0.0, 1e6]], np.float32), r"values 0\.\.1e\+06 are outside 0-65535"),
])
def test_impossible_conversions_are_one_line(tmp_path, values, problem):
    path = _save(tmp_path / "odd.tif", Image.fromarray(values))
    message = _raises(BadSampleError, open_image, path, mode="RGB")
    assert message.startswith(f"cannot convert image {path}") and re.search(problem, message)


# --- COCO json structure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [COCODetection, COCOSegmentation])
def test_coco_repeated_image_id_is_refused(tmp_path, cls):
    ann = {"id": 5, "image_id": 9, "category_id": 1, "bbox": [1, 1, 2, 2], "segmentation": [[1, 1, 3, 1, 3, 3]],
           "area": 4}
    _coco(tmp_path, [_entry(9, "a.jpg"), _entry(25, "b.jpg"), _entry(9, "b.jpg")], [ann])
    message = _raises(BetterConvError, cls, tmp_path, "val")  # the old code gave image 25 the annotations of 9
    assert message.startswith(f"{tmp_path / 'annotations' / 'instances_val.json'}: image id 9 appears twice "
                              "(images[0] and images[2])")


@pytest.mark.parametrize("cls", [COCODetection, COCOSegmentation])
@pytest.mark.parametrize("data, problem", [
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}, "b.jpg"]},
     r"images\[1\] is a string, not an object: 'b\.jpg'"),
    ({"images": [{"id": [1], "file_name": "a.jpg"}]}, r"images\[0\] has no integer or string id \(got \[1\]\)"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
      "annotations": [{"id": 4, "image_id": 77, "category_id": 1, "bbox": [0, 0, 1, 1]}]},
     r"annotations\[0\] \(id 4\) refers to image id 77, which no image entry has"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
      "annotations": [{"id": 4, "image_id": 1, "category_id": [1], "bbox": [0, 0, 1, 1]}]},
     r"annotations\[0\] \(id 4\) has category_id \[1\], not an integer"),
    ({"images": {"1": "a.jpg"}}, "images must be an array, got an object"),
    ([1, 2], "expected a COCO instances object"),
])
def test_coco_broken_structure_is_one_line(tmp_path, cls, data, problem):
    path = _coco(tmp_path, [])
    if isinstance(data, dict):
        data = {"categories": [{"id": 1, "name": "person"}], **data}
    path.write_text(json.dumps(data))
    message = _raises(BetterConvError, cls, tmp_path, "val")
    assert message.startswith(f"{path}: ") and re.search(problem, message), message


def test_coco_segmentation_entry_without_size_is_one_line(tmp_path):
    path = _coco(tmp_path, [_entry(1, "a.jpg"), {"id": 2, "file_name": "b.jpg"}])
    message = _raises(BetterConvError, COCOSegmentation, tmp_path, "val")  # the old code: KeyError when loaded
    assert message == f"{path}: image 2 lacks a positive integer width and height (got None, None)"
    kept = COCOSegmentation(tmp_path, "val", skip_bad=True)
    assert [info["id"] for info in kept.images] == [1] and kept.skipped == [(str(path), message)]
    assert kept[0][1].shape == (6, 8)


def test_coco_unknown_category_is_one_line_per_image(tmp_path):
    annotation = {"id": 4, "image_id": 2, "category_id": 99, "bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 1, 0, 1, 1]]}
    path = _coco(tmp_path, [_entry(1, "a.jpg"), _entry(2, "b.jpg")], [annotation])
    assert f"{path}: annotation 4 of image b.jpg has unknown category_id 99" in \
        _raises(BetterConvError, COCODetection, tmp_path, "val")
    ds = COCOSegmentation(tmp_path, "val")
    assert "unknown categories [99]" in _raises(BadSampleError, ds.load, 1)
