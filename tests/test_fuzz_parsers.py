"""Fuzz tests (hypothesis) of everything betterconv parses from users and files: darknet cfg text, darknet .weights
bytes, safetensors metadata, TFLite flatbuffers and `--arg NAME=VALUE` strings. The property is the same for all:
the call either succeeds or raises one-line `BetterConvError` (never another exception, never a second line),
within hypothesis' deadline (5 s). Examples are few (100 per test, 60 for TFLite) so that the file runs well within
a minute on two cores; hypothesis' example database is off, so every run draws afresh. What each test drew shows
in `pytest --hypothesis-show-statistics` (one event per outcome)."""
from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import pytest
import tflite
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from betterconv import create_model
from betterconv.commands._common import parse_model_args
from betterconv.errors import BetterConvError
from betterconv.interop.darknet import from_darknet, load_darknet_weights, save_darknet_weights
from betterconv.interop.tflite import load_tflite, tflite_model_config
from betterconv.models import list_models, model_arguments
from betterconv.weights import read_metadata, save_weights, weights_preprocessing

pytestmark = pytest.mark.usefixtures("one_thread")

FUZZ = settings(deadline=5000, max_examples=100, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def expect_one_line(call):
    """Run `call`; a `BetterConvError` must be one line. Returns the result, or None after such an error. Each
    outcome is a hypothesis `event` (see `pytest --hypothesis-show-statistics`): success, or the error's gist."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-element tensors, meta-device copies: not what is tested here
            result = call()
    except BetterConvError as e:
        text = str(e)
        assert text and "\n" not in text.strip() and len(text) < 1000, text[:300]
        event(_gist(text))
        return None
    event("success")
    return result


def _gist(message: str) -> str:
    """An error message without its file, keyword and numbers: what kind of error it is, for `event`."""
    words = [w for w in message.replace(":", " ").split() if w.isalpha() and len(w) > 2]
    return "error: " + " ".join(words[:5])


# --- darknet cfg -----------------------------------------------------------------------------------------------

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

[route]
layers=-1

[convolutional]
filters=12
size=1
stride=1
pad=1
activation=linear

[region]
anchors=1,1,2,2
classes=1
num=2
"""

KEYS = ["filters", "size", "stride", "pad", "padding", "groups", "batch_normalize", "activation", "layers", "width",
        "height", "channels", "anchors", "classes", "num", "coords", "softmax", "thresh", "dilation"]
TOKENS = st.one_of(
    st.integers(-2**70, 2**70).map(str), st.floats().map(repr), st.sampled_from(["", "1e30", "-1", "0", "nan",
                                                                                   "1,2", ",", "leaky", "x"]),
    st.text(max_size=12))
LINES = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), TOKENS),
    st.sampled_from(["[net]", "[convolutional]", "[maxpool]", "[avgpool]", "[route]", "[reorg]", "[softmax]",
                     "[region]", "[shortcut]", "[", "]", "[]", "#", "="]),
    st.text(max_size=20))


@st.composite
def mutated_cfg(draw) -> str:
    """TINY_CFG with a few lines replaced, deleted, duplicated or inserted."""
    lines = TINY_CFG.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines)))
        kind = draw(st.sampled_from(["replace value", "replace", "delete", "duplicate", "insert"]))
        if kind == "insert" or i == len(lines):
            lines.insert(i, draw(LINES))
        elif kind == "replace value" and "=" in lines[i]:
            lines[i] = f"{lines[i].partition('=')[0]}={draw(TOKENS)}"
        elif kind == "replace":
            lines[i] = draw(LINES)
        elif kind == "delete":
            del lines[i]
        else:
            lines.insert(i, lines[i])
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=st.one_of(mutated_cfg(), st.lists(LINES, max_size=30).map("\n".join), st.text(max_size=200)))
def test_fuzz_darknet_cfg(tmp_path, text):
    """from_darknet on mutated or random cfg text, built on the meta device (shapes only: a valid cfg of a
    hundred million parameters would be slow to initialise, and building is not what is fuzzed)."""
    path = tmp_path / "fuzz.cfg"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with torch.device("meta"):
        expect_one_line(lambda: from_darknet(path))


