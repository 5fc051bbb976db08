"""`predict det` and `predict seg` on a video: a short clip made here with PyAV (moving coloured rectangles), tiny
random models. The annotated video keeps the clip's frame count, size and rate; the JSON lines hold one entry per
frame, equal to what `predict` gives for the same frames decoded independently and saved as PNG images; broken
inputs and outputs in the way give one error line and leave every file as it was."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from betterconv.models.info import IMAGENET_MEAN, IMAGENET_STD
from betterconv.weights import create_model, save_weights

av = pytest.importorskip("av", reason="PyAV (pip install 'betterconv[video]') is not installed")

from betterconv.data.video import FrameReader, VideoWriter, probe_video  # noqa: E402  (needs PyAV to be useful)

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, HEIGHT, WIDTH, RATE = 24, 64, 96, 24
DET_CLASSES = ["red", "green", "blue"]
SEG_CLASSES = ["background", "red", "green"]


def clip_frames(n=FRAMES, height=HEIGHT, width=WIDTH):
    """`n` RGB frames (H, W, 3) uint8: a red and a green rectangle crossing a grey background, a blue one falling."""
    frames = []
    for i in range(n):
        a = np.full((height, width, 3), 90, np.uint8)
        x = 2 * i % (width - 20)
        a[10:30, x:x + 20] = (220, 30, 30)
        a[36:56, width - 24 - x:width - 4 - x] = (30, 200, 40)
        a[i % (height - 12):i % (height - 12) + 12, 40:52] = (30, 40, 210)
        frames.append(a)
    return frames


def write_clip(path, frames, rate=RATE, codec="mpeg4"):
    """The frames encoded with PyAV directly (not with betterconv's writer), frame i at i / rate."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for i, a in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(a, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def decode(path):
    """(frames as RGB arrays, width, height, average rate) of a video, decoded with PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context.width, stream.codec_context.height, stream.average_rate


@pytest.fixture
def clip(tmp_path):
    return write_clip(tmp_path / "clip.mp4", clip_frames())


@pytest.fixture
def frames_as_images(clip, tmp_path):
    """The clip's frames decoded independently of betterconv and saved losslessly as 0000.png, 0001.png, ..."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, a in enumerate(decode(clip)[0]):
        Image.fromarray(a).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture
def det_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("yolov2_tiny", num_classes=len(DET_CLASSES), width_mult=0.25)
    path = tmp_path / "weights" / "det.safetensors"
    path.parent.mkdir()
    save_weights(model, path, class_names=DET_CLASSES, input_size=(3, 64, 64), mean=(0.0,) * 3, std=(1.0,) * 3)
    return path


@pytest.fixture
def seg_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("deeplabv3_mobilenet_v2", num_classes=len(SEG_CLASSES), width_mult=0.35)
    path = tmp_path / "weights" / "seg.safetensors"
    path.parent.mkdir()
    save_weights(model, path, class_names=SEG_CLASSES, input_size=(3, 32, 32), mean=IMAGENET_MEAN,
                 std=IMAGENET_STD)
    return path


def one_error_line(code, err, *words):
    lines = err.replace("\r", "\n").strip().splitlines()
    assert code == 2, err
    assert lines and lines[-1].startswith("betterconv: error: ") and "Traceback" not in err, err
    assert all(w in lines[-1] for w in words), lines[-1]


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def drawn_as(video_frames, images, plain, tolerance=5.0):
    """Each decoded frame within `tolerance` luma levels (mean absolute difference) of its drawn image, and closer
    to it than to the frame as it was before drawing (`plain`): the output is lossy-encoded (its chroma at half
    resolution blurs thin coloured lines, hence luma), a missing or misplaced drawing is far above it."""
    def luma(a):  # an RGB array or an image file
        return np.asarray((Image.fromarray(a) if isinstance(a, np.ndarray) else Image.open(a)).convert("L"), float)

    assert len(video_frames) == len(images) == len(plain)
    for v, i, p in zip(video_frames, images, plain):
        error, undrawn = np.abs(luma(v) - luma(i)).mean(), np.abs(luma(v) - luma(p)).mean()
        assert error < tolerance and error < undrawn / 2, (error, undrawn)
    return True


# --- the library's reader and writer -------------------------------------------------------------------------------

def test_reader_gives_the_frames_pyav_decodes_and_stops_its_thread(clip):
    info = probe_video(clip)
    assert (info.width, info.height, info.rate, info.frames) == (WIDTH, HEIGHT, RATE, FRAMES)
    expected = decode(clip)[0]
    with FrameReader(info, max_frames=5, buffer=2) as reader:
        frames = list(reader)
    assert [f.index for f in frames] == list(range(5))
    assert [f.time for f in frames] == pytest.approx([i / RATE for i in range(5)])
    assert all(np.array_equal(f.pixels, e) for f, e in zip(frames, expected))
    assert not reader._thread.is_alive()
    with FrameReader(info, buffer=2) as reader:  # left after one frame: the thread waiting on a full queue ends
        next(iter(reader))
    assert not reader._thread.is_alive()


def test_writer_keeps_size_and_rate_and_writes_nothing_on_failure(tmp_path):
    frames = clip_frames(6, 33, 47)  # odd sides: 4:2:0 H.264 cannot take them, MPEG-4 can
    with VideoWriter(tmp_path / "odd.mp4", 47, 33, RATE) as writer:
        for a in frames:
            writer.write(a)
        writer.close()
    decoded, width, height, rate = decode(tmp_path / "odd.mp4")
    assert (len(decoded), width, height, rate) == (6, 47, 33, RATE)
    with pytest.raises(KeyError):
        with VideoWriter(tmp_path / "failed.mp4", 47, 33, RATE) as writer:
            writer.write(frames[0])
            raise KeyError("a failure midway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]  # no failed.mp4, no temporary file


# --- predict det ---------------------------------------------------------------------------------------------------

def test_predict_det_on_a_video_equals_predict_det_on_its_frames(cli, tmp_path, clip, frames_as_images, det_weights):
    common = ["--weights", det_weights, "--input-size", "64", "--conf-thresh", "0.1", "--device", "cpu"]
    code, out, err = cli("predict", "det", *common, clip, "--output", tmp_path / "out.mp4", "--jsonl",
                         tmp_path / "out.jsonl")
    assert code == 0, err
    assert "frames/s end to end" in err and "frames/s inference alone" in err
    frames, width, height, rate = decode(tmp_path / "out.mp4")
    assert (len(frames), width, height, rate) == (FRAMES, WIDTH, HEIGHT, RATE)
    lines = read_lines(tmp_path / "out.jsonl")
    assert [r["frame"] for r in lines] == list(range(FRAMES))
    assert [r["time"] for r in lines] == pytest.approx([i / RATE for i in range(FRAMES)])

    code, _, err = cli("predict", "det", *common, frames_as_images, "--output", tmp_path / "images")
    assert code == 0, err
    from_images = json.loads((tmp_path / "images" / "detections.json").read_text())
    assert sum(len(r["detections"]) for r in lines) == len(from_images) > 0
    for r in lines:  # image_id: the frame's index, as the images' digit-only stems give it
        assert r["detections"] == [d for d in from_images if d["image_id"] == r["frame"]]
    # the boxes drawn on the video are the ones drawn on the images
    assert drawn_as(frames, sorted((tmp_path / "images").glob("*.png")), sorted(frames_as_images.iterdir()))


def test_predict_det_json_lines_on_stdout_and_max_frames(cli, tmp_path, clip, det_weights):
    argv = ["predict", "det", "--weights", det_weights, "--input-size", "64", "--conf-thresh", "0.1", "--device",
            "cpu", clip, "--output", tmp_path / "out.mkv", "--max-frames", "5", "--json"]
    code, out, err = cli(*argv)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]  # stdout holds the JSON lines alone
    assert [r["frame"] for r in lines] == list(range(5))
    assert len(decode(tmp_path / "out.mkv")[0]) == 5
    one_error_line(*cli(*argv)[::2], "out.mkv", "exists", "--overwrite")
    code, again, err = cli(*argv, "--overwrite")
    assert code == 0 and again == out, err


# --- predict seg ---------------------------------------------------------------------------------------------------

def test_predict_seg_on_a_video_equals_predict_seg_on_its_frames(cli, tmp_path, clip, frames_as_images,
                                                                 seg_weights):
    common = ["--weights", seg_weights, "--device", "cpu"]
    code, _, err = cli("predict", "seg", *common, clip, "--output", tmp_path / "out.mp4", "--jsonl",
                       tmp_path / "out.jsonl")
    assert code == 0, err
    frames, width, height, rate = decode(tmp_path / "out.mp4")
    assert (len(frames), width, height, rate) == (FRAMES, WIDTH, HEIGHT, RATE)
    lines = read_lines(tmp_path / "out.jsonl")
    assert [r["frame"] for r in lines] == list(range(FRAMES))

    code, _, err = cli("predict", "seg", *common, frames_as_images, "--output", tmp_path / "images")
    assert code == 0, err
    for r in lines:
        label = np.asarray(Image.open(tmp_path / "images" / f"{r['frame']:04d}.png"))
        counts = np.bincount(label.ravel(), minlength=len(SEG_CLASSES))
        assert r["pixels"] == {name: int(n) for name, n in zip(SEG_CLASSES, counts) if n}
    assert drawn_as(frames, sorted((tmp_path / "images").glob("*_overlay.png")), sorted(frames_as_images.iterdir()))


# --- what is refused -----------------------------------------------------------------------------------------------

def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def noise_clip(path):
    """A clip of random frames whose middle quarter of bytes is overwritten with random bytes: the header and the
    first frames read, FFmpeg's decoder rejects a packet later on."""
    rng = np.random.default_rng(0)
    write_clip(path, [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(FRAMES)])
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 4:n // 2] = rng.integers(0, 256, n // 2 - n // 4, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("case", ["random bytes", "truncated", "corrupt midway", "no video stream", "output exists",
                                  "output is the input", "jsonl is the output", "video with images"])
