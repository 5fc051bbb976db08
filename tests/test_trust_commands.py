"""The command line keeps the user's trust: no input is ever overwritten, outputs of different inputs stay apart,
`--json` means JSON alone on stdout, TFLite weights are preprocessed as their graphs expect, `predict` reads
folders, globs and EXIF orientation, detections carry the dataset's ids, and the small things (version, `list`
matching, progress bars, quiet quantisation, the zoo chart, a help text for every option)."""
import argparse
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA, make_seg_dataset, save_random_image
from betterconv.cli import main
from betterconv.models.info import IMAGENET_MEAN, IMAGENET_STD
from betterconv.weights import create_model, read_metadata, save_weights

CORAL = SHARED_DATA / "coral"
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
DOG, SHEEP, BIRD = 12, 17, 3
SEG, DET, CLS = "deeplabv3_mobilenet_v2", "yolov2_tiny", "mobilenet_v2"


def one_error_line(code, err, *words):
    """Exit status 2, one `betterconv: error:` line naming `words`, no traceback."""
    lines = err.replace("\r", "\n").strip().splitlines()
    assert code == 2, err
    assert lines and lines[-1].startswith("betterconv: error: "), err
    assert "Traceback" not in err
    assert all(w in lines[-1] for w in words), lines[-1]


