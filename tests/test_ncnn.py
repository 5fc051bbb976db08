"""ncnn export (`deploy.ncnn`): the written graph, run by ncnn itself, against PyTorch, and the file format.

Models are tiny and their batch-norm statistics measured on random images (`randomise_batch_norm`), so every layer
matters in the output. ncnn is the reference here: a wrong padding, pooling rule, reorg order or weight layout in
the exporter gives outputs that differ far beyond float32 rounding (the tolerance, 1e-4 scaled by the output's
magnitude above 1, is the ONNX export's).
"""
import numpy as np
import pytest
import torch
from torch import nn

from betterconv.deploy import Normalize, fuse_batch_norm
from betterconv.deploy.ncnn import NcnnModel, export_ncnn
from betterconv.errors import BetterConvError
from betterconv.layers.upsample import BilinearUpsample

from conftest import build_randomised, coral_photos

pytest.importorskip("ncnn")

# name, builder keywords, input (C, H, W): each exercises layers the others do not
CASES = [
    ("yolov2_tiny", dict(num_classes=3, width_mult=0.25), (3, 64, 64)),  # darknet's 2x2 stride-1 max pool
    ("yolov2", dict(num_classes=3, width_mult=0.25), (3, 64, 96)),  # passthrough reorg, route (concat)
    ("darknet19", dict(num_classes=10), (3, 64, 64)),  # global average pool, flatten
    ("mobilenet_v1", dict(width_mult=0.25, num_classes=10), (3, 64, 64)),  # depthwise
    ("mobilenet_v2", dict(width_mult=0.35, num_classes=10), (3, 64, 64)),  # residual add, ReLU6, linear
    ("mobilenet_v2", dict(width_mult=0.35, num_classes=10, padding="tf_same"), (3, 66, 62)),  # asymmetric pads
    ("resnet50", dict(num_classes=10), (3, 64, 64)),  # padded max pool, projection shortcuts
    ("deeplabv3_mobilenet_v2", dict(width_mult=0.35), (3, 65, 97)),  # ASPP image pooling, bilinear upsampling
    ("shufflenet_v1", dict(scale=0.5, num_classes=10), (3, 64, 64)),  # channel shuffle, functional average pool
    # input padding to a multiple of 32, learnable (full) and fixed (depthwise) transposed convolutions, final crop
    ("fcn8s_mobilenet_v2", dict(width_mult=0.35, num_classes=3), (3, 70, 90)),
    ("fcn32s_mobilenet_v2", dict(width_mult=0.35, num_classes=3), (3, 64, 64)),  # no padding, no crop
]


def read_param(path):
    """The layers of an ncnn .param file: (type, name, inputs, outputs, params)."""
    lines = path.read_text().splitlines()
    assert lines[0] == "7767517"
    n_layers, n_blobs = map(int, lines[1].split())
    layers = []
    for line in lines[2:]:
        kind, name, n_in, n_out, *rest = line.split()
        n_in, n_out = int(n_in), int(n_out)
        params = dict(item.split("=", 1) for item in rest[n_in + n_out:])
        layers.append((kind, name, rest[:n_in], rest[n_in:n_in + n_out], params))
    assert len(layers) == n_layers
    assert len({b for layer in layers for b in layer[2] + layer[3]}) == n_blobs
    return layers


@pytest.mark.parametrize("name,kwargs,size", CASES, ids=[f"{c[0]}{'-' + c[1]['padding'] if 'padding' in c[1] else ''}"
                                                         for c in CASES])
