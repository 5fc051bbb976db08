"""Video files: the one way betterconv reads frames from a video and writes an annotated one, both with PyAV
(FFmpeg's libraries; the optional `video` extra).

Reading (`probe_video`, `FrameReader`): a decoding thread feeds RGB frames through a bounded queue, so that
decoding the next frames overlaps with whatever the caller does with the current one (a network's forward pass),
as darknet's `detector demo` overlaps its fetch and detect threads. Writing (`VideoWriter`): H.264 (libx264) where
PyAV's FFmpeg has it and the frame size allows it, MPEG-4 part 2 otherwise, into a temporary file beside the
target that is renamed into place only once the last frame is encoded, so that a failure never leaves a
half-written video. Every failure is a one-line `BetterConvError` naming the file.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BetterConvError, first_line
from ..files import temporary_path

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
# the containers an annotated video is written to, by the output's suffix (the temporary file beside it has
# another suffix, so FFmpeg is told the format instead of guessing it from the name)
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _reason(error: BaseException) -> str:
    """FFmpeg's words for `error` (its strerror, without the errno and the file that the messages name anyway)."""
    return getattr(error, "strerror", None) or first_line(error)


def _av() -> Any:
    """PyAV, imported here and not at the top: it is an optional dependency (`pip install betterconv[video]`),
    needed by video input only."""
    try:
        import av
    except ImportError:
        raise BetterConvError("video input needs PyAV: pip install 'betterconv[video]' (or pip install av)") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's first video stream says of itself: frame size, average frame rate (frames per
    second, exact), the frame count its container records (None when it records none) and the codec."""
    path: Path
    width: int
    height: int
    rate: Fraction
    frames: int | None
    codec: str


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its index from 0, its presentation time in seconds and its pixels, RGB (H, W, 3) uint8."""
    index: int
    time: float
    pixels: np.ndarray


