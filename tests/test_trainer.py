"""The shared trainer: DDP over processes equals one process with the whole batch; an interrupted run resumed
from its last checkpoint ends with the same weights as an uninterrupted one."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from ddp_train import dataset, tiny_net, train  # noqa: E402

from betterconv.engine import Trainer, TrainConfig  # noqa: E402
from betterconv.tasks.segmentation import segmentation_loss  # noqa: E402

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def final_weights(output: Path) -> dict:
    return torch.load(output / "last.pt", weights_only=True)["model"]


def test_two_processes_equal_one_process_with_the_combined_batch(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one")], check=True, env=env, timeout=300)
    subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(SCRIPT), str(tmp_path / "two")],
                   check=True, env=env, timeout=300, capture_output=True)
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [h["train_loss"] for h in h2] == pytest.approx([h["train_loss"] for h in h1], rel=1e-5)


class Interrupt:
    """A loss function that presses Ctrl-C at a given step, as a user would."""

    def __init__(self, at_step: int) -> None:
        self.step, self.at_step = 0, at_step

    def __call__(self, model, batch, step):
        self.step += 1
        if self.step == self.at_step:
            raise KeyboardInterrupt
        return segmentation_loss(model, batch, step)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    reference = train(str(tmp_path / "whole"), epochs=3)
    config = dict(epochs=3, batch_size=8, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="poly", workers=0,
                  seed=3, output=str(tmp_path / "cut"))
    trainer = Trainer(tiny_net(), dataset(), Interrupt(at_step=6), TrainConfig(**config), device="cpu")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()  # 4 steps per epoch: stopped during the second epoch
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert saved["epoch"] == 0  # the last complete checkpoint is intact
    assert not list((tmp_path / "cut").glob(".*tmp*"))
    resumed_model = tiny_net()
    trainer = Trainer(resumed_model, dataset(), segmentation_loss, TrainConfig(**config), device="cpu")
    assert trainer.resume()
    assert trainer.start_epoch == 1
    trainer.fit()
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
