"""`train` must not lose or silently change a run: a used output folder is continued or replaced only when asked,
a resumed run keeps its settings (a longer one extends its schedule), a killed save leaves the old checkpoint and a
temporary file that the next start removes, bad numbers and full disks are one-line errors naming what is wrong,
and non-finite weights are never saved."""
import argparse
import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from betterconv.cli import main
from betterconv.engine import Trainer, TrainConfig
from betterconv.errors import BetterConvError
from betterconv.files import remove_stale_temporaries, write_atomic
from betterconv.tasks.classification import classification_loss
from betterconv.tasks.segmentation import segmentation_loss

pytestmark = pytest.mark.usefixtures("one_thread")


# --- a tiny classification run, trained once and copied per test --------------------------------------------------

def make_cls_data(root: Path) -> Path:
    """Two classes of ten random 16x16 images (the split is derived: 8 train, 2 test each)."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def cls_argv(data: Path, output: Path, *extra) -> list[str]:
    """`train cls` of MobileNetV1 0.25x at 16x16: 4 steps an epoch, cosine from lr 0.01 (unless `extra` changes
    them)."""
    return ["train", "cls", "--model", "mobilenet_v1", "--width", "0.25", "--data", f"folder:{data}",
            "--input-size", "16", "--batch-size", "4", "--lr", "0.01", "--optimizer", "sgd", "--schedule", "cosine",
            "--eval-images", "4", "--eval-batch-size", "4", "--workers", "0", "--output", str(output), *map(str, extra)]


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, a run folder trained one epoch): tests copy the run before touching it."""
    root = tmp_path_factory.mktemp("trust_train")
    data = make_cls_data(root / "data")
    assert main(cls_argv(data, root / "run", "--epochs", "1")) == 0
    return data, root / "run"


@pytest.fixture
def run_copy(cls_run, tmp_path) -> tuple[Path, Path]:
    data, run = cls_run
    shutil.copytree(run, tmp_path / "run")
    return data, tmp_path / "run"


def one_line_error(code: int, err: str, after_progress: bool = False) -> str:
    """The message of a user error: exit status 2, one line, no traceback; the only output unless
    `after_progress` (an error once training has begun follows the progress bars)."""
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines and lines[-1].startswith("betterconv: error: "), err
    assert len(lines) == 1 or (after_progress and sum("betterconv:" in line for line in lines) == 1), err
    return lines[-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- 1. a used output folder -----------------------------------------------------------------------------------

def test_training_into_a_run_folder_needs_resume_or_overwrite(run_copy, cli):
    data, run = run_copy
    before = snapshot(run)
    line = one_line_error(*cli(*cls_argv(data, run, "--epochs", "1"))[::2])
    assert f"{run} already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(run) == before  # nothing touched

    for name in ("last.pt", "best.pt", "history.json"):  # any file of a run is enough
        (run / name).unlink()
    line = one_line_error(*cli(*cls_argv(data, run, "--epochs", "1"))[::2])
    assert "model.safetensors" in line

    line = one_line_error(*cli(*cls_argv(data, run, "--epochs", "1", "--resume", "--overwrite"))[::2])
    assert "--resume" in line and "--overwrite" in line


def test_overwrite_replaces_the_run_and_drops_its_stale_files(run_copy, cli):
    data, run = run_copy
    old_model = torch.load(run / "last.pt", weights_only=True)["model"]
    (run / "best.pt").write_bytes(b"a best.pt of another run")
    code, _, _ = cli(*cls_argv(data, run, "--epochs", "1", "--seed", "1", "--eval-every", "1", "--overwrite"))
    assert code == 0
    new = torch.load(run / "last.pt", weights_only=True)
    assert new["epoch"] == 0 and new["args"]["seed"] == 1
    assert any(not torch.equal(v, old_model[k]) for k, v in new["model"].items() if v.is_floating_point())
    assert torch.load(run / "best.pt", weights_only=True)["args"]["seed"] == 1
    assert len(json.loads((run / "history.json").read_text())) == 1


def test_resume_without_last_pt_is_refused_naming_it(tmp_path, cls_run, cli):
    data, _ = cls_run
    line = one_line_error(*cli(*cls_argv(data, tmp_path / "empty", "--epochs", "1", "--resume"))[::2])
    assert f"{tmp_path / 'empty' / 'last.pt'} does not exist" in line
    assert not (tmp_path / "empty").exists()  # nothing written

    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "best.pt").write_bytes(b"x")
    line = one_line_error(*cli(*cls_argv(data, tmp_path / "partial", "--epochs", "1", "--resume"))[::2])
    assert "last.pt does not exist" in line and "best.pt" in line


