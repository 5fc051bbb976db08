"""The trainer every task shares: progress bar, periodic evaluation, atomic checkpoints, resume, mixed precision on
GPU, and multi-GPU / multi-node training under torchrun with DistributedDataParallel.

Reproducibility: every epoch reseeds torch, numpy and `random` from (seed, epoch, rank), and the sampler orders the
data from (seed, epoch). A run resumed from the checkpoint of epoch e therefore replays epochs e+1... exactly as an
uninterrupted run does. With P processes each takes `batch_size / P` images of the same global batch (a
`DistributedSampler` split of one permutation), so P processes see what one process sees with the whole batch.
"""
from __future__ import annotations

import io
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from ..files import write_atomic
from ..errors import BetterConvError, first_line
from .distributed import DistInfo, all_reduce_mean, barrier, init_distributed, shutdown

SCHEDULES = ("poly", "cosine", "constant", "exponential", "step")
OPTIMIZERS = ("sgd", "rmsprop", "adamw")


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 8  # global: split over the processes
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    rmsprop_decay: float = 0.9  # RMSProp's squared-gradient decay (alpha)
    schedule: str = "poly"
    poly_power: float = 0.9  # DeepLab: (1 - step / max_steps) ** 0.9
    lr_decay: float = 0.98  # per-epoch factor of the "exponential" schedule (MobileNetV2 §6.1)
    milestones: tuple[int, ...] = ()  # epochs at which the "step" schedule divides the rate by 10
    warmup_steps: int = 0
    grad_clip: float | None = None
    workers: int = 2
    seed: int = 0
    amp: bool = True  # bfloat16 autocast, on CUDA only
    sync_bn: bool = False
    freeze_bn: bool = False  # batch norm kept in eval mode (fixed statistics and affine terms still learn)
    eval_every: int = 1
    max_steps_per_epoch: int | None = None
    output: str = "runs/train"
    extra: dict[str, Any] = field(default_factory=dict)  # task arguments recorded in the checkpoint

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise BetterConvError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise BetterConvError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise BetterConvError("epochs, batch size and learning rate must be positive")
        if self.warmup_steps < 0:
            raise BetterConvError(f"warm-up steps must be >= 0, got {self.warmup_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise BetterConvError(f"the gradient clipping norm must be positive, got {self.grad_clip}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":  # MobileNetV2 §6.1: decay 0.9, momentum 0.9; TF's epsilon
        return torch.optim.RMSprop(params, config.lr, alpha=config.rmsprop_decay, momentum=config.momentum,
                                   weight_decay=config.weight_decay, eps=1e-3)
    return torch.optim.AdamW(params, config.lr, weight_decay=config.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(1, config.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        progress = min(step, total) / total
        if config.schedule == "poly":
            return warm * (1 - progress) ** config.poly_power
        if config.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        if config.schedule == "exponential":
            return warm * config.lr_decay ** (step / steps_per_epoch)
        if config.schedule == "step":
            return warm * 0.1 ** sum(step // steps_per_epoch >= m for m in config.milestones)
        return warm

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _freeze_batch_norm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class Trainer:
    """Train `model` on `dataset` by minimising `loss_fn(model, batch, global_step)`.

    `evaluate_fn(model) -> {metric: value}` runs every `eval_every` epochs on the main process. Checkpoints
    (`last.pt`, and `best.pt` by `best_metric`) hold model, optimizer, lr_scheduler, epoch, args and history, and
    are written atomically.

    `after_step(model, global_step)`, if given, runs after every optimizer step (e.g. a weight EMA update) with
    the unwrapped model. `extra_state` maps names to objects with `state_dict()` / `load_state_dict()` (e.g. that
    EMA) that are saved in the checkpoints under "extra_state" and restored by `resume`."""

    def __init__(self, model: nn.Module, dataset: Dataset, loss_fn: Callable[[nn.Module, Any, int], torch.Tensor],
                 config: TrainConfig, evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                 collate_fn: Callable[[list], Any] | None = None, best_metric: str | None = None,
                 device: torch.device | str | None = None,
                 after_step: Callable[[nn.Module, int], None] | None = None,
                 extra_state: Mapping[str, Any] | None = None) -> None:
        config.validate()
        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dist: DistInfo = init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if config.batch_size % self.dist.world_size:
            raise BetterConvError(f"batch size {config.batch_size} does not split over {self.dist.world_size} "
                                  "processes")
        if config.sync_bn and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.dataset, self.loss_fn, self.evaluate_fn = dataset, loss_fn, evaluate_fn
        self.collate_fn, self.best_metric = collate_fn, best_metric
        self.after_step, self.extra_state = after_step, dict(extra_state or {})
        self.output = Path(config.output)
        self.sampler = DistributedSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                          shuffle=True, seed=config.seed, drop_last=True)
        per_rank = config.batch_size // self.dist.world_size
        self.steps_per_epoch = len(self.sampler) // per_rank
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise BetterConvError(f"{len(dataset)} training samples are fewer than one batch of {config.batch_size}")
        self.loader = DataLoader(dataset, per_rank, sampler=self.sampler, num_workers=config.workers,
                                 collate_fn=collate_fn, drop_last=True, pin_memory=self.device.type == "cuda")
        self.optimizer = make_optimizer(self.model, config)
        self.schedule = make_schedule(self.optimizer, config, self.steps_per_epoch)
        self.start_epoch, self.history, self.best = 0, [], None
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None) if self.dist.enabled else self.model)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.schedule.state_dict(), "epoch": epoch, "args": asdict(self.config),
                "history": self.history, "best": self.best,
                **({"extra_state": {k: v.state_dict() for k, v in self.extra_state.items()}}
                   if self.extra_state else {})}

    def _save(self, name: str, checkpoint: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        write_atomic(self.output / name, buf.getvalue())

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from `path` (default: the output folder's last.pt). Returns whether a checkpoint was found."""
        path = Path(path) if path else self.output / "last.pt"
        if not path.is_file():
            return False
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.schedule.load_state_dict(ckpt["lr_scheduler"])
            for key, value in ckpt.get("extra_state", {}).items():
                if key in self.extra_state:
                    self.extra_state[key].load_state_dict(value)
        except (RuntimeError, KeyError, ValueError, OSError) as e:
            raise BetterConvError(f"{path}: cannot resume from this checkpoint ({first_line(e, 160)})") from None
        self.start_epoch, self.history, self.best = ckpt["epoch"] + 1, list(ckpt["history"]), ckpt["best"]
        return True

    # --- training ------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type == "cuda" and self.config.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _move(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._move(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._move(v) for k, v in batch.items()}
        return batch

    def _step(self, batch: Any, epoch: int, step: int) -> float:
        cfg = self.config
        batch = self._move(batch)
        with self._autocast():
            loss = self.loss_fn(self.ddp, batch, epoch * self.steps_per_epoch + step)
        if not torch.isfinite(loss):
            raise BetterConvError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                  "lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step(self.model, epoch * self.steps_per_epoch + step)
        self.schedule.step()
        self._last_loss = all_reduce_mean(loss.detach(), self.dist).item()
        return self._last_loss

    def train_epoch(self, epoch: int) -> float:
        cfg = self.config
        _seed_everything(cfg.seed * 1_000_003 + epoch * 1009 + self.dist.rank)
        self.sampler.set_epoch(epoch)
        self.ddp.train()
        if cfg.freeze_bn:
            _freeze_batch_norm(self.model)
        total, seen, start = 0.0, 0, time.perf_counter()
        with tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                  disable=not self.dist.is_main, dynamic_ncols=True, leave=False) as bar:
            for step, batch in enumerate(self.loader):
                if step >= self.steps_per_epoch:
                    break
                total += self._step(batch, epoch, step)
                seen += cfg.batch_size
                bar.update()
                bar.set_postfix(loss=f"{self._last_loss:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                img_s=f"{seen / (time.perf_counter() - start):.1f}")
        return total / self.steps_per_epoch

    def fit(self) -> list[dict[str, Any]]:
        cfg = self.config
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                started = time.perf_counter()
                loss = self.train_epoch(epoch)
                record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss,
                                          "lr": self.optimizer.param_groups[0]["lr"],
                                          "seconds": round(time.perf_counter() - started, 2)}
                if self.dist.is_main:
                    last = epoch + 1 == cfg.epochs
                    if self.evaluate_fn is not None and ((epoch + 1) % cfg.eval_every == 0 or last):
                        record.update(self.evaluate_fn(self.model))
                    self.history.append(record)
                    summary = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in record.items() if not isinstance(v, (list, dict)))
                    tqdm.write(summary)
                    improved = (self.best_metric in record and
                                (self.best is None or record[self.best_metric] > self.best))
                    if improved:
                        self.best = record[self.best_metric]
                    checkpoint = self._checkpoint(epoch)
                    self._save("last.pt", checkpoint)
                    if improved:
                        self._save("best.pt", checkpoint)
                    write_atomic(self.output / "history.json", json.dumps(self.history, indent=2).encode())
                barrier(self.dist)
        finally:
            shutdown(self.dist)
        return self.history


