"""The api layer: models created with weights, and weights loaded and saved: betterconv safetensors (with
metadata), torchvision state dicts, darknet `.weights`, TFLite flatbuffers.

`create_model(name, weights=...)` builds the registered model in the configuration the file implies and loads it;
`weights_preprocessing` says how the file's model expects its input (mean/std, input size, class names).

Nothing is unpickled unless the caller says the file is trusted: `.pth` files are read with
`torch.load(..., weights_only=True)`, which refuses anything that needs code execution.
"""
from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .files import write_atomic
from .data.class_names import default_class_names
from .errors import BetterConvError, first_line
from .interop.darknet import load_darknet_weights
from .interop.tflite import load_tflite, tflite_input, tflite_model_config
from .interop.torchvision import map_torchvision_state_dict, torchvision_config, torchvision_family
from .interop.torchvision import vgg_from_torchvision
from .models import build, check_arguments, list_models, model_arguments, model_info, shorten, show_value
from .models.fcn import FCN
from .models.fcn import convolutionalize as convolutionalize_vgg
from .models.vgg import VGG
from .models.info import DARKNET_MEAN, DARKNET_STD, TF_MEAN, TF_STD

SAFETENSORS_FORMAT = "betterconv"


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") < (1 << 32) and head[8:9] == b"{"


def _metadata_problem(key: str, value: Any) -> str | None:
    """What is wrong with the decoded value of betterconv metadata `key` (None when it is usable)."""
    def numbers(v: Any) -> bool:
        return isinstance(v, list) and 0 < len(v) <= 4 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)

    if key == "betterconv.model" and not (isinstance(value, str) and value):
        return "must be a model name (a string)"
    elif key == "betterconv.model_kwargs" and not isinstance(value, dict):
        return "must be a JSON object of builder keywords"
    elif key == "betterconv.class_names" and not (
            value is None or isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return "must be a list of strings"
    elif key == "betterconv.input_size" and not (
            isinstance(value, list) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in value)):
        return "must be [C, H, W]: three positive integers"
    elif key in ("betterconv.mean", "betterconv.std") and not (
            numbers(value) and (key == "betterconv.mean" or all(v > 0 for v in value))):
        return "must be a list of 1 to 4 finite numbers" + (" above 0" if key == "betterconv.std" else "")
    return None


def _decode_metadata(meta: Mapping[str, str], path: Path) -> dict[str, Any]:
    """The betterconv.* entries of a safetensors header, JSON-decoded and checked: a tampered or corrupt entry is a
    one-line `BetterConvError` naming the file and the key. The recorded builder keywords are checked against the
    recorded model's builder (`check_arguments`)."""
    decoded: dict[str, Any] = {}
    for key, text in meta.items():
        if not key.startswith("betterconv."):
            continue
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise BetterConvError(f"{path}: metadata {show_value(key)} is not JSON: {show_value(text)}") from None
        problem = _metadata_problem(key, value)
        if problem:
            raise BetterConvError(f"{path}: metadata {key}={show_value(value)} {problem}")
        decoded[key] = value
    if decoded.get("betterconv.model") in list_models() and "betterconv.model_kwargs" in decoded:
        try:
            check_arguments(decoded["betterconv.model"], decoded["betterconv.model_kwargs"])
        except BetterConvError as e:
            raise BetterConvError(f"{path}: metadata betterconv.model_kwargs: {e}") from None
    return decoded