# --- 2. resuming with other settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("change,expected", [
    (["--lr", "0.02"], "--lr 0.01 -> 0.02"),
    (["--momentum", "0.5"], "--momentum 0.9 -> 0.5"),
    (["--weight-decay", "0.001"], "--weight-decay 4e-05 -> 0.001"),
    (["--batch-size", "2"], "--batch-size 4 -> 2"),
    (["--optimizer", "adamw"], "--optimizer 'sgd' -> 'adamw'"),
    (["--schedule", "poly"], "--schedule 'cosine' -> 'poly'"),
    (["--width", "0.5"], "--arg (model keywords)"),
    (["--model", "mobilenet_v2", "--width", "0.35"], "--model 'mobilenet_v1' -> 'mobilenet_v2'"),
])
def test_resume_with_changed_settings_is_refused_listing_them(run_copy, cli, change, expected):
    data, run = run_copy
    before = snapshot(run)
    argv = cls_argv(data, run, "--epochs", "2", "--resume")
    for flag, value in zip(change[::2], change[1::2]):  # replace the flag where cls_argv has it
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    line = one_line_error(*cli(*argv)[::2])
    assert f"{run / 'last.pt'} was trained with other settings" in line and expected in line, line
    assert snapshot(run) == before


def test_resume_with_changed_data_is_refused(run_copy, cli, tmp_path):
    data, run = run_copy
    other = make_cls_data(tmp_path / "other")
    (other / "a").rename(other / "c")  # other class names
    line = one_line_error(*cli(*cls_argv(other, run, "--epochs", "2", "--resume"))[::2])
    assert "--data" in line and "class names" in line


def test_resume_with_more_epochs_extends_the_schedule(run_copy, cli):
    data, run = run_copy
    before = torch.load(run / "last.pt", weights_only=True)
    assert before["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0)  # cosine over one epoch: ended at 0
    code, _, err = cli(*cls_argv(data, run, "--epochs", "2", "--resume"))
    assert code == 0
    # cosine over 2 epochs of 4 steps, at step 4 of 8: 0.01 x (1 + cos(pi / 2)) / 2
    assert "the cosine schedule now runs over 2 epochs" in err and "epoch 2 starts at lr 0.005" in err
    after = torch.load(run / "last.pt", weights_only=True)
    assert after["epoch"] == 1 and after["lr_scheduler"]["last_epoch"] == 8
    moved = [k for k, v in after["model"].items() if v.is_floating_point() and not torch.equal(v, before["model"][k])]
    assert any(k.endswith("weight") for k in moved)  # old code: epoch 2 ran at lr 0 and left the weights as they were

    line = one_line_error(*cli(*cls_argv(data, run, "--epochs", "1", "--resume"))[::2])
    assert "--epochs 1 is fewer than the 2 epochs" in line and str(run / "last.pt") in line


def tiny_seg_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1))


def tiny_seg_data(n: int = 8):
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n, 8, 8),
                                                                                             generator=g))


def learning_rates(output: Path, epochs: int, schedule: str, resume: bool = False) -> list[float]:
    """The rate of every optimizer step of a tiny run (4 steps an epoch, one warm-up step)."""
    seen = []
    config = TrainConfig(epochs=epochs, batch_size=2, lr=0.1, schedule=schedule, milestones=(1,), warmup_steps=1,
                         workers=0, output=str(output))
    trainer = Trainer(tiny_seg_net(), tiny_seg_data(), segmentation_loss, config, device="cpu",
                      after_step=lambda m, step: seen.append(trainer.optimizer.param_groups[0]["lr"]))
    if resume:
        assert trainer.resume()
    trainer.fit()
    return seen


@pytest.mark.parametrize("schedule", ["poly", "cosine", "step", "exponential"])
def test_extended_schedule_is_that_of_a_run_planned_that_long(tmp_path, schedule):
    planned = learning_rates(tmp_path / "planned", 3, schedule)
    learning_rates(tmp_path / "extended", 1, schedule)
    extended = learning_rates(tmp_path / "extended", 3, schedule, resume=True)
    assert extended == pytest.approx(planned[4:], rel=1e-9, abs=1e-12)
    assert all(lr > 0 for lr in extended)