def snapshot(folder):
    """Every file under `folder` with its bytes."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def need_coral():
    if not CORAL.is_dir():
        pytest.skip(f"reference data folder {CORAL} is absent (Coral's TFLite models and test photos)")


# --- tiny untrained weights, made in the tests -------------------------------------------------------------------

@pytest.fixture
def seg_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("deeplabv3_mobilenet_v2", num_classes=3, width_mult=0.35)
    path = tmp_path / "weights" / "seg.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_weights(model, path, class_names=["background", "red", "green"], input_size=(3, 32, 32),
                 mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return path


def det_weights(folder, num_classes):
    torch.manual_seed(0)
    model = create_model("yolov2_tiny", num_classes=num_classes, width_mult=0.25)
    path = folder / f"det{num_classes}.safetensors"
    folder.mkdir(exist_ok=True)
    save_weights(model, path, input_size=(3, 64, 64), mean=(0.0,) * 3, std=(1.0,) * 3)
    return path


@pytest.fixture
def cls_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", num_classes=2, width_mult=0.35)
    path = tmp_path / "weights" / "cls.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_weights(model, path, class_names=["cat", "dog"], input_size=(3, 32, 32), mean=IMAGENET_MEAN,
                 std=IMAGENET_STD)
    return path


# --- 1. no output is, or replaces, an input; the output's suffix is its format ------------------------------------

def test_predict_seg_refuses_to_write_over_the_photo(cli, tmp_path, seg_weights):
    save_random_image(tmp_path / "photos" / "holiday.png", 24, 32)
    before = snapshot(tmp_path)
    code, _, err = cli("predict", "seg", "--model", SEG, "--weights", seg_weights, "--output", tmp_path / "photos",
                       tmp_path / "photos" / "holiday.png")
    one_error_line(code, err, "holiday.png", "would overwrite the input")
    assert snapshot(tmp_path) == before  # the photo untouched, nothing half-written


def test_predict_det_refuses_to_write_over_the_photo(cli, tmp_path):
    weights = det_weights(tmp_path / "weights", 2)
    save_random_image(tmp_path / "photos" / "holiday.png", 24, 32)
    before = snapshot(tmp_path)
    code, _, err = cli("predict", "det", "--model", DET, "--weights", weights, "--input-size", "64", "--output",
                       tmp_path / "photos", tmp_path / "photos" / "holiday.png")
    one_error_line(code, err, "holiday.png", "would overwrite the input")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("output,extra,words", [
    ("m.safetensors", [], ["cannot tell the format", ".safetensors"]),      # would replace the weights
    ("m.tflite", [], ["cannot tell the format", ".tflite"]),                # ONNX under a TFLite name
    ("m.pt", ["--format", "onnx"], ["onnx file ends in .onnx"]),
    ("m.onnx", ["--format", "ncnn"], ["ncnn file ends in .param"]),
    ("graph", [], ["without a suffix"]),
])
def test_export_output_suffix_must_match_the_format(cli, tmp_path, cls_weights, output, extra, words):
    weights = tmp_path / "m.safetensors"
    os.replace(cls_weights, weights)
    before = snapshot(tmp_path)
    code, _, err = cli("export", "mobilenet_v2", "--weights", weights, "-o", tmp_path / output, *extra)
    one_error_line(code, err, *words)
    assert snapshot(tmp_path) == before


def test_export_refuses_to_write_over_its_weights(cli, tmp_path, cls_weights):
    # weights whose name says .onnx (safetensors are recognised by their content) and an output of that name; and
    # a link to them
    weights = tmp_path / "m.onnx"
    os.replace(cls_weights, weights)
    os.symlink(weights, tmp_path / "link.onnx")
    before = snapshot(tmp_path)
    for output in (weights, tmp_path / "link.onnx"):
        code, _, err = cli("export", "mobilenet_v2", "--weights", weights, "-o", output)
        one_error_line(code, err, "would overwrite the input")
    assert snapshot(tmp_path) == before


def test_convert_and_heatmap_refuse_to_write_over_their_inputs(cli, tmp_path, cls_weights):
    before = snapshot(tmp_path)
    code, _, err = cli("convert", cls_weights, cls_weights, "--model", "mobilenet_v2")
    one_error_line(code, err, "would overwrite the input")
    image = tmp_path / "cat.png"
    Image.new("RGB", (40, 32), (120, 90, 60)).save(image)
    before = snapshot(tmp_path)
    code, _, err = cli("heatmap", image, "--weights", cls_weights, "--class", "cat", "--output", image)
    one_error_line(code, err, "would overwrite the input")
    code, _, err = cli("heatmap", image, "--weights", cls_weights, "--class", "cat", "--output", tmp_path / "h.jpg")
    one_error_line(code, err, ".png")
    assert snapshot(tmp_path) == before


# --- 2. inputs that share a stem keep their own outputs and ids -----------------------------------------------------

def test_predict_seg_keeps_outputs_of_same_stem_inputs_apart(cli, tmp_path, seg_weights):
    sizes = {"a/x.jpg": (20, 28), "b/x.png": (24, 36), "c/y.png": (16, 20), "c/y_overlay.png": (12, 44)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        save_random_image(tmp_path / "in" / name, h, w, seed=i)
    out = tmp_path / "out"
    argv = ["predict", "seg", "--model", SEG, "--weights", seg_weights, "--output", out,
            *(tmp_path / "in" / name for name in sizes)]
    code, printed, err = cli(*argv)
    assert code == 0, err
    stems = {"a/x.jpg": "a_x", "b/x.png": "b_x", "c/y.png": "y", "c/y_overlay.png": "y_overlay-2"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{suffix}" for s in stems.values() for suffix in (".png", "_overlay.png"))
    for name, stem in stems.items():  # each label map is its own image's, not one written over another
        assert np.asarray(Image.open(out / f"{stem}.png")).shape == sizes[name]
        assert Image.open(out / f"{stem}_overlay.png").size == sizes[name][::-1]
    first = snapshot(out)
    assert cli(*argv)[0] == 0 and snapshot(out) == first  # deterministic names


def test_predict_det_gives_same_stem_inputs_their_own_ids(cli, tmp_path):
    weights = det_weights(tmp_path / "weights", 2)
    save_random_image(tmp_path / "a" / "x.jpg", 40, 48, seed=1)
    save_random_image(tmp_path / "b" / "x.jpg", 56, 32, seed=2)
    out = tmp_path / "out"
    code, _, err = cli("predict", "det", "--model", DET, "--weights", weights, "--input-size", "64", "--conf-thresh",
                       "0", "--output", out, tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a_x.png", "b_x.png", "detections.json"]
    assert Image.open(out / "a_x.png").size == (48, 40) and Image.open(out / "b_x.png").size == (32, 56)
    ids = {d["image_id"] for d in json.loads((out / "detections.json").read_text())}
    assert ids == {"a_x", "b_x"}


# --- 3. --json: stdout holds the JSON alone ------------------------------------------------------------------------

def _torn_cls_folder(root):
    for c in ("cat", "dog"):
        for i in range(2):
            save_random_image(root / c / f"{i}.png", 20, 20, seed=i)
    (root / "dog" / "torn.png").write_bytes(b"\x89PNG not really")
    return root


def _torn_seg_folder(root):
    make_seg_dataset(root, n=3)
    (root / "val" / "images" / "val1.png").write_bytes(b"not an image")
    return root


JSON_COMMANDS = {
    # the DataWarning of coco128 (images without labels) and the missing val split went to stdout
    "eval det": lambda t: ["eval", "det", "--model", DET, "--weights", det_weights(t / "w", 80), "--data",
                           f"yolo:{SHARED_DATA / 'coco128'}", "--split", "val", "--input-size", "64",
                           "--max-images", "2", "--json"],
    "anchors": lambda t: ["anchors", "--data", f"yolo:{SHARED_DATA / 'coco128'}", "--split", "train2017", "-k",
                          "3", "--json"],
    # the skipped-sample report went to stdout
    "eval cls": lambda t: ["eval", "cls", "--model", CLS, "--weights", t / "weights" / "cls.safetensors", "--data",
                           f"folder:{_torn_cls_folder(t / 'cls')}", "--split", "all", "--skip-bad", "--json"],
    "eval seg": lambda t: ["eval", "seg", "--model", SEG, "--weights", t / "weights" / "seg.safetensors", "--data",
                           f"folder:{_torn_seg_folder(t / 'seg')}", "--skip-bad", "--json"],
    "predict cls": lambda t: ["predict", "cls", "--model", CLS, "--weights", t / "weights" / "cls.safetensors",
                              "--json", _torn_cls_folder(t / "p") / "cat"],
    "profile": lambda t: ["profile", "mobilenet_v2", "--arg", "width_mult=0.35", "--input-size", "32", "32",
                          "--json"],
    "profile --memory-table": lambda t: ["profile", "--memory-table", "--json"],
    "bench conv": lambda t: ["bench", "conv", "--kernels", "3", "--shapes", "8@8", "--repeats", "1", "--json"],
    # --verbose printed its progress lines on stdout
    "bench infer": lambda t: ["bench", "infer", "mobilenet_v2", "--arg", "width_mult=0.35", "--input-size", "32",
                              "32", "--batch", "1", "--repeats", "2", "--warmup", "0", "--variants",
                              "betterconv_eager", "--verbose", "--json"],
}


@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_json_means_json_alone_on_stdout(cli, tmp_path, seg_weights, cls_weights, command):
    if not SHARED_DATA.is_dir() and command in ("eval det", "anchors"):
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    code, out, err = cli(*JSON_COMMANDS[command](tmp_path))
    assert code == 0, err
    json.loads(out)  # nothing but the JSON


def test_json_commands_put_their_warnings_on_stderr(cli, tmp_path, shared_data):
    code, out, err = cli(*JSON_COMMANDS["eval det"](tmp_path))
    assert code == 0 and json.loads(out)
    assert "2 images without a label file" in err and "training images" in err


# --- 4. TFLite weights: as their graphs expect, the same as their conversion ----------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Coral's MobileNetV2 classifier and DeepLabv3 as converted safetensors."""
    need_coral()
    folder = tmp_path_factory.mktemp("converted")
    for name, model in (("mobilenet_v2_1.0_224_quant", CLS), ("deeplabv3_mnv2_pascal_quant", SEG)):
        assert main(["convert", str(CORAL / f"{name}.tflite"), str(folder / f"{name}.safetensors"), "--model",
                     model]) == 0
    return folder


