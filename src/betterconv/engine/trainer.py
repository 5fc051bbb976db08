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
import os
import pickle
import random
import sys
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

from ..files import remove_stale_temporaries, write_atomic
from ..errors import BetterConvError, first_line
from .distributed import DistInfo, all_reduce_mean, barrier, init_distributed, shutdown

SCHEDULES = ("poly", "cosine", "constant", "exponential", "step")
OPTIMIZERS = ("sgd", "rmsprop", "adamw")
RUN_FILES = ("last.pt", "best.pt", "history.json", "model.safetensors")  # what a run leaves in its output folder
# the settings a resumed run must share with its checkpoint (`epochs` may grow: the schedule is rebuilt)
RESUME_SETTINGS = ("batch_size", "lr", "optimizer", "momentum", "weight_decay", "rmsprop_decay", "schedule",
                   "poly_power", "lr_decay", "milestones", "warmup_steps", "grad_clip", "seed")


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
        if self.epochs < 1 or self.batch_size < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise BetterConvError("epochs, batch size and learning rate must be positive (and the rate finite), got "
                                  f"{self.epochs}, {self.batch_size}, {self.lr}")
        if self.warmup_steps < 0:
            raise BetterConvError(f"warm-up steps must be >= 0, got {self.warmup_steps}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise BetterConvError(f"the gradient clipping norm must be positive and finite, got {self.grad_clip}")
        if not 0 <= self.momentum < 1:
            raise BetterConvError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise BetterConvError(f"weight decay must be >= 0 and finite, got {self.weight_decay}")
        if self.eval_every < 1:
            raise BetterConvError(f"evaluating every {self.eval_every} epochs: it must be at least 1")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise BetterConvError(f"max steps per epoch must be >= 1, got {self.max_steps_per_epoch}")
        if self.workers < 0:
            raise BetterConvError(f"data-loading workers must be >= 0, got {self.workers}")


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


def prepare_output(output: str | Path, resume: bool, overwrite: bool) -> None:
    """Check a `train` command's output folder before anything is loaded or written, then remove the temporary
    files that a killed write left there (on the main process).

    A folder that holds a run (any of `RUN_FILES`) is continued with `resume` or replaced with `overwrite` (the old
    files stay until the new run writes its first checkpoint), never silently; `resume` needs OUTPUT/last.pt."""
    output = Path(output)
    if resume and overwrite:
        raise BetterConvError("--resume continues the run in the output folder and --overwrite replaces it: give one")
    if output.exists() and not output.is_dir():
        raise BetterConvError(f"{output}: exists and is not a folder")
    found = [name for name in RUN_FILES if (output / name).exists()]
    if resume and "last.pt" not in found:
        raise BetterConvError(f"--resume: {output / 'last.pt'} does not exist, nothing to resume from"
                              + (f" (the folder holds {', '.join(found)})" if found else ""))
    if found and not resume and not overwrite:
        raise BetterConvError(f"{output} already holds a run ({', '.join(found)}): add --resume to continue it or "
                              "--overwrite to replace it")
    if int(os.environ.get("RANK", "0")) == 0:
        for path in remove_stale_temporaries(output):
            print(f"removed {path}, left by an interrupted write", file=sys.stderr)


def first_non_finite(tensors: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor of `tensors` (a state dict) holding a NaN or an infinity, with
    what it holds ("0.weight (nan)"); None when all are finite."""
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"{name} ({'nan' if bool(torch.isnan(value).any()) else 'inf'})"
    return None


def _plain(value: Any) -> Any:
    """`value` with tuples as lists, to compare what a checkpoint recorded with what is asked now."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(_plain(value), default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _setting_name(key: str) -> str:
    return {"model_kwargs": "--arg (model keywords)", "class_names": "class names", "task": "task",
            "recipe": "recipe", "steps_per_epoch": "steps per epoch (data size or --max-steps-per-epoch)",
            "ema_decay": "--ema/--ema-decay"}.get(key, "--" + key.replace("_", "-"))


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
        self.resumed = False
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None) if self.dist.enabled else self.model)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.schedule.state_dict(), "epoch": epoch, "args": asdict(self.config),
                "steps_per_epoch": self.steps_per_epoch, "history": self.history, "best": self.best,
                **({"extra_state": {k: v.state_dict() for k, v in self.extra_state.items()}}
                   if self.extra_state else {})}

    def _save(self, name: str, checkpoint: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        write_atomic(self.output / name, buf.getvalue())

    def check_finite(self, when: str) -> None:
        """Refuse to save weights that hold a NaN or an infinity: a `BetterConvError` naming the first such tensor
        of the model (parameters and buffers) or of `extra_state`; the checkpoints already written stay."""
        named = dict(self.model.state_dict())
        for key, value in self.extra_state.items():
            named.update({f"{key}.{k}": v for k, v in value.state_dict().items()})
        bad = first_non_finite(named)
        if bad is not None:
            raise BetterConvError(f"the weights are not finite {when}: {bad}; nothing was saved (the checkpoints "
                                  f"in {self.output} are those of the last good epoch); lower the learning rate")

    def _load_checkpoint(self, path: Path, trusted: bool) -> dict[str, Any]:
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=not trusted)
        except pickle.UnpicklingError:
            raise BetterConvError(f"{path}: cannot resume from this checkpoint: it holds pickled objects besides "
                                  "tensors; add --trusted to unpickle it if you trust its source") from None
        except Exception as e:  # a truncated, empty or foreign file: zip, EOF and unpickling errors
            raise BetterConvError(f"{path}: cannot resume from this checkpoint, it is not a readable PyTorch "
                                  f"checkpoint ({first_line(e, 120)})") from None
        missing = [k for k in ("model", "optimizer", "lr_scheduler", "epoch") if not isinstance(ckpt, dict)
                   or k not in ckpt]
        if missing:
            raise BetterConvError(f"{path}: cannot resume from this checkpoint, it is not a training checkpoint "
                                  f"(no {', '.join(missing)})")
        return ckpt

    def _check_settings(self, path: Path, ckpt: dict[str, Any]) -> None:
        """The settings a resumed run changes, except `epochs`, are refused in one line listing them."""
        old = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
        new = asdict(self.config)
        pairs = [(k, old.get(k), new[k]) for k in RESUME_SETTINGS if k in old]
        old_extra, new_extra = old.get("extra") or {}, new["extra"]
        pairs += [(k, old_extra[k], new_extra[k]) for k in new_extra if k in old_extra]
        if "steps_per_epoch" in ckpt:
            pairs.append(("steps_per_epoch", ckpt["steps_per_epoch"], self.steps_per_epoch))
        changed = [f"{_setting_name(k)} {_shown(a)} -> {_shown(b)}" for k, a, b in pairs if _plain(a) != _plain(b)]
        if changed:
            raise BetterConvError(f"{path} was trained with other settings: {'; '.join(changed)}; resume with "
                                  "the same ones, or start a new run (--overwrite or another --output)")
        done = int(ckpt["epoch"]) + 1
        if self.config.epochs < done:
            raise BetterConvError(f"--epochs {self.config.epochs} is fewer than the {done} epochs {path} has "
                                  "already trained")

    def _load_model_state(self, path: Path, state: Mapping[str, Any]) -> None:
        own = self.model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        reshaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
        if missing or unexpected or reshaped:
            example = (missing or unexpected or reshaped)[0]
            raise BetterConvError(f"{path}: holds the weights of another model than {type(self.model).__name__} "
                                  f"({len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} of "
                                  f"another shape, e.g. {example!r})")
        self.model.load_state_dict(state)

    def _extend_schedule(self, path: Path, old_epochs: int, done: int) -> None:
        """The schedule is the one of a run of `config.epochs` epochs (poly and cosine over the new length, step
        milestones and exponential decay as they were), at the step the checkpoint reached."""
        step = self.schedule.last_epoch
        for group, base, factor in zip(self.optimizer.param_groups, self.schedule.base_lrs,
                                       self.schedule.lr_lambdas):
            group["lr"] = base * factor(step)
        if self.dist.is_main:
            how = (f"the {self.config.schedule} schedule now runs over {self.config.epochs} epochs"
                   if self.config.schedule in ("poly", "cosine") else f"the {self.config.schedule} schedule goes on")
            print(f"{path}: --epochs {self.config.epochs} instead of {old_epochs}: {how}; epoch {done + 1} starts at "
                  f"lr {self.optimizer.param_groups[0]['lr']:.4g}", file=sys.stderr)

    def resume(self, path: str | Path | None = None, trusted: bool = False) -> bool:
        """Continue from `path` (default: the output folder's last.pt). Returns whether a checkpoint was found.

        The checkpoint must have been trained with the same settings (`RESUME_SETTINGS`, the task's recorded
        arguments, the steps per epoch); more `epochs` than it had extend the learning-rate schedule to the new
        length, fewer than it has done are refused. `trusted` unpickles a checkpoint that holds more than
        tensors."""
        path = Path(path) if path else self.output / "last.pt"
        if not path.is_file():
            return False
        ckpt = self._load_checkpoint(path, trusted)
        self._check_settings(path, ckpt)
        self._load_model_state(path, ckpt["model"])
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.schedule.load_state_dict(ckpt["lr_scheduler"])
            for key, value in ckpt.get("extra_state", {}).items():
                if key in self.extra_state:
                    self.extra_state[key].load_state_dict(value)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
            raise BetterConvError(f"{path}: cannot resume from this checkpoint ({first_line(e, 160)})") from None
        done = int(ckpt["epoch"]) + 1
        old_epochs = (ckpt.get("args") or {}).get("epochs")
        if old_epochs is not None and old_epochs != self.config.epochs:
            self._extend_schedule(path, old_epochs, done)
        self.start_epoch, self.history, self.best = done, list(ckpt.get("history", [])), ckpt.get("best")
        self.resumed = True
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
                self.check_finite(f"after epoch {epoch + 1}")  # the same weights on every process
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
                    if not self.resumed and epoch == self.start_epoch:  # a new run: the files of an old one go
                        for name in RUN_FILES:
                            if name not in ("last.pt", "history.json") and not (improved and name == "best.pt"):
                                (self.output / name).unlink(missing_ok=True)
                    if improved:
                        self._save("best.pt", checkpoint)
                    write_atomic(self.output / "history.json", json.dumps(self.history, indent=2).encode())
                barrier(self.dist)
        finally:
            shutdown(self.dist)
        return self.history


