"""Deployment: batch-norm folding, ONNX / TorchScript export against PyTorch, int8 quantisation, `betterconv export`.

Models are tiny (small widths and inputs) and their batch-norm statistics are randomised, so that folding is not
an identity. Tolerances: folding changes outputs by at most 1e-5 (scaled by the output's magnitude above 1: float32
rounding of logits in the tens), ONNX differs from PyTorch by at most 1e-4 (absolute).
"""
import numpy as np
import pytest
import torch
from torch import nn

from betterconv.deploy import (Normalize, count_batch_norms, export_onnx, export_torchscript, fuse_batch_norm,
                               onnx_session, quantize_onnx_static, run_onnx)
from betterconv.errors import BetterConvError
from betterconv.weights import save_weights

from conftest import build_randomised, coral_photos, randomise_batch_norm

pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_thread")

# name, builder keywords, input (C, H, W)
CASES = [
    ("mobilenet_v1", dict(width_mult=0.25, num_classes=10), (3, 64, 64)),
    ("mobilenet_v2", dict(width_mult=0.35, num_classes=10), (3, 64, 64)),
    ("shufflenet_v1", dict(scale=0.5, num_classes=10), (3, 64, 64)),
    ("resnet50", dict(num_classes=10), (3, 64, 64)),
    ("resnet101", dict(num_classes=10), (3, 64, 64)),
    ("vgg16", dict(num_classes=10, batch_norm=True), (3, 32, 32)),  # 1x1 -> AdaptiveAvgPool2d(7)
    ("darknet19", dict(num_classes=10), (3, 64, 64)),
    ("deeplabv3_mobilenet_v2", dict(width_mult=0.35), (3, 65, 97)),
    ("deeplabv3_mobilenet_v2", dict(width_mult=0.35, padding="tf_same"), (3, 66, 96)),  # TF "SAME": asymmetric
    ("yolov2_tiny", dict(num_classes=3), (3, 64, 64)),
    ("yolov2", dict(num_classes=3), (3, 64, 64)),  # passthrough reorg
]


@pytest.mark.parametrize("name,kwargs,size", CASES, ids=[f"{c[0]}{'-' + c[1]['padding'] if 'padding' in c[1] else ''}"
                                                         for c in CASES])
def test_fold_and_onnx_match_pytorch(tmp_path, name, kwargs, size):
    model = build_randomised(name, kwargs, size)
    bn = count_batch_norms(model)
    x = torch.rand(2, *size) * 4 - 2
    with torch.no_grad():
        ref = model(x)
        fused = fuse_batch_norm(model)
        folded = fused(x)
    assert count_batch_norms(fused) == 0 and count_batch_norms(model) == bn  # the original is untouched
    assert fused.model_name == name
    del fused
    fold_diff = float((folded - ref).abs().max())
    assert fold_diff <= 1e-5 * max(1.0, float(ref.abs().max())), fold_diff

    path = tmp_path / f"{name}.onnx"
    # exported at batch 1 with a free batch axis; checked with onnxruntime on a batch of 2 against `model` itself
    diff = export_onnx(model, path, size)
    print(f"{name} {kwargs} {size}: fold {fold_diff:.2g}, ONNX {diff:.2g} (outputs up to {ref.abs().max():.3g})")
    assert diff is not None and diff <= 1e-4, diff
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_fold_only_conv_bn_pairs():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4),  # bn after relu: kept
                        nn.Conv2d(4, 4, 1))
    randomise_batch_norm(seq)
    seq.append(nn.BatchNorm2d(4, track_running_stats=False))  # normalises with the batch's statistics: kept
    fused = fuse_batch_norm(seq.train())
    assert seq.training and not fused.training  # a copy, for inference
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[3], nn.BatchNorm2d)
    assert isinstance(fused[5], nn.BatchNorm2d)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(fused(x), seq.eval()(x), atol=1e-5)


def test_normalised_graph_takes_unit_images(tmp_path):
    model = build_randomised("mobilenet_v2", dict(width_mult=0.35, num_classes=10, padding="tf_same"))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    path = tmp_path / "m.onnx"
    diff = export_onnx(model, path, (3, 64, 62), normalize=(mean, std), metadata={"class_names": list("abcdefghij")})
    assert diff <= 1e-4
    x = torch.rand(3, 3, 64, 62)
    with torch.no_grad():
        ref = model(Normalize(mean, std)(x)).numpy()
    assert np.abs(run_onnx(path, x) - ref).max() <= 1e-4
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["betterconv.model"] == "mobilenet_v2" and "[0, 1]" in props["betterconv.input"]
    assert props["betterconv.input_size"] == "[3, 64, 62]" and '"j"' in props["betterconv.class_names"]


