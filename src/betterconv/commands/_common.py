"""Pieces the task commands share: devices, number lists, backbones from ImageNet classifiers, staged starts."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import BetterConvError

# dense model -> the classifier whose ImageNet weights start its backbone (YOLOv2: the Darknet-19 classifier,
# trained at 224 then fine-tuned at 448, YOLOv2 §2 "High Resolution Classifier")
BACKBONE_CLASSIFIER = {"yolov2": "darknet19", "deeplabv3_resnet50": "resnet50", "deeplabv3_resnet101": "resnet101",
                       "deeplabv3_mobilenet_v2": "mobilenet_v2", "fcn_resnet50": "resnet50",
                       "fcn_resnet101": "resnet101", "fcn32s_vgg16": "vgg16", "fcn16s_vgg16": "vgg16",
                       "fcn8s_vgg16": "vgg16", "fcn32s_mobilenet_v2": "mobilenet_v2",
                       "fcn16s_mobilenet_v2": "mobilenet_v2", "fcn8s_mobilenet_v2": "mobilenet_v2"}
# keywords a classifier's weights impose on the backbone (e.g. TensorFlow padding of TFLite weights)
BACKBONE_KEYWORDS = ("padding", "round_nearest")


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise BetterConvError(f"expected comma-separated numbers, got {text!r}") from None


def device_for(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def backbone_from_classifier(model: nn.Module, classifier: nn.Module, source: str) -> int:
    """Copy an ImageNet classifier's weights into a dense model's backbone (and FCN's fc6/fc7, which are
    VGG's fc6/fc7 as convolutions, FCN §3.1). Returns the number of tensors copied."""
    from ..models.fcn import FCN, convolutionalize
    from ..models.vgg import VGG

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


def init_from(model: nn.Module, path: str, trusted: bool = False) -> tuple[int, int]:
    """Staged training (FCN §4.2: 32s -> 16s -> 8s): copy every tensor whose name and shape match from a checkpoint
    or weights file; the rest keep their initialisation. Returns (copied, total)."""
    from ..weights import read_checkpoint

    state, _ = read_checkpoint(path, trusted)
    target = model.state_dict()
    copied = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    if not copied:
        raise BetterConvError(f"{path}: no tensor in it fits {type(model).__name__}")
    model.load_state_dict(copied, strict=False)
    return len(copied), len(target)


def add_model_arguments(p) -> None:
    """The arguments every eval/predict command takes to build a model with its weights."""
    p.add_argument("--model", help="registered model name (see `betterconv list`)")
    p.add_argument("--weights", help="weights file: betterconv safetensors, torchvision .pth, darknet, TFLite")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="model keyword argument")
    p.add_argument("--device")
    p.add_argument("--trusted", action="store_true", help="allow unpickling a .pth that holds more than tensors")


def add_run_arguments(p) -> None:
    """The arguments every `train` command takes to run the shared trainer."""
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    p.add_argument("--max-steps-per-epoch", type=int, help="shorter epochs (quick runs, benchmarks)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on GPU")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (torchrun)")
    p.add_argument("--trusted", action="store_true", help="allow unpickling a .pth that holds more than tensors")