# --- 3. killed saves -------------------------------------------------------------------------------------------

KILLED_WRITE = """
import os, signal, sys
from betterconv import files
files.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed once the data is written, before rename
files.write_atomic(sys.argv[1], b"half of a new checkpoint")
"""


def killed_write(path: Path) -> None:
    """Write `path` in a process that is killed (SIGKILL) in the middle of the write."""
    done = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path)], timeout=120)
    assert done.returncode == -signal.SIGKILL


def test_a_killed_write_keeps_the_old_file_and_the_next_start_removes_its_temporary(run_copy, cli):
    data, run = run_copy
    last = (run / "last.pt").read_bytes()
    killed_write(run / "last.pt")
    assert (run / "last.pt").read_bytes() == last  # the old checkpoint is still there
    left = [p for p in run.iterdir() if p.name.startswith(".last.pt.tmp")]
    assert len(left) == 1
    # a stale empty temporary and a half-written one of a process that no longer exists; one of a live process
    (run / ".best.pt.tmp999999999").write_bytes(b"")
    (run / ".history.json.tmp999999998").write_bytes(last[: len(last) // 2])
    live = run / f".model.safetensors.tmp{os.getppid()}"
    live.write_bytes(b"being written")

    code, _, err = cli(*cls_argv(data, run, "--epochs", "2", "--resume"))
    assert code == 0
    assert not left[0].exists() and not (run / ".best.pt.tmp999999999").exists()
    assert not (run / ".history.json.tmp999999998").exists() and live.exists()
    assert f"removed {left[0]}" in err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def test_a_refused_start_removes_nothing(run_copy, cli):
    data, run = run_copy
    (run / ".last.pt.tmp999999999").write_bytes(b"")
    one_line_error(*cli(*cls_argv(data, run, "--epochs", "1"))[::2])
    assert (run / ".last.pt.tmp999999999").exists()
    assert remove_stale_temporaries(run) == [run / ".last.pt.tmp999999999"]


# --- 4. numbers checked when parsed, non-finite weights never saved ----------------------------------------------

BAD_NUMBERS = [("--lr", v) for v in ("nan", "inf", "-1", "0", "x")] + [
    ("--momentum", "1"), ("--momentum", "-0.1"), ("--weight-decay", "-1"), ("--weight-decay", "nan"),
    ("--epochs", "0"), ("--batch-size", "0"), ("--max-steps-per-epoch", "-1"), ("--max-steps-per-epoch", "0"),
    ("--eval-every", "0"), ("--workers", "-1"), ("--eval-images", "0"), ("--warmup-steps", "-1"),
    ("--input-size", "0"), ("--grad-clip", "0"), ("--grad-clip", "inf"), ("--grad-clip", "nan")]
# train cls has --warmup-epochs and no --grad-clip; train seg crops (--crop-size); train det clips at 10
TASK_FLAGS = {"cls": {"--warmup-steps": "--warmup-epochs", "--grad-clip": None},
              "seg": {"--input-size": "--crop-size"},
              "det": {"--grad-clip": None}}
CASES = [(task, TASK_FLAGS[task].get(flag, flag), value) for task in ("cls", "seg", "det")
         for flag, value in BAD_NUMBERS if TASK_FLAGS[task].get(flag, flag) is not None]


@pytest.mark.parametrize("task,flag,value", CASES)
def test_bad_numbers_are_one_line_errors_when_parsed(tmp_path, cli, task, flag, value):
    data = {"cls": "folder:", "seg": "folder:", "det": "yolo:"}[task] + str(tmp_path / "missing")
    line = one_line_error(*cli("train", task, "--model", "m", "--data", data, "--output", tmp_path / "run",
                               flag, value)[::2])
    assert f"argument {flag}:" in line and repr(value) in line  # refused by the parser, naming the option
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field,value", [("eval_every", 0), ("max_steps_per_epoch", -1), ("lr", float("nan")),
                                         ("momentum", 1.0), ("weight_decay", -1.0), ("workers", -1),
                                         ("grad_clip", float("inf"))])
def test_trainer_refuses_the_same_bad_numbers(tmp_path, field, value):
    config = TrainConfig(epochs=1, batch_size=2, workers=0, output=str(tmp_path))
    setattr(config, field, value)
    with pytest.raises(BetterConvError):
        Trainer(tiny_seg_net(), tiny_seg_data(), segmentation_loss, config, device="cpu")


