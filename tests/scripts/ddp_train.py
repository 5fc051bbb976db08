"""Train a tiny network with betterconv's Trainer; run plainly or under torchrun. Used by tests/test_trainer.py."""
import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from betterconv.engine import Trainer, TrainConfig
from betterconv.tasks.segmentation import segmentation_loss


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))


def dataset(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 16, 16, generator=g)
    masks = torch.randint(0, 4, (n, 16, 16), generator=g)
    return TensorDataset(images, masks)


def train(output: str, epochs: int = 2, batch_size: int = 8) -> nn.Module:
    model = tiny_net()
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.1, momentum=0.9, weight_decay=1e-4,
                         schedule="poly", workers=0, seed=3, output=output)
    trainer = Trainer(model, dataset(), segmentation_loss, config, device="cpu")
    trainer.fit()
    return model


if __name__ == "__main__":
    train(sys.argv[1])
