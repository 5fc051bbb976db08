"""What `predict det` and `predict seg` share for a video input: its options, the checks made before anything is
built, and the loop that decodes (in a background thread, `FrameReader`), predicts, draws and encodes each frame,
writes one JSON line per frame and reports the frame rates measured on the way."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..data.video import OUTPUT_FORMATS, VIDEO_EXTENSIONS, FrameReader, VideoInfo, VideoWriter, is_video_file, \
    probe_video
from ..errors import BetterConvError, first_line
from ..files import temporary_path
from ._common import check_suffix, positive_int, refuse_overwriting, warn

INPUTS_HELP = (f", or one video ({', '.join(VIDEO_EXTENSIONS)}; needs PyAV: pip install 'betterconv[video]'), "
               "annotated frame by frame into --output")


def output_help(drawn: str) -> str:
    """What --output holds for a video input, `drawn` saying what is drawn on each frame."""
    return (f"; for a video input, the video with {drawn} ({', '.join(OUTPUT_FORMATS)}; the input's frame size and "
            "rate; H.264 where FFmpeg has it and both sides are even, MPEG-4 otherwise), never the input")


def add_video_arguments(p: argparse.ArgumentParser, record: str) -> None:
    """The options of a video input; `record` says what each frame's JSON line holds."""
    p.add_argument("--jsonl", metavar="FILE",
                   help=f"video input: one JSON object per line and frame, {{\"frame\", \"time\" (seconds), {record}}}")
    p.add_argument("--json", action="store_true",
                   help="video input: print those JSON lines on stdout (and nothing else there)")
    p.add_argument("--max-frames", type=partial(positive_int, what="the number of frames"), metavar="N",
                   help="video input: the first N frames only")
    p.add_argument("--overwrite", action="store_true",
                   help="video input: replace an --output (and --jsonl) that exists (default: refuse)")


def video_input(specs: Sequence[str], args: argparse.Namespace) -> Path | None:
    """The video file among the positional inputs (by its suffix), None when they name images; then the
    video-only options are refused. A video with other inputs is a one-line `BetterConvError`."""
    videos = [s for s in specs if is_video_file(s)]
    if not videos:
        given = [f"--{k.replace('_', '-')}" for k in ("jsonl", "json", "max_frames") if getattr(args, k)]
        if given:
            raise BetterConvError(f"{', '.join(given)}: for a video input; images write their predictions to the "
                                  "--output folder")
        return None
    if len(specs) > 1:
        raise BetterConvError(f"a video is predicted on alone: {videos[0]} was given with {len(specs) - 1} other "
                              "input(s)")
    return Path(videos[0])


def check_video_outputs(args: argparse.Namespace, video: Path) -> VideoInfo:
    """The cheap checks, before a model is built: the output is a video file that replaces no input and, without
    --overwrite, nothing that exists; the same for --jsonl; then the input's header (`probe_video`)."""
    output = Path(args.output)
    check_suffix(output, tuple(OUTPUT_FORMATS), "an annotated video")
    outputs = [output] + ([Path(args.jsonl)] if args.jsonl else [])
    refuse_overwriting(outputs, [video, args.weights])
    if args.jsonl and os.path.realpath(args.jsonl) == os.path.realpath(output):
        raise BetterConvError(f"--jsonl {args.jsonl} is also --output; give the JSON lines a file of their own")
    for option, path in zip(("--output", "--jsonl"), outputs):
        if path.is_dir():
            raise BetterConvError(f"{option} {path} is a folder; a video input writes one file")
        if path.exists() and not args.overwrite:
            raise BetterConvError(f"{option} {path} exists; add --overwrite to replace it")
    return probe_video(video)


class _LinesFile:
    """JSON lines written to a temporary file beside `path`, renamed into place by `close()`; `abort()` removes
    it. `files.write_atomic` written line by line, by hand: a long video's lines need not all sit in memory."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, temporary_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.tmp, "w", encoding="utf-8")
        except OSError as e:
            raise BetterConvError(f"{path}: {e.strerror or first_line(e)}") from None

    def write(self, line: str) -> None:
        try:
            self.file.write(line + "\n")
        except OSError as e:
            raise BetterConvError(f"{self.path}: {e.strerror or first_line(e)}") from None

    def close(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise BetterConvError(f"{self.path}: {e.strerror or first_line(e)}") from None

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def predict_video(args: argparse.Namespace, info: VideoInfo, predict: Callable[[torch.Tensor], Any],
                  draw: Callable[[torch.Tensor, Any], torch.Tensor],
                  record: Callable[[int, Any], dict[str, Any]]) -> None:
    """Decode `info`'s video (at most --max-frames frames), and for each frame (3, H, W) uint8: `predict` it
    (timed: the inference alone), `draw(frame, prediction)` into the output video, and write
    {"frame", "time", **record(index, prediction)} as a JSON line to --jsonl and, with --json, to stdout. Files
    appear only complete. On stderr: a progress bar, then the frames per second end to end (decoding, inference,
    drawing and encoding, from the first frame asked for to the file closed) and of the inference alone."""
    lines = _LinesFile(Path(args.jsonl)) if args.jsonl else None
    total = info.frames  # the container's count, when it records one
    if args.max_frames:
        total = min(total, args.max_frames) if total else args.max_frames
    inference = 0.0
    start = time.perf_counter()
    try:
        with VideoWriter(args.output, info.width, info.height, info.rate) as writer, \
                FrameReader(info, args.max_frames) as frames, \
                tqdm(total=total, unit="frame", desc=info.path.name, file=sys.stderr, leave=False) as bar:
            for frame in frames:
                image = torch.from_numpy(frame.pixels).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W) uint8
                before = time.perf_counter()
                prediction = predict(image)  # on the CPU when it returns: the device's work is done
                inference += time.perf_counter() - before
                drawn = draw(image, prediction)
                writer.write(drawn.permute(1, 2, 0).numpy())  # (3, H, W) -> (H, W, 3)
                line = json.dumps({"frame": frame.index, "time": frame.time, **record(frame.index, prediction)})
                if lines:
                    lines.write(line)
                if args.json:
                    print(line, flush=True)
                bar.update()
            if writer.frames == 0:
                raise BetterConvError(f"{info.path}: no frame could be decoded")
            writer.close()
        if lines:
            lines.close()
    except BaseException:
        if lines:
            lines.abort()
        raise
    elapsed = time.perf_counter() - start
    n = writer.frames
    warn(f"{n} frames: {n / elapsed:.1f} frames/s end to end (decoding, inference, drawing, encoding), "
         f"{n / max(inference, 1e-9):.1f} frames/s inference alone")
    (warn if args.json else print)(
        f"wrote {args.output} ({n} frames, {info.width}x{info.height} at {float(info.rate):g} frames/s, "
        f"{writer.codec})" + (f" and {args.jsonl}" if args.jsonl else ""))
