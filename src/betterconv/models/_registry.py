"""The model registry: `register_model`, `create_model`, `list_models`, `model_info`.

Builders are keyword-only functions registered with one `ModelInfo` record of the model's facts. `create_model`
checks the keywords against the builder's signature before calling it, so a typo (`width_mul=0.5`) is an error,
never a silently different model. This layer builds models only; `betterconv.weights.create_model` builds them
with weights.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from ..errors import BetterConvError
from .info import ModelInfo

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}
B = TypeVar("B", bound=Callable[..., nn.Module])


def register_model(info: ModelInfo, name: str | None = None) -> Callable[[B], B]:
    """Register a keyword-only builder under `name` (default: the function's name) with its facts `info`."""
    if not isinstance(info, ModelInfo):
        raise TypeError(f"register_model takes a ModelInfo, got {type(info).__name__}")

    def wrap(builder: B) -> B:
        key = name or builder.__name__
        if key in _MODELS:
            raise RuntimeError(f"a model named {key!r} is already registered")
        params = inspect.signature(builder).parameters.values()
        if any(p.kind is not p.KEYWORD_ONLY for p in params):
            raise RuntimeError(f"builder {key!r} must take keyword-only arguments (and no **kwargs)")
        _MODELS[key], _INFO[key] = builder, info
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


def model_info(name: str) -> ModelInfo:
    """The facts recorded for model `name` at registration."""
    get_builder(name)  # an unknown name fails with suggestions
    return _INFO[name]


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


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model with random weights; unknown keywords raise `BetterConvError` naming the keywords
    it does take. `betterconv.create_model` (in `betterconv.weights`) also loads weights."""
    return build(name, kwargs)


def paper_input_size(name: str) -> tuple[int, int]:
    """The (H, W) at which model `name`'s paper reports its costs."""
    return model_info(name).input_size
