"""Fuzzing every parser of the data layer with hypothesis: VOC XML, YOLO txt, COCO json (through the detection and
segmentation datasets, samples loaded), CamVid / VOC / SBD list files and the dataset yaml. Random and mutated
inputs must either parse or raise BetterConvError (one line), never another exception, each within the deadline.

BETTERCONV_FUZZ_EXAMPLES=N raises the number of examples and draws new random ones (the default run is
deterministic, for CI)."""
import copy
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from betterconv.data.class_names import VOC_CLASSES
from betterconv.data.detection import (COCODetection, DataWarning, VOCDetection, YOLODetection, parse_voc_xml,
                                       parse_yolo_txt, read_data_yaml)
from betterconv.data.images import ImageWarning
from betterconv.data.segmentation import CamVid, COCOSegmentation, SBDSegmentation, VOCSegmentation
from betterconv.errors import BetterConvError

_EXAMPLES = int(os.environ.get("BETTERCONV_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXAMPLES or 100, deadline=2000, derandomize=not _EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _image(path: Path, width: int = 8, height: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 40, 10)).save(path)


def _mask(path: Path, width: int = 8, height: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.arange(width * height, dtype=np.uint8).reshape(height, width) % 12).save(path)


def _only_betterconv_errors(call, *args, **kwargs):
    """`call`'s result, or None when it raises a one-line BetterConvError; any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        warnings.simplefilter("ignore", ImageWarning)
        try:
            return call(*args, **kwargs)
        except BetterConvError as e:
            assert "\n" not in str(e)
            return None


def _load_all(dataset) -> None:
    """Load every sample: a bad one may raise BetterConvError, nothing else."""
    for index in range(len(dataset)):
        _only_betterconv_errors(dataset.load, index)


# --- mutation: a valid input with random edits ---------------------------------------------------------------

# pieces that make parsers take their rarer paths: markup, numbers out of range, path tricks, odd characters
_PIECES = ["<", ">", "</", "/>", "&", ";", "&amp;", "&lol;", "<!ENTITY a \"b\">", "<!DOCTYPE x [", "]>", "<?xml ?>",
           '"', "'", "=", "\n", "\t", " ", "\r", "\x00", "\ufeff", "é", "\u2028", "nan", "inf", "-inf",
           "1e999", "-1", "0", "1", "2", "0.5", "1e-9", "12345678901234567890", "-0", "0x1F", "1_0", "", "..",
           "../", "/", "~", "~nobody/", "a" * 300, "#", ":", "- ", "[", "]", "{", "}", ",", "*", "&x ", "!!int ",
           "!!timestamp 2001-13-45", "!!binary ", "!!python/name:os.system", "<<: ", "? ", "|", ">-", "%YAML 1.1",
           "null", "~", "true", "[[[[[[[[", "]]]]", '{"', '":', "true", "false", "[]", "{}", "1.5", "-7"]


@st.composite
def mutated(draw, template: str, pieces: list[str] = _PIECES, most: int = 6) -> str:
    """`template` with up to `most` random edits (often none): a piece inserted, a span deleted, or a span replaced
    by a piece."""
    text = template
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, most]))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 12)))
        piece = draw(st.one_of(st.sampled_from(pieces), st.sampled_from(pieces), st.text(max_size=6)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        text = (text[:start] + piece + text[start:] if op == "insert" else
                text[:start] + text[end:] if op == "delete" else text[:start] + piece + text[end:])
    return text


def _write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(data.encode("utf-8", "surrogatepass"))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _usually(plain, odd, weight: int = 3):
    """Mostly a value of `plain` (`weight` times as often), sometimes one of `odd`."""
    return st.one_of(*[plain] * weight, odd)


_NUMBER_TEXT = st.one_of(st.integers(-3, 12).map(str), st.floats(-2, 12).map(repr),
                         st.sampled_from(["nan", "inf", "-inf", "1e300", "1e999", "-0", "", "1_0", "0x1F", "٣",
                                          "12345678901234567890", " 7 ", "1.5.5"]))


# --- VOC XML ---------------------------------------------------------------------------------------------------

VOC_XML = """<annotation>
  <filename>a.jpg</filename>
  <size><width>8</width><height>6</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>3</xmin><ymin>1</ymin><xmax>8</xmax><ymax>4</ymax></bndbox></object>
</annotation>
"""


@st.composite
def voc_documents(draw) -> str:
    """A VOC annotation whose elements are each present or not, with plausible or odd contents, lightly mutated."""
    def element(tag: str, content) -> str:
        return draw(st.sampled_from([f"<{tag}>{draw(content)}</{tag}>"] * 12 + ["", f"<{tag}/>"]))

    number = _usually(st.integers(0, 9).map(str), _NUMBER_TEXT, weight=10)
    size = element("size", st.just(element("width", _usually(st.just("8"), _NUMBER_TEXT)) +
                                   element("height", _usually(st.just("6"), _NUMBER_TEXT))))
    objects = "".join(
        "<object>" + element("name", _usually(st.sampled_from(["dog", "person", "cat"]),
                                              st.sampled_from(["Dog", "", " dog ", "&amp;", "x" * 50])))
        + element("difficult", st.sampled_from(["0", "1", "", "2", "true", " 1 "]))
        + element("bndbox", st.just("".join(element(t, number) for t in ("xmin", "ymin", "xmax", "ymax"))))
        + "</object>" for _ in range(draw(st.integers(0, 3))))
    return draw(mutated(f"<annotation>{size}{objects}</annotation>"))


@FUZZ
@given(data=st.one_of(voc_documents(), voc_documents(), voc_documents(), mutated(VOC_XML),
                      st.binary(max_size=300), st.text(max_size=200)))
def test_fuzz_voc_xml(work, data):
    folder = work / "voc_xml"
    folder.mkdir(exist_ok=True)
    _image(folder / "a.jpg")
    record = _only_betterconv_errors(parse_voc_xml, _write(folder / "a.xml", data), folder / "a.jpg", "a",
                                     VOC_CLASSES)
    if record is not None:
        assert record.boxes.shape == (len(record.labels), 4) and not np.isnan(record.boxes).any()
        assert record.size is not None and min(record.size) > 0


# --- YOLO txt --------------------------------------------------------------------------------------------------

_COORDINATE = _usually(st.floats(0, 1).map(lambda v: f"{v:.4f}"), _NUMBER_TEXT, weight=12)
_YOLO_LINE = st.one_of(
    st.tuples(_usually(st.integers(0, 3).map(str), _NUMBER_TEXT), st.lists(_COORDINATE, min_size=4, max_size=4)),
    st.tuples(st.integers(0, 3).map(str), st.sampled_from([6, 8]).flatmap(  # a polygon
        lambda n: st.lists(_COORDINATE, min_size=n, max_size=n))),
    st.tuples(st.just(""), st.lists(_NUMBER_TEXT, max_size=7))).map(lambda t: " ".join([t[0], *t[1]]))
_YOLO_TEXT = st.lists(_YOLO_LINE, max_size=5).map("\n".join)


@FUZZ
@given(data=st.one_of(_YOLO_TEXT, _YOLO_TEXT, mutated("0 0.5 0.5 0.2 0.1\n2 0.1 0.2 0.5 0.2 0.3 0.6\n"),
                      st.binary(max_size=100)),
       num_classes=st.sampled_from([None, 3]))
def test_fuzz_yolo_txt(work, data, num_classes):
    folder = work / "yolo_txt"
    folder.mkdir(exist_ok=True)
    record = _only_betterconv_errors(parse_yolo_txt, _write(folder / "a.txt", data), folder / "a.jpg", "a",
                                     num_classes)
    if record is not None:
        assert record.boxes.shape == (len(record.labels), 4) and np.isfinite(record.boxes).all()
        assert ((record.labels >= 0) & (record.labels < (num_classes or 65536))).all()


# --- COCO json -------------------------------------------------------------------------------------------------

_JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.integers(), st.floats(),
                         st.text(max_size=8))
_JSON = st.recursive(_JSON_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=12)
_ODD = st.one_of(_JSON, st.sampled_from(["../a.jpg", "../../../../etc/passwd", "/etc/passwd", "sub/../a.jpg", "",
                                         "a" * 300, "a\x00.jpg", 1e308, -1, 0, 8.0, "8", [6, 8], {"size": [6, 8]},
                                         "PP0", float("nan"), 2**63]))


@st.composite
def coco_documents(draw) -> str:
    """A valid COCO json for the two test images (a.jpg 8x6, b.jpg 6x8), then up to three fields replaced by odd
    values or removed, or entries repeated; sometimes its text mutated, or JSON of any shape."""
    sizes = {"a.jpg": (8, 6), "b.jpg": (6, 8), "gone.jpg": (8, 6)}
    names = draw(st.lists(st.sampled_from(list(sizes)), max_size=3))
    images = [{"id": i + 1, "file_name": n, "width": sizes[n][0], "height": sizes[n][1]} for i, n in enumerate(names)]
    categories = [{"id": cid, "name": name} for cid, name in ((1, "person"), (18, "dog"), (5, "x"))]
    annotations = []
    for k in range(draw(st.integers(0, 4))):
        if not images:
            break
        info = draw(st.sampled_from(images))
        w, h = info["width"], info["height"]
        x, y = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        bw, bh = draw(st.integers(0, w)), draw(st.integers(0, h))
        segmentation = draw(st.one_of(
            st.just([[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]),
            st.lists(st.integers(0, w * h), min_size=1, max_size=4).map(
                lambda runs: {"size": [h, w], "counts": runs + [w * h - sum(runs)]} if sum(runs) <= w * h
                else {"size": [h, w], "counts": [w * h]}),
            st.sampled_from([{"size": [h, w], "counts": "0" * 8}, {"size": [h, w], "counts": "PP"}])))
        annotations.append({"id": k + 1, "image_id": info["id"], "category_id": draw(st.sampled_from([1, 18, 5, 99])),
                            "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": draw(st.sampled_from([0, 0, 1])),
                            "segmentation": segmentation})
    document = {"images": images, "annotations": annotations, "categories": categories}
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        containers = [document] + images + annotations + categories + \
            [a["segmentation"] for a in annotations if isinstance(a.get("segmentation"), dict)]
        target = draw(st.sampled_from(containers))
        if not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "repeat"]))
        if op == "replace":  # copies: the odd values are shared, and a later edit may change what it put in
            target[key] = copy.deepcopy(draw(_ODD))
        elif op == "delete":
            del target[key]
        elif isinstance(target[key], list) and target[key]:
            target[key].append(copy.deepcopy(draw(st.sampled_from(list(target[key])))))
    text = json.dumps(document)
    return draw(st.one_of(st.just(text), st.just(text), st.just(text), mutated(text), _JSON.map(json.dumps),
                          st.binary(max_size=60)))


@FUZZ
@given(data=coco_documents())
def test_fuzz_coco_json(work, data):
    root = work / "coco"
    if not (root / "images" / "val").is_dir():
        _image(root / "images" / "val" / "a.jpg")
        _image(root / "images" / "val" / "b.jpg", 6, 8)
        (root / "annotations").mkdir(parents=True)
    _write(root / "annotations" / "instances_val.json", data)
    for make in (lambda: COCODetection(root, "val"), lambda: COCODetection(root, "val", skip_bad=True),
                 lambda: COCOSegmentation(root, "val"), lambda: COCOSegmentation(root, "val", categories="all")):
        dataset = _only_betterconv_errors(make)
        if dataset is not None:
            assert all(_inside(image, root / "images" / "val") for image, _ in dataset.files)
            _load_all(dataset)


# --- list files ------------------------------------------------------------------------------------------------

_PATH_PIECES = ["a", "b", "x.jpg", "a.jpg", "a.png", "..", ".", "/", "//", "~", "link", " ", "\t", "#", "\x00",
                "a" * 300, "é", "JPEGImages", "SegmentationClass", "train", "trainannot", "\\", "*", "\n"]
_LIST_LINE = st.lists(st.sampled_from(_PATH_PIECES), max_size=8).map("".join)
_LIST_TEXT = st.one_of(st.lists(_LIST_LINE, max_size=4).map("\n".join), st.binary(max_size=60),
                       mutated("train/a.jpg trainannot/a.png\n/SegNet/CamVid/train/a.jpg /x/trainannot/a.png\n",
                               _PATH_PIECES),
                       mutated("a\n/JPEGImages/a.jpg /SegmentationClass/a.png\n", _PATH_PIECES))


@pytest.fixture(scope="module")
def list_roots(work) -> dict[str, Path]:
    camvid = work / "lists" / "camvid"
    _image(camvid / "train" / "a.jpg"), _mask(camvid / "trainannot" / "a.png")
    voc = work / "lists" / "VOC2012"
    _image(voc / "JPEGImages" / "a.jpg"), _mask(voc / "SegmentationClass" / "a.png")
    _mask(voc / "SegmentationClassAug" / "a.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "a.xml").write_text(VOC_XML)
    return {"camvid": camvid, "voc": voc}


def _inside(path: Path, root: Path) -> bool:
    """`path` is `root` or lies in it, lexically (what `path_inside` promises)."""
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root + os.sep)


@FUZZ
@given(data=_LIST_TEXT)
def test_fuzz_list_files(list_roots, data):
    camvid, voc = list_roots["camvid"], list_roots["voc"]
    _write(camvid / "train.txt", data)
    _write(voc / "ImageSets" / "Segmentation" / "train.txt", data)
    _write(voc / "train_aug.txt", data)
    _write(voc / "ImageSets" / "Main" / "test.txt", data)
    for make, root in ((lambda: CamVid(camvid, "train"), camvid), (lambda: VOCSegmentation(voc, "train"), voc),
                       (lambda: SBDSegmentation(voc, "train_aug"), voc), (lambda: VOCDetection(voc, "test"), voc)):
        dataset = _only_betterconv_errors(make)
        if dataset is not None:
            assert all(_inside(image, root) and _inside(label, root) for image, label in dataset.files)
            _load_all(dataset)


# --- the dataset yaml ------------------------------------------------------------------------------------------

DATA_YAML = """# a dataset
path: .  # the root
train: images/train
val: [images/train, list.txt]
names:
  0: person
  1: 'dog # 2'
nc: 2
"""

_YAML_PATH = _usually(st.sampled_from([".", "images/train", "list.txt", "images", "./images/train"]),
                      st.sampled_from(["..", "../yaml", "/", "~", "[images/train, ../x]", "''", "", "[]", "{a: b}",
                                       "images/train/a.jpg", "a" * 300, "'a\\x00b'", "!!str list.txt", "*a"]))
_YAML_NAMES = st.sampled_from(["[person, dog]", "{0: person, 1: dog}", "\n  0: person\n  1: dog", "\n  - person",
                               "{0: a, 2: b}", "{a: b}", "[[a], b]", "~", "[a, ~]", "{~: a}", "5", "'x'", "[]"])


@st.composite
def yaml_documents(draw) -> str:
    """A dataset yaml with keys present or not, plausible or odd values, lightly mutated."""
    lines = [f"{key}: {draw(values)}" for key, values in (("path", _YAML_PATH), ("train", _YAML_PATH),
                                                          ("val", _YAML_PATH), ("names", _YAML_NAMES))
             if draw(st.booleans()) or key == "train"]
    return draw(mutated("\n".join(draw(st.permutations(lines))) + "\n"))


@pytest.fixture(scope="module")
def yaml_root(work) -> Path:
    root = work / "yaml"
    _image(root / "images" / "train" / "a.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (root / "list.txt").write_text("images/train/a.jpg\n")
    return root


@FUZZ
@given(data=st.one_of(yaml_documents(), yaml_documents(), mutated(DATA_YAML),
                      st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>#'\"\n ?,%@`ab0.")), max_size=60),
                      st.binary(max_size=60)),
       split=st.sampled_from(["train", "val"]))
def test_fuzz_data_yaml(yaml_root, data, split):
    path = _write(yaml_root / "data.yaml", data)
    config = _only_betterconv_errors(read_data_yaml, path)
    assert config is None or isinstance(config, dict)
    dataset = _only_betterconv_errors(YOLODetection, path, split)
    if dataset is not None:
        assert all(_inside(image, yaml_root) for image, _ in dataset.files)
        _load_all(dataset)


# --- what the fuzzers found, kept as plain cases ------------------------------------------------------------

def _raises(call, *args, **kwargs) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(BetterConvError) as info:
            call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_what_the_fuzzers_found(tmp_path, list_roots, yaml_root):
    # nesting deeper than Python's recursion limit: RecursionError from json and PyYAML
    nested = tmp_path / "annotations" / "instances_val.json"
    nested.parent.mkdir()
    _image(tmp_path / "images" / "val" / "a.jpg")
    nested.write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in _raises(COCODetection, tmp_path, "val")
    yaml_path = yaml_root / "data.yaml"
    for text, problem in (("names: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
                          ("a: &a [x, x]\nb: &b [*a, *a]\nnames: *b\n", "aliases"),  # the YAML billion laughs
                          ("!!int train: images/train\n", "tag:yaml.org,2002:int"),  # ValueError in PyYAML
                          ("train: !!timestamp 2001-13\n", "tag:yaml.org,2002:timestamp")):  # AttributeError
        _write(yaml_path, text)
        assert problem in _raises(read_data_yaml, yaml_path)
    # a file name too long for the file system: OSError from Path.exists() / is_dir()
    camvid = list_roots["camvid"]
    _write(camvid / "train.txt", f"x/y/{'a' * 300}.jpg train/a.jpg\n")
    assert _raises(CamVid(camvid, "train").load, 0).endswith(f"{'a' * 300}.jpg")  # listed; loading names it
    _write(yaml_path, f"train: {'a' * 300}\n")
    assert "is neither a folder nor a list file" in _raises(YOLODetection, yaml_path, "train")
    # a NUL character in a VOC id: ValueError from read_bytes
    voc = list_roots["voc"]
    _write(voc / "ImageSets" / "Main" / "test.txt", "a\x00b\n")
    assert "NUL" in _raises(VOCDetection, voc, "test")
    # a class id too large for int64 when no class names are given: OverflowError
    labels = tmp_path / "a.txt"
    labels.write_text("1e20 0.5 0.5 0.1 0.1\n")
    assert "class id 100000000000000000000 is outside 0-65535" in _raises(parse_yolo_txt, labels, tmp_path / "a.jpg",
                                                                          "a", None)
    # COCO masks the old code drew from garbage: a negative RLE run, a string, NaN polygons
    for segmentation, problem in (({"size": [6, 8], "counts": [-5, 53]}, "RLE run -5"),
                                  ("abcdefg", "neither an RLE object nor a list of polygons"),
                                  ([[float("nan")] * 6], "not a list of finite numbers")):
        nested.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
                                      "categories": [{"id": 1, "name": "person"}],
                                      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 3,
                                                       "segmentation": segmentation}]}))
        assert problem in _raises(COCOSegmentation(tmp_path, "val").load, 0)
