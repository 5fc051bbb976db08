"""`betterconv convert`: torchvision, darknet or TFLite weights to betterconv safetensors with their metadata."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BetterConvError
from ..interop.darknet import from_darknet
from ..models.info import DARKNET_MEAN, DARKNET_STD
from ..weights import create_model, output_class_names, save_weights, weights_preprocessing
from ._common import add_trusted_option, recorded_model, refuse_overwriting


def cmd_convert(args: argparse.Namespace) -> None:
    source, target = Path(args.source), Path(args.target)
    if target.suffix.lower() != ".safetensors":
        raise BetterConvError(f"{target}: the output must be a .safetensors file")
    refuse_overwriting([target], [source, args.cfg, args.class_names], option="the target")
    if not args.cfg and not args.model:
        if not source.is_file():
            raise BetterConvError(f"{source}: no such file")
        args.model = recorded_model(source)  # a TFLite graph reads as a model; safetensors record theirs
        if not args.model:
            raise BetterConvError(f"convert needs --model NAME (or --cfg for a darknet network): {source} does not "
                                  "say which model it holds")
    if args.cfg:
        model = from_darknet(args.cfg, source)
        model.model_name, model.model_kwargs = "darknet_cfg", {"cfg": Path(args.cfg).read_text()}
        # no registered model: darknet's x / 255 at the input size the cfg's [net] section gives
        meta = {"mean": DARKNET_MEAN, "std": DARKNET_STD, "input_size": (model.in_channels, *model.input_size),
                "class_names": None}
    else:
        model = create_model(args.model, weights=source, trusted=args.trusted)
        meta = weights_preprocessing(args.model, source)
    if args.class_names:
        meta["class_names"] = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
    elif not meta["class_names"]:
        meta["class_names"] = output_class_names(model)
    save_weights(model, target, **meta)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {target}: {model.model_name}, {params:,} parameters")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `convert` on the top-level sub-command parsers."""
    p = sub.add_parser("convert", help="convert torchvision, darknet or TFLite weights to betterconv safetensors")
    p.add_argument("source", help="a .pth/.pt state dict, darknet .weights, .tflite or .safetensors file")
    p.add_argument("target", help="output .safetensors file (written atomically)")
    p.add_argument("--model", help="registered model the weights are for (see `betterconv list`); default for a "
                                   "TFLite file: the model its graph reads as")
    p.add_argument("--cfg", help="darknet cfg: build the network from it instead of a registered model")
    p.add_argument("--class-names", help="text file with one class name per line, recorded in the output")
    add_trusted_option(p)
    p.set_defaults(func=cmd_convert)
