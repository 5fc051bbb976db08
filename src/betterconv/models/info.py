"""One record of facts per registered model, given at registration (`register_model(info=...)`), as timm's
pretrained configs and torchvision's weight entries keep them: the task, the paper's input size, the preprocessing
its weights expect, the training recipe, and the names of the same network in torchvision.

Everything that used to be looked up by a name prefix (a model "starting with yolo" being normalised with
darknet's statistics, "fcn*" models getting FCN-VGG's recipe) reads this record instead, so adding a model means
editing its family's file only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# mean/std in [0, 1] units of the images each kind of weights was trained on
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TF_MEAN, TF_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # TensorFlow's x / 127.5 - 1
DARKNET_MEAN, DARKNET_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # darknet feeds x / 255

TASKS = ("classification", "segmentation", "detection")


@dataclass(frozen=True)
class ClsRecipe:
    """An image-classification recipe; the learning rate is `base_lr` at `base_batch` images per step, scaled
    linearly with the batch (Goyal et al. 2017, "Accurate, Large Minibatch SGD")."""

    optimizer: str
    base_lr: float
    base_batch: int
    momentum: float
    weight_decay: float
    schedule: str
    batch_size: int
    epochs: int
    rmsprop_decay: float = 0.9
    lr_decay: float = 0.98
    source: str = ""

    def lr(self, batch_size: int) -> float:
        return self.base_lr * batch_size / self.base_batch


@dataclass(frozen=True)
class SegRecipe:
    """A segmentation paper's training defaults; every field can be overridden on the command line.
    `aux_weight` weighs the auxiliary head's loss where the model has one."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    batch_size: int
    crop_size: int
    epochs: int
    eval_output_stride: int | None = None
    eval_scales: tuple[float, ...] = (1.0,)
    eval_flip: bool = False
    aux_weight: float = 0.5
    source: str = ""


@dataclass(frozen=True)
class DetRecipe:
    """A detector's training defaults (the keyword arguments of the trainer's `TrainConfig`)."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    epochs: int
    milestones: tuple[int, ...]
    batch_size: int
    warmup_steps: int
    source: str = ""

    def as_config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("optimizer", "lr", "momentum", "weight_decay", "schedule", "epochs",
                                              "milestones", "batch_size", "warmup_steps")}


Recipe = ClsRecipe | SegRecipe | DetRecipe


@dataclass(frozen=True)
class ModelInfo:
    """The facts of one registered model.

    task: "classification", "segmentation" or "detection".
    input_size: (H, W) at which its paper reports costs and trains (classifiers: 224 x 224).
    mean, std: the normalisation its reference weights expect, in [0, 1] units.
    recipe: the paper's (or reference implementation's) training defaults.
    backbone_classifier: the registered classifier whose ImageNet weights start this model's backbone.
    torchvision: torchvision's builder of the same architecture, with `torchvision_config` the builder keywords
        that give torchvision's configuration; None when torchvision has none (`peer_note` says why, when a
        similar torchvision name suggests otherwise).
    """

    task: str
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    recipe: Recipe | None = None
    backbone_classifier: str | None = None
    torchvision: str | None = None
    torchvision_config: Mapping[str, Any] = field(default_factory=dict)
    peer_note: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        object.__setattr__(self, "torchvision_config", MappingProxyType(dict(self.torchvision_config)))


# --- recipes shared by several families ----------------------------------------------------------------------
# MobileNetV2 §6.1 (and MobileNetV1 §4): RMSProp with decay and momentum 0.9, weight decay 4e-5, initial rate 0.045
# decayed by 0.98 per epoch, batch 96 per worker. The paper gives no epoch count; 300 is our choice.
MOBILENET_RECIPE = ClsRecipe("rmsprop", 0.045, 96, 0.9, 4e-5, "exponential", 96, 300,
                             source="MobileNetV2 (Sandler et al. 2018) §6.1: RMSProp 0.9/0.9, wd 4e-5, lr 0.045 x "
                                    "batch/96, x0.98 per epoch")
# SGD with momentum 0.9, weight decay 1e-4 and rate 0.1 per 256 images (ResNet §3.4, Goyal et al.'s scaling), cosine
# decay to 0 (Loshchilov & Hutter 2017, SGDR), 90 epochs.
SGD_COSINE_RECIPE = ClsRecipe("sgd", 0.1, 256, 0.9, 1e-4, "cosine", 256, 90,
                              source="SGD momentum 0.9, wd 1e-4, lr 0.1 x batch/256 (ResNet §3.4), cosine, 90 epochs")
