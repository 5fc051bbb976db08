"""What the command modules share: the parser class, the option groups, `--arg` parsing, devices and datasets'
skip reports."""
from __future__ import annotations

import argparse
import ast
from typing import Any

import torch
from torch import nn

from ..errors import BetterConvError
from ..weights import backbone_from_classifier, create_model, init_from_checkpoint

class Parser(argparse.ArgumentParser):
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


def load_model(args: argparse.Namespace, **overrides: Any) -> nn.Module:
    """`--model` with `--weights` loaded, built with the `--arg` keywords and then `overrides`."""
    return create_model(args.model, weights=args.weights, trusted=args.trusted,
                        **{**parse_model_args(args.arg), **overrides})


def init_from(model: nn.Module, path: str, trusted: bool = False) -> None:
    """Staged training: start from every tensor of `path` whose name and shape fit (`init_from_checkpoint`)."""
    copied, total = init_from_checkpoint(model, path, trusted)
    print(f"initialised {copied}/{total} tensors from {path}")


def load_backbone(model: nn.Module, classifier: nn.Module, source: str) -> None:
    """Start a dense model's backbone from an ImageNet classifier (`backbone_from_classifier`)."""
    print(f"backbone: {backbone_from_classifier(model, classifier, source)} tensors from {source}")


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
                                                                         parser_class=Parser))
    return groups[0], groups[1], groups[2]
