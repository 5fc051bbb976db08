"""Image classification: IDX and folder datasets, transforms, loss and top-k evaluation, the weight EMA and its
trainer hook, and `betterconv train/eval/predict cls` end to end on a small real CIFAR-10 subset."""
import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from betterconv.cli import build_parser
from betterconv.data.classification import (FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, classification_dataset,
                                            eval_transform, read_idx, train_transform, write_idx)
from betterconv.engine import Trainer, TrainConfig
from betterconv.errors import BetterConvError
from betterconv.tasks.classification import (ModelEMA, classification_loss, ema_decay, evaluate_classifier,
                                             recipe_for)

from conftest import CIFAR

pytestmark = pytest.mark.usefixtures("one_thread")


# --- IDX -----------------------------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format written by hand: 0, 0, type 0x08 (uint8), number of dims, big-endian dims, the bytes."""
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def make_idx(root: Path, n_train=6, n_test=3, size=(5, 4), gz=True) -> dict:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            raw = idx_bytes(array)
            name = f"{prefix}-{kind}" + (".gz" if gz else "")
            (root / name).write_bytes(gzip.compress(raw) if gz else raw)
        data[prefix] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_on_generated_files(tmp_path, gz):
    data = make_idx(tmp_path, gz=gz)
    train = classification_dataset(f"fashion-mnist:{tmp_path}", "train")
    assert len(train) == 6 and train.class_names == FASHION_MNIST_CLASSES
    image, label = train[4]
    assert image.shape == (3, 5, 4) and image.dtype == torch.uint8 and label == 4
    for channel in image:  # grayscale replicated to three channels
        assert torch.equal(channel, torch.from_numpy(data["train"][0][4]))
    test = classification_dataset(f"idx:{tmp_path}", "test")
    assert len(test) == 3 and test.class_names == ("0", "1", "2") and test.labels == [0, 1, 2]
    suffix = ".gz" if gz else ""
    np.testing.assert_array_equal(read_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}"), data["t10k"][0])


