"""Image classification: the loss, top-1/top-5 evaluation, prediction, the weight EMA, and the papers' recipes."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..data.class_names import default_class_names
from ..errors import BetterConvError
from ..models import ClsRecipe, model_info


def _logits(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out  # (logits, auxiliary logits) -> logits


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int = 0,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the model's logits, with the targets smoothed towards uniform by `label_smoothing`
    (Szegedy et al. 2016, "Rethinking the Inception Architecture", §7)."""
    images, labels = batch
    return F.cross_entropy(_logits(model(images)).float(), labels, label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset, device: torch.device | str = "cpu", batch_size: int = 64,
                        max_images: int | None = None, workers: int = 0, progress: bool = True) -> dict:
    """Top-1 and top-k accuracy (k = min(5, number of classes)) and the mean cross-entropy (no smoothing) over
    `dataset`, whose samples are (normalised image tensor, label); `max_images` takes that many spread evenly over
    it. Also gives `k` and `count`."""
    device = torch.device(device)
    if max_images is not None and max_images < len(dataset):  # spread evenly: folder datasets are sorted by class
        dataset = Subset(dataset, [i * len(dataset) // max_images for i in range(max_images)])
    if len(dataset) == 0:
        raise BetterConvError("cannot evaluate on an empty dataset")
    was_training = model.training
    model.eval()
    model.to(device)
    loader = DataLoader(dataset, batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    top1 = topk = 0
    loss_sum, count, k = 0.0, 0, None
    with tqdm(total=len(dataset), desc="evaluating", unit="img", disable=not progress, leave=False) as bar:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = _logits(model(images)).float()
            if k is None:
                k = min(5, logits.shape[1])
            if labels.max() >= logits.shape[1]:
                raise BetterConvError(f"label {int(labels.max())} is outside the model's {logits.shape[1]} classes")
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            ranked = logits.topk(k, dim=1).indices
            hits = ranked == labels[:, None]
            top1 += hits[:, 0].sum().item()
            topk += hits.any(dim=1).sum().item()
            count += len(labels)
            bar.update(len(labels))
    model.train(was_training)
    return {"top1": top1 / count, "top5": topk / count, "loss": loss_sum / count, "k": k, "count": count}


@torch.no_grad()
def predict_topk(model: nn.Module, images: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and class indices of the k most likely classes, each (B, min(k, classes))."""
    probs = _logits(model(images)).float().softmax(dim=1)
    return probs.topk(min(k, probs.shape[1]), dim=1)


def ema_decay(decay: float, updates: int, warmup: bool = True) -> float:
    """The decay of update number `updates` (1 for the first): `decay`, or with warm-up TensorFlow's
    ExponentialMovingAverage `num_updates` rule min(decay, (1 + t) / (10 + t)), so early averages are not
    dominated by the random initial weights."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


class ModelEMA(AveragedModel):
    """An exponential moving average of a model's weights and batch-norm statistics (`torch.optim.swa_utils`):
    after each optimizer step, `update(model)` sets  W_ema <- d * W_ema + (1 - d) * W  with d = `ema_decay(...)`.
    It starts from the model's weights at construction. `module` is the averaged model; integer buffers (batch
    norm's step count) are copied, not averaged. The state dict (with the update count) goes into checkpoints.

    Pass `update` as the trainer's `after_step` hook. The averaged copy follows the model to its device on the
    first update."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0 <= decay <= 1:
            raise BetterConvError(f"EMA decay must be in [0, 1], got {decay}")
        super().__init__(model, use_buffers=True)
        self.decay, self.warmup = decay, warmup
        self.module.requires_grad_(False)
        self.update_parameters(model)  # the first update copies: W_ema = W_0

    @property
    def updates(self) -> int:
        """Optimizer steps averaged so far."""
        return int(self.n_averaged) - 1

    def update(self, model: nn.Module, step: int | None = None) -> None:
        param = next(model.parameters(), None)
        if param is not None and next(self.module.parameters()).device != param.device:
            self.to(param.device)
        decay = ema_decay(self.decay, self.updates + 1, self.warmup)
        average = get_ema_multi_avg_fn(decay)

        def multi_avg_fn(ema: list[torch.Tensor], current: list[torch.Tensor], n) -> None:
            if ema[0].is_floating_point() or ema[0].is_complex():
                average(ema, current, n)
            else:  # grouped by dtype: integer buffers such as num_batches_tracked are copied
                for e, c in zip(ema, current, strict=True):
                    e.copy_(c)

        self.multi_avg_fn = multi_avg_fn
        self.update_parameters(model)
        self.multi_avg_fn = None  # a closure is not kept on the module (deepcopy, pickling)


def ema_state_to_model(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The averaged model's state dict from a ModelEMA state dict (drops the `module.` prefix and the count)."""
    return {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}


def recipe_for(model_name: str) -> ClsRecipe:
    """The training recipe recorded for a classifier (its `ModelInfo.recipe`): the MobileNetV2 paper's RMSProp
    recipe for the MobileNets, SGD with cosine decay for the others."""
    recipe = model_info(model_name).recipe
    if not isinstance(recipe, ClsRecipe):
        raise BetterConvError(f"{model_name} is not a classifier")
    return recipe


def class_names_for(num_classes: int, recorded: Sequence[str] | None = None) -> list[str]:
    """`recorded` names when they fit, else the standard set for the class count, else class_0, class_1, ..."""
    if recorded and len(recorded) == num_classes:
        return list(recorded)
    return list(default_class_names(num_classes) or [f"class_{i}" for i in range(num_classes)])
