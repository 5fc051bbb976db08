"""The api layer: models created with weights, and weights loaded and saved: betterconv safetensors (with
metadata), torchvision state dicts, darknet `.weights`, TFLite flatbuffers.

`create_model(name, weights=...)` builds the registered model in the configuration the file implies and loads it;
`weights_preprocessing` says how the file's model expects its input (mean/std, input size, class names).

Nothing is unpickled unless the caller says the file is trusted: `.pth` files are read with
`torch.load(..., weights_only=True)`, which refuses anything that needs code execution.
"""
from __future__ import annotations

import json
import pickle
import zipfile
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
from .models import build, model_arguments, model_info
from .models.fcn import FCN
from .models.fcn import convolutionalize as convolutionalize_vgg
from .models.vgg import VGG
from .models.info import DARKNET_MEAN, DARKNET_STD, TF_MEAN, TF_STD

SAFETENSORS_FORMAT = "betterconv"


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") < (1 << 32) and head[8:9] == b"{"


def read_checkpoint(path: str | Path, trusted: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and betterconv metadata ({} for other files) of a safetensors or PyTorch file."""
    path = Path(path)
    if not path.is_file():
        raise BetterConvError(f"{path}: no such file")
    if _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise BetterConvError(f"{path}: unreadable safetensors file ({e})") from None
        return state, {k: json.loads(v) for k, v in meta.items() if k.startswith("betterconv.")}
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
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise BetterConvError(f"{path}: not a weights file ({first_line(e, 120)})") from None
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict", "model_state"):  # training checkpoints wrap the state dict
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BetterConvError(f"{path}: not a state dict (a mapping of names to tensors)")
    return dict(obj), {}


def _check_and_load(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
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
    model.load_state_dict(state)


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
        model = build(name, {**config, **kwargs})
        return load_weights(model, path)
    state, meta = read_checkpoint(path, trusted)
    config: dict[str, Any] = {}
    if meta:
        if meta.get("betterconv.model") != name:
            raise BetterConvError(f"{path}: holds weights for {meta.get('betterconv.model')}, not {name}")
        config = dict(meta.get("betterconv.model_kwargs", {}))
    elif torchvision_family(state):
        config = torchvision_config(name)
    model = build(name, {**config, **kwargs})
    _apply_state(model, state, path)
    return model


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
    model.load_state_dict(copied, strict=False)
    return len(copied)


def init_from_checkpoint(model: nn.Module, path: str, trusted: bool = False) -> tuple[int, int]:
    """Staged training (FCN §4.2: 32s -> 16s -> 8s): copy every tensor whose name and shape match from a checkpoint
    or weights file; the rest keep their initialisation. Returns (copied, total)."""
    state, _ = read_checkpoint(path, trusted)
    target = model.state_dict()
    copied = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    if not copied:
        raise BetterConvError(f"{path}: no tensor in it fits {type(model).__name__}")
    model.load_state_dict(copied, strict=False)
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
