"""`betterconv export`: a model and its weights to ONNX (float or int8), TorchScript, ncnn or OpenVINO IR (float or
int8), checked against PyTorch."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from torch import nn

from ..data.images import image_files
from ..deploy import (calibration_images, export_ncnn, export_onnx, export_openvino, export_openvino_int8,
                      export_torchscript, quantize_onnx_static)
from ..deploy.checks import temporary_path
from ..deploy.openvino_export import check_openvino_installed
from ..errors import BetterConvError, first_line
from ..weights import create_model, weights_preprocessing
from ._common import add_arg_option, add_trusted_option, parse_model_args, refuse_overwriting

FORMATS = ("onnx", "torchscript", "ncnn", "openvino")
INT8_FORMATS = ("onnx", "openvino")
WEIGHTS_BESIDE = ("ncnn", "openvino")  # formats whose weights go beside the graph, as .bin
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


SUFFIXES = {"onnx": (".onnx",), "torchscript": _TORCHSCRIPT_SUFFIXES, "ncnn": (".param",), "openvino": (".xml",)}


def _output_format(args: argparse.Namespace, output: Path) -> str | None:
    """`--format`, else the one the output's suffix names (None when it names none)."""
    suffix = output.suffix.lower()
    return args.format or next((fmt for fmt, suffixes in SUFFIXES.items() if suffix in suffixes), None)


def _check_output_suffix(fmt: str | None, output: Path) -> None:
    """The output's suffix must be its format's: a file named .tflite or .safetensors that holds an ONNX graph
    misleads whoever opens it (and may replace the weights it was made from)."""
    if fmt is None:
        raise BetterConvError(f"--output {output}: cannot tell the format from "
                              + (f"the suffix {output.suffix}" if output.suffix else "a name without a suffix")
                              + "; name it .onnx (ONNX), .pt or .ts (TorchScript), .param (ncnn) or .xml "
                                "(OpenVINO IR)")
    if output.suffix.lower() not in SUFFIXES[fmt]:
        raise BetterConvError(f"--output {output}: a {fmt} file ends in {' or '.join(SUFFIXES[fmt])}"
                              + (f", not {output.suffix}" if output.suffix else ""))


def cmd_export(args: argparse.Namespace) -> None:
    output = Path(args.output)
    fmt = _output_format(args, output)
    # the cheap checks first: nothing is built or written when the command line is wrong
    if output.is_dir():
        raise BetterConvError(f"--output {output} is a folder; give a file name")
    if fmt in WEIGHTS_BESIDE and output.suffix.lower() == ".bin":
        graph = ".param" if fmt == "ncnn" else ".xml"
        raise BetterConvError(f"--output {output}: name the {fmt} graph ({graph}); its weights go beside it as .bin")
    if args.int8 and fmt not in (*INT8_FORMATS, None):
        raise BetterConvError("--int8 quantises ONNX graphs only, or OpenVINO IR; use --format onnx or openvino")
    if args.int8 and not args.calib:
        raise BetterConvError("--int8 needs calibration images: --calib FOLDER (or a glob pattern or list file)")
    if args.calib and not args.int8:
        raise BetterConvError("--calib is for --int8 only")
    _check_output_suffix(fmt, output)
    calib = image_files(args.calib, args.calib_limit, option="--calib") if args.int8 else []
    if args.weights and not Path(args.weights).is_file():
        raise BetterConvError(f"{args.weights}: no such file")
    written = [output] + ([output.with_suffix(".bin")] if fmt in WEIGHTS_BESIDE else [])
    refuse_overwriting(written, [args.weights, *calib])
    if fmt == "openvino":
        check_openvino_installed(int8=args.int8)

    kwargs = parse_model_args(args.arg)
    try:
        model = create_model(args.model, weights=args.weights, trusted=args.trusted, **kwargs)
    except BetterConvError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError) as e:  # a builder's own complaint, as one line
        raise BetterConvError(f"cannot build {args.model}" + (f" with {args.weights}" if args.weights else "")
                              + f": {first_line(e)}") from None
    model.eval()
    pre = weights_preprocessing(args.model, args.weights)
    size = (3, *args.input_size) if args.input_size else tuple(pre["input_size"])
    normalize = None if args.no_normalize else (pre["mean"], pre["std"])
    contract = ("float32 NCHW RGB in [0, 1], normalised inside (mean "
                f"{tuple(round(v, 4) for v in pre['mean'])}, std {tuple(round(v, 4) for v in pre['std'])})"
                if normalize else "float32 NCHW, already normalised")
    batch = "N" if not args.static_batch else "1"
    shape = f"({batch}, {', '.join(map(str, size))})"

    if fmt == "ncnn":
        diff = export_ncnn(model, output, size, normalize=normalize)
        print(f"wrote {output} and {output.with_suffix('.bin')}: ncnn float32, input ({', '.join(map(str, size))}) "
              f"per image, {contract}; max |ncnn - PyTorch| = {diff:.3g}")
        return
    if fmt == "torchscript":
        diff = export_torchscript(model, output, size, normalize=normalize)
        print(f"wrote {output}: TorchScript, input {shape} {contract}; max |TorchScript - PyTorch| = {diff:.3g}")
        return
    meta = {"class_names": pre["class_names"], "weights": Path(args.weights).name if args.weights else None}
    if fmt == "openvino":
        _export_openvino(args, model, output, size, normalize, meta, calib, pre, f"input {shape} {contract}")
        return
    if not args.int8:
        diff = export_onnx(model, output, size, dynamic_batch=not args.static_batch, normalize=normalize,
                           opset=args.opset, metadata=meta)
        print(f"wrote {output}: ONNX opset {args.opset}, input {shape} {contract}; "
              f"max |ONNX - PyTorch| = {diff:.3g} (onnxruntime)")
        return
    images = calibration_images(calib, size[1:], None if normalize else (pre["mean"], pre["std"]))
    float_name = output.with_name(f".{output.stem}.float{os.getpid()}.onnx")
    with temporary_path(float_name) as float_path:
        diff = export_onnx(model, float_path, size, dynamic_batch=not args.static_batch, normalize=normalize,
                           opset=args.opset, metadata=meta)
        report = quantize_onnx_static(float_path, output, images)
    print(f"wrote {output}: int8 ONNX (QDQ, per-channel weights), input {shape} {contract}; float graph max "
          f"|ONNX - PyTorch| = {diff:.3g}; {report.format()}")