def read_checkpoint(path: str | Path, trusted: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and betterconv metadata ({} for other files) of a safetensors or PyTorch file.

    The metadata is decoded and checked (`betterconv.model` a name, `model_kwargs` keywords its builder takes when
    it is a registered model, `class_names` strings, `input_size` [C, H, W], `mean`/`std` finite numbers); a corrupt or
    tampered file raises one `BetterConvError` line naming it. Tensor values are checked when they are loaded
    into a model (`load_weights`)."""
    path = Path(path)
    if not path.is_file():
        raise BetterConvError(f"{path}: no such file")
    if _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
            raise BetterConvError(f"{path}: unreadable safetensors file ({first_line(e, 160)})") from None
        return state, _decode_metadata(meta, path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch.save's zip archive, or a raw pickle
        raise BetterConvError(f"{path}: not a weights file (neither safetensors nor a PyTorch checkpoint)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as e:
        text = str(e)
        reason = (text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines() or ["unsafe pickle"])[0]
        raise BetterConvError(f"{path}: refused to unpickle: it holds more than tensors ({reason[:160]}); "
                              f"load it only if you trust it (trusted=True / --trusted)") from None
    except Exception as e:  # noqa: BLE001 - a corrupt archive fails anywhere in torch.load (BadZipFile, EOFError,
        # RuntimeError, KeyError, struct.error, ...): every one means the same to the user
        raise BetterConvError(f"{path}: not a weights file ({first_line(e, 120)})") from None
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict", "model_state"):  # training checkpoints wrap the state dict
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BetterConvError(f"{path}: not a state dict (a mapping of names to tensors)")
    return dict(obj), {}


def _check_values(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Refuse tensors that would load silently wrong: a non-float tensor (int8, bool, int) for a float parameter,
    a float or bool one for an integer buffer, a sparse tensor, NaN or infinite values. The error names the file and
    the tensor."""
    for key, theirs in state.items():
        ours = expected.get(key)
        if ours is None:
            continue
        if theirs.layout != torch.strided:
            raise BetterConvError(f"{path}: tensor {key!r} is not a dense tensor ({theirs.layout})")
        if theirs.is_meta:
            raise BetterConvError(f"{path}: tensor {key!r} holds no data (a meta tensor)")
        if ours.is_floating_point() and not theirs.is_floating_point() or not ours.is_floating_point() and (
                theirs.is_floating_point() or theirs.is_complex() or theirs.dtype == torch.bool):
            raise BetterConvError(f"{path}: tensor {key!r} is {str(theirs.dtype).removeprefix('torch.')}, the model "
                                  f"needs {str(ours.dtype).removeprefix('torch.')}")
        if theirs.is_floating_point():
            # in the model's dtype: a float64 1e300 is finite, but infinite once loaded as float32
            loaded = theirs if theirs.dtype == ours.dtype or not ours.is_floating_point() else theirs.to(ours.dtype)
            try:
                finite = torch.isfinite(loaded)
            except (RuntimeError, TypeError):  # a float type without an isfinite kernel (float8)
                finite = torch.isfinite(loaded.float())
            if not bool(finite.all()):
                bad = int(finite.numel() - finite.sum())
                cast = f" once cast to {str(ours.dtype).removeprefix('torch.')}" if loaded is not theirs else ""
                raise BetterConvError(f"{path}: tensor {key!r} holds {bad} NaN or infinite value(s){cast} (of "
                                      f"{finite.numel()})")


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path | str, strict: bool = True) -> None:
    """`model.load_state_dict` whose failure ("Error(s) in loading state_dict for FCN: ...") is one line naming
    the file and the first problem."""
    try:
        model.load_state_dict(state, strict=strict)
    except (RuntimeError, ValueError, TypeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else first_line(e)
        raise BetterConvError(f"{path}: weights do not load into {type(model).__name__}: {detail[:200]}") from None


def _check_and_load(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load `state` into `model` when it fits exactly: the same names, shapes, kinds of dtype, finite values;
    otherwise one `BetterConvError` line naming the file and the disagreements."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label} {len(items)}: {', '.join(items[:3])}{more}")
        raise BetterConvError(f"{path}: weights do not fit the model; {'; '.join(parts)}")
    _check_values(state, expected, path)
    _load_state(model, state, path)


def _apply_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    if set(state) != set(model.state_dict()):
        if torchvision_family(state):
            state = map_torchvision_state_dict(model, state, str(path))
    _check_and_load(model, state, path)


def load_weights(model: nn.Module, path: str | Path, *, trusted: bool = False) -> nn.Module:
    """Load betterconv safetensors, a torchvision state dict, darknet `.weights` or a `.tflite` file into `model`."""
    path = Path(path)
    if not path.is_file():
        raise BetterConvError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".weights":
        load_darknet_weights(model, path)
    elif suffix == ".tflite":
        load_tflite(model, path)
    else:
        _apply_state(model, read_checkpoint(path, trusted)[0], path)
    return model


def create_model(name: str, *, weights: str | Path | None = None, trusted: bool = False, **kwargs: Any) -> nn.Module:
    """Build registered model `name`; unknown keywords raise `BetterConvError` naming the keywords it does take.

    `weights` loads a file (betterconv safetensors, torchvision state dict, darknet `.weights`, `.tflite`) into the
    model built in the configuration the file implies (its recorded builder keywords, or the torchvision / TFLite
    configuration), with `kwargs` taking precedence. `trusted=True` allows unpickling a `.pth` that holds more
    than tensors."""
    if weights is None:
        return build(name, kwargs)
    path = Path(weights)
    if not path.is_file():
        raise BetterConvError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".weights", ".tflite"):
        config = {}
        if suffix == ".tflite":
            tflite_name, config = tflite_model_config(path)
            if tflite_name != name:
                raise BetterConvError(f"{path}: holds a {tflite_name}, not a {name}")
        model = _build_for(path, name, config, kwargs)
        return load_weights(model, path)
    state, meta = read_checkpoint(path, trusted)
    config: dict[str, Any] = {}
    if meta:
        recorded = meta.get("betterconv.model")
        if recorded is not None and (recorded != name or recorded not in list_models()):
            unknown = "" if recorded in list_models() else " (not a registered model)"
            other = f", not {name}" if recorded != name else ""
            raise BetterConvError(f"{path}: holds weights for {shorten(recorded)}{unknown}{other}")
        config = dict(meta.get("betterconv.model_kwargs") or {})
    elif torchvision_family(state):
        config = torchvision_config(name)
    model = _build_for(path, name, config, kwargs)
    _apply_state(model, state, path)
    return model


