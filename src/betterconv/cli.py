"""The `betterconv` command line. Every user error ends in one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import BetterConvError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise BetterConvError(f"{self.prog}: {message}")


def model_kwargs(pairs: list[str]) -> dict[str, Any]:
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



def _cmd_list(args: argparse.Namespace) -> None:
    from .models import list_models, model_arguments

    for name in list_models(args.pattern):
        defaults = ", ".join(f"{k}={v!r}" for k, v in model_arguments(name).items())
        print(f"{name:28s} {defaults}")


def _cmd_profile(args: argparse.Namespace) -> None:
    from .analysis import memory_table, profile
    from .models import create_model

    if args.memory_table:
        table = memory_table()
        print(json.dumps(table.to_dict(), indent=2) if args.json else table.format())
        return
    if not args.model:
        raise BetterConvError("profile needs a model name (or --memory-table)")
    model = create_model(args.model, **model_kwargs(args.arg))
    result = profile(model, input_size=(3, *args.input_size))
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format_table())


def _weights_metadata(model, source: Path) -> dict[str, Any]:
    """Class names, mean/std and input size to record for weights converted from `source`."""
    from .data.class_names import DARKNET_MEAN, DARKNET_STD, IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD
    from .data.class_names import default_class_names
    from .models import paper_input_size
    from .weights import read_metadata

    recorded = read_metadata(source)
    if recorded:
        return {k.removeprefix("betterconv."): v for k, v in recorded.items()
                if k in ("betterconv.class_names", "betterconv.input_size", "betterconv.mean", "betterconv.std")}
    suffix = source.suffix.lower()
    mean, std = {".weights": (DARKNET_MEAN, DARKNET_STD), ".tflite": (TF_MEAN, TF_STD)}.get(
        suffix, (IMAGENET_MEAN, IMAGENET_STD))
    import torch

    last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    num_classes = getattr(last, "out_features", None) or last.out_channels
    name = getattr(model, "model_name", "")
    return {"class_names": default_class_names(int(num_classes)), "input_size": (3, *paper_input_size(name)),
            "mean": mean, "std": std}


def _cmd_convert(args: argparse.Namespace) -> None:
    from .models import create_model
    from .weights import save_weights

    source, target = Path(args.source), Path(args.target)
    if target.suffix.lower() != ".safetensors":
        raise BetterConvError(f"{target}: the output must be a .safetensors file")
    if not args.cfg and not args.model:
        raise BetterConvError("convert needs --model NAME (or --cfg for a darknet network)")
    if args.cfg:
        from .interop.darknet import from_darknet

        model = from_darknet(args.cfg, source)
        model.model_name, model.model_kwargs = "darknet_cfg", {"cfg": Path(args.cfg).read_text()}
    else:
        model = create_model(args.model, weights=source, trusted=args.trusted)
    meta = _weights_metadata(model, source)
    if args.class_names:
        meta["class_names"] = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
    save_weights(model, target, **meta)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {target}: {model.model_name}, {params:,} parameters")


def _cmd_heatmap(args: argparse.Namespace) -> None:
    from ._io import write_atomic
    from .analysis.heatmap import class_heatmap, find_class, heatmap_png, read_image
    from .data.class_names import IMAGENET_MEAN, IMAGENET_STD, default_class_names
    from .models import create_model
    from .weights import read_metadata

    image = read_image(args.image)
    model = create_model(args.model, weights=args.weights, trusted=args.trusted)
    meta = read_metadata(args.weights) if args.weights else {}
    names = meta.get("betterconv.class_names") or default_class_names(model.model_kwargs.get("num_classes", 1000))
    if not names:
        raise BetterConvError("the weights carry no class names; convert them with --class-names")
    index = find_class(names, args.class_name)
    heat = class_heatmap(model, image, index, meta.get("betterconv.mean") or IMAGENET_MEAN,
                         meta.get("betterconv.std") or IMAGENET_STD, short_side=args.size)
    output = Path(args.output or f"{Path(args.image).stem}_{names[index].replace(' ', '_')}_heatmap.png")
    write_atomic(output, heatmap_png(image, heat, f"{names[index]}: peak probability {heat.max():.2f}"))
    print(f"wrote {output} (class {names[index]!r}, peak probability {heat.max():.3f})")


def _cmd_bench_conv(args: argparse.Namespace) -> None:
    from ._io import write_atomic
    from .analysis.conv_cost import conv_cost_table, format_conv_cost, rows_to_dicts

    shapes = [(int(c), int(r)) for c, _, r in (s.partition("@") for s in args.shapes)]
    rows = conv_cost_table(args.kernels, shapes, args.repeats, channels_last=not args.contiguous)
    print(json.dumps(rows_to_dicts(rows), indent=2) if args.json else format_conv_cost(rows))
    if args.output:
        write_atomic(Path(args.output), json.dumps(rows_to_dicts(rows), indent=2).encode())


def _cmd_zoo(args: argparse.Namespace) -> None:
    from .analysis.zoo import profile_zoo

    profile_zoo(Path(args.output), input_size=args.input_size)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="betterconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list the registered models and their keyword arguments")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'deeplab*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("profile", help="parameters, MACs, output stride, receptive field and memory of a model")
    p.add_argument("model", nargs="?", help="registered model name (see `betterconv list`)")
    p.add_argument("--input-size", nargs=2, type=int, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword argument of the model builder, e.g. width_mult=0.5 (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--memory-table", action="store_true",
                   help="MobileNetV2 paper Table 3: activation memory of MobileNetV1, MobileNetV2, ShuffleNet")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("convert", help="convert torchvision, darknet or TFLite weights to betterconv safetensors")
    p.add_argument("source", help="a .pth/.pt state dict, darknet .weights, .tflite or .safetensors file")
    p.add_argument("target", help="output .safetensors file (written atomically)")
    p.add_argument("--model", help="registered model the weights are for (see `betterconv list`)")
    p.add_argument("--cfg", help="darknet cfg: build the network from it instead of a registered model")
    p.add_argument("--class-names", help="text file with one class name per line, recorded in the output")
    p.add_argument("--trusted", action="store_true", help="allow unpickling a .pth that holds more than tensors")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("heatmap", help="class heat-map of a convolutionalised VGG classifier over an image (FCN §3.1)")
    p.add_argument("image")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--weights", help="classifier weights (torchvision .pth or betterconv .safetensors)")
    p.add_argument("--class", dest="class_name", required=True, help="class name, e.g. 'tabby' or 'Egyptian cat'")
    p.add_argument("--size", type=int, default=448, help="resize the short side to this (default 448)")
    p.add_argument("--output", help="output PNG (default: <image stem>_<class>_heatmap.png)")
    p.add_argument("--trusted", action="store_true", help="allow unpickling a .pth that holds more than tensors")
    p.set_defaults(func=_cmd_heatmap)

    from .commands import classification, detection, segmentation
    from .commands import export as export_command

    train_sub = sub.add_parser("train", help="train a model").add_subparsers(dest="task", required=True,
                                                                            parser_class=_Parser)
    eval_sub = sub.add_parser("eval", help="evaluate a model or written predictions").add_subparsers(
        dest="task", required=True, parser_class=_Parser)
    predict_sub = sub.add_parser("predict", help="run a model on images").add_subparsers(
        dest="task", required=True, parser_class=_Parser)
    segmentation.add_parsers(train_sub, eval_sub, predict_sub)
    classification.add_parsers(train_sub, eval_sub, predict_sub)
    detection.add_parsers(sub, train_sub, eval_sub, predict_sub)
    export_command.add_parsers(sub)

    bench_sub = sub.add_parser("bench", help="measure costs and speed").add_subparsers(
        dest="bench", required=True, parser_class=_Parser)
    p = bench_sub.add_parser("conv", help="standard vs depthwise separable convolution: MACs and latency")
    p.add_argument("--kernels", type=int, nargs="+", default=[1, 3, 5, 7])
    p.add_argument("--shapes", nargs="+", default=["32@112", "128@56", "256@28", "512@14", "1024@7"],
                   metavar="C@R", help="channels@resolution pairs (default: MobileNet's stages at 224)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--contiguous", action="store_true", help="NCHW instead of channels-last")
    p.add_argument("--json", action="store_true")
    p.add_argument("--output", help="also write the rows as JSON here")
    p.set_defaults(func=_cmd_bench_conv)
    from .analysis.infer_bench import add_bench_infer_parser

    add_bench_infer_parser(bench_sub)

    p = sub.add_parser("zoo", help="profile every model of the zoo: a table, a JSON file and a PNG chart")
    p.add_argument("--output", default="out/zoo", help="output folder (default: out/zoo)")
    p.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="one input size for all models (default: each paper's own)")
    p.set_defaults(func=_cmd_zoo)
    return parser


def main(argv: list[str] | None = None) -> int:
    debug = bool(os.environ.get("BETTERCONV_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except BetterConvError as e:
        if debug:
            raise
        print(f"betterconv: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as e:
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"betterconv: error: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("betterconv: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
