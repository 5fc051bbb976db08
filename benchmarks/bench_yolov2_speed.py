"""Issue 5, speed: YOLOv2 (VOC, 416x416) inference on this CPU with the same darknet weights in betterconv,
OpenCV's DNN module (opencv-python-headless < 5, which reads darknet cfgs) and darknet itself (Debian's
`libdarknet.so`, called in-process through ctypes: `load_network` + `network_predict`, forward only), plus the
share of betterconv's decode + class-aware NMS (`tasks.detection.postprocess`) in the forward time.

The weights are a darknet `.weights` file written by `save_darknet_weights` from a seeded YOLOv2 whose batch-norm
statistics are calibrated (no released VOC weights are in reach offline; speed does not depend on the values).
All engines load that one file with `../shared/data/darknet/yolov2-voc.cfg`; their outputs are compared on one
real image (coco128) before timing, so the figures are for the same network. Two reduced-precision paths of
betterconv are timed beside the float ones and reported apart ("fastest_betterconv", float only, vs
"fastest_any_precision"), each with its agreement with the float network at conf 0.25 (share of the float
detections found again, same class, IoU >= 0.5): the onnxruntime int8 graph of those weights
(`quantize_onnx_static`, calibrated on `--calibration-images` coco128 images) and bfloat16 PyTorch (fused,
channels-last; this CPU has AVX512-BF16). The float paths of betterconv: eager PyTorch, fused channels-last,
fused with Winograd layers (`winograd_convolutions`), onnxruntime, and the ncnn graph written by `export_ncnn`
(ncnn's Winograd F(6x6,3x3) / F(4x4,3x3) kernels, float32 weights and arithmetic). Each engine runs `--rounds` calls
in one block after a warm-up call (onnxruntime's threads busy-wait as PyTorch's do; interleaved, they slowed the
next engine), the sequence of blocks is repeated `--blocks` times, and medians over all calls are reported.
Threads: `--threads` for PyTorch, onnxruntime, ncnn, OpenCV and darknet's OpenMP alike.

    pip install "opencv-python-headless<5"; apt-get install darknet
    python benchmarks/bench_yolov2_speed.py --threads 2 --rounds 10 --blocks 3

Writes benchmarks/results/bench_yolov2_speed.json (figures, machine, versions, command, date).
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CFG = DATA / "darknet" / "yolov2-voc.cfg"
IMAGE = DATA / "coco128" / "images" / "train2017" / "000000000009.jpg"
LIBDARKNET = Path("/usr/lib/darknet/libdarknet.so")
SIZE = 416


def darknet_network(cfg: Path, weights: Path):
    """libdarknet's network for `cfg` + `weights`, and a callable running one forward pass on a (3, H, W) float32
    array (darknet's planar RGB in [0, 1]) that returns the region layer's output as a numpy array."""
    import numpy as np

    lib = ctypes.CDLL(str(LIBDARKNET))
    lib.load_network.restype = ctypes.c_void_p
    lib.load_network.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    lib.network_predict.restype = ctypes.POINTER(ctypes.c_float)
    lib.network_predict.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)]
    lib.set_batch_network.argtypes = [ctypes.c_void_p, ctypes.c_int]
    net = lib.load_network(str(cfg).encode(), str(weights).encode(), 0)
    lib.set_batch_network(net, 1)

    def predict(x: np.ndarray, outputs: int):
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = lib.network_predict(net, x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return np.ctypeslib.as_array(out, shape=(outputs,)).copy()

    return predict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10, help="calls per engine in each block")
    p.add_argument("--blocks", type=int, default=3,
                   help="times the whole sequence of engine blocks is repeated; medians are over all calls, so a "
                        "slow spell of the (shared, virtual) machine does not fall on one engine only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration-images", type=int, default=16, help="coco128 images calibrating the int8 graph")
    args = p.parse_args()
    for path, what in ((CFG, "darknet cfg"), (IMAGE, "coco128 image"), (LIBDARKNET, "libdarknet (apt-get install "
                                                                                    "darknet)")):
        if not path.exists():
            sys.exit(f"{what} not found: {path}")
    try:
        import cv2
    except ImportError:
        sys.exit('OpenCV not installed: pip install "opencv-python-headless<5"')
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # darknet's OpenMP, read when libgomp starts
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.ops import box_iou

    from betterconv.files import write_atomic
    from betterconv.analysis.infer_bench import calibrate_batch_norm
    from betterconv.analysis.timing import (Timed, machine_info, ort_call, ort_session, time_in_blocks, torch_call,
                                            versions)
    from betterconv.deploy.export import export_onnx
    from betterconv.deploy.fuse import fuse_batch_norm
    from betterconv.deploy.ncnn import NcnnModel, export_ncnn
    from betterconv.deploy.quantize import calibration_images, quantize_onnx_static
    from betterconv.deploy.winograd import winograd_convolutions
    from betterconv.interop.darknet import load_darknet_weights, save_darknet_weights
    from betterconv import create_model
    from betterconv.tasks.detection import postprocess

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix="yolov2_speed_"))
    weights = work / "yolov2-voc.weights"
    save_darknet_weights(calibrate_batch_norm(create_model("yolov2"), (SIZE, SIZE), args.seed), weights)

    model = create_model("yolov2").eval()
    load_darknet_weights(model, weights)
    fused = fuse_batch_norm(model).to(memory_format=torch.channels_last)  # a copy
    onnx_path = work / "yolov2.onnx"
    export_onnx(model, onnx_path, (3, SIZE, SIZE), dynamic_batch=False)
    session = ort_session(onnx_path, args.threads)
    ncnn_path = work / "yolov2.param"
    export_ncnn(model, ncnn_path, (3, SIZE, SIZE))
    ncnn_model = NcnnModel(ncnn_path, threads=args.threads)
    int8_path = work / "yolov2_int8.onnx"
    calib_files = sorted(IMAGE.parent.glob("*.jpg"))[:args.calibration_images]
    quantize_onnx_static(onnx_path, int8_path, calibration_images(calib_files, (SIZE, SIZE)), check=False)
    session_int8 = ort_session(int8_path, args.threads)
    fused_bf16 = fuse_batch_norm(model).to(torch.bfloat16, memory_format=torch.channels_last)
    net = cv2.dnn.readNetFromDarknet(str(CFG), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    # the same network with OpenCV's Winograd F(6x6,3x3) 3x3 kernels switched off: its direct convolution
    net_direct = cv2.dnn.readNetFromDarknet(str(CFG), str(weights))
    net_direct.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net_direct.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net_direct.enableWinograd(False)
    darknet = darknet_network(CFG, weights)

    # one real image, resized to 416x416 without letterboxing (darknet's YOLOv2 test path), RGB in [0, 1]
    image = np.asarray(Image.open(IMAGE).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255
    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()  # (1, 3, 416, 416)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    blob = x.numpy()  # OpenCV takes the same NCHW blob
    # each 3x3 layer of the fused channels-last model: the fastest of direct / Winograd F(2x2,3x3) / F(4x4,3x3),
    # timed here on its real input
    winograd, winograd_layers = winograd_convolutions(fused, x_cl)

    # --- the same network in every engine: compare the region layer's decoded values
    a, c = model.num_anchors, model.num_classes
    with torch.inference_mode():
        raw = model(x)  # (1, A*(5+C), 13, 13)
    t = raw[0].view(a, 5 + c, 13, 13)  # darknet's layout: per anchor, per entry, a 13x13 plane
    ours = torch.cat([t[:, :2].sigmoid(), t[:, 2:4], t[:, 4:5].sigmoid(), t[:, 5:].softmax(1)], 1)
    dk = torch.from_numpy(darknet(x[0].numpy(), raw.numel())).view(a, 5 + c, 13, 13)
    cv_out = torch.from_numpy(_opencv_forward(net, blob))  # (13*13*A, 5+C)
    grid_y, grid_x = torch.meshgrid(torch.arange(13.0), torch.arange(13.0), indexing="ij")
    anchors = torch.as_tensor(model.anchors, dtype=torch.float32)  # (A, 2) in grid cells
    ours_cv = torch.stack([(grid_x + ours[:, 0]) / 13, (grid_y + ours[:, 1]) / 13,
                           t[:, 2].exp() * anchors[:, 0, None, None] / 13,
                           t[:, 3].exp() * anchors[:, 1, None, None] / 13,
                           ours[:, 4]], 1)  # (A, 5, 13, 13): x, y, w, h relative to the image, objectness
    ours_cv = ours_cv.permute(2, 3, 0, 1).reshape(-1, 5)  # OpenCV's rows: (y, x, anchor)
    agreement = {"darknet_max_rel_diff": float(((dk - ours).abs() / ours.abs().clamp(min=1)).max()),
                 # OpenCV's rows: x, y, w, h (relative to the image), objectness, then thresholded class scores
                 "opencv_max_rel_diff_xywh_objectness": float(((cv_out[:, :5] - ours_cv).abs()
                                                               / ours_cv.abs().clamp(min=1)).max()),
                 "onnxruntime_max_abs_diff_raw": float(np.abs(session.run(None, {session.get_inputs()[0].name: blob})[0]
                                                              - raw.numpy()).max())}
    with torch.inference_mode():
        others = {"onnxruntime int8": torch.from_numpy(session_int8.run(None, {session_int8.get_inputs()[0].name:
                                                                               blob})[0]),
                   "bf16": fused_bf16(x_cl.to(torch.bfloat16)).float(),
                   "winograd fp32": winograd(x_cl), "ncnn fp32": ncnn_model(x)}
    reference = postprocess(raw, model.anchors, c, SIZE, conf_thresh=0.25)[0]
    for key, out in others.items():
        found = postprocess(out, model.anchors, c, SIZE, conf_thresh=0.25)[0]
        iou = box_iou(reference["boxes"], found["boxes"])  # (float detections, this engine's detections)
        iou[reference["labels"][:, None] != found["labels"][None, :]] = 0
        agreement[f"{key}_detections_found"] = float((iou.max(1).values >= 0.5).float().mean()) \
            if len(found["boxes"]) else 0.0
        agreement[f"{key}_max_abs_diff_raw"] = float((out - raw).abs().max())
    agreement["float_detections_conf_0.25"] = len(reference["boxes"])
    print("agreement with betterconv:", json.dumps(agreement))

    engines = [
        Timed("betterconv eager fp32", torch_call(model, x)),
        Timed("betterconv fused + channels-last", torch_call(fused, x_cl)),
        Timed("betterconv onnxruntime fp32", ort_call(session, blob)),
        Timed("betterconv fused + Winograd fp32", torch_call(winograd, x_cl)),
        Timed("betterconv ncnn fp32", lambda: ncnn_model(x)),
        Timed("betterconv onnxruntime int8", ort_call(session_int8, blob)),
        Timed("betterconv fused + channels-last bf16", torch_call(fused_bf16, x_cl.to(torch.bfloat16))),
        Timed("opencv dnn", lambda: _opencv_forward(net, blob)),
        Timed("opencv dnn, Winograd off", lambda: _opencv_forward(net_direct, blob)),
        Timed("darknet (libdarknet)", lambda: darknet(x[0].numpy(), raw.numel())),
    ]
    heads = {thresh: Timed(f"decode + NMS (conf {thresh})",
                           lambda thresh=thresh: postprocess(raw, model.anchors, c, SIZE, conf_thresh=thresh))
             for thresh in (0.005, 0.25)}
    # each engine's calls in one block after its own warm-up: an engine's busy-waiting threads (onnxruntime with
    # spinning, PyTorch's OpenMP) must not compete with the next engine's call, as they do in interleaved rounds
    for _ in range(args.blocks):
        time_in_blocks(engines + list(heads.values()), 1, args.rounds, None)
    for e in engines:
        print(f"{e.variant}: median {statistics.median(e.wall):.1f} ms over {len(e.wall)} calls")
    median = {e.variant: statistics.median(e.wall) for e in engines + list(heads.values())}
    ours_best = min(("betterconv eager fp32", "betterconv fused + channels-last", "betterconv onnxruntime fp32",
                     "betterconv fused + Winograd fp32", "betterconv ncnn fp32"), key=median.get)
    ours_any = min((e.variant for e in engines if e.variant.startswith("betterconv")), key=median.get)
    eager = median["betterconv eager fp32"]
    with torch.inference_mode():
        candidates = {thresh: sum(int((d["scores"] > 0).sum()) for d in postprocess(raw, model.anchors, c, SIZE,
                                                                                    conf_thresh=thresh))
                      for thresh in heads}
    summary = {
        "fastest_betterconv": ours_best,
        "speedup_vs_opencv": median["opencv dnn"] / median[ours_best],
        "speedup_vs_darknet": median["darknet (libdarknet)"] / median[ours_best],
        "fastest_any_precision": ours_any,
        "fastest_any_precision_speedup_vs_opencv": median["opencv dnn"] / median[ours_any],
        "eager_speedup_vs_opencv": median["opencv dnn"] / eager,
        "eager_speedup_vs_darknet": median["darknet (libdarknet)"] / eager,
        "decode_nms_share_of_eager_forward": {str(t): median[h.variant] / eager for t, h in heads.items()},
        "decode_nms_share_of_fastest_forward": {str(t): median[h.variant] / median[ours_best]
                                                for t, h in heads.items()},
        "detections_kept": {str(t): n for t, n in candidates.items()},
    }
    print(json.dumps(summary, indent=2))
    report = {
        "benchmark": "bench_yolov2_speed", "model": "yolov2 (yolov2-voc.cfg, 20 classes), 416x416, batch 1",
        "weights": "seeded YOLOv2 with calibrated batch norm, written as a darknet .weights file; the same file "
                   "loaded by every engine",
        "command": "python benchmarks/bench_yolov2_speed.py " + shlex.join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "machine": machine_info(args.threads),
        "versions": {**versions(), "opencv": cv2.__version__, "darknet": "Debian package libdarknet.so"},
        "rounds": args.rounds, "blocks": args.blocks, "agreement": agreement, "winograd_layers": winograd_layers,
        "median_ms": {k: round(v, 2) for k, v in median.items()},
        "min_ms": {e.variant: round(min(e.wall), 2) for e in engines + list(heads.values())},
        "summary": summary,
    }
    out = ROOT / "benchmarks" / "results" / "bench_yolov2_speed.json"
    write_atomic(out, json.dumps(report, indent=2).encode())
    print(f"wrote {out}")


def _opencv_forward(net, blob):
    net.setInput(blob)
    return net.forward()


if __name__ == "__main__":
    main()