# --- darknet .weights --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_darknet(tmp_path_factory) -> tuple[torch.nn.Module, int]:
    """A from_darknet model of TINY_CFG and the number of float32 values its .weights file holds."""
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "tiny.cfg").write_text(TINY_CFG)
    model = from_darknet(folder / "tiny.cfg")
    save_darknet_weights(model, folder / "tiny.weights", header=(0, 1, 0))  # a 16-byte header
    return model, ((folder / "tiny.weights").stat().st_size - 16) // 4


@FUZZ
@given(data=st.data())
def test_fuzz_darknet_weights(tmp_path, tiny_darknet, data):
    """Random bytes of random lengths, and headers followed by exactly the right number of random floats (NaN and
    inf included), read into a tiny model: loaded values are always finite."""
    model, values = tiny_darknet
    header = data.draw(st.sampled_from([struct.pack("<3iq", 0, 2, 0, 7), struct.pack("<4i", 0, 1, 0, 7)]))
    body = data.draw(st.one_of(
        st.binary(max_size=4 * values + 40),
        st.binary(min_size=4 * values, max_size=4 * values).map(lambda b: header + b),
        st.lists(st.floats(width=32), min_size=values, max_size=values).map(
            lambda v: header + struct.pack(f"<{len(v)}f", *v))))
    path = tmp_path / "fuzz.weights"
    path.write_bytes(body)
    if expect_one_line(lambda: load_darknet_weights(model, path)) is not None:
        assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


# --- safetensors metadata ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_safetensors(tmp_path_factory) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a valid file of a small mobilenet_v1 (num_classes=3, width_mult=0.25)."""
    path = tmp_path_factory.mktemp("st") / "small.safetensors"
    save_weights(create_model("mobilenet_v1", num_classes=3, width_mult=0.25), path, class_names=["a", "b", "c"],
                 input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-4096, 4096) | st.floats(-8, 8) | st.sampled_from([1e300, -0.0])
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["num_classes", "width_mult", "output_stride", "dropout", "separable", "x"]) | st.text(
            max_size=8), inner, max_size=3),
    max_leaves=10)
META_KEYS = st.sampled_from(["betterconv.model", "betterconv.model_kwargs", "betterconv.class_names",
                             "betterconv.input_size", "betterconv.mean", "betterconv.std", "betterconv.other",
                             "format"]) | st.text(max_size=12)
META_VALUES = JSON.map(json.dumps) | st.text(max_size=20) | st.sampled_from(
    ['"mobilenet_v1"', '"no_such_model"', '{"num_classes": 3, "width_mult": 0.25}', "NaN", "[3, 32, 32]"])


@FUZZ
@given(changes=st.dictionaries(META_KEYS, META_VALUES, min_size=1, max_size=4),
       drop=st.lists(st.sampled_from(["betterconv.model", "betterconv.model_kwargs", "format"]), max_size=2))
def test_fuzz_safetensors_metadata(tmp_path, small_safetensors, changes, drop):
    """Valid tensors under a fuzzed metadata dict: create_model, read_metadata and weights_preprocessing."""
    state, meta = small_safetensors
    meta = {k: v for k, v in {**meta, **changes}.items() if k not in drop}
    path = tmp_path / "fuzz.safetensors"
    save_file(state, str(path), metadata=meta)
    expect_one_line(lambda: create_model("mobilenet_v1", weights=path))
    expect_one_line(lambda: read_metadata(path))
    pre = expect_one_line(lambda: weights_preprocessing("mobilenet_v1", path))
    if pre is not None:  # what the commands use is well-formed
        assert len(pre["input_size"]) == 3 and all(isinstance(v, int) and v > 0 for v in pre["input_size"])
        assert all(isinstance(v, (int, float)) for v in pre["mean"] + pre["std"]) and min(pre["std"]) > 0
        assert pre["class_names"] is None or all(isinstance(v, str) for v in pre["class_names"])


