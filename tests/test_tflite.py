"""TFLite import: Coral's quantised MobileNetV2 and DeepLabv3 files against Google's own interpreter.

The interpreter (ai-edge-litert) gets the uint8 pixels, betterconv's float model the same pixels dequantised
(`TFLiteInput.to_float`), so the two see the very same image.
"""
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from betterconv.errors import BetterConvError
from betterconv.interop.tflite import (TFLiteInput, create_tflite_model, load_tflite, read_tflite, tflite_input,
                                       tflite_model_config)
from betterconv import create_model

from conftest import SHARED_DATA, coral_photos

CORAL = SHARED_DATA / "coral"
MOBILENET = "mobilenet_v2_1.0_224_quant.tflite"  # uint8, per-tensor (TF1 quantisation-aware training)
MOBILENET_TF2 = "tf2_mobilenet_v2_1.0_224_ptq.tflite"  # int8, per-channel (TF2 post-training quantisation)
DEEPLAB = "deeplabv3_mnv2_pascal_quant.tflite"
DEEPLAB_DM05 = "deeplabv3_mnv2_dm05_pascal_quant.tflite"


def coral(name: str = "") -> Path:
    if not CORAL.is_dir():
        pytest.skip(f"reference data folder {CORAL} is absent")
    return CORAL / name


def interpreter(path: Path, preserve: bool = False):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (the reference) is absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserving all tensors is "for debugging": it is what we do
        it = litert.Interpreter(str(path), experimental_preserve_all_tensors=preserve, num_threads=1)
    it.allocate_tensors()
    return it


def run(it, array: np.ndarray) -> None:
    it.set_tensor(it.get_input_details()[0]["index"], array)
    it.invoke()


def dequantized(it, graph, index: int) -> np.ndarray:
    t = graph.tensors[index]
    return (it.get_tensor(index).astype(np.float64) - t.zero_point[0]) * t.scale[0]


@pytest.fixture(scope="module", params=[MOBILENET, MOBILENET_TF2])
def classifier(request):
    path = coral(request.param)
    return path, read_tflite(path), create_tflite_model(path), interpreter(path, preserve=True)


@pytest.fixture(scope="module", params=[DEEPLAB, DEEPLAB_DM05])
def segmenter(request):
    path = coral(request.param)
    return path, read_tflite(path), create_tflite_model(path), interpreter(path, preserve=True)


def test_model_config_read_from_each_file():
    assert tflite_model_config(coral(MOBILENET)) == (
        "mobilenet_v2", {"num_classes": 1001, "width_mult": 1.0, "padding": "tf_same"})
    assert tflite_model_config(coral(MOBILENET_TF2)) == (
        "mobilenet_v2", {"num_classes": 1001, "width_mult": 1.0, "padding": "tf_same"})
    deeplab = {"num_classes": 21, "output_stride": 16, "width_mult": 1.0, "atrous_rates": (), "image_pooling": True,
               "padding": "tf_same", "align_corners": True}
    assert tflite_model_config(coral(DEEPLAB)) == ("deeplabv3_mobilenet_v2", deeplab)
    # TF DeepLab rounds channels to multiples of 1 below width 1 (12, not 16, in block 2)
    assert tflite_model_config(coral(DEEPLAB_DM05)) == (
        "deeplabv3_mobilenet_v2", {**deeplab, "width_mult": 0.5, "round_nearest": 1})


def test_input_is_the_interpreters_dequantised():
    inp = tflite_input(coral(MOBILENET))
    assert (inp.size, inp.dtype, inp.scale, inp.zero_point) == ((224, 224), np.uint8, 1 / 128, 128)
    pixels = np.broadcast_to(np.array([0, 128, 255], np.uint8)[:, None, None], (3, 1, 3))  # (H, W, C)
    inp1 = TFLiteInput(3, 1, 3, np.uint8, 1 / 128, 128)
    assert np.array_equal(inp1.interpreter_input(pixels)[0], pixels)  # uint8 files take the pixels as they are
    x = inp1.to_float(pixels)  # (1, 3, H, W)
    assert x.shape == (1, 3, 3, 1)
    assert x[0, 0, :, 0].tolist() == [-1.0, 0.0, 127 / 128]  # (q - 128) / 128, TF's x / 127.5 - 1 within a step
    tf2 = tflite_input(coral(MOBILENET_TF2))
    assert tf2.zero_point == 127 and tf2.scale == pytest.approx(1 / 127.5)
    with pytest.raises(BetterConvError, match="shape"):
        inp.to_float(np.zeros((100, 100, 3), np.uint8))