def test_non_finite_weights_are_never_saved(tmp_path):
    """A NaN that reaches a batch-norm statistic (which the training loss does not show) stops the run before the
    checkpoint: last.pt stays that of the last good epoch."""
    model = tiny_seg_net()

    def poison(m, step):
        if step == 5:  # in epoch 2 (4 steps an epoch)
            m[1].running_mean[2] = float("nan")

    config = TrainConfig(epochs=3, batch_size=2, lr=0.01, workers=0, output=str(tmp_path), schedule="constant")
    trainer = Trainer(model, tiny_seg_data(), segmentation_loss, config, device="cpu", after_step=poison)
    with pytest.raises(BetterConvError, match=r"not finite after epoch 2: 1\.running_mean \(nan\)"):
        trainer.fit()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1


# --- 5. failed writes name the file ----------------------------------------------------------------------------

def test_a_full_disk_names_the_checkpoint_and_leaves_nothing(cls_run, cli, tmp_path, monkeypatch):
    data, _ = cls_run

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    run = tmp_path / "run"
    line = one_line_error(*cli(*cls_argv(data, run, "--epochs", "1"))[::2], after_progress=True)
    assert line == f"betterconv: error: {run / 'last.pt'}: No space left on device"
    assert list(run.iterdir()) == []  # no checkpoint, no temporary file


def test_write_atomic_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def refuse(src, dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(BetterConvError, match=f"^{target}: File exists$"):
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]

    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(BetterConvError, match=f"^{tmp_path / 'file'}: File exists$"):
        write_atomic(tmp_path / "file" / "x.json", b"{}")


def test_an_output_that_is_a_file_is_refused(cls_run, cli, tmp_path):
    data, _ = cls_run
    (tmp_path / "run").write_bytes(b"")
    line = one_line_error(*cli(*cls_argv(data, tmp_path / "run", "--epochs", "1"))[::2])
    assert f"{tmp_path / 'run'}: exists and is not a folder" in line


# --- 6. checkpoints that cannot be resumed ---------------------------------------------------------------------

def test_resuming_another_models_weights_names_the_file(run_copy, cli):
    data, run = run_copy
    ckpt = torch.load(run / "last.pt", weights_only=True)
    other = torch.nn.Conv2d(3, 4, 3).state_dict()
    torch.save({**{k: v for k, v in ckpt.items() if k != "args"}, "model": other}, run / "last.pt")
    line = one_line_error(*cli(*cls_argv(data, run, "--epochs", "2", "--resume"))[::2])
    assert f"{run / 'last.pt'}: holds the weights of another model than MobileNetV1" in line


def test_a_pickled_checkpoint_is_refused_unless_trusted(run_copy, cli):
    data, run = run_copy
    ckpt = torch.load(run / "last.pt", weights_only=True)
    torch.save({**ckpt, "note": argparse.Namespace(written_by="another tool")}, run / "last.pt")
    line = one_line_error(*cli(*cls_argv(data, run, "--epochs", "2", "--resume"))[::2])
    assert f"{run / 'last.pt'}: cannot resume" in line and "--trusted" in line
    code, _, _ = cli(*cls_argv(data, run, "--epochs", "2", "--resume", "--trusted"))
    assert code == 0 and torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a checkpoint"])
def test_an_unreadable_last_pt_is_one_line_naming_it(run_copy, cli, content):
    data, run = run_copy
    (run / "last.pt").write_bytes(content)
    line = one_line_error(*cli(*cls_argv(data, run, "--epochs", "2", "--resume"))[::2])
    assert f"{run / 'last.pt'}: cannot resume" in line


def test_a_checkpoint_without_recorded_settings_still_resumes(tmp_path):
    """A checkpoint written before the settings were recorded (no args, no steps per epoch) still resumes."""
    data = [(torch.randn(3, 6, 6), i % 3) for i in range(8)]

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    config = TrainConfig(epochs=1, batch_size=4, lr=0.1, workers=0, output=str(tmp_path), schedule="constant")
    Trainer(net(), data, classification_loss, config, device="cpu").fit()
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    del ckpt["args"], ckpt["steps_per_epoch"]
    torch.save(ckpt, tmp_path / "last.pt")
    trainer = Trainer(net(), data, classification_loss, dataclasses.replace(config, epochs=2), device="cpu")
    assert trainer.resume() and trainer.start_epoch == 1
