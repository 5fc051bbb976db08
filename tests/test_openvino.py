"""OpenVINO (`deploy.openvino_export`, `deploy.openvino_runtime`): the written IR, run by OpenVINO itself, against
PyTorch; int8 by NNCF; failures that write nothing; `export --format openvino`; `bench infer`'s OpenVINO variants.

Models are tiny and their batch-norm statistics measured on random images (`build_randomised`), as in
tests/test_export.py, whose cases are reused here with the models that export to ONNX beyond them (several outputs,
FCN, ResNet segmentation heads, the MobileNetV2 detector). Tolerance: the ONNX export's, 1e-4 scaled by the output's
magnitude above 1. OpenVINO's CPU plugin runs bf16 by default on CPUs with bf16 instructions; every float32 check
here compiles with the f32 precision hint.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from betterconv.deploy import Normalize, export_onnx, fuse_batch_norm
from betterconv.errors import BetterConvError
from betterconv.weights import save_weights

from conftest import build_randomised, save_random_image
from test_export import CASES as ONNX_CASES

ov = pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'betterconv[openvino]'")

from betterconv.analysis.infer_bench import LABELS, OPENVINO_VARIANTS, VARIANTS  # noqa: E402
from betterconv.deploy.openvino_export import export_openvino, export_openvino_int8, load_openvino  # noqa: E402
from betterconv.deploy.openvino_runtime import OpenVINOModel, openvino_cpu_info  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# test_export's cases without the full-width ResNet / VGG classifiers and Darknet-19 YOLOv2 (minutes each to convert
# on 2 cores; their operators are in the dilated ResNets and the width-0.25 YOLOv2 below), plus the zoo's models that
# export to ONNX beyond them: each exercises operators the others do not
HEAVY = {"resnet50", "resnet101", "vgg16"}
CASES = [c for c in ONNX_CASES if c[0] not in HEAVY and not (c[0] == "yolov2" and "width_mult" not in c[1])] + [
    ("deeplabv3plus_mobilenet_v2", dict(width_mult=0.35, num_classes=3), (3, 65, 97)),  # decoder: resize + concat
    ("yolov2", dict(num_classes=2, width_mult=0.25, second_scale=True), (3, 64, 64)),  # two outputs
    ("yolov2_mobilenet_v2", dict(num_classes=3, width_mult=0.35), (3, 64, 64)),
    ("fcn8s_mobilenet_v2", dict(width_mult=0.35, num_classes=3), (3, 70, 90)),  # padding to 32, skips, crop
    ("fcn32s_mobilenet_v2", dict(width_mult=0.35, num_classes=3), (3, 64, 64)),
    ("fcn_resnet50", dict(num_classes=3), (3, 64, 64)),  # dilated ResNet, FCN head
    ("deeplabv3_resnet50", dict(num_classes=3), (3, 65, 65)),  # ASPP on a dilated ResNet
]


def case_id(case):
    name, kwargs, _ = case
    return name + "".join(f"-{k}" for k in ("padding", "second_scale") if k in kwargs)


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def max_diff(got, ref):
    return max(float((g - r).abs().max()) for g, r in zip(as_tuple(got), as_tuple(ref), strict=True))


@pytest.mark.parametrize("name,kwargs,size", CASES, ids=[case_id(c) for c in CASES])
def test_openvino_matches_pytorch(tmp_path, name, kwargs, size):
    model = build_randomised(name, kwargs, size)
    path = tmp_path / f"{name}.xml"
    diff = export_openvino(model, path, size)
    x = torch.rand(2, *size) * 4 - 2  # not the export's check input
    with torch.no_grad():
        ref = model(x)
    net = OpenVINOModel(path, threads=1)
    got = net(x)
    one = net(x[:1])  # a second static shape of the free batch axis
    scale = max(1.0, max(float(r.abs().max()) for r in as_tuple(ref)))
    print(f"{name} {size}: export check {diff:.2g}, batch of 2 {max_diff(got, ref):.2g} (outputs up to {scale:.3g})")
    assert net.inference_precision == "f32"
    assert type(got) is type(ref) and [g.shape for g in as_tuple(got)] == [r.shape for r in as_tuple(ref)]
    assert diff <= 1e-4 * scale and max_diff(got, ref) <= 1e-4 * scale
    assert max_diff(one, tuple(r[:1] for r in as_tuple(ref))) <= 1e-4 * scale
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.bin", path.name]  # no temporary file left


def test_ir_is_float32_normalises_and_keeps_metadata(tmp_path):
    model = build_randomised("mobilenet_v2", dict(width_mult=0.35, num_classes=10, padding="tf_same"), (3, 64, 62))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    path = tmp_path / "m.xml"
    export_openvino(model, path, (3, 64, 62), normalize=(mean, std), metadata={"class_names": list("abcdefghij")})
    x = torch.rand(3, 3, 64, 62)  # images in [0, 1]: the graph normalises
    with torch.no_grad():
        ref = model(Normalize(mean, std)(x))
    assert float((OpenVINOModel(path, threads=1)(x) - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
    # every weight stored in float32 (4 bytes), none compressed to float16
    weights = sum(p.numel() for p in fuse_batch_norm(model).parameters())
    assert path.with_suffix(".bin").stat().st_size >= 4 * weights
    ir = ov.Core().read_model(str(path))
    assert ir.get_rt_info(["betterconv", "model"]).astype(str) == "mobilenet_v2"
    assert json.loads(ir.get_rt_info(["betterconv", "class_names"]).astype(str)) == list("abcdefghij")
    assert json.loads(ir.get_rt_info(["betterconv", "mean"]).astype(str)) == pytest.approx(mean)


def test_static_batch_and_runtime_errors(tmp_path):
    model = build_randomised("mobilenet_v1", dict(width_mult=0.25, num_classes=5), (3, 32, 32))
    path = tmp_path / "s.xml"
    export_openvino(model, path, (3, 32, 32), dynamic_batch=False)
    net = OpenVINOModel(path, threads=1)
    assert list(ov.Core().read_model(str(path)).input(0).get_partial_shape().to_shape()) == [1, 3, 32, 32]
    problems = [
        (lambda: net(torch.rand(2, 3, 32, 32)), r"s\.xml: OpenVINO failed on an input of shape \(2, 3, 32, 32\)"),
        (lambda: OpenVINOModel(tmp_path / "missing.xml"), r"missing\.xml: no such file"),
        (lambda: OpenVINOModel(path, precision="f16"), "precision must be one of f32, bf16"),
    ]
    (tmp_path / "text.xml").write_text("not a graph\n")
    (tmp_path / "text.bin").write_bytes(b"")
    problems.append((lambda: OpenVINOModel(tmp_path / "text.xml"), r"text\.xml: not an OpenVINO IR \.xml file"))
    truncated = tmp_path / "cut.xml"
    truncated.write_bytes(path.read_bytes())
    truncated.with_suffix(".bin").write_bytes(path.with_suffix(".bin").read_bytes()[:1000])
    problems.append((lambda: OpenVINOModel(truncated), r"cut\.xml: OpenVINO cannot read it"))
    dynamic = tmp_path / "d.xml"
    export_openvino(model, dynamic, (3, 32, 32))
    problems.append((lambda: OpenVINOModel(dynamic)(torch.rand(1, 3, 40, 32)),
                     r"takes inputs of shape \(N, 3, 32, 32\)"))
    for call, message in problems:
        with pytest.raises(BetterConvError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


class Mystery(torch.autograd.Function):
    """An operation the ONNX exporter writes (a custom-domain node) and OpenVINO has no conversion rule for."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def symbolic(g, x):
        return g.op("betterconv_test::Mystery", x)