def test_predict_cls_resizes_the_whole_image_for_tflite_classifiers(cli, converted):
    image = CORAL / "images" / "grace_hopper.bmp"
    answers = {}
    for weights in (CORAL / "mobilenet_v2_1.0_224_quant.tflite",
                    converted / "mobilenet_v2_1.0_224_quant.safetensors"):
        code, out, err = cli("predict", "cls", "--model", CLS, "--weights", weights, "--json", "--top-k", "3", image)
        assert code == 0, err
        answers[weights.suffix] = json.loads(out)[0]["top"]
    assert answers[".tflite"][0]["class"] == "military uniform"  # a centre crop reads the cap: "mortarboard"
    assert [r["index"] for r in answers[".tflite"]] == [r["index"] for r in answers[".safetensors"]]
    assert [r["probability"] for r in answers[".tflite"]] == pytest.approx(
        [r["probability"] for r in answers[".safetensors"]], abs=1e-5)
    code, out, _ = cli("predict", "cls", "--model", CLS, "--weights",
                       converted / "mobilenet_v2_1.0_224_quant.safetensors", "--json", "--crop", image)
    assert code == 0 and json.loads(out)[0]["top"][0]["class"] == "mortarboard"  # --crop asks for the crop


def test_predict_seg_runs_tflite_deeplab_at_its_input_size(cli, converted, tmp_path):
    image = CORAL / "images" / "dog_segmentation.bmp"  # 128x128
    dog = np.asarray(Image.open(CORAL / "images" / "dog_segmentation_mask.bmp")) == 0  # trimap: 0 = the pet
    labels = {}
    for key, weights, extra in (("tflite", CORAL / "deeplabv3_mnv2_pascal_quant.tflite", []),
                                ("converted", converted / "deeplabv3_mnv2_pascal_quant.safetensors", []),
                                ("native", converted / "deeplabv3_mnv2_pascal_quant.safetensors",
                                 ["--input-size", "native"])):
        code, _, err = cli("predict", "seg", "--model", SEG, "--weights", weights, "--output", tmp_path / key, *extra,
                           image)
        assert code == 0, err
        labels[key] = np.asarray(Image.open(tmp_path / key / "dog_segmentation.png"))
    assert labels["tflite"].shape == (128, 128)
    assert np.array_equal(labels["tflite"], labels["converted"])
    found = labels["tflite"] > 0
    assert np.bincount(labels["tflite"][found]).argmax() == DOG
    assert (found & dog).sum() / (found | dog).sum() > 0.85
    native = labels["native"][labels["native"] > 0]
    assert np.bincount(native).argmax() == SHEEP  # what the model says at 128x128: why the input size matters


