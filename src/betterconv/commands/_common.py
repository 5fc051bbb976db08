"""What the command modules share: the parser class, the option groups, `--arg` parsing, devices and datasets'
skip reports."""
from __future__ import annotations

import argparse
import ast
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.images import image_files
from ..errors import BetterConvError
from ..interop.tflite import tflite_model_config
from ..models.info import TF_MEAN, TF_STD
from ..weights import backbone_from_classifier, create_model, init_from_checkpoint, read_metadata

class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one `BetterConvError` line instead of usage and message."""

    def error(self, message: str) -> None:
        raise BetterConvError(f"{self.prog}: {message}")


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """`--arg width_mult=0.5 --arg atrous_rates=(6,12)` -> {"width_mult": 0.5, "atrous_rates": (6, 12)}.

    Each VALUE is read as a Python literal (`ast.literal_eval`: numbers, strings, tuples, lists, None, True/False);
    anything else (a bare word such as `padding=tf_same`, but also `10**3`) stays a string, which the model's
    builder accepts only where its annotation allows `str`: `betterconv.models.build` checks every value against
    the builder's annotations, so `num_classes=1.5` is a one-line error naming the keyword. A pair without `=`, an
    invalid NAME, a NAME given twice or a VALUE longer than 10,000 characters is a `BetterConvError`; messages show
    at most 60 characters of what was given."""
    def shown(text: str) -> str:
        return repr(text) if len(text) <= 60 else repr(text[:57]) + "..."

    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise BetterConvError(f"--arg takes NAME=VALUE, got {shown(pair)}")
        if key in kwargs:
            raise BetterConvError(f"--arg {key}= is given twice")
        if len(text) > 10_000:
            raise BetterConvError(f"--arg {key}={shown(text)}: the value is {len(text)} characters long; builder "
                                  f"keywords are short literals")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            kwargs[key] = text  # a bare word such as padding=tf_same; the builder's annotation decides
    return kwargs


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise BetterConvError(f"expected comma-separated numbers, got {text!r}") from None


def _checked_number(text: str, kind: type, ok: Callable[[float], bool], requirement: str, what: str):
    try:
        value = kind(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{what} must be {requirement}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"{what} must be {requirement}, got {text!r}")
    return value


def positive_int(text: str, what: str = "the value") -> int:
    """argparse `type=`: an integer >= 1 (`functools.partial(positive_int, what=...)` names it in the message)."""
    return _checked_number(text, int, lambda v: v >= 1, "an integer >= 1", what)


def non_negative_int(text: str, what: str = "the value") -> int:
    """argparse `type=`: an integer >= 0."""
    return _checked_number(text, int, lambda v: v >= 0, "an integer >= 0", what)


def positive_float(text: str, what: str = "the value") -> float:
    """argparse `type=`: a finite number > 0."""
    return _checked_number(text, float, lambda v: v > 0, "a finite number > 0", what)


def non_negative_float(text: str, what: str = "the value") -> float:
    """argparse `type=`: a finite number >= 0."""
    return _checked_number(text, float, lambda v: v >= 0, "a finite number >= 0", what)


def unit_interval(text: str, what: str = "the value") -> float:
    """argparse `type=`: a number in [0, 1) (momentum, a decay, label smoothing)."""
    return _checked_number(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)", what)


# the argparse `type=` of the numeric options the `train` commands share, each named in its one-line error
TRAIN_NUMBERS: dict[str, Callable[[str], Any]] = {
    "epochs": partial(positive_int, what="the number of epochs"),
    "batch-size": partial(positive_int, what="the batch size"),
    "crop-size": partial(positive_int, what="the crop size"),
    "input-size": partial(positive_int, what="the input size"),
    "lr": partial(positive_float, what="the learning rate"),
    "momentum": partial(unit_interval, what="momentum"),
    "weight-decay": partial(non_negative_float, what="weight decay"),
    "grad-clip": partial(positive_float, what="the gradient clipping norm"),
    "warmup-steps": partial(non_negative_int, what="warm-up steps"),
    "eval-images": partial(positive_int, what="the number of evaluation images"),
}


def device_for(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_model(args: argparse.Namespace, **overrides: Any) -> nn.Module:
    """`--model` (or the model the `--weights` record: `resolve_model`) with `--weights` loaded, built with the
    `--arg` keywords and then `overrides`."""
    return create_model(resolve_model(args), weights=args.weights, trusted=args.trusted,
                        **{**parse_model_args(args.arg), **overrides})


def recorded_model(weights: str | Path) -> str | None:
    """The registered model a weights file says it holds: a betterconv safetensors file's `betterconv.model`, or
    the model a TFLite graph reads as (`tflite_model_config`); None for files that do not say."""
    path = Path(weights)
    if not path.is_file():
        raise BetterConvError(f"{path}: no such file")
    if path.suffix.lower() == ".tflite":
        return tflite_model_config(path)[0]
    return read_metadata(path).get("betterconv.model")


def resolve_model(args: argparse.Namespace, default: str | None = None) -> str:
    """`--model`, else the model `--weights` records (`recorded_model`), else `default`; sets `args.model`. With
    none of them, a one-line `BetterConvError`."""
    if not getattr(args, "model", None):
        weights = getattr(args, "weights", None)
        args.model = (recorded_model(weights) if weights else None) or default
        if not args.model:
            raise BetterConvError("needs --model NAME (see `betterconv list`)" + (
                f": {weights} does not record which model it holds" if weights else " and --weights FILE"))
    return args.model


def tensorflow_weights(pre: dict[str, Any], weights: str | Path | None) -> bool:
    """Whether `weights` come from a TensorFlow (Lite) graph: a .tflite file, or a file converted from one, which
    records TensorFlow's normalisation (x / 127.5 - 1). Such graphs run at one fixed input size, on the whole image
    resized to it (Coral's and TensorFlow's own classification and DeepLab examples), not on a centre crop."""
    if weights is not None and Path(weights).suffix.lower() == ".tflite":
        return True
    return tuple(pre["mean"]) == TF_MEAN and tuple(pre["std"]) == TF_STD


def warn(message: str) -> None:
    """A warning or progress line for the user: on stderr, so that stdout holds a command's result alone (the JSON
    alone with --json)."""
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- inputs and outputs of predict

IMAGES_HELP = ("images: files, folders (their images), glob patterns ('photos/*.jpg', quoted) or text files listing "
               "images; opened with their EXIF orientation applied")


def input_images(specs: Iterable[str]) -> list[Path]:
    """The image files that the positional arguments name, in order: each an image file, a folder (its images,
    sorted), a glob pattern ('photos/*.jpg', quoted) or a text file listing images (`image_files`). A file named
    twice is used once."""
    files: list[Path] = []
    seen: set[str] = set()
    for spec in specs:
        for path in image_files(spec, option="image"):
            key = os.path.normcase(os.path.realpath(path))
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files


def _stem_key(stem: str) -> str:
    # case-insensitive file systems; digit-only stems are read as numbers (COCO image ids): "0009" and "9" clash
    return str(int(stem)) if stem.isascii() and stem.isdigit() else stem.casefold()


def distinct_stems(paths: Sequence[Path], patterns: Sequence[str]) -> list[str]:
    """An output stem per input such that no two inputs share an output file or an id: `pattern.format(stem)` for
    each pattern names the files one input writes ("{}.png", "{}_overlay.png"). The stem is the file's own; inputs
    that share one (`a/x.jpg`, `b/x.png`) get their folder's name in front (`a_x`, `b_x`); a name still taken
    (`x.jpg` writes x_overlay.png, which `x_overlay.jpg` would write too) gets `-2`, `-3`, ... Names and ids compare
    case-insensitively, digit-only stems by their number. Deterministic: the same inputs in the same order give
    the same stems."""
    shared = Counter(_stem_key(p.stem) for p in paths)
    taken: set[str] = set()
    stems = []
    for path in paths:
        base = path.stem
        if shared[_stem_key(base)] > 1 and path.parent.name:
            base = f"{path.parent.name}_{base}"
        stem, n = base, 1
        while True:
            names = {pattern.format(stem).casefold() for pattern in patterns} | {"id " + _stem_key(stem)}
            if not names & taken:
                break
            n += 1
            stem = f"{base}-{n}"
        taken |= names
        stems.append(stem)
    return stems


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def refuse_overwriting(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None],
                       option: str = "--output") -> None:
    """A one-line `BetterConvError` when an output file is (or would replace) one of the inputs: the same path, a
    link to it, or the same file under another name. Called before anything is built or written."""
    sources = [Path(p) for p in inputs if p]
    for out in outputs:
        for source in sources:
            if _same_file(Path(out), source):
                raise BetterConvError(f"{option} {out} would overwrite the input {source}; choose another output")


def check_suffix(path: str | Path, suffixes: Sequence[str], what: str, option: str = "--output") -> None:
    """A one-line `BetterConvError` unless `path` ends in one of `suffixes` (the format it will hold)."""
    if Path(path).suffix.lower() not in suffixes:
        raise BetterConvError(f"{option} {path}: {what} is written to a {' or '.join(suffixes)} file; name it so")


def output_folder(path: str | Path) -> Path:
    """`--output` of a command that writes a folder of files: refused when a file is in its place."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BetterConvError(f"--output {path} is a file; give a folder (it is made when missing)")
    return path