def test_static_batch(tmp_path):
    model = build_randomised("mobilenet_v1", dict(width_mult=0.25, num_classes=5))
    path = tmp_path / "s.onnx"
    assert export_onnx(model, path, (3, 32, 32), dynamic_batch=False) <= 1e-4
    assert onnx_session(path).get_inputs()[0].shape == [1, 3, 32, 32]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_round_trip(tmp_path):
    for name, kwargs, size in [("mobilenet_v2", dict(width_mult=0.35, num_classes=10, padding="tf_same"), (3, 64, 62)),
                               ("shufflenet_v1", dict(scale=0.5, num_classes=10), (3, 64, 64)),  # channel shuffle
                               ("yolov2_tiny", dict(num_classes=3), (3, 64, 96))]:
        model = build_randomised(name, kwargs)
        path = tmp_path / f"{name}.pt"
        diff = export_torchscript(model, path, size, normalize=((0.5,) * 3, (0.5,) * 3))
        assert diff <= 1e-4
        loaded = torch.jit.load(str(path))
        x = torch.rand(3, *size)
        with torch.no_grad():
            assert float((loaded(x) - model((x - 0.5) / 0.5)).abs().max()) <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobilenet_v2.pt", "shufflenet_v1.pt", "yolov2_tiny.pt"]


def test_failed_check_leaves_no_file(tmp_path, monkeypatch):
    from betterconv.deploy import export as export_module

    model = build_randomised("mobilenet_v1", dict(width_mult=0.25, num_classes=5))
    path = tmp_path / "bad.onnx"
    monkeypatch.setattr(export_module, "run_onnx",
                        lambda session, x, all_outputs=False: [o + 1.0 for o in run_onnx(session, x, all_outputs=True)])
    with pytest.raises(BetterConvError, match="differs from PyTorch"):
        export_onnx(model, path, (3, 32, 32))
    assert list(tmp_path.iterdir()) == []


