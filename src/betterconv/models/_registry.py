"""The model registry: `register_model`, `create_model`, `list_models`.

Builders are keyword-only functions. `create_model` checks the keywords against the builder's signature before
calling it, so a typo (`width_mul=0.5`) is an error, never a silently different model.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from ..errors import BetterConvError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
B = TypeVar("B", bound=Callable[..., nn.Module])


def register_model(name: str | None = None) -> Callable[[B], B]:
    def wrap(builder: B) -> B:
        key = name or builder.__name__
        if key in _MODELS:
            raise RuntimeError(f"a model named {key!r} is already registered")
        params = inspect.signature(builder).parameters.values()
        if any(p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params):
            raise RuntimeError(f"builder {key!r} must take keyword-only arguments")
        _MODELS[key] = builder
        return builder

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_builder(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(sorted(_MODELS))}"
        raise BetterConvError(f"unknown model {name!r}{hint}") from None


def model_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments `name` accepts, with their defaults."""
    return {p.name: p.default for p in inspect.signature(get_builder(name)).parameters.values()}


def build(name: str, kwargs: dict[str, Any]) -> nn.Module:
    builder = get_builder(name)
    accepted = model_arguments(name)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise BetterConvError(f"{name} got unknown argument(s) {', '.join(unknown)}; "
                              f"it takes: {', '.join(accepted) or 'no arguments'}")
    model = builder(**kwargs)
    model.model_name, model.model_kwargs = name, dict(kwargs)  # what rebuilds it: saved with its weights
    return model


def create_model(name: str, *, weights: str | Path | None = None, trusted: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered model; unknown keywords raise `BetterConvError` naming the keywords it does take.

    `weights` loads a file (betterconv safetensors, torchvision state dict, darknet `.weights`, `.tflite`) in the
    configuration it implies; `trusted=True` allows unpickling a `.pth` that holds more than tensors.
    """
    if weights is not None:
        from ..weights import create_with_weights

        return create_with_weights(name, weights, kwargs, trusted)
    return build(name, kwargs)


# the input size each paper reports its costs at; 224x224 for the classifiers
PAPER_INPUT_SIZE = {"fcn": (500, 500), "deeplabv3": (513, 513), "yolov2": (416, 416)}


def paper_input_size(name: str) -> tuple[int, int]:
    for prefix, size in PAPER_INPUT_SIZE.items():
        if name.startswith(prefix):
            return size
    return 224, 224
