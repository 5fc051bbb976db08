"""The one trainer shared by segmentation, detection and classification."""
from .trainer import RUN_FILES, Trainer, TrainConfig, first_non_finite, prepare_output

__all__ = ["RUN_FILES", "Trainer", "TrainConfig", "first_non_finite", "prepare_output"]
