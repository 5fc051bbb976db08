"""What the command modules share: the parser class, the option groups, `--arg` parsing, devices, backbones from
ImageNet classifiers, staged starts and datasets' skip reports."""
from __future__ import annotations

import argparse
import ast
from typing import Any

import torch
from torch import nn

from ..errors import BetterConvError
from ..models import model_arguments, model_info
from ..models.fcn import FCN, convolutionalize
from ..models.vgg import VGG
from ..weights import create_model, read_checkpoint

# keywords a classifier's weights impose on the backbone (e.g. TensorFlow padding of TFLite weights)
BACKBONE_KEYWORDS = ("padding", "round_nearest")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one `BetterConvError` line instead of usage and message."""

    def error(self, message: str) -> None:
        raise BetterConvError(f"{self.prog}: {message}")


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """`--arg width_mult=0.5 --arg atrous_rates=(6,12)` -> {"width_mult": 0.5, "atrous_rates": (6, 12)}."""
    kwargs = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise BetterConvError(f"--arg takes NAME=VALUE, got {pair!r}")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[key] = text  # a bare word such as padding=tf_same
    return kwargs


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise BetterConvError(f"expected comma-separated numbers, got {text!r}") from None


def device_for(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def model_num_classes(model: nn.Module) -> int:
    """The output count of the model's last linear or convolutional layer."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return int(getattr(last, "out_features", None) or last.out_channels)


def load_model(args: argparse.Namespace, **overrides: Any) -> nn.Module:
    """`--model` with `--weights` loaded, built with the `--arg` keywords and then `overrides`."""
    return create_model(args.model, weights=args.weights, trusted=args.trusted,
                        **{**parse_model_args(args.arg), **overrides})


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
    VGG's fc6/fc7 as convolutions, FCN §3.1). Prints and returns the number of tensors copied."""
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
    print(f"backbone: {len(copied)} tensors from {source}")
    return len(copied)


def init_from(model: nn.Module, path: str, trusted: bool = False) -> tuple[int, int]:
    """Staged training (FCN §4.2: 32s -> 16s -> 8s): copy every tensor whose name and shape match from a checkpoint
    or weights file; the rest keep their initialisation. Prints and returns (copied, total)."""
    state, _ = read_checkpoint(path, trusted)
    target = model.state_dict()
    copied = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    if not copied:
        raise BetterConvError(f"{path}: no tensor in it fits {type(model).__name__}")
    model.load_state_dict(copied, strict=False)
    print(f"initialised {len(copied)}/{len(target)} tensors from {path}")
    return len(copied), len(target)


def report_skipped(dataset: Any, what: str) -> Any:
    """Print how many bad samples `dataset` (loaded with skip_bad) left out of `what`; returns the dataset."""
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} bad samples of {what}")
    return dataset


# ---------------------------------------------------------------------------------------------- option groups

def add_arg_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword argument of the model builder, e.g. width_mult=0.5 (repeatable)")


def add_trusted_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted", action="store_true", help="allow unpickling a .pth that holds more than tensors")


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")


def add_data_arguments(p: argparse.ArgumentParser, kinds: str) -> None:
    """`--data KIND:PATH` (`kinds` lists the KINDs) and `--skip-bad`."""
    p.add_argument("--data", required=True, metavar="KIND:PATH", help=kinds)
    p.add_argument("--skip-bad", action="store_true",
                   help="skip (and count) unusable samples: unreadable images, inconsistent labels")


def add_model_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    """The arguments every eval/predict command takes to build a model with its weights."""
    p.add_argument("--model", required=required, help="registered model name (see `betterconv list`)")
    p.add_argument("--weights", required=required,
                   help="weights file: betterconv safetensors, torchvision .pth, darknet, TFLite")
    add_arg_option(p)
    add_device_option(p)
    add_trusted_option(p)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every `train` command takes to run the shared trainer."""
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    p.add_argument("--max-steps-per-epoch", type=int, help="shorter epochs (quick runs, benchmarks)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initial weights, sampling and augmentation")
    add_device_option(p)
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on GPU")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (torchrun)")
    add_trusted_option(p)


def add_train_arguments(p: argparse.ArgumentParser, default_output: str, init_help: str) -> None:
    """`--model`, `--output`, `--resume`, `--init-from` and `--arg`: what every `train` command starts with."""
    p.add_argument("--model", required=True, help="registered model name (see `betterconv list`)")
    p.add_argument("--output", default=default_output,
                   help=f"checkpoints, history.json and model.safetensors (default: {default_output})")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    p.add_argument("--init-from", help=init_help)
    add_arg_option(p)


def add_task_groups(sub: argparse._SubParsersAction) -> tuple[Any, Any, Any]:
    """The `train`, `eval` and `predict` command groups; returns their sub-command parsers."""
    groups = []
    for name, help_text in (("train", "train a model"), ("eval", "evaluate a model or written predictions"),
                            ("predict", "run a model on images")):
        groups.append(sub.add_parser(name, help=help_text).add_subparsers(dest="task", required=True,
                                                                         parser_class=_Parser))
    return groups[0], groups[1], groups[2]
