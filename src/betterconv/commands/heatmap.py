"""`betterconv heatmap`: where a convolutionalised classifier sees a class in an image (FCN §3.1)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..files import write_atomic
from ..analysis.heatmap import class_heatmap, find_class, heatmap_png
from ..data.images import open_image
from ..errors import BetterConvError
from ..weights import create_model, output_class_names, weights_preprocessing
from ._common import add_trusted_option, check_suffix, refuse_overwriting, resolve_model


def cmd_heatmap(args: argparse.Namespace) -> None:
    if not args.weights:
        raise BetterConvError("heatmap needs --weights: the heat-map of an untrained network shows nothing about the "
                              "image")
    if args.output:
        check_suffix(args.output, (".png",), "the heat-map")
    refuse_overwriting([args.output] if args.output else [], [args.image, args.weights])
    image = open_image(args.image, mode="RGB", exif=True)
    model = create_model(resolve_model(args, default="vgg16"), weights=args.weights, trusted=args.trusted)
    pre = weights_preprocessing(args.model, args.weights)
    names = pre["class_names"] or output_class_names(model)
    if not names:
        raise BetterConvError("the weights carry no class names; convert them with --class-names")
    index = find_class(names, args.class_name)
    output = Path(args.output or f"{Path(args.image).stem}_{names[index].replace(' ', '_')}_heatmap.png")
    refuse_overwriting([output], [args.image, args.weights])
    heat = class_heatmap(model, image, index, pre["mean"], pre["std"], short_side=args.size)
    write_atomic(output, heatmap_png(image, heat, f"{names[index]}: peak probability {heat.max():.2f}"))
    print(f"wrote {output} (class {names[index]!r}, peak probability {heat.max():.3f})")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `heatmap` on the top-level sub-command parsers."""
    p = sub.add_parser("heatmap", help="class heat-map of a convolutionalised VGG classifier over an image (FCN §3.1)")
    p.add_argument("image", help="the image file")
    p.add_argument("--model", help="registered classifier (default: the model the weights record, else vgg16)")
    p.add_argument("--weights", help="trained classifier weights, needed (torchvision .pth or betterconv "
                                     ".safetensors)")
    p.add_argument("--class", dest="class_name", required=True, help="class name, e.g. 'tabby' or 'Egyptian cat'")
    p.add_argument("--size", type=int, default=448, help="resize the short side to this (default 448)")
    p.add_argument("--output", help="output PNG (default: <image stem>_<class>_heatmap.png)")
    add_trusted_option(p)
    p.set_defaults(func=cmd_heatmap)