# --- TFLite --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tflite_bytes() -> tuple[bytes, list[int]]:
    """The smallest Coral file (DeepLabv3, depth multiplier 0.5) and the offsets of its flatbuffer tables (the
    bytes outside the weights' data, where a flip changes the structure)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coral" / \
        "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    if not path.is_file():
        pytest.skip(f"{path} is absent: no real TFLite file to mutate")
    data = path.read_bytes()
    model = tflite.Model.GetRootAsModel(data, 0)
    inside = bytearray(len(data))
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            start = buffer._tab.Vector(buffer._tab.Offset(4))  # flatbuffers: where field 1 (data)'s bytes begin
            inside[start:start + buffer.DataLength()] = b"\x01" * buffer.DataLength()
    return data, [i for i, v in enumerate(inside) if not v]


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_fuzz_tflite(tmp_path, tflite_bytes, data):
    """A real .tflite with bytes of its tables changed, or cut short: reading it, choosing the model and loading
    the weights either work (and the weights are finite) or fail with one line naming the file."""
    original, tables = tflite_bytes
    buf = bytearray(original)
    rnd = data.draw(st.randoms(use_true_random=False))  # uniform positions: hypothesis' own favour the first bytes
    if data.draw(st.integers(0, 4)):
        for _ in range(data.draw(st.integers(1, 3))):
            buf[rnd.choice(tables)] = data.draw(st.integers(0, 255) | st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
    else:
        buf = buf[:rnd.randrange(len(buf))]
    assume(bytes(buf) != original)
    path = tmp_path / "fuzz.tflite"
    path.write_bytes(bytes(buf))

    def load():
        name, kwargs = tflite_model_config(path)
        return load_tflite(create_model(name, **kwargs), path)

    try:
        model = load()
    except BetterConvError as e:
        assert "\n" not in str(e) and path.name in str(e), str(e)[:300]
        event(_gist(str(e)))
    else:
        event("success")
        assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


# --- --arg NAME=VALUE ----------------------------------------------------------------------------------------------

MODELS = list_models()
NAMES = sorted({k for m in MODELS for k in model_arguments(m)})
VALUES = st.one_of(
    st.integers().map(str), st.floats().map(repr), st.booleans().map(str),
    st.sampled_from(["None", "()", "[]", "(6, 12)", "((1.0, 2.0), (3, 4))", "tf_same", "same", "'valid'", "sigmoid",
                     "softmax", "10**3", "1e999", "-1", "0", "0.0", "{}", "{1: 2}", "b'x'", "1j", "...", "(((",
                     "[None]", "(1, 'x')", "((1, 2, 3),)"]),
    st.lists(st.integers(-3, 40), max_size=4).map(lambda v: repr(tuple(v))),
    st.text(max_size=30))


@st.composite
def model_and_pairs(draw) -> tuple[str, list[str]]:
    """A registered model and up to three NAME=VALUE strings, most NAMEs its builder's own keywords."""
    name = draw(st.sampled_from(MODELS))
    pairs: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.integers(0, 9))  # 0-7: the builder's own keyword, 8: another builder's, 9: any text
        if kind == 9 and draw(st.booleans()):
            pairs.append(draw(st.text(max_size=30)))
            continue
        key = draw(st.sampled_from(sorted(model_arguments(name))) if kind < 8 else
                   st.sampled_from(NAMES) if kind == 8 else st.text(max_size=8))
        if all(p.partition("=")[0] != key for p in pairs):  # a NAME twice: tests/test_trust_parsers.py
            pairs.append(f"{key}={draw(VALUES)}")
    return name, pairs


@FUZZ
@given(case=model_and_pairs())
def test_fuzz_model_arguments(case):
    """parse_model_args and create_model on fuzzed NAME=VALUE strings, built on the meta device (structure only:
    `scale=64` is a valid request for a very large model, and its size is not what is fuzzed)."""
    name, pairs = case

    def build():
        kwargs = parse_model_args(pairs)
        with torch.device("meta"):
            return create_model(name, **kwargs)

    model = expect_one_line(build)
    if model is not None:
        assert model.model_name == name