def test_int8_needs_calibration(tmp_path):
    model = build_randomised("mobilenet_v1", dict(width_mult=0.25, num_classes=5))
    path = tmp_path / "f.onnx"
    export_onnx(model, path, (3, 32, 32))
    for calib in (None, []):
        with pytest.raises(BetterConvError, match="calibration images") as info:
            quantize_onnx_static(path, tmp_path / "q.onnx", calib)
        assert "\n" not in str(info.value)
    with pytest.raises(BetterConvError, match="graph takes"):
        quantize_onnx_static(path, tmp_path / "q.onnx", [np.zeros((3, 16, 16), np.float32)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.onnx"]


@pytest.mark.parametrize("name,kwargs,size,expected", [
    ("mobilenet_v2", dict(width_mult=0.35, num_classes=10), (3, 32, 32), {"/classifier/classifier.1/Gemm"}),
    ("deeplabv3_mobilenet_v2", dict(width_mult=0.35, num_classes=5), (3, 33, 33),
     {"/Resize", "/head/classifier/Conv"}),
    ("yolov2_tiny", dict(width_mult=0.25, num_classes=20), (3, 96, 96), {"/pred/Conv"})])
def test_output_layer_stays_float(tmp_path, name, kwargs, size, expected):
    """The layer computing the graph's outputs is kept float: found by walking back from the outputs, and its
    output is not on an int8 lattice (an int8 output takes at most 256 values)."""
    import onnx

    from betterconv.deploy.quantize import output_layer_nodes

    model = build_randomised(name, kwargs, size)
    path = tmp_path / "f.onnx"
    export_onnx(model, path, size)
    assert set(output_layer_nodes(onnx.load(str(path)))) == expected
    g = np.random.default_rng(0)
    calib = [g.standard_normal(size).astype(np.float32) for _ in range(64)]  # >= 640 output values
    x = np.stack(calib)
    for float_output, distinct in ((True, lambda n: n > 256), (False, lambda n: n <= 256)):
        quantize_onnx_static(path, tmp_path / "q.onnx", calib, check=False, float_output_layer=float_output)
        out = run_onnx(tmp_path / "q.onnx", x)
        assert distinct(len(np.unique(out))), (float_output, len(np.unique(out)))


def test_int8_mobilenet_v2_keeps_coral_top1(shared_data, tmp_path):
    """The ImageNet MobileNetV2 imported from Coral's .tflite, quantised to int8 (calibrated on Coral's test
    photos), gives the float model's top-1 class on every one of those photos, logits within 3 of the float ones,
    in a file under a third of the float graph's size."""
    from betterconv.models.info import TF_MEAN, TF_STD
    from betterconv.interop.tflite import create_tflite_model, tflite_input

    tflite = shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    model = create_tflite_model(tflite)
    spec = tflite_input(tflite)
    files = coral_photos()
    assert len(files) >= 8
    pixels = np.stack([spec.load_image(f) for f in files])  # (N, 224, 224, 3) uint8, as Coral's examples
    x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255)  # the graph's [0, 1] input
    float_path, int8_path = tmp_path / "mnv2.onnx", tmp_path / "mnv2_int8.onnx"
    assert export_onnx(model, float_path, (3, 224, 224), normalize=(TF_MEAN, TF_STD)) <= 1e-4
    report = quantize_onnx_static(float_path, int8_path, list(x))
    with torch.no_grad():
        ref = model((x - 0.5) / 0.5).numpy()
    got = run_onnx(int8_path, x)
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    max_diff = float(np.abs(ref - got).max())
    print(f"int8 vs float PyTorch on {len(files)} coral images: top-1 agreement {agreement:.0%}, "
          f"max |logit diff| {max_diff:.3f} (logits up to {np.abs(ref).max():.1f}); {report.format()}")
    assert agreement == 1.0
    assert report.top1_agreement == 1.0 and report.images == len(files)
    assert max_diff < 3.0
    assert int8_path.stat().st_size < float_path.stat().st_size / 3


# ---------------------------------------------------------------------------------------------------------------
# the command


@pytest.fixture
def tiny_weights(tmp_path):
    model = build_randomised("mobilenet_v1", dict(width_mult=0.25, num_classes=4))
    path = tmp_path / "tiny.safetensors"
    save_weights(model, path, class_names=["a", "b", "c", "d"], input_size=(3, 32, 32), mean=(0.5,) * 3,
                 std=(0.25,) * 3)
    return model, path


def test_cli_exports_with_metadata(cli, tmp_path, tiny_weights):
    model, weights = tiny_weights
    out_path = tmp_path / "out" / "tiny.onnx"
    code, out, err = cli("export", "mobilenet_v1", "--weights", str(weights), "--output", str(out_path))
    assert code == 0, err
    assert "max |ONNX - PyTorch|" in out and "(N, 3, 32, 32)" in out
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model((x - 0.5) / 0.25).numpy()
    assert np.abs(run_onnx(out_path, x) - ref).max() <= 1e-4

    ts_path = tmp_path / "tiny.pt"
    code, out, err = cli("export", "mobilenet_v1", "--weights", str(weights), "--output", str(ts_path),
                         "--input-size", "48", "40")
    assert code == 0 and "TorchScript" in out and "(N, 3, 48, 40)" in out, err


def test_cli_int8(cli, tmp_path, tiny_weights, shared_data):
    _, weights = tiny_weights
    out_path = tmp_path / "tiny_int8.onnx"
    code, out, err = cli("export", "mobilenet_v1", "--weights", str(weights), "--output", str(out_path), "--int8",
                         "--calib", str(shared_data / "coral" / "images"))
    assert code == 0, err
    assert "int8" in out and "top-1 agreement" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors", "tiny_int8.onnx"]


@pytest.mark.parametrize("extra,message", [
    (["--int8"], "--int8 needs calibration images"),
    (["--int8", "--calib", "nowhere/"], "no such folder"),
    (["--format", "torchscript", "--int8", "--calib", "x"], "ONNX graphs only"),
    (["--arg", "width_mult=0.5"], "weights do not fit the model"),
])
def test_cli_errors_leave_no_file(cli, tmp_path, tiny_weights, extra, message):
    _, weights = tiny_weights
    out_path = tmp_path / "never.onnx"
    code, out, err = cli("export", "mobilenet_v1", "--weights", str(weights), "--output", str(out_path), *extra)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_path.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


def test_cli_wrong_weights_for_model(cli, tmp_path, tiny_weights):
    _, weights = tiny_weights
    out_path = tmp_path / "never.onnx"
    code, out, err = cli("export", "mobilenet_v2", "--weights", str(weights), "--output", str(out_path))
    assert code == 2 and "holds weights for mobilenet_v1, not mobilenet_v2" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out_path.exists()