def _export_openvino(args: argparse.Namespace, model: nn.Module, output: Path, size: tuple[int, int, int],
                     normalize: tuple | None, meta: dict, calib: list[Path], pre: dict, described: str) -> None:
    """`export --format openvino`: the float32 IR, or with --int8 the NNCF-quantised one; prints what it wrote."""
    weights = output.with_suffix(".bin")
    common = dict(dynamic_batch=not args.static_batch, normalize=normalize, opset=args.opset, metadata=meta)
    if not args.int8:
        diff = export_openvino(model, output, size, **common)
        print(f"wrote {output} and {weights}: OpenVINO IR float32, {described}; max |OpenVINO - PyTorch| = "
              f"{diff:.3g} (compiled for the CPU in float32; run it in bf16 with the precision hint)")
        return
    images = calibration_images(calib, size[1:], None if normalize else (pre["mean"], pre["std"]))
    diff, report = export_openvino_int8(model, output, size, images, **common)
    print(f"wrote {output} and {weights}: OpenVINO IR int8 (NNCF post-training quantisation), {described}; float IR "
          f"max |OpenVINO - PyTorch| = {diff:.3g}; {report.format()}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `betterconv export` on the top-level sub-command parsers."""
    p = sub.add_parser("export", help="export a model to ONNX (float or int8), TorchScript, ncnn or OpenVINO IR "
                                      "(float or int8), checked against PyTorch")
    p.add_argument("model", help="registered model name (see `betterconv list`)")
    p.add_argument("--weights", help="weights: betterconv .safetensors, torchvision .pth, darknet .weights, .tflite")
    p.add_argument("--format", choices=FORMATS,
                   help="default: the output's suffix (.onnx: onnx, .pt/.ts: torchscript, .param: ncnn, .xml: "
                        "openvino); the suffix must match the format")
    p.add_argument("--output", "-o", required=True,
                   help="output file (written atomically): .onnx, .pt/.ts (TorchScript), .param (ncnn) or .xml "
                        "(OpenVINO IR), the last two with their .bin beside them; never one of the inputs")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                   help="default: the weights' recorded input size, else the paper's")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantisation (ONNX QDQ, or OpenVINO IR by NNCF), needs --calib")
    p.add_argument("--calib", metavar="DIR_OR_SPEC",
                   help="calibration images: a folder, a glob pattern ('imgs/*.jpg') or a text file of paths")
    p.add_argument("--calib-limit", type=int, default=200, help="use at most this many calibration images")
    p.add_argument("--no-normalize", action="store_true",
                   help="the graph takes normalised input (default: [0, 1] images, normalised inside)")
    p.add_argument("--static-batch", action="store_true", help="batch size fixed at 1 (default: free)")
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset (default 17; also of the ONNX graph OpenVINO converts)")
    add_arg_option(p)
    add_trusted_option(p)
    p.set_defaults(func=cmd_export)
