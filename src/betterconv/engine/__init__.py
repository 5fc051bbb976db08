"""The one trainer shared by segmentation, detection and classification."""
from .trainer import Trainer, TrainConfig

__all__ = ["Trainer", "TrainConfig"]