def test_classifier_top1_equals_interpreter_on_every_photo(classifier):
    path, graph, model, it = classifier
    labels = coral("imagenet_labels.txt").read_text().splitlines()
    softmax = next(op for op in graph.ops if op.kind == "SOFTMAX")
    inp = tflite_input(graph)
    worst, tops = 0.0, {}
    for photo in coral_photos():
        pixels = inp.load_image(photo)
        run(it, inp.interpreter_input(pixels))
        theirs = dequantized(it, graph, softmax.inputs[0]).reshape(-1)  # the logits before the softmax
        with torch.no_grad():
            ours = model(inp.to_float(pixels))[0].double().numpy()
        assert ours.argmax() == theirs.argmax(), photo.name
        worst = max(worst, float(np.abs(ours - theirs).max()))
        tops[photo.stem] = labels[int(ours.argmax())]
    assert len(tops) >= 7
    assert tops["cat"] == "Egyptian cat"
    assert tops["parrot"] == "macaw" and tops["bird"] == "chickadee"
    # the float model's logits stay within a few of the quantised file's output steps of the interpreter's
    assert worst < (0.6 if path.name == MOBILENET else 1.5), worst


def test_first_layer_within_half_a_quantisation_step(classifier):
    """Padding, layout and dequantisation are exact: the stem's output is the interpreter's up to its rounding."""
    path, graph, model, it = classifier
    inp = tflite_input(graph)
    pixels = inp.load_image(coral("images/cat.bmp"))
    run(it, inp.interpreter_input(pixels))
    stem = next(op for op in graph.ops if op.kind == "CONV_2D")
    theirs = dequantized(it, graph, stem.outputs[0])[0]
    with torch.no_grad():
        ours = model.stem(inp.to_float(pixels))[0].permute(1, 2, 0).double().numpy()
    step = graph.tensors[stem.outputs[0]].scale[0]
    assert np.abs(ours - theirs).max() <= 0.5 * step * (1 + 1e-4)