def test_eval_seg_with_tflite_weights_matches_predict_and_conversion(cli, converted, tmp_path):
    root = tmp_path / "voc"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    Image.open(CORAL / "images" / "bird_segmentation.bmp").convert("RGB").save(root / "images" / "bird.png")
    bird = np.asarray(Image.open(CORAL / "images" / "bird_segmentation_mask.bmp"))
    Image.fromarray(np.where(bird > 0, BIRD, 0).astype(np.uint8)).save(root / "masks" / "bird.png")
    Image.open(CORAL / "images" / "dog_segmentation.bmp").convert("RGB").save(root / "images" / "dog.png")
    trimap = np.asarray(Image.open(CORAL / "images" / "dog_segmentation_mask.bmp"))
    Image.fromarray(np.choose(trimap, [DOG, 0, 255]).astype(np.uint8)).save(root / "masks" / "dog.png")
    results = {}
    for key, weights in (("tflite", CORAL / "deeplabv3_mnv2_pascal_quant.tflite"),
                         ("converted", converted / "deeplabv3_mnv2_pascal_quant.safetensors")):
        code, out, err = cli("eval", "seg", "--model", SEG, "--weights", weights, "--data", f"folder:{root}", "--json")
        assert code == 0, err
        results[key] = json.loads(out)
    assert results["tflite"]["miou"] == pytest.approx(results["converted"]["miou"], abs=1e-9)
    iou = results["tflite"]["per_class_iou"]
    assert iou[BIRD] > 0.85 and iou[DOG] > 0.8  # TensorFlow's x / 127.5 - 1 at 513x513, not ImageNet's statistics
    code, _, err = cli("predict", "seg", "--model", SEG, "--weights", CORAL / "deeplabv3_mnv2_pascal_quant.tflite",
                       "--output", tmp_path / "pred", *sorted((root / "images").iterdir()))
    assert code == 0, err
    code, out, err = cli("eval", "seg", "--predictions", tmp_path / "pred", "--data", f"folder:{root}", "--json")
    assert code == 0, err
    assert json.loads(out)["miou"] == pytest.approx(results["tflite"]["miou"], abs=1e-9)


# --- 5. predict reads folders, globs and EXIF; --model from the weights; heatmap needs weights ------------------------

def test_predict_takes_folders_and_globs(cli, tmp_path, cls_weights):
    for name in ("b.png", "a.jpg", "notes.txt"):
        if name.endswith(".txt"):
            (tmp_path / "photos" / name).write_text("not an image\n")
        else:
            save_random_image(tmp_path / "photos" / name, 20, 24)
    save_random_image(tmp_path / "more" / "c.png", 20, 24)
    code, out, err = cli("predict", "cls", "--model", CLS, "--weights", cls_weights, "--json", tmp_path / "photos",
                         str(tmp_path / "more" / "*.png"))
    assert code == 0, err
    assert [os.path.basename(r["image"]) for r in json.loads(out)] == ["a.jpg", "b.png", "c.png"]
    code, _, err = cli("predict", "cls", "--model", CLS, "--weights", cls_weights, tmp_path / "nowhere")
    one_error_line(code, err, "nowhere")