def test_ncnn_matches_pytorch(tmp_path, name, kwargs, size):
    model = build_randomised(name, kwargs, size)
    path = tmp_path / f"{name}.param"
    diff = export_ncnn(model, path, size)
    x = torch.rand(2, *size) * 4 - 2
    with torch.no_grad():
        ref = model(x)
    got = NcnnModel(path, threads=1)(x.contiguous(memory_format=torch.channels_last))  # strided, a batch of 2
    scale = max(1.0, float(ref.abs().max()))
    print(f"{name} {size}: export check {diff:.2g}, batch of 2 {float((got - ref).abs().max()):.2g} "
          f"(outputs up to {scale:.3g})")
    assert diff <= 1e-4 * scale
    assert got.shape == ref.shape and float((got - ref).abs().max()) <= 1e-4 * scale
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.bin", path.name]  # no temporary file left

    layers = read_param(path)
    readers = [b for layer in layers for b in layer[2]]
    assert len(readers) == len(set(readers))  # ncnn frees a blob once read: a blob read twice goes through Split
    # float32 weights: every conv / linear weight behind its 4-byte tag, every other value raw (no float16)
    fused = fuse_batch_norm(model)
    values = sum(p.numel() for p in fused.parameters()) + sum(
        b.numel() for m in fused.modules() if isinstance(m, nn.BatchNorm2d) for b in (m.running_mean, m.running_var))
    tagged = sum(1 for m in fused.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)))
    fixed = [m.kernel for m in fused.modules() if isinstance(m, BilinearUpsample) and m.deconv is None]  # buffers
    values, tagged = values + sum(k.numel() for k in fixed), tagged + len(fixed)
    assert path.with_suffix(".bin").stat().st_size == 4 * values + 4 * tagged


def test_adaptive_pool_that_divides_and_one_that_does_not(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 4)), nn.Flatten(),
                          nn.Linear(64, 5)).eval()
    path = tmp_path / "p.param"
    assert export_ncnn(model, path, (3, 8, 16)) <= 1e-4  # 8x16 -> 2x4: windows of 4x4, stride 4
    with pytest.raises(BetterConvError, match=r"adaptive pooling from 9x16 to 2x4"):
        export_ncnn(model, tmp_path / "q.param", (3, 9, 16))


@pytest.mark.parametrize("groups,output_padding", [(1, 0), (2, 1)])
def test_transposed_convolution_weight_layout(tmp_path, groups, output_padding):
    torch.manual_seed(0)  # channels 4 -> 6: ncnn's (out, in) order is not PyTorch's (in, out)
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=output_padding,
                                             groups=groups), nn.ReLU()).eval()
    assert export_ncnn(model, tmp_path / "d.param", (4, 7, 9)) <= 1e-5


def test_second_scale_has_two_outputs(tmp_path):
    model = build_randomised("yolov2", dict(num_classes=2, width_mult=0.25, second_scale=True), (3, 64, 64))
    path = tmp_path / "y.param"
    export_ncnn(model, path, (3, 64, 64))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    net = NcnnModel(path, threads=1)
    assert net.input_names == ["in0"] and net.output_names == ["out0", "out1"]
    got = net(x)
    assert [g.shape for g in got] == [r.shape for r in ref]  # strides 32 and 16
    for g, r in zip(got, ref):
        assert float((g - r).abs().max()) <= 1e-4 * max(1.0, float(r.abs().max()))
    # the 26x26 stage feeds the next stage, the passthrough and the second scale: one Split with three outputs
    assert any(kind == "Split" and len(outs) == 3 for kind, _, _, outs, _ in read_param(path))
    assert any(kind == "Interp" for kind, *_ in read_param(path))


def test_activations_folded_into_convolutions(tmp_path):
    model = build_randomised("yolov2_tiny", dict(num_classes=3, width_mult=0.25), (3, 64, 64))
    path = tmp_path / "t.param"
    export_ncnn(model, path, (3, 64, 64))
    layers = read_param(path)
    kinds = [layer[0] for layer in layers]
    assert "ReLU" not in kinds  # each leaky ReLU rides on its convolution (activation_type 2, slope 0.1)
    convs = [layer for layer in layers if layer[0] == "Convolution"]
    assert [c[4].get("9") for c in convs] == ["2"] * (len(convs) - 1) + [None]  # the prediction conv is linear
    assert all(c[4]["-23310"] == "1,0.1" for c in convs[:-1])


