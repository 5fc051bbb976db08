"""What betterconv reads from users and files is checked before it is used: `--arg` values against the builder's
annotations, safetensors metadata and tensor values, darknet cfg values and .weights sizes, TFLite flatbuffers.
Every bad input gives one `BetterConvError` line naming the file (or the keyword) and the problem, and on the
command line `betterconv: error: ...` with exit status 2, never a traceback. Each bad input is made in its test,
as small as it can be."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from betterconv import create_model, load_weights
from betterconv.commands._common import parse_model_args
from betterconv.errors import BetterConvError
from betterconv.interop.darknet import MAX_OPTION, from_darknet, load_darknet_weights, save_darknet_weights
from betterconv.models import list_models, model_arguments, model_info
from betterconv.models._registry import check_arguments
from betterconv.weights import init_from_checkpoint, read_metadata, save_weights, weights_preprocessing

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"num_classes": 3, "width_mult": 0.25}  # mobilenet_v1 with these: about 0.2 M parameters


def one_line(error: BaseException | str, *needles: str, limit: int = 400) -> str:
    """The message, checked: one line, at most `limit` characters, no traceback, containing every needle."""
    text = str(error)
    assert "\n" not in text.strip() and "Traceback" not in text, text
    assert len(text) <= limit, f"{len(text)} characters: {text[:200]}..."
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return text


def cli_error(cli, *argv: object, needles: tuple[str, ...] = (), limit: int = 400) -> str:
    """Run the command line; it must fail with exit status 2 and one `betterconv: error:` line on stderr."""
    code, _, err = cli(*argv)
    assert code == 2, (code, err)
    assert err.startswith("betterconv: error: "), err
    return one_line(err, *needles, limit=limit)


# --- --arg values ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["num_classes=abc", "num_classes=1.5", "num_classes=10**3", "width_mult=abc"])
def test_cli_arg_of_the_wrong_type_is_one_line(cli, value):
    """These gave `TypeError: empty(): argument 'size' ...` tracebacks from deep inside torch."""
    key, _, shown = value.partition("=")
    cli_error(cli, "profile", "mobilenet_v2", "--arg", value, needles=(f"mobilenet_v2: {key}=", shown))


@pytest.mark.parametrize("name, kwargs, needle", [
    ("mobilenet_v2", {"num_classes": True}, "num_classes=True must be int"),  # a bool is no int
    ("mobilenet_v2", {"num_classes": 3.0}, "num_classes=3.0 must be int"),  # nor is an integral float
    ("mobilenet_v2", {"width_mult": False}, "width_mult=False must be float"),
    ("mobilenet_v2", {"width_mult": math.inf}, "not a finite number"),
    ("mobilenet_v2", {"padding": 5}, "padding=5 must be str | None"),
    ("mobilenet_v1", {"separable": "yes"}, "separable='yes' must be bool"),
    ("deeplabv3_mobilenet_v2", {"atrous_rates": 6}, "atrous_rates=6 must be Sequence[int] | None"),
    ("deeplabv3_mobilenet_v2", {"atrous_rates": (6, "x")}, "atrous_rates=(6, 'x')"),
    ("deeplabv3_mobilenet_v2", {"atrous_rates": "6,12"}, "atrous_rates='6,12'"),  # a str is no Sequence[int] here
    ("yolov2_tiny", {"anchors": ((1.0, 2.0, 3.0),)}, "must be Sequence[tuple[float, float]] | None"),
    ("yolov2_tiny", {"anchors": (1.0, 2.0)}, "anchors=(1.0, 2.0)"),
    ("yolov2_tiny", {"location": None}, "location=None must be str"),
    ("mobilenet_v2", {"width_mul": 0.5}, "unknown argument(s) width_mul"),
])
def test_api_checks_values_against_the_builder_annotations(name, kwargs, needle):
    """`create_model` (the Python API) checks like the command line: `build` checks every keyword."""
    with pytest.raises(BetterConvError) as e:
        create_model(name, **kwargs)
    one_line(e.value, name, needle)
    with pytest.raises(BetterConvError, match="must be|unknown"):
        check_arguments(name, kwargs)


@pytest.mark.parametrize("name, kwargs", [
    ("mobilenet_v1", {"width_mult": 1, "num_classes": np.int64(3)}),  # an int is a float; numpy ints are ints
    ("mobilenet_v1", {"num_classes": None, "width_mult": 0.25}),  # int | None
    ("deeplabv3_mobilenet_v2", {"atrous_rates": [2, 4, 6], "width_mult": 0.25, "padding": None}),
    ("yolov2_tiny", {"anchors": [[1, 2.5], [3.0, 4]], "width_mult": 0.25}),  # as JSON metadata gives them back
])
def test_api_accepts_what_the_annotations_allow(name, kwargs):
    model = create_model(name, **kwargs)
    assert model.model_kwargs == kwargs


def test_every_default_and_torchvision_config_passes_the_check():
    """The check is no stricter than the builders: their own defaults and the configurations the registry records
    (torchvision peers) pass it."""
    for name in list_models():
        check_arguments(name, model_arguments(name))
        check_arguments(name, dict(model_info(name).torchvision_config or {}))


@pytest.mark.parametrize("kwargs, needle", [
    ({"num_classes": -1}, "num_classes=-1"),
    ({"round_nearest": 0}, "ZeroDivisionError"),
    ({"padding": "foo"}, "padding='foo'"),
])
def test_values_the_builder_refuses_are_one_line(cli, kwargs, needle):
    """Values of the right type that the builder cannot use raised RuntimeError/ZeroDivisionError/ValueError."""
    with pytest.raises(BetterConvError) as e:
        create_model("mobilenet_v2", **kwargs)
    one_line(e.value, "mobilenet_v2 cannot be built with", needle)
    (key, value), = kwargs.items()
    cli_error(cli, "profile", "mobilenet_v2", "--arg", f"{key}={value}", needles=(needle,))


def test_long_values_are_cut_in_messages(cli):
    """A 120 KB value is never echoed whole: messages show its first 60 characters."""
    long = "9" * 120_000
    err = cli_error(cli, "profile", "mobilenet_v2", "--arg", f"num_classes={long}", limit=300)
    assert "..." in err and "num_classes" in err
    with pytest.raises(BetterConvError) as e:
        create_model("mobilenet_v2", num_classes=long)
    one_line(e.value, "num_classes='999", "...", limit=300)
    with pytest.raises(BetterConvError) as e:
        create_model("mobilenet_v2", padding="p" * 120_000)  # a str is allowed: the builder refuses it
    one_line(e.value, "padding='ppp", "...", limit=400)
    with pytest.raises(BetterConvError) as e:
        parse_model_args(["x" * 120_000])
    one_line(e.value, "NAME=VALUE", "...", limit=200)


def test_parse_model_args_reads_literals_and_keeps_bare_words():
    assert parse_model_args(["width_mult=0.5", "atrous_rates=(6,12)", "padding=tf_same", "num_classes=None",
                             "aux_head=True", "scale=10**3", "location='softmax'", "x=(("]) == {
        "width_mult": 0.5, "atrous_rates": (6, 12), "padding": "tf_same", "num_classes": None, "aux_head": True,
        "scale": "10**3", "location": "softmax", "x": "(("}
    assert parse_model_args(["deep=" + "(" * 5000]) == {"deep": "(" * 5000}  # the parser's nesting limit: a word
    for bad, needle in (("novalue", "NAME=VALUE"), ("1x=2", "NAME=VALUE"), ("=3", "NAME=VALUE")):
        with pytest.raises(BetterConvError, match=needle):
            parse_model_args([bad])
    with pytest.raises(BetterConvError, match="given twice"):
        parse_model_args(["num_classes=3", "num_classes=4"])


# --- safetensors metadata and tensor values ---------------------------------------------------------------------

@pytest.fixture
def small_weights(tmp_path) -> tuple[Path, dict[str, str], dict[str, torch.Tensor]]:
    """A valid betterconv safetensors file of a small mobilenet_v1, its metadata and its tensors."""
    path = tmp_path / "small.safetensors"
    save_weights(create_model("mobilenet_v1", **SMALL), path, class_names=["a", "b", "c"])
    with safe_open(str(path), framework="pt") as f:
        return path, dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def _rewrite(path: Path, state: dict[str, torch.Tensor], meta: dict[str, str], **changes: str) -> Path:
    save_file(state, str(path), metadata={**meta, **changes})
    return path


@pytest.mark.parametrize("key, text, needle", [
    ("betterconv.model_kwargs", "5", "betterconv.model_kwargs=5 must be a JSON object"),
    ("betterconv.class_names", "7", "betterconv.class_names=7 must be a list of strings"),
    ("betterconv.class_names", "[oops", "'betterconv.class_names' is not JSON"),
    ("betterconv.mean", "{}", "betterconv.mean={} must be a list"),
    ("betterconv.std", "[0.5, NaN, 0.5]", "must be a list of 1 to 4 finite numbers above 0"),
    ("betterconv.input_size", "[3, -1, 224]", "must be [C, H, W]"),
    ("betterconv.model", "7", "must be a model name"),
    ("betterconv.model_kwargs", '{"num_classes": "x"}', "num_classes='x' must be int"),
    ("betterconv.model_kwargs", '{"width_mul": 0.5}', "unknown argument(s) width_mul"),
])
def test_tampered_metadata_is_one_line_naming_the_file(small_weights, key, text, needle):
    path, meta, state = small_weights
    _rewrite(path, state, meta, **{key: text})
    for read in (lambda: create_model("mobilenet_v1", weights=path), lambda: read_metadata(path),
                 lambda: weights_preprocessing("mobilenet_v1", path)):
        with pytest.raises(BetterConvError) as e:
            read()
        one_line(e.value, str(path), needle)


def test_metadata_naming_an_unknown_model_names_the_file(small_weights, cli, tmp_path):
    path, meta, state = small_weights
    _rewrite(path, state, meta, **{"betterconv.model": '"no_such_model"'})
    with pytest.raises(BetterConvError) as e:
        create_model("mobilenet_v1", weights=path)
    one_line(e.value, str(path), "no_such_model (not a registered model), not mobilenet_v1")
    with pytest.raises(BetterConvError) as e:
        create_model("no_such_model", weights=path)  # was "unknown model ...", without the file
    one_line(e.value, str(path), "no_such_model (not a registered model)")
    cli_error(cli, "convert", path, tmp_path / "out.safetensors", "--model", "no_such_model", needles=(str(path),))


def test_metadata_kwargs_the_builder_refuses_name_the_file(small_weights):
    path, meta, state = small_weights
    _rewrite(path, state, meta, **{"betterconv.model_kwargs": json.dumps({"num_classes": -3})})
    with pytest.raises(BetterConvError) as e:
        create_model("mobilenet_v1", weights=path)
    one_line(e.value, str(path), "num_classes=-3")


TAMPERED = {
    "nan": lambda t: torch.full_like(t, math.nan),
    "inf": lambda t: torch.full_like(t, -math.inf),
    "float64_overflow": lambda t: torch.full(t.shape, 1e300, dtype=torch.float64),  # infinite once float32
    "int8": lambda t: t.to(torch.int8),
    "bool": lambda t: t.bool(),
    "int64": lambda t: t.long(),
}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("kind", sorted(TAMPERED))
def test_bad_tensor_values_are_refused_with_the_tensor_name(small_weights, tmp_path, suffix, kind):
    """NaN/inf weights and integer or bool tensors for float parameters loaded silently (converted or poisoned)."""
    path, meta, state = small_weights
    key = "stem.conv.weight" if "stem.conv.weight" in state else next(iter(state))
    state = {**state, key: TAMPERED[kind](state[key])}
    bad = tmp_path / f"bad{suffix}"
    if suffix == ".pth":
        torch.save(state, bad)
    else:
        save_file(state, str(bad), metadata=meta)
    needle = "NaN or infinite" if kind in ("nan", "inf", "float64_overflow") else f"is {kind}, the model needs float32"
    model = create_model("mobilenet_v1", **SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for load in (lambda: create_model("mobilenet_v1", weights=bad, **({} if suffix == ".safetensors" else SMALL)),
                 lambda: load_weights(model, bad), lambda: init_from_checkpoint(model, bad)):
        with pytest.raises(BetterConvError) as e:
            load()
        one_line(e.value, str(bad), repr(key), needle)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


def test_float_buffers_for_integer_ones_are_refused(small_weights, tmp_path):
    path, meta, state = small_weights
    key = next(k for k in state if k.endswith("num_batches_tracked"))
    bad = _rewrite(tmp_path / "bad.safetensors", {**state, key: state[key].float()}, meta)
    with pytest.raises(BetterConvError) as e:
        create_model("mobilenet_v1", weights=bad)
    one_line(e.value, str(bad), key, "is float32, the model needs int64")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch deprecates quantized tensors and TypedStorage
@pytest.mark.parametrize("kind, needle", [
    ("quantized", "'score_fr.weight' is qint8, the model needs float32"),
    ("meta", "'score_fr.bias' holds no data (a meta tensor)"),
])
def test_state_dict_that_load_state_dict_refuses_is_one_line(tmp_path, cli, kind, needle):
    """Names and shapes fit, yet `load_state_dict` failed with "Error(s) in loading state_dict for FCN:" and a
    second line: now the tensor is refused first, naming the file."""
    model = create_model("fcn32s_mobilenet_v2")  # the defaults: what `convert --model` builds
    state = model.state_dict()
    if kind == "quantized":
        state["score_fr.weight"] = torch.quantize_per_tensor(state["score_fr.weight"], 0.1, 0, torch.qint8)
    else:
        state["score_fr.bias"] = torch.zeros(21, device="meta")
    other = tmp_path / "fcn.pth"
    torch.save({"model": state, "epoch": 3}, other)  # a training checkpoint wraps the state dict
    for load in (lambda: load_weights(model, other), lambda: init_from_checkpoint(model, other),
                 lambda: create_model("fcn32s_mobilenet_v2", weights=other)):
        with pytest.raises(BetterConvError) as e:
            load()
        text = one_line(e.value, str(other), needle)
        assert "Error(s) in loading state_dict" not in text
    cli_error(cli, "convert", other, tmp_path / "out.safetensors", "--model", "fcn32s_mobilenet_v2",
              needles=(str(other), needle))


# --- darknet -----------------------------------------------------------------------------------------------------

TINY_CFG = """[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=2
size=1
stride=1
pad=1
activation=linear
"""


def _cfg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiny.cfg"
    path.write_text(text)
    return path


@pytest.mark.parametrize("old, new, line, needle", [
    ("filters=4", f"filters={MAX_OPTION + 1}", 8, f"is larger than {MAX_OPTION}"),
    ("filters=4", "filters=" + "9" * 5000, 8, "filters=999"),  # beyond Python's int-from-string limit: cut
    ("width=16", "width=99999999999999999999", 2, "is larger than"),
    ("stride=2", "stride=" + "1" * 30, 16, "is larger than"),
    ("activation=linear", "activation=" + "x" * 1000, 23, "activation=xxx"),  # cut, not echoed whole
])
def test_darknet_cfg_absurd_values_are_one_line_naming_file_and_line(tmp_path, old, new, line, needle):
    """Malformed values (filters=1e30, -4, four, a missing [net]) were one line already (tests/test_darknet.py);
    absurdly large ones were built, or echoed whole."""
    assert old in TINY_CFG
    path = _cfg(tmp_path, TINY_CFG.replace(old, new, 1))
    with pytest.raises(BetterConvError) as e:
        from_darknet(path)
    one_line(e.value, f"darknet cfg {path}, line {line}:", needle, limit=300)


def test_darknet_cfg_too_large_to_build_is_refused_before_allocating(tmp_path, cli):
    """Two 65536-filter 3x3 convolutions would be 155 GB of float32: refused, not a failed allocation."""
    text = TINY_CFG.replace("filters=4", f"filters={MAX_OPTION}").replace("filters=2", f"filters={MAX_OPTION}")
    path = _cfg(tmp_path, text.replace("size=1", "size=3"))
    with pytest.raises(BetterConvError) as e:
        from_darknet(path)
    one_line(e.value, f"darknet cfg {path}, line 19:", "parameters, more than")
    weights = tmp_path / "w.weights"
    weights.write_bytes(bytes(16))
    cli_error(cli, "convert", weights, tmp_path / "out.safetensors", "--cfg", path, needles=(str(path),))


@pytest.mark.parametrize("change, needle", [
    (lambda data: data[:16] + np.full(len(data[16:]) // 4, np.nan, "<f4").tobytes(), "'layers.0.bn.bias'"),
    (lambda data: data[:-4] + np.array([np.inf], "<f4").tobytes(), "'layers.2.conv.weight'"),
])
def test_darknet_weights_with_nan_or_inf_are_refused_with_the_tensor_name(tmp_path, change, needle):
    """NaN/inf values loaded silently; truncated and oversized files were refused already (tests/test_darknet.py)."""
    model = from_darknet(_cfg(tmp_path, TINY_CFG))
    good = tmp_path / "good.weights"
    save_darknet_weights(model, good, header=(0, 1, 0))  # a 16-byte header
    bad = tmp_path / "bad.weights"
    bad.write_bytes(change(good.read_bytes()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(BetterConvError) as e:
        load_darknet_weights(model, bad)
    one_line(e.value, str(bad), needle, "NaN or infinite")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


# --- TFLite --------------------------------------------------------------------------------------------------------

# single bytes of the Coral DeepLabv3 (depth multiplier 0.5) file, changed: each crashed the old reader inside numpy
# or with an IndexError; offsets lie in the flatbuffer's tables, not in the weights' data
FLIPS = {
    "zero points": (644217, 151),  # "operands could not be broadcast together"
    "tensor index": (2566, 253),  # IndexError: list index out of range
    "shape": (706288, 172),  # ValueError: too many values to unpack
    "scales": (427532, 202),  # ValueError: cannot reshape array
    "inputs": (566380, 0),  # IndexError: tuple index out of range
}


@pytest.fixture
def deeplab_tflite(shared_data) -> bytes:
    path = shared_data / "coral" / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path.read_bytes()


@pytest.mark.parametrize("flip", sorted(FLIPS))
def test_corrupt_tflite_is_one_line_naming_the_file(deeplab_tflite, tmp_path, cli, flip):
    offset, value = FLIPS[flip]
    data = bytearray(deeplab_tflite)
    assert data[offset] != value
    data[offset] = value
    path = tmp_path / "flipped.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(BetterConvError) as e:
        create_model("deeplabv3_mobilenet_v2", weights=path)
    one_line(e.value, path.name)
    cli_error(cli, "convert", path, tmp_path / "out.safetensors", "--model", "deeplabv3_mobilenet_v2",
              needles=(path.name,))