class WithMystery(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return Mystery.apply(self.conv(x))


def test_unmapped_operation_is_named_and_nothing_written(tmp_path):
    old = tmp_path / "m.xml"
    old.write_text("previous")
    with pytest.raises(BetterConvError, match="OpenVINO conversion of WithMystery failed: No conversion rule found "
                                              "for operations: betterconv_test.Mystery; nothing written") as info:
        export_openvino(WithMystery().eval(), old, (3, 16, 16))
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.xml"] and old.read_text() == "previous"
    with pytest.raises(BetterConvError, match=r"an OpenVINO IR is named \.xml"):
        export_openvino(WithMystery().eval(), tmp_path / "m.bin", (3, 16, 16))


def test_failed_check_writes_nothing(tmp_path):
    model = build_randomised("yolov2_tiny", dict(num_classes=3, width_mult=0.25), (3, 64, 64))
    old = tmp_path / "t.xml"
    old.write_text("previous")
    with pytest.raises(BetterConvError, match="differs from PyTorch"):
        export_openvino(model, old, (3, 64, 64), atol=1e-12)  # float32 rounding alone exceeds it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.xml"] and old.read_text() == "previous"


def test_bf16_hint_follows_the_cpu(tmp_path):
    """The bf16 hint runs bf16 exactly where OpenVINO lists BF16 among the CPU's capabilities (and then differs
    from float32 by bf16 rounding, far beyond float32's); elsewhere the plugin reports float32."""
    model = build_randomised("yolov2_tiny", dict(num_classes=3, width_mult=0.25), (3, 64, 64))
    net = load_openvino(model, (3, 64, 64), precision="bf16", threads=1)
    info = openvino_cpu_info()
    print(f"OpenVINO {info['openvino']} on {info['device']}: {info['optimization_capabilities']}, "
          f"{info['cpu_flags']}; bf16 {info['bf16']}")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    diff = float((net(x) - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    print(f"bf16 hint: compiled as {net.inference_precision}, max |OpenVINO - PyTorch| {diff:.3g} (outputs up to "
          f"{scale:.3g})")
    if "BF16" in info["optimization_capabilities"]:
        assert net.inference_precision == "bf16" and info["bf16"].startswith("native")
        assert 1e-3 * scale < diff <= 0.1 * scale  # bf16's 8-bit significand: about 2 significant digits
    else:
        assert net.inference_precision == "f32" and diff <= 1e-4 * scale


def test_runtime_imports_neither_openvino_nor_the_exporter():
    code = ("import sys; import betterconv.deploy.openvino_runtime as r; "
            "print(sorted(m for m in ('openvino', 'nncf', 'betterconv.deploy.openvino_export') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# int8


def test_int8_tiny_classifier(tmp_path):
    """NNCF int8 of a tiny MobileNetV2 whose last feature map is 1x1 (32x32 input): quantised (FakeQuantize in the
    graph, weights stored int8), each image's output the same alone as in a batch, and its top-1 agreement with the
    float IR reported. No agreement threshold: the logits of a random network lie close together."""
    pytest.importorskip("nncf", reason="int8 needs NNCF: pip install 'betterconv[openvino]'")
    model = build_randomised("mobilenet_v2", dict(width_mult=0.35, num_classes=10), (3, 32, 32))
    g = np.random.default_rng(0)
    calib = [torch.from_numpy(g.random((3, 32, 32), dtype=np.float32)) for _ in range(8)]
    norm = ((0.5,) * 3, (0.25,) * 3)
    int8, fp32 = tmp_path / "q.xml", tmp_path / "f.xml"
    diff, report = export_openvino_int8(model, int8, (3, 32, 32), calib, normalize=norm)
    export_openvino(model, fp32, (3, 32, 32), normalize=norm)
    print(f"int8 tiny MobileNetV2: float IR check {diff:.2g}; {report.format()}")
    assert diff <= 1e-4 and report.images == 8 and 0.0 <= report.top1_agreement <= 1.0
    ops = {op.get_type_name() for op in ov.Core().read_model(str(int8)).get_ops()}
    assert "FakeQuantize" in ops
    assert int8.with_suffix(".bin").stat().st_size < fp32.with_suffix(".bin").stat().st_size / 2
    x = torch.stack(calib)
    net, ref_net = OpenVINOModel(int8, threads=1), OpenVINOModel(fp32, threads=1)
    batch, ref = net(x), ref_net(x)
    alone = torch.cat([net(x[i:i + 1]) for i in range(len(x))])
    assert batch.shape == ref.shape == (8, 10)
    assert float((alone - batch).abs().max()) <= 1e-4  # batch 1 is computed as in a batch
    assert float((batch - ref).abs().max()) == pytest.approx(report.max_abs_diff, rel=1e-3, abs=1e-5)
    assert float(batch.std(0).min()) > 0  # the output depends on the image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "f.xml", "q.bin", "q.xml"]


def test_int8_needs_calibration(tmp_path):
    pytest.importorskip("nncf", reason="int8 needs NNCF: pip install 'betterconv[openvino]'")
    model = build_randomised("mobilenet_v1", dict(width_mult=0.25, num_classes=5), (3, 32, 32))
    for calib, message in ((None, "calibration images"), ([], "calibration images"),
                           ([np.zeros((3, 16, 16), np.float32)], r"the graph takes \(N, 3, 32, 32\)")):
        with pytest.raises(BetterConvError, match=message) as info:
            export_openvino_int8(model, tmp_path / "q.xml", (3, 32, 32), calib)
        assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# the commands


@pytest.fixture
def tiny_weights(tmp_path):
    model = build_randomised("mobilenet_v1", dict(width_mult=0.25, num_classes=4), (3, 32, 32))
    path = tmp_path / "tiny.safetensors"
    save_weights(model, path, class_names=["a", "b", "c", "d"], input_size=(3, 32, 32), mean=(0.5,) * 3,
                 std=(0.25,) * 3)
    return model, path


def test_cli_export_openvino(cli, tmp_path, tiny_weights):
    model, weights = tiny_weights
    out = tmp_path / "out" / "tiny.xml"
    code, printed, err = cli("export", "mobilenet_v1", "--weights", str(weights), "--output", str(out))
    assert code == 0, err
    assert "OpenVINO IR float32" in printed and "max |OpenVINO - PyTorch|" in printed and "(N, 3, 32, 32)" in printed
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model((x - 0.5) / 0.25)
    assert float((OpenVINOModel(out, threads=1)(x) - ref).abs().max()) <= 1e-4
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.bin", "tiny.xml"]


def test_cli_export_openvino_int8(cli, tmp_path, tiny_weights):
    pytest.importorskip("nncf", reason="int8 needs NNCF: pip install 'betterconv[openvino]'")
    _, weights = tiny_weights
    for i in range(6):
        save_random_image(tmp_path / "calib" / f"{i}.png", 40, 48, seed=i)
    out = tmp_path / "q.xml"
    code, printed, err = cli("export", "mobilenet_v1", "--weights", str(weights), "--format", "openvino", "--int8",
                             "--calib", str(tmp_path / "calib"), "--output", str(out))
    assert code == 0, err
    assert printed.count("\n") == 1 and "int8 (NNCF" in printed and "on 6 calibration image(s)" in printed
    assert "top-1 agreement" in printed  # NNCF's progress and logs went to stderr, not here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "q.bin", "q.xml", "tiny.safetensors"]


@pytest.mark.parametrize("output,extra,message", [
    ("w.bin", ["--format", "openvino"], "name the openvino graph (.xml); its weights go beside it as .bin"),
    ("m.xml", ["--format", "onnx"], "onnx file ends in .onnx"),
    ("m.pt", ["--int8", "--calib", "x"], "--int8 quantises ONNX graphs only, or OpenVINO IR"),
    ("m.xml", ["--int8"], "--int8 needs calibration images"),
])
def test_cli_errors_leave_no_file(cli, tmp_path, tiny_weights, output, extra, message):
    _, weights = tiny_weights
    code, _, err = cli("export", "mobilenet_v1", "--weights", str(weights), "--output", str(tmp_path / output),
                       *extra)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


def test_onnx_graph_and_ir_agree(tmp_path):
    """The IR is the ONNX export's graph: onnxruntime on the ONNX file and OpenVINO on the IR give the same outputs
    (two engines, one graph)."""
    from betterconv.deploy import run_onnx

    model = build_randomised("yolov2_tiny", dict(num_classes=3, width_mult=0.25), (3, 64, 96))
    export_onnx(model, tmp_path / "m.onnx", (3, 64, 96))
    export_openvino(model, tmp_path / "m.xml", (3, 64, 96))
    x = torch.rand(3, 3, 64, 96)
    assert np.abs(OpenVINOModel(tmp_path / "m.xml", threads=1)(x).numpy() - run_onnx(tmp_path / "m.onnx", x)).max() \
        <= 1e-4


def test_bench_infer_openvino_variants(cli, tmp_path):
    assert set(OPENVINO_VARIANTS) <= set(VARIANTS) and all(v in LABELS for v in OPENVINO_VARIANTS)
    code, printed, err = cli("bench", "infer", "--help")
    assert all(v in printed for v in OPENVINO_VARIANTS)
    pytest.importorskip("nncf", reason="int8 needs NNCF: pip install 'betterconv[openvino]'")
    # 64x64 as in test_infer_bench: at 32x32 the last feature map is 1x1, and batch-norm statistics calibrated on
    # two images of it make the folded network ill-conditioned (onnxruntime misses the tolerance there too)
    code, printed, err = cli("bench", "infer", "mobilenet_v2", "--input-size", "64", "64", "--batch", "1", "2",
                             "--repeats", "1", "--warmup", "0", "--threads", "1", "--arg", "width_mult=0.35",
                             "--arg", "num_classes=10", "--no-progress", "--json",
                             "--variants", "betterconv_eager", *OPENVINO_VARIANTS)
    assert code == 0, err
    data = json.loads(printed)  # JSON alone on stdout: NNCF's progress went to stderr
    result = data["results"][0]
    assert [(r["variant"], r["batch"]) for r in result["rows"]] == [
        (v, b) for b in (1, 2) for v in ("betterconv_eager", *OPENVINO_VARIANTS)]
    checks = result["checks"]
    info = openvino_cpu_info()
    assert checks["openvino_optimization_capabilities"] == info["optimization_capabilities"]
    assert checks["cpu_flags"] == info["cpu_flags"] and info["bf16"] in checks["openvino_bf16"]
    assert checks["max_abs_diff_openvino_fp32_vs_eager"] <= 1e-3
    assert 0.0 <= checks["openvino_int8_top1_agreement_on_calibration"] <= 1.0


def test_bench_infer_without_openvino_says_why():
    """Where openvino cannot be imported (blocked the import system's way, `sys.modules[name] = None`), the
    OpenVINO variants are left out and the result says why."""
    code = ("import sys; sys.modules['openvino'] = None; sys.modules['nncf'] = None; "
            "from betterconv.analysis.infer_bench import measure_inference; "
            "r = measure_inference('mobilenet_v2', input_size=(32, 32), model_kwargs=dict(width_mult=0.35), "
            "batches=(1,), repeats=1, warmup=0, threads=1, "
            "variants=['betterconv_eager', 'openvino_fp32', 'openvino_int8']); "
            "print([row.variant for row in r.rows]); print(r.checks['openvino'])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    rows, reason = out.strip().splitlines()[-2:]
    assert rows == "['betterconv_eager']"
    assert reason.startswith("not measured: the 'openvino' package is not installed")