def test_weights_are_the_interpreters_dequantised(classifier):
    """uint8 per-tensor and int8 per-channel: checked against the interpreter's own view of the tensors."""
    path, graph, model, it = classifier
    details = {d["index"]: d["quantization_parameters"] for d in it.get_tensor_details()}
    weighted = [op for op in graph.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    for op, conv in ((weighted[0], model.stem.conv), (weighted[1], model.blocks[0].depthwise.conv),
                     (weighted[-1], model.classifier[1])):
        q = it.get_tensor(op.inputs[1]).astype(np.float64)
        params = details[op.inputs[1]]
        shape = [1] * q.ndim
        shape[params["quantized_dimension"]] = -1
        real = (q - params["zero_points"].reshape(shape)) * params["scales"].reshape(shape)
        real = real.transpose(3, 0, 1, 2) if op.kind == "DEPTHWISE_CONV_2D" else real.transpose(0, 3, 1, 2)
        ours = conv.weight.detach().double().numpy()
        np.testing.assert_allclose(ours, real.reshape(ours.shape), rtol=1e-6, atol=1e-9)
    if path.name == MOBILENET_TF2:
        assert details[weighted[0].inputs[1]]["scales"].size == 32  # per channel indeed


def test_folded_batch_norm_is_an_exact_identity_and_survives_a_state_dict():
    path = coral(MOBILENET)
    model = create_tflite_model(path)
    bn = model.stem.bn
    y = torch.randn(2, bn.num_features, 5, 5)
    assert torch.equal(bn(y), y + bn.bias[:, None, None])
    name, kwargs = tflite_model_config(path)
    fresh = create_model(name, **kwargs).eval()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_deeplab_bird_iou_and_agreement(segmenter):
    """Coral's bird test: `bird_segmentation.bmp` (513x513) is the photo that `bird_segmentation_mask.bmp` masks."""
    from PIL import Image

    path, graph, model, it = segmenter
    inp = tflite_input(graph)
    assert inp.size == (513, 513)
    pixels = inp.load_image(coral("images/bird_segmentation.bmp"))
    run(it, inp.interpreter_input(pixels))
    theirs = it.get_tensor(it.get_output_details()[0]["index"])[0]  # the file's own ARG_MAX
    with torch.no_grad():
        ours = model(inp.to_float(pixels))[0].argmax(0).numpy()
    mask = np.asarray(Image.open(coral("images/bird_segmentation_mask.bmp")))
    iou = ((ours > 0) & (mask > 0)).sum() / ((ours > 0) | (mask > 0)).sum()
    agreement = (ours == theirs).mean()
    assert 3 in np.unique(ours)  # VOC class 3: bird
    # the bird found (IoU with the reference mask), and the interpreter's label on all but a few pixels
    if path.name == DEEPLAB:
        assert iou >= 0.90 and agreement >= 0.98, (iou, agreement)
    else:  # the half-width file
        assert iou >= 0.85 and agreement >= 0.98, (iou, agreement)


def test_deeplab_projection_follows_the_models_branch_order():
    """TF concatenates [image pooling, 1x1]; betterconv's ASPP [1x1, image pooling]."""
    path = coral(DEEPLAB)
    graph, model = read_tflite(path), create_tflite_model(path)
    concat = next(op for op in graph.ops if op.kind == "CONCATENATION")
    projection = next(op for op in graph.ops if op.kind == "CONV_2D" and op.inputs[0] == concat.outputs[0])
    theirs = graph.constant(projection.inputs[1])[:, 0, 0, :]  # (256, 512): [pooling | 1x1]
    ours = model.head.aspp.project.conv.weight.detach()[:, :, 0, 0].numpy()
    assert np.array_equal(ours[:, :256], theirs[:, 256:]) and np.array_equal(ours[:, 256:], theirs[:, :256])


@pytest.mark.parametrize("file, name, kwargs, message", [
    (MOBILENET, "mobilenet_v2", {"num_classes": 1001}, r"MobilenetV2/Conv/Conv2D_Fold.*padding='tf_same'"),
    (MOBILENET, "mobilenet_v2", {"num_classes": 1000, "padding": "tf_same"},
     r"Logits/Conv2d_1c_1x1/Conv2D.*\(1001, 1280\) in the file, \(1000, 1280\) in the model"),
    (DEEPLAB, "deeplabv3_mobilenet_v2", {"padding": "tf_same", "align_corners": True, "output_stride": 8},
     r"expanded_conv_6/depthwise.*stride \(2, 2\) in the file, \(1, 1\) in the model"),
    (DEEPLAB, "deeplabv3_mobilenet_v2", {"padding": "tf_same"}, "align_corners=True"),
    (DEEPLAB_DM05, "deeplabv3_mobilenet_v2", {"padding": "tf_same", "width_mult": 0.5, "align_corners": True},
     r"expanded_conv_1/project.*\(12, 48, 1, 1\)"),
])
def test_mismatch_names_the_file_and_tensor_and_writes_nothing(file, name, kwargs, message):
    model = create_model(name, **kwargs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(BetterConvError, match=message) as info:
        load_tflite(model, coral(file))
    assert str(info.value).startswith(file) and "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_not_tflite_files_are_refused_with_their_name(tmp_path):
    for name, data in (("notes.tflite", b"just some text, not a model"), ("empty.tflite", b""),
                       ("junk.tflite", b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 8)):
        (tmp_path / name).write_bytes(data)
        for call in (read_tflite, tflite_model_config, tflite_input):
            with pytest.raises(BetterConvError, match=name):
                call(tmp_path / name)
    with pytest.raises(BetterConvError, match="missing.tflite"):
        tflite_model_config(tmp_path / "missing.tflite")


def test_truncated_or_foreign_tflite_files(tmp_path):
    data = coral(MOBILENET).read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 2])
    with pytest.raises(BetterConvError, match="cut.tflite: corrupt or truncated"):
        tflite_model_config(tmp_path / "cut.tflite")
    shutil.copy(coral(MOBILENET), tmp_path / "renamed.tflite")  # an intact copy still loads
    assert tflite_model_config(tmp_path / "renamed.tflite")[0] == "mobilenet_v2"
    with pytest.raises(BetterConvError, match="renamed.tflite.*stride"):  # a classifier is not a DeepLab
        load_tflite(create_model("deeplabv3_mobilenet_v2", padding="tf_same", align_corners=True),
                    tmp_path / "renamed.tflite")
