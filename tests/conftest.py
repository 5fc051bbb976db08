"""Helpers shared by the test files: the reference data folder, the command-line runner, small models trained once
through the command line, and the small utilities several files need (thread count, parameter and MAC counts,
randomised batch-norm statistics, random images, Coral's test photos, a darknet cfg reader)."""
import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from betterconv import create_model
from betterconv.cli import main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    return SHARED_DATA


# --- threads -----------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def torch_threads(n: int):
    """`torch`'s intra-op thread count set to `n` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a whole module (`pytestmark = pytest.mark.usefixtures("one_thread")`): small models
    gain nothing from a second thread, and two threads that wait on each other are slowed down badly when another
    process keeps a core busy."""
    with torch_threads(1):
        yield


# --- the command line --------------------------------------------------------------------------------------------

@pytest.fixture
def cli(capsys):
    """`cli(*argv)` runs `betterconv.cli.main` on argv (each item passed through `str`) and returns (exit code,
    stdout, stderr) of that call alone."""
    def run(*argv):
        capsys.readouterr()  # drop what was printed before this call
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def train_run(tmp_path_factory, *argv) -> Path:
    """`betterconv train ...` (argv after `train`, single-process data loading) into a new folder, which is
    returned; the command must succeed."""
    run = tmp_path_factory.mktemp("run")
    code = main(["train", *map(str, argv), "--workers", "0", "--output", str(run)])
    assert code == 0
    return run


# --- models trained once, for the train/eval/predict command tests ------------------------------------------------

CIFAR = SHARED_DATA / "cifar10-test"


@pytest.fixture(scope="session")
def two_classes(tmp_path_factory) -> Path:
    """200 airplanes and 200 frogs of CIFAR-10 (links, not copies): 320 train, 80 test by the derived split."""
    if not CIFAR.is_dir():
        pytest.skip(f"reference data {CIFAR} is absent")
    root = tmp_path_factory.mktemp("two")
    for c in ("airplane", "frog"):
        (root / c).mkdir()
        for i in range(200):
            os.symlink(CIFAR / c / f"{i:04d}.jpg", root / c / f"{i:04d}.jpg")
    return root


@pytest.fixture(scope="session")
def trained_cls(two_classes, tmp_path_factory) -> tuple[Path, Path]:
    """MobileNetV2 0.35x trained 5 epochs on `two_classes` at 32x32, on one thread: (data folder, run folder)."""
    with torch_threads(1):
        run = train_run(tmp_path_factory, "cls", "--model", "mobilenet_v2", "--width", "0.35", "--data",
                        f"folder:{two_classes}", "--input-size", "32", "--epochs", "5", "--batch-size", "16",
                        "--optimizer", "sgd", "--schedule", "cosine", "--lr", "0.02", "--seed", "0")
    return two_classes, run


@pytest.fixture(scope="session")
def trained_det(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny YOLOv2 trained one epoch on coco8 at 128x128: (the reference data folder, run folder)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    run = train_run(tmp_path_factory, "det", "--model", "yolov2_tiny", "--data", f"yolo:{SHARED_DATA / 'coco8'}",
                    "--epochs", "1", "--batch-size", "2", "--input-size", "128", "--no-multiscale",
                    "--warmup-steps", "0")
    return SHARED_DATA, run


SEG_COLOURS = [(20, 20, 20), (230, 40, 40), (40, 200, 60)]


def make_seg_dataset(root: Path, n: int = 6, size=(48, 64), seed: int = 0) -> Path:
    """A folder segmentation dataset (classes.txt, {train,val}/{images,masks}): `n` images a split of a red and a
    green square (classes 1 and 2) on a dark background, the top two rows of each mask ignored (255)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nred\ngreen\n")
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            mask = np.zeros(size, np.uint8)
            for c in (1, 2):
                y, x = rng.integers(0, size[0] - 16), rng.integers(0, size[1] - 16)
                mask[y:y + 16, x:x + 16] = c
            mask[:2] = 255  # an ignored band
            image = np.array(SEG_COLOURS, np.uint8)[np.where(mask == 255, 0, mask)]
            Image.fromarray(image).save(root / split / "images" / f"{split}{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}{i}.png")
    return root


@pytest.fixture(scope="session")
def trained_seg(tmp_path_factory) -> tuple[Path, Path]:
    """DeepLabv3 MobileNetV2 0.35x trained 2 epochs on `make_seg_dataset`: (data folder, run folder)."""
    root = make_seg_dataset(tmp_path_factory.mktemp("data"))
    run = train_run(tmp_path_factory, "seg", "--model", "deeplabv3_mobilenet_v2", "--arg", "width_mult=0.35",
                    "--data", f"folder:{root}", "--epochs", "2", "--batch-size", "2", "--crop-size", "32", "--lr",
                    "0.01")
    return root, run


# --- models ------------------------------------------------------------------------------------------------------

def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int = 224) -> int:
    """Multiply-accumulates (FLOPs / 2, as torch's flop counter counts them) of one size x size image, on the
    model's own device (a model built on the meta device costs no memory)."""
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=device))
    return counter.get_total_flops() // 2