def test_write_idx_is_the_inverse_of_read_idx(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == idx_bytes(array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_bad_idx_files_name_the_file(tmp_path):
    make_idx(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(b"\x12\x34" + images.read_bytes()[2:])
    with pytest.raises(BetterConvError, match="train-images-idx3-ubyte: not an IDX file"):
        classification_dataset(f"idx:{tmp_path}", "train")
    make_idx(tmp_path, gz=False)
    images.write_bytes(images.read_bytes()[:-3])
    with pytest.raises(BetterConvError, match="train-images-idx3-ubyte: IDX data is"):
        classification_dataset(f"idx:{tmp_path}", "train")
    make_idx(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(BetterConvError, match="holds 6 images but .*train-labels-idx1-ubyte 5 labels"):
        classification_dataset(f"idx:{tmp_path}", "train")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(BetterConvError, match="no t10k labels file"):
        classification_dataset(f"idx:{tmp_path}", "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(gzip.compress(b"x")[:5])
    with pytest.raises(BetterConvError, match="t10k-images-idx3-ubyte: cannot read it"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason=f"Debian's dataset-fashion-mnist is not installed "
                                                           f"({FASHION_MNIST_DIR})")
def test_real_fashion_mnist_test_split():
    test = classification_dataset("fashion-mnist:", "test")
    assert len(test) == 10_000 and test[0][0].shape == (3, 28, 28)
    assert test.labels[:5] == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, trouser, shirt
    assert np.bincount(test.labels).tolist() == [1000] * 10


# --- folders -------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not CIFAR.is_dir(), reason=f"reference data {CIFAR} is absent")
def test_derived_folder_split_is_deterministic_and_disjoint():
    spec = f"folder:{CIFAR}"
    train, test = classification_dataset(spec, "train"), classification_dataset(spec, "test")
    assert train.class_names == test.class_names and len(train.class_names) == 10
    assert (len(train), len(test)) == (8000, 2000)
    assert np.bincount(test.labels).tolist() == [200] * 10
    train_files, test_files = {p for p, _ in train.samples}, {p for p, _ in test.samples}
    assert not train_files & test_files
    assert len(train_files | test_files) == 10_000
    assert classification_dataset(spec, "val").samples == test.samples  # "val" names the same held-out part
    assert classification_dataset(spec, "test").samples == test.samples
    from betterconv.data.classification import FolderClassification

    other = FolderClassification(CIFAR, "test", seed=1)
    assert other.samples != test.samples and len(other) == 2000


def test_split_folders_share_one_class_list(tmp_path):
    for split, classes in (("train", ("cat", "dog", "emu")), ("val", ("cat", "emu"))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("L", (9, 7), 100).save(tmp_path / split / c / f"{c}.png")
    val = classification_dataset(f"folder:{tmp_path}", "val")
    assert val.class_names == ("cat", "dog", "emu") and val.labels == [0, 2]
    image, _ = val[1]
    assert image.shape == (3, 7, 9)  # grayscale PNG replicated to RGB
    with pytest.raises(BetterConvError, match="no split folder .*test; found train, val"):
        classification_dataset(f"folder:{tmp_path}", "test")
    with pytest.raises(BetterConvError, match="KIND:PATH"):
        classification_dataset(f"imagenet:{tmp_path}", "val")


def test_bad_image_files_raise_naming_the_file_or_are_skipped(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / c / f"{i}.jpg")
    (tmp_path / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = classification_dataset(f"folder:{tmp_path}", "all")
    index = [p.name for p, _ in ds.samples].index("broken.jpg")
    with pytest.raises(BetterConvError, match="broken.jpg"):
        ds[index]
    skipped = classification_dataset(f"folder:{tmp_path}", "all", skip_bad=True)
    assert len(skipped) == 6 and len(skipped.skipped) == 1 and "broken.jpg" in skipped.skipped[0][0]


def test_transforms_give_the_input_size():
    small = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert train_transform(32)(small).shape == (3, 32, 32)
    assert eval_transform(32)(small).shape == (3, 32, 32)
    large = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    out = train_transform(96)(large)
    assert out.shape == (3, 96, 96) and out.dtype == torch.float32
    assert eval_transform(224)(large).shape == (3, 224, 224)


# --- loss, evaluation, EMA ----------------------------------------------------------------------------------
class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def test_loss_and_topk_evaluation():
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0, -1],  # label 0: top-1
                           [5.0, 4, 3, 2, 1, 0, -1],  # label 4: top-5 only
                           [5.0, 4, 3, 2, 1, 0, -1]])  # label 6: neither
    labels = [0, 4, 6]
    dataset = [(torch.full((1, 1, 1), float(i)), labels[i]) for i in range(3)]
    model = FixedLogits(logits)
    result = evaluate_classifier(model, dataset, batch_size=2, progress=False)
    assert result["top1"] == pytest.approx(1 / 3) and result["top5"] == pytest.approx(2 / 3) and result["k"] == 5
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, torch.tensor(labels)).item())
    three = FixedLogits(logits[:, :3])
    assert evaluate_classifier(three, [(torch.zeros(1, 1, 1), 2)], progress=False)["k"] == 3
    batch = (torch.tensor([[[[0.0]]], [[[1.0]]]]), torch.tensor([0, 4]))
    assert classification_loss(model, batch, 0, label_smoothing=0.1).item() == pytest.approx(
        F.cross_entropy(logits[:2], batch[1], label_smoothing=0.1).item())


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def sgd_step(model, seed=1):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), 0.5)
    loss = F.cross_entropy(model(torch.randn(4, 3, 6, 6)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_is_the_formula_after_one_step(warmup):
    model = tiny_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ModelEMA(model, decay=0.9, warmup=warmup)
    sgd_step(model)
    ema.update(model)
    d = 0.9 if not warmup else 2 / 11
    assert ema_decay(0.9, 1, warmup) == pytest.approx(d) and ema.updates == 1
    averaged = ema.module.state_dict()
    for key, now in model.state_dict().items():
        if now.is_floating_point():  # parameters and batch-norm statistics
            torch.testing.assert_close(averaged[key], d * before[key] + (1 - d) * now)
            if not torch.allclose(before[key], now):  # (the conv bias before batch norm hardly moves)
                assert not torch.allclose(averaged[key], now)
        else:  # num_batches_tracked is copied
            assert torch.equal(averaged[key], now)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_trainer_calls_after_step_after_the_optimizer_and_checkpoints_the_ema(tmp_path):
    model = tiny_net()
    ema = ModelEMA(model, decay=0.5, warmup=False)
    data = [(torch.randn(3, 6, 6), i % 3) for i in range(8)]
    seen = []

    def after_step(m, step):
        assert m is model
        assert all(p.grad is not None for p in m.parameters())  # the step's gradients are there: after step()
        seen.append(step)
        ema.update(m)

    config = TrainConfig(epochs=2, batch_size=4, lr=0.1, workers=0, output=str(tmp_path), schedule="constant")
    Trainer(model, data, classification_loss, config, device="cpu", after_step=after_step,
            extra_state={"ema": ema}).fit()
    assert seen == [0, 1, 2, 3] and ema.updates == 4
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    saved = ckpt["extra_state"]["ema"]
    assert int(saved["n_averaged"]) == 5
    for key, value in ema.state_dict().items():
        assert torch.equal(saved[key], value)
    restored = ModelEMA(tiny_net(), decay=0.5, warmup=False)
    trainer = Trainer(tiny_net(), data, classification_loss, config, device="cpu", extra_state={"ema": restored})
    assert trainer.resume()
    assert restored.updates == 4 and torch.equal(restored.module[5].weight, ema.module[5].weight)


# --- recipes and the command line -------------------------------------------------------------------------------
def test_recipes_and_width():
    from betterconv.commands.classification import _width_kwargs, train_config

    args = build_parser().parse_args(["train", "cls", "--model", "mobilenet_v2", "--data", "folder:x",
                                      "--batch-size", "192"])
    config, recipe = train_config(args, 1920)
    assert (config.optimizer, config.schedule, config.momentum, config.rmsprop_decay) == ("rmsprop", "exponential",
                                                                                          0.9, 0.9)
    assert config.lr == pytest.approx(0.045 * 192 / 96) and config.lr_decay == 0.98
    assert config.weight_decay == 4e-5 and recipe is recipe_for("mobilenet_v1")
    args = build_parser().parse_args(["train", "cls", "--model", "resnet50", "--data", "folder:x", "--lr", "0.3",
                                      "--warmup-epochs", "2", "--batch-size", "64"])
    config, _ = train_config(args, 640)
    assert (config.optimizer, config.schedule, config.lr, config.warmup_steps) == ("sgd", "cosine", 0.3, 20)
    assert _width_kwargs("mobilenet_v2", 0.5) == {"width_mult": 0.5}
    assert _width_kwargs("shufflenet_v1", 0.5) == {"scale": 0.5}
    with pytest.raises(BetterConvError, match="no width multiplier"):
        _width_kwargs("resnet50", 0.5)


def test_training_learns_above_chance(trained_cls):
    _, run = trained_cls
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_top1"] for h in history) >= 0.65  # two classes: chance is 0.5
    from betterconv.weights import read_metadata

    meta = read_metadata(run / "model.safetensors")
    assert meta["betterconv.class_names"] == ["airplane", "frog"] and meta["betterconv.input_size"] == [3, 32, 32]
    assert meta["betterconv.model_kwargs"] == {"num_classes": 2, "width_mult": 0.35}
    assert len(meta["betterconv.mean"]) == 3 and len(meta["betterconv.std"]) == 3


def test_eval_cli_reproduces_the_best_validation_accuracy(trained_cls, cli):
    root, run = trained_cls
    weights = run / "model.safetensors"
    code, out, _ = cli("eval", "cls", "--model", "mobilenet_v2", "--weights", weights, "--data",
                       f"folder:{root}", "--split", "test", "--json")
    assert code == 0
    result = json.loads(out)
    history = json.loads((run / "history.json").read_text())
    assert result["count"] == 80 and result["k"] == 2 and result["top5"] == 1.0
    assert result["top1"] == pytest.approx(max(h["val_top1"] for h in history))
    assert result["input_size"] == 32  # from the weights' metadata
    code, out, _ = cli("eval", "cls", "--model", "mobilenet_v2", "--weights", weights, "--data",
                       f"folder:{root}", "--split", "test")
    assert code == 0 and f"top-1 {100 * result['top1']:.2f}" in out and "top-2 100.00" in out


def test_predict_cli_prints_class_names_and_probabilities(trained_cls, cli):
    root, run = trained_cls
    images = [root / "airplane" / "0000.jpg", root / "frog" / "0000.jpg"]
    code, out, _ = cli("predict", "cls", "--model", "mobilenet_v2", "--weights", run / "model.safetensors",
                       *images)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(images[0]) and len(lines) == 6  # two classes each
    assert {line.split()[1] for line in lines[1:3]} == {"airplane", "frog"}
    code, out, _ = cli("predict", "cls", "--model", "mobilenet_v2", "--weights", run / "model.safetensors",
                       "--json", *images)
    rows = json.loads(out)
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert sum(t["probability"] for t in rows[0]["top"]) == pytest.approx(1.0, abs=1e-5)
    code, _, err = cli("predict", "cls", "--model", "mobilenet_v2", "--weights", run / "model.safetensors",
                       root / "missing.jpg")
    assert code == 2 and "missing.jpg" in err


def test_eval_cli_names_a_bad_file_or_skips_it(trained_cls, cli, tmp_path):
    root, run = trained_cls
    for c in ("airplane", "frog"):
        (tmp_path / c).mkdir()
        for i in range(2):
            os.symlink(root / c / f"{i:04d}.jpg", tmp_path / c / f"{i:04d}.jpg")
    (tmp_path / "frog" / "torn.jpg").write_bytes((root / "frog" / "0000.jpg").read_bytes()[:100])
    argv = ["eval", "cls", "--model", "mobilenet_v2", "--weights", run / "model.safetensors", "--data",
            f"folder:{tmp_path}", "--split", "all"]
    code, _, err = cli(*argv)
    last = err.strip().splitlines()[-1]  # after the progress bar: one line naming the file
    assert code == 2 and last.startswith("betterconv: error: cannot read image") and "torn.jpg" in last
    code, out, _ = cli(*argv, "--skip-bad")
    assert code == 0 and "skipped 1 bad samples" in out and "(4 images" in out


def test_predict_without_class_names_numbers_the_classes(tmp_path, cli):
    from betterconv import create_model
    from betterconv.weights import save_weights

    model = create_model("mobilenet_v1", num_classes=3, width_mult=0.25)
    save_weights(model, tmp_path / "w.safetensors", input_size=(3, 32, 32))
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "x.png")
    code, out, _ = cli("predict", "cls", "--model", "mobilenet_v1", "--weights", tmp_path / "w.safetensors",
                       tmp_path / "x.png")
    assert code == 0 and {line.split()[1] for line in out.splitlines()[1:]} == {"class_0", "class_1", "class_2"}


def test_train_with_ema_exports_the_averaged_weights(two_classes, tmp_path, cli):
    from betterconv.weights import read_checkpoint

    code, _, _ = cli("train", "cls", "--model", "mobilenet_v1", "--width", "0.25", "--data", f"folder:{two_classes}",
                     "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--max-steps-per-epoch", "3",
                     "--eval-images", "16", "--ema", "--ema-decay", "0.5", "--workers", "0", "--output", tmp_path)
    assert code == 0
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    ema_state = ckpt["extra_state"]["ema"]
    assert int(ema_state["n_averaged"]) == 4  # the start and three steps
    exported, _ = read_checkpoint(tmp_path / "model.safetensors")
    for key, value in exported.items():
        assert torch.equal(value, ema_state[f"module.{key}"])
    assert any(not torch.equal(exported[k], v) for k, v in ckpt["model"].items() if v.is_floating_point())
    history = json.loads((tmp_path / "history.json").read_text())
    assert {"val_top1", "val_top5", "val_loss", "val_top1_raw"} <= set(history[0])