def test_bad_inputs_and_outputs_give_one_line_and_write_nothing(cli, tmp_path, clip, det_weights, case):
    source, output, extra, more_inputs = clip, tmp_path / "out.mp4", [], []
    if case == "random bytes":
        source = tmp_path / "broken.mp4"
        source.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        words = ["cannot read video", "broken.mp4"]
    elif case == "truncated":
        source = tmp_path / "cut.mp4"
        source.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
        words = ["cut.mp4"]
    elif case == "corrupt midway":
        source, extra = noise_clip(tmp_path / "noise.mp4"), ["--jsonl", tmp_path / "out.jsonl"]
        words = ["cannot decode video", "noise.mp4", "at frame"]
    elif case == "no video stream":
        source = _audio_only(tmp_path / "sound.mkv")
        words = ["sound.mkv", "has no video stream"]
    elif case == "output exists":
        output.write_bytes(b"an earlier video")
        words = ["out.mp4", "exists", "--overwrite"]
    elif case == "output is the input":
        output, extra, words = clip, ["--overwrite"], ["would overwrite the input"]
    elif case == "jsonl is the output":
        extra, words = ["--jsonl", output], ["--jsonl", "is also --output"]
    else:
        more_inputs, words = [tmp_path / "frame.png"], ["alone"]
        Image.fromarray(clip_frames(1)[0]).save(tmp_path / "frame.png")
    before = snapshot(tmp_path)
    code, out, err = cli("predict", "det", "--weights", det_weights, "--input-size", "64", "--device", "cpu",
                         source, *more_inputs, "--output", output, *extra)
    one_error_line(code, err, *words)
    assert snapshot(tmp_path) == before  # nothing written, nothing half-written, nothing replaced


def test_video_options_with_images_are_refused(cli, tmp_path, seg_weights):
    Image.fromarray(clip_frames(1)[0]).save(tmp_path / "frame.png")
    code, _, err = cli("predict", "seg", "--weights", seg_weights, tmp_path / "frame.png", "--output",
                       tmp_path / "out", "--jsonl", tmp_path / "x.jsonl")
    one_error_line(code, err, "--jsonl", "video input")