def randomise_batch_norm(model: nn.Module, size=None, seed: int = 0) -> nn.Module:
    """Batch-norm statistics measured on random images of `size` (C, H, W) in train mode, so that every layer's
    activations are of order one (randomly initialised deep networks otherwise fade to almost nothing and a wrong
    layer would hardly show in the output); without `size`, random statistics. Then random affine parameters, so
    that folding is far from an identity. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    if size is not None:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches seen
        model.train()
        with torch.no_grad():
            model(torch.rand(4, *size, generator=g) * 4 - 2)
        for m in norms:
            m.momentum = 0.1
    with torch.no_grad():
        for m in norms:
            n = m.num_features
            if size is None:
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
            m.bias.copy_(0.4 * torch.rand(n, generator=g) - 0.2)
    return model.eval()


def build_randomised(name: str, kwargs: dict, size=(3, 64, 64)) -> nn.Module:
    """The registered model `name` built with `kwargs` (seed 0), batch-norm statistics measured at `size`."""
    torch.manual_seed(0)
    return randomise_batch_norm(create_model(name, **kwargs), size)


# --- images ------------------------------------------------------------------------------------------------------

def save_random_image(path: Path, height: int, width: int, seed: int = 0) -> None:
    """A random RGB image at `path` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def coral_photos() -> list[Path]:
    """The photos among Coral's test images (their segmentation masks left out); skips when they are absent."""
    folder = SHARED_DATA / "coral" / "images"
    if not folder.is_dir():
        pytest.skip(f"reference data folder {folder} is absent")
    return sorted(p for p in folder.iterdir() if p.suffix in (".bmp", ".jpg", ".png") and "mask" not in p.stem)


# --- darknet cfg files, read independently of betterconv -----------------------------------------------------------

DARKNET_DIR = SHARED_DATA / "darknet"


def read_sections(path: Path) -> list[tuple[str, dict[str, str]]]:
    """A darknet .cfg as darknet's parser reads it: [section] headers and key=value lines, every space removed,
    lines starting with # or ; skipped, the first of a repeated key kept."""
    sections: list[tuple[str, dict[str, str]]] = []
    for line in path.read_text().splitlines():
        line = "".join(line.split())  # darknet's strip(): every space and tab goes
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append((line[1:-1], {}))
        else:
            key, value = line.split("=", 1)
            sections[-1][1].setdefault(key, value)
    return sections


def cfg_facts(path: Path) -> dict:
    """What darknet's size arithmetic (parser.c, convolutional_layer.c, maxpool_layer.c) implies for a cfg: per conv
    (filters, in_channels / groups, size, batch_normalize), learnable parameters (rolling statistics are buffers),
    convolution MACs, the output shape and the input size (H, W)."""
    (_, net), *layers = read_sections(path)
    c, h, w = int(net["channels"]), int(net["height"]), int(net["width"])
    shapes: list[tuple[int, int, int]] = []
    convs, params, macs = [], 0, 0
    for kind, opt in layers:
        if kind == "convolutional":
            n, k, s = int(opt["filters"]), int(opt["size"]), int(opt.get("stride", 1))
            g = int(opt.get("groups", 1))
            pad = k // 2 if int(opt.get("pad", 0)) else int(opt.get("padding", 0))
            bn = int(opt.get("batch_normalize", 0))
            h, w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
            convs.append((n, c // g, k, bn))
            params += n * (c // g) * k * k + (2 * n if bn else n)
            macs += n * (c // g) * k * k * h * w  # darknet's BFLOPs / 2
            c = n
        elif kind == "maxpool":
            s = int(opt.get("stride", 1))
            k = int(opt.get("size", s))
            pad = int(opt.get("padding", k - 1))
            h, w = (h + pad - k) // s + 1, (w + pad - k) // s + 1
        elif kind == "avgpool":
            h = w = 1
        elif kind == "route":
            picked = [shapes[i if i >= 0 else len(shapes) + i] for i in map(int, opt["layers"].split(","))]
            c, h, w = sum(p[0] for p in picked), picked[0][1], picked[0][2]
        elif kind == "reorg":
            s = int(opt["stride"])
            c, h, w = c * s * s, h // s, w // s
        elif kind not in ("region", "softmax"):
            raise AssertionError(f"test reader does not know [{kind}]")
        shapes.append((c, h, w))
    return {"convs": convs, "params": params, "macs": macs, "shape": (c, h, w), "size": (int(net["height"]),
                                                                                       int(net["width"]))}