def test_predict_applies_exif_orientation(cli, tmp_path, seg_weights):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    photo = tmp_path / "phone.jpg"
    Image.new("RGB", (40, 24), (200, 30, 30)).save(photo, exif=exif.tobytes())
    code, _, err = cli("predict", "seg", "--model", SEG, "--weights", seg_weights, "--output", tmp_path / "out", photo)
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "out" / "phone.png")).shape == (40, 24)  # as displayed: 24 wide


def test_model_comes_from_the_weights(cli, tmp_path, cls_weights):
    save_random_image(tmp_path / "a.png", 20, 24)
    code, out, err = cli("predict", "cls", "--weights", cls_weights, "--json", tmp_path / "a.png")
    assert code == 0 and json.loads(out)[0]["top"][0]["class"] in ("cat", "dog"), err
    need_coral()
    code, out, err = cli("predict", "seg", "--weights", CORAL / "deeplabv3_mnv2_pascal_quant.tflite", "--output",
                         tmp_path / "out", "--input-size", "65", CORAL / "images" / "bird.bmp")
    assert code == 0 and (tmp_path / "out" / "bird.png").is_file(), err
    target = tmp_path / "m.safetensors"
    code, out, err = cli("convert", CORAL / "mobilenet_v2_1.0_224_quant.tflite", target)  # no --model
    assert code == 0, err
    assert read_metadata(target)["betterconv.model"] == "mobilenet_v2"
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pth")
    code, _, err = cli("predict", "cls", "--weights", tmp_path / "plain.pth", CORAL / "images" / "cat.bmp")
    one_error_line(code, err, "--model", "does not record")


def test_heatmap_needs_trained_weights(cli, tmp_path):
    image = tmp_path / "cat.png"
    Image.new("RGB", (64, 48)).save(image)
    code, _, err = cli("heatmap", image, "--class", "tabby", "--output", tmp_path / "h.png")
    one_error_line(code, err, "--weights", "untrained")
    assert not (tmp_path / "h.png").exists()


# --- 6. eval seg counts what it scores; eval det says when it scores training images -------------------------------