def test_normalised_graph_takes_unit_images(tmp_path):
    model = build_randomised("mobilenet_v2", dict(width_mult=0.35, num_classes=10), (3, 64, 64))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    path = tmp_path / "m.param"
    export_ncnn(model, path, (3, 64, 64), normalize=(mean, std))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(Normalize(mean, std)(x))
    assert float((NcnnModel(path)(x) - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
    assert read_param(path)[1][0] == "Scale"
    export_ncnn(model, path, (3, 64, 64), normalize=((0, 0, 0), (1, 1, 1)))  # darknet's: an identity, no layer
    assert "Scale" not in [layer[0] for layer in read_param(path)]


class EveryOther(nn.Module):
    def forward(self, x):
        return x[..., ::2, ::2]


def test_unsupported_operation_is_named_and_nothing_written(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), EveryOther()).eval()
    path = tmp_path / "s.param"
    with pytest.raises(BetterConvError, match=r"ncnn export of Sequential: TensorBase.__getitem__ \(a slice of the "
                                              r"batch, or with a step"):
        export_ncnn(model, path, (3, 16, 16))
    assert list(tmp_path.iterdir()) == []


def test_failed_check_writes_nothing(tmp_path):
    model = build_randomised("yolov2_tiny", dict(num_classes=3, width_mult=0.25), (3, 64, 64))
    old = tmp_path / "t.param"
    old.write_text("previous")
    with pytest.raises(BetterConvError, match="differs from PyTorch"):
        export_ncnn(model, old, (3, 64, 64), atol=1e-12)  # Winograd rounding alone exceeds it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.param"] and old.read_text() == "previous"


def test_runner_errors_name_the_file(tmp_path):
    with pytest.raises(BetterConvError, match=r"missing\.param: no such file"):
        NcnnModel(tmp_path / "missing.param")
    bad = tmp_path / "bad.param"
    bad.write_text("not a graph\n")
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(BetterConvError, match=r"bad\.param: not an ncnn \.param file"):
        NcnnModel(bad)
    model = build_randomised("yolov2_tiny", dict(num_classes=3, width_mult=0.25), (3, 64, 64))
    good = tmp_path / "good.param"
    export_ncnn(model, good, (3, 64, 64))
    weights = good.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(BetterConvError, match=r"good\.bin: ncnn cannot read the weights"):
        NcnnModel(good)


def test_cli_export_ncnn(cli, tmp_path):
    out = tmp_path / "tiny.param"
    code, printed, err = cli("export", "yolov2_tiny", "--arg", "width_mult=0.25", "--arg", "num_classes=3",
                             "--input-size", "64", "64", "--output", out)
    assert code == 0, err
    assert "ncnn float32" in printed and "max |ncnn - PyTorch|" in printed
    assert out.is_file() and out.with_suffix(".bin").is_file()
    code, _, err = cli("export", "yolov2_tiny", "--format", "ncnn", "--output", tmp_path / "w.bin")
    assert code == 2 and "name the ncnn graph (.param)" in err, err


def test_reference_weights_keep_their_answers_through_ncnn(tmp_path):
    """Google's MobileNetV2 and DeepLabv3 (Coral's TFLite files, imported): ncnn's top-1 on every photo is the
    TFLite interpreter's, and its bird segmentation agrees with PyTorch's pixel by pixel (TF "SAME" padding,
    align-corners bilinear upsampling and image pooling, at the files' own sizes)."""
    from test_tflite import DEEPLAB, MOBILENET, coral, dequantized, interpreter, run

    from betterconv.interop.tflite import create_tflite_model, read_tflite, tflite_input

    path = coral(MOBILENET)
    graph, it = read_tflite(path), interpreter(path)
    inp = tflite_input(graph)
    model = create_tflite_model(path)
    export_ncnn(model, tmp_path / "m.param", (3, *inp.size))
    net = NcnnModel(tmp_path / "m.param")
    softmax = next(op for op in graph.ops if op.kind == "SOFTMAX")
    for photo in coral_photos():
        pixels = inp.load_image(photo)
        run(it, inp.interpreter_input(pixels))
        theirs = dequantized(it, graph, softmax.inputs[0]).reshape(-1)
        assert int(net(inp.to_float(pixels))[0].argmax()) == int(theirs.argmax()), photo.name

    path = coral(DEEPLAB)
    inp = tflite_input(path)
    model = create_tflite_model(path)
    export_ncnn(model, tmp_path / "d.param", (3, *inp.size))
    x = inp.to_float(inp.load_image(coral("images/bird_segmentation.bmp")))
    with torch.no_grad():
        ours = model(x)[0].argmax(0)
    agreement = float((NcnnModel(tmp_path / "d.param")(x)[0].argmax(0) == ours).float().mean())
    print(f"DeepLab bird: ncnn vs PyTorch argmax agreement {agreement:.5f}")
    assert agreement >= 0.999, agreement  # ties between logits within float rounding may fall either way