def init_from(model: nn.Module, path: str, trusted: bool = False) -> None:
    """Staged training: start from every tensor of `path` whose name and shape fit (`init_from_checkpoint`)."""
    copied, total = init_from_checkpoint(model, path, trusted)
    print(f"initialised {copied}/{total} tensors from {path}")


def load_backbone(model: nn.Module, classifier: nn.Module, source: str) -> None:
    """Start a dense model's backbone from an ImageNet classifier (`backbone_from_classifier`)."""
    warn(f"backbone: {backbone_from_classifier(model, classifier, source)} tensors from {source}")


def report_skipped(dataset: Any, what: str, json_output: bool = False) -> Any:
    """Print how many bad samples `dataset` (loaded with skip_bad) left out of `what`: beside the result on stdout,
    or on stderr when stdout holds JSON (`json_output`). Returns the dataset."""
    if dataset.skipped:
        message = f"skipped {len(dataset.skipped)} bad samples of {what}"
        (warn if json_output else print)(message)
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
    """The arguments every eval/predict command takes to build a model with its weights (`required`: --weights;
    --model may always be left out when the weights record it)."""
    p.add_argument("--model", help="registered model name (see `betterconv list`); default: the model the weights "
                                   "record (betterconv safetensors, TFLite)")
    p.add_argument("--weights", required=required,
                   help="weights file: betterconv safetensors, torchvision .pth, darknet, TFLite")
    add_arg_option(p)
    add_device_option(p)
    add_trusted_option(p)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every `train` command takes to run the shared trainer."""
    p.add_argument("--eval-every", type=partial(positive_int, what="the evaluation interval (epochs)"), default=1,
                   help="evaluate every N epochs")
    p.add_argument("--max-steps-per-epoch", type=partial(positive_int, what="max steps per epoch"),
                   help="shorter epochs (quick runs, benchmarks)")
    p.add_argument("--workers", type=partial(non_negative_int, what="the number of data-loading workers"),
                   default=2, help="data-loading processes")
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
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT/last.pt with the same settings (--epochs may grow)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUTPUT (its files stay until the first new checkpoint)")
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