def test_eval_seg_reports_and_honours_max_images(cli, tmp_path, seg_weights):
    root = make_seg_dataset(tmp_path / "data", n=6)
    base = ["eval", "seg", "--data", f"folder:{root}", "--split", "val", "--max-images", "3"]
    code, out, err = cli(*base, "--model", SEG, "--weights", seg_weights)
    assert code == 0 and "(3 images of" in out, err
    code, out, err = cli(*base, "--model", SEG, "--weights", seg_weights, "--json")
    assert code == 0 and json.loads(out)["num_images"] == 3, err
    # predictions for the first two images only: --max-images 2 scores those
    preds = tmp_path / "pred"
    preds.mkdir()
    for i in range(2):
        truth = np.asarray(Image.open(root / "val" / "masks" / f"val{i}.png"))
        Image.fromarray(np.where(truth == 255, 0, truth).astype(np.uint8)).save(preds / f"val{i}.png")
    code, out, err = cli("eval", "seg", "--data", f"folder:{root}", "--split", "val", "--predictions", preds,
                         "--max-images", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["num_images"] == 2 and result["pixel_acc"] == pytest.approx(1.0)


def test_eval_det_says_it_scores_training_images(cli, tmp_path, shared_data):
    code, out, err = cli(*JSON_COMMANDS["eval det"](tmp_path)[:-1])
    assert code == 0 and "(2 images)" in out, err
    assert "no val split" in err and "training images" in err
    code, _, err = cli("eval", "det", "--model", DET, "--weights", det_weights(tmp_path / "w", 80), "--data",
                       f"yolo:{shared_data / 'coco8'}", "--split", "val", "--input-size", "64", "--max-images", "1")
    assert code == 0 and "training images" not in err  # coco8 has its own val split


# --- 7. predict det's category ids are the dataset's ----------------------------------------------------------------

def test_predict_det_json_on_coco_data_is_accepted_by_eval(cli, tmp_path, shared_data):
    from betterconv.data.detection import detection_dataset

    spec = f"coco:{shared_data / 'coco128'}"
    dataset = detection_dataset(spec, "train2017")
    first = [image for image, _ in dataset.files[:2]]
    weights = det_weights(tmp_path / "w", 80)
    out = tmp_path / "pred"
    code, _, err = cli("predict", "det", "--model", DET, "--weights", weights, "--input-size", "64", "--conf-thresh",
                       "0", "--data", spec, "--split", "train2017", "--output", out, *first)
    assert code == 0, err
    results = json.loads((out / "detections.json").read_text())
    assert {r["category_id"] for r in results} <= set(dataset.category_ids)
    assert {r["category_id"] for r in results} - set(range(1, 81))  # ids above 80: COCO's, not class index + 1
    assert {r["image_id"] for r in results} == set(dataset.image_ids[:2])
    code, out, err = cli("eval", "det", "--predictions", out / "detections.json", "--data", spec, "--split",
                         "train2017", "--input-size", "64", "--max-images", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["coco_map"] is not None
    code, out, _ = cli("predict", "det", "--help")
    assert code == 0 and "category_id" in out and "class index + 1" in out


# --- 8. the small things --------------------------------------------------------------------------------------------

def test_version(cli):
    import betterconv

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"betterconv {betterconv.__version__}"


def test_list_matches_a_bare_word(cli):
    assert cli("list", "yolo")[1] == cli("list", "yolo*")[1] != ""
    assert [line.split()[0] for line in cli("list", "deeplab")[1].splitlines()] == \
        [line.split()[0] for line in cli("list", "*deeplab*")[1].splitlines()]
    code, _, err = cli("list", "nothing-like-this")
    one_error_line(code, err, "no registered model matches")


def test_bench_commands_show_progress_on_stderr(cli):
    code, out, err = cli("bench", "conv", "--kernels", "1", "3", "--shapes", "8@8", "--repeats", "1", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    assert "bench conv" in err and "/2 " in err
    code, out, err = cli("bench", "infer", "mobilenet_v2", "--arg", "width_mult=0.35", "--input-size", "32", "32",
                         "--batch", "1", "--repeats", "2", "--warmup", "0", "--variants", "betterconv_eager",
                         "--json")
    assert code == 0 and json.loads(out)
    assert "bench infer mobilenet_v2" in err and "/3 " in err
    code, _, err = cli("bench", "conv", "--kernels", "1", "--shapes", "8@8", "--repeats", "1", "--no-progress",
                       "--output", "rows.txt")
    one_error_line(code, err, ".json")


def test_quantisation_is_quiet_about_removed_initializers(tmp_path, capfd):
    import onnx
    from onnx import numpy_helper
    from betterconv.deploy import export_onnx, quantize_onnx_static

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    export_onnx(model, tmp_path / "f.onnx", (3, 8, 8), normalize=None)
    graph = onnx.load(str(tmp_path / "f.onnx"))
    graph.graph.initializer.append(numpy_helper.from_array(np.ones(5, np.float32), "unused_weight"))
    onnx.save(graph, str(tmp_path / "g.onnx"))
    capfd.readouterr()
    rng = np.random.default_rng(0)
    report = quantize_onnx_static(tmp_path / "g.onnx", tmp_path / "q.onnx",
                                  [rng.random((3, 8, 8), dtype=np.float32) for _ in range(2)])
    assert report.images == 2
    out, err = capfd.readouterr()  # onnxruntime's own logger writes to the process's stderr
    assert "Removing initializer" not in out + err


def test_zoo_chart_draws_global_receptive_fields_longest():
    from betterconv.analysis.zoo import receptive_field_bars

    rows = [{"receptive_field": 427, "input_size": [3, 224, 224]},
            {"receptive_field": "global", "input_size": [3, 513, 513]},
            {"receptive_field": 1003, "input_size": [3, 416, 416]}]
    lengths, is_global = receptive_field_bars(rows)
    assert is_global == [False, True, False]
    assert lengths[0] == 427 and lengths[2] == 1003 and lengths[1] > max(1003, 513)


def _every_action(parser, path=("betterconv",)):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), "(the command itself)", helps.get(name)
                yield from _every_action(sub, (*path, name))
        else:
            yield path, "/".join(action.option_strings) or action.dest, action.help


def test_every_option_has_a_help_text():
    from betterconv.cli import build_parser

    missing = [f"{' '.join(path)} {name}" for path, name, text in _every_action(build_parser())
               if not text or text == argparse.SUPPRESS]
    assert not missing, "options without a help text:\n" + "\n".join(missing)