def _open_input(av: Any, path: Path) -> tuple[Any, Any]:
    """The opened container and its first video stream; one-line errors for a missing, unreadable or corrupt file
    and for a file without a video stream."""
    if not path.is_file():
        raise BetterConvError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise BetterConvError(f"cannot read video {path}: {_reason(e)}") from None
    if not container.streams.video:
        container.close()
        raise BetterConvError(f"{path} has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise BetterConvError(f"{path}: PyAV's FFmpeg has no decoder for its video codec")
    return container, stream


def _rate(stream: Any) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def probe_video(path: str | Path) -> VideoInfo:
    """The `VideoInfo` of `path`, read from its header (no frame is decoded). A missing or unreadable file, a file
    without a video stream or without a frame rate is a one-line `BetterConvError`."""
    path = Path(path)
    container, stream = _open_input(_av(), path)
    try:
        rate = _rate(stream)
        if rate is None:
            raise BetterConvError(f"{path}: its video stream has no frame rate")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width < 1 or height < 1:
            raise BetterConvError(f"{path}: its video stream has no frame size (a broken header)")
        return VideoInfo(path, width, height, rate, stream.frames or None, stream.codec_context.name)
    finally:
        container.close()


_END = object()  # the decoding thread's last item


class FrameReader:
    """The frames of a video, decoded by a background thread that keeps at most `buffer` of them ahead of the
    caller. Iterate over it inside a `with` block (leaving the block stops the thread and closes the file); at
    most `max_frames` frames. Frames are converted to RGB at the size `probe_video` read (a stream that changes
    size midway is scaled back to it). A frame that cannot be decoded is a one-line `BetterConvError`."""

    def __init__(self, info: VideoInfo, max_frames: int | None = None, buffer: int = 8) -> None:
        self.info, self.max_frames = info, max_frames
        self._queue: queue.Queue = queue.Queue(maxsize=buffer)
        self._stop = threading.Event()
        # a thread, not a process, is enough: PyAV releases the GIL while FFmpeg demuxes, decodes and converts
        # colours, and torch releases it in its kernels, so decoding runs beside the network's forward pass
        self._thread = threading.Thread(target=self._decode, name="betterconv-decode", daemon=True)

    def __enter__(self) -> FrameReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the decoding thread (it may be waiting on a full queue: emptied so that it sees the stop)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def _put(self, item: object) -> bool:
        """Queue `item`, waiting while the queue is full; False once the reader is closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        av, info = _av(), self.info
        try:
            container, stream = _open_input(av, info.path)
        except BetterConvError as e:
            self._put(e)
            return
        index = 0
        try:
            stream.thread_type = "AUTO"  # FFmpeg's own frame and slice threads
            for frame in container.decode(stream):
                pixels = frame.to_ndarray(format="rgb24", width=info.width, height=info.height)  # (H, W, 3)
                time = float(frame.time) if frame.time is not None else index / float(info.rate)
                if not self._put(VideoFrame(index, time, pixels)):
                    return
                index += 1
                if index == self.max_frames:
                    break
            self._put(_END)
        except Exception as e:  # FFmpeg's errors and any other: handed to the reading side, which raises it
            self._put(BetterConvError(f"cannot decode video {info.path} at frame {index}: {_reason(e)}"))
        finally:
            container.close()

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._thread.ident is None:
            raise RuntimeError("FrameReader is iterated inside its `with` block")
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _encoder(av: Any, width: int, height: int) -> tuple[str, dict[str, str]]:
    """The codec and its options: libx264 where PyAV's FFmpeg has it and both sides are even (its 4:2:0 chroma
    needs them even), MPEG-4 part 2 otherwise (any size, in every FFmpeg build)."""
    if "libx264" in av.codecs_available and width % 2 == 0 and height % 2 == 0:
        # CRF 20: visually close to the frames drawn; veryfast: encoding is part of the frame rate users see
        return "libx264", {"crf": "20", "preset": "veryfast"}
    # a fixed quantiser (ffmpeg's -q:v 3; FF_QP2LAMBDA = 118) instead of the encoder's 200 kbit/s default
    return "mpeg4", {"flags": "+qscale", "global_quality": str(3 * 118)}


class VideoWriter:
    """RGB frames (H, W, 3) uint8 of one size encoded into `path` at `rate` frames per second (frame i at time
    i / rate), in the container its suffix names (`OUTPUT_FORMATS`). Frames go to a temporary file beside `path`
    (`files.temporary_path`), renamed over `path` by `close()`; `abort()` (or leaving a `with` block on an
    exception) removes it. `codec` names the encoder used."""

    def __init__(self, path: str | Path, width: int, height: int, rate: Fraction) -> None:
        self._av = av = _av()
        self.path = Path(path)
        fmt = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise BetterConvError(f"{self.path}: an annotated video is written to a "
                                  f"{', '.join(OUTPUT_FORMATS)} file; name it so")
        self.width, self.height, self.frames = width, height, 0
        self.codec, options = _encoder(av, width, height)
        self._tmp = temporary_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), "w", format=fmt)
        except (av.FFmpegError, OSError) as e:
            raise BetterConvError(f"{self.path}: cannot write: {_reason(e)}") from None
        try:
            self._stream = self._container.add_stream(self.codec, rate=rate, options=options)
            self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        except (av.FFmpegError, ValueError) as e:
            self.abort()
            raise BetterConvError(f"{self.path}: cannot encode with {self.codec}: {_reason(e)}") from None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.abort()

    def _mux(self, frame: Any) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (self._av.FFmpegError, OSError) as e:
            raise BetterConvError(f"{self.path}: cannot encode frame {self.frames}: {_reason(e)}") from None

    def write(self, pixels: np.ndarray) -> None:
        """Encode one RGB frame (H, W, 3) uint8 of the writer's size."""
        if pixels.shape != (self.height, self.width, 3):
            raise BetterConvError(f"{self.path}: frame {self.frames} is {pixels.shape}, the video "
                                  f"({self.height}, {self.width}, 3)")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        frame.pts = self.frames  # in the stream's time base, 1 / rate: frame i at i / rate
        self._mux(frame)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder, close the file, make it durable and rename it over `path`."""
        try:
            self._mux(None)  # flush the frames the encoder holds back
            self._container.close()
            fd = os.open(self._tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        except (self._av.FFmpegError, OSError) as e:
            self.abort()
            raise BetterConvError(f"{self.path}: cannot finish the video: {_reason(e)}") from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and remove the temporary file; `path` is left as it was."""
        try:
            self._container.close()
        except Exception:  # a container that failed midway may fail to close too: it is removed anyway
            pass
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError:
            pass