def _build_for(path: Path, name: str, config: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    """`build` with the configuration a weights file implies (`config`) under the caller's `kwargs`; a failure that
    the file's configuration takes part in names the file."""
    check_arguments(name, kwargs)  # the caller's own keywords: their errors need no file name
    try:
        return build(name, {**config, **kwargs})
    except BetterConvError as e:
        if not config:
            raise
        raise BetterConvError(f"{path}: {e}") from None


def weights_preprocessing(name: str, weights: str | Path | None = None) -> dict[str, Any]:
    """How model `name` with these weights expects its input: `mean`, `std` (in [0, 1] units), `input_size`
    (C, H, W) and `class_names` (None when not recorded).

    What the file records wins (betterconv safetensors); otherwise its format decides (TFLite: x / 127.5 - 1 at the
    graph's own input size; darknet: x / 255), and for other files the model's record (its paper's input size and
    the normalisation of its reference weights)."""
    info = model_info(name)
    mean, std, size = info.mean, info.std, (3, *info.input_size)
    meta: dict[str, Any] = {}
    if weights is not None:
        path = Path(weights)
        suffix = path.suffix.lower()
        if suffix == ".tflite":
            mean, std, size = TF_MEAN, TF_STD, (3, *tflite_input(path).size)
        elif suffix == ".weights":
            mean, std = DARKNET_MEAN, DARKNET_STD
        else:
            meta = read_metadata(path)
    return {"mean": tuple(meta.get("betterconv.mean") or mean), "std": tuple(meta.get("betterconv.std") or std),
            "input_size": tuple(meta.get("betterconv.input_size") or size),
            "class_names": meta.get("betterconv.class_names")}


def num_outputs(model: nn.Module) -> int:
    """The output count of the model's last linear or convolutional layer (its classes, for a classifier)."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return int(getattr(last, "out_features", None) or last.out_channels)


def output_class_names(model: nn.Module) -> tuple[str, ...] | None:
    """The standard class names (ImageNet, COCO, VOC, ...) for the number of outputs of `model`'s last layer."""
    return default_class_names(num_outputs(model))


# --- dense models started from ImageNet classifiers, staged trainings ---------------------------------------------
# keywords a classifier's weights impose on the backbone (e.g. TensorFlow padding of TFLite weights)
BACKBONE_KEYWORDS = ("padding", "round_nearest")


def backbone_classifier(name: str, weights: str, trusted: bool = False) -> nn.Module:
    """The ImageNet classifier that starts dense model `name`'s backbone, with `weights` loaded."""
    classifier = model_info(name).backbone_classifier
    if classifier is None:
        raise BetterConvError(f"{name} has no ImageNet backbone to load")
    return create_model(classifier, weights=weights, trusted=trusted)


def backbone_keywords(name: str, classifier: nn.Module) -> dict[str, Any]:
    """The builder keywords of `classifier` that model `name` must share to take its weights (`BACKBONE_KEYWORDS`)."""
    accepted = model_arguments(name)
    return {k: classifier.model_kwargs[k] for k in BACKBONE_KEYWORDS if k in classifier.model_kwargs and k in accepted}


def backbone_from_classifier(model: nn.Module, classifier: nn.Module, source: str) -> int:
    """Copy an ImageNet classifier's weights into a dense model's backbone (and FCN's fc6/fc7, which are
    VGG's fc6/fc7 as convolutions, FCN §3.1). Returns the number of tensors copied."""
    state = {f"backbone.{k}": v for k, v in classifier.state_dict().items()}
    if isinstance(model, FCN) and isinstance(classifier, VGG):
        conv = convolutionalize(classifier).state_dict()
        for ours, theirs in (("fc6.conv", "classifier.0.conv"), ("fc7.conv", "classifier.2.conv")):
            for kind in ("weight", "bias"):
                state[f"{ours}.{kind}"] = conv[f"{theirs}.{kind}"]
    target = model.state_dict()
    wanted = [k for k in target if k.startswith("backbone.")]
    missing = [k for k in wanted if k not in state or state[k].shape != target[k].shape]
    if missing:
        raise BetterConvError(f"{source}: these weights do not fit the backbone ({len(missing)} tensors, "
                              f"first {missing[0]})")
    copied = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    _check_values(copied, target, source)
    _load_state(model, copied, source, strict=False)
    return len(copied)


def init_from_checkpoint(model: nn.Module, path: str, trusted: bool = False) -> tuple[int, int]:
    """Staged training (FCN §4.2: 32s -> 16s -> 8s): copy every tensor whose name and shape match from a checkpoint
    or weights file; the rest keep their initialisation. Returns (copied, total)."""
    state, _ = read_checkpoint(path, trusted)
    target = model.state_dict()
    copied = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    if not copied:
        raise BetterConvError(f"{path}: no tensor in it fits {type(model).__name__}")
    _check_values(copied, target, path)
    _load_state(model, copied, path, strict=False)
    return len(copied), len(target)



def convolutionalize(classifier: nn.Module) -> nn.Module:
    """FCN §3.1 on betterconv's `vgg16` or torchvision's `VGG` (16 layers): fc6/fc7/fc8 as convolutions with the
    same weights (`betterconv.models.fcn.convolutionalize`)."""
    if isinstance(classifier, torchvision.models.VGG):
        classifier = vgg_from_torchvision(classifier)
    return convolutionalize_vgg(classifier)


def save_weights(model: nn.Module, path: str | Path, *, model_name: str | None = None,
                 model_kwargs: Mapping[str, Any] | None = None, class_names: Sequence[str] | None = None,
                 input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
    """Write a safetensors file atomically, with what is needed to rebuild and use the model as metadata.

    The model name and builder keywords default to those `create_model` recorded on the model."""
    model_name = model_name or getattr(model, "model_name", None)
    if model_name is None:
        raise BetterConvError("save_weights needs model_name for a model not built by create_model")
    if model_kwargs is None:
        model_kwargs = getattr(model, "model_kwargs", {})

    meta = {"format": SAFETENSORS_FORMAT, "betterconv.model": model_name,
            "betterconv.model_kwargs": dict(model_kwargs or {}), "betterconv.class_names": class_names,
            "betterconv.input_size": input_size, "betterconv.mean": mean, "betterconv.std": std}
    encoded = {k: (v if k == "format" else json.dumps(v if not isinstance(v, tuple) else list(v)))
               for k, v in meta.items() if v is not None}
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    write_atomic(Path(path), safetensors_bytes(tensors, metadata=encoded))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The betterconv metadata of a safetensors file ({} for any other file)."""
    path = Path(path)
    if path.suffix.lower() in (".weights", ".tflite") or not path.is_file() or not _is_safetensors(path):
        return {}
    return read_checkpoint(path)[1]
