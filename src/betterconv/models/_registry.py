"""The model registry: `register_model`, `create_model`, `list_models`, `model_info`.

Builders are keyword-only functions registered with one `ModelInfo` record of the model's facts. `create_model`
checks the keywords against the builder's signature before calling it, so a typo (`width_mul=0.5`) is an error,
never a silently different model, and every value against the builder's annotation (`check_arguments`), so
`num_classes=1.5` or `width_mult="abc"` is a one-line `BetterConvError` rather than a `TypeError` deep inside torch.
A value of the right type that the builder still refuses (`num_classes=-1`, `padding="foo"`) is one too. This layer
builds models only; `betterconv.weights.create_model` builds them with weights.
"""
from __future__ import annotations

import collections.abc
import difflib
import fnmatch
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from ..errors import BetterConvError, first_line
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


def shorten(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters, the cut marked with "...": how error messages show a user's value, so that
    a 100 KB `--arg` value or metadata string is never echoed whole."""
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def show_value(value: Any, limit: int = 60) -> str:
    """`repr(value)` for an error message, cut to `limit` characters (`shorten`); never raises (an int too long for
    `repr` shows as its type)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. ValueError for an int beyond sys.get_int_max_str_digits()
        text = f"<{type(value).__name__}>"
    return shorten(text, limit)


_HINTS: dict[str, dict[str, Any]] = {}


def _hints(name: str) -> dict[str, Any]:
    """Builder `name`'s parameter annotations, evaluated (`from __future__ import annotations` keeps them strings);
    a parameter whose annotation cannot be evaluated is not checked (`Any`)."""
    if name not in _HINTS:
        builder = get_builder(name)
        try:
            hints = typing.get_type_hints(builder)
        except Exception:  # noqa: BLE001 - a name only known to type checkers: check nothing rather than fail
            hints = {}
        _HINTS[name] = {p.name: hints.get(p.name, Any) for p in inspect.signature(builder).parameters.values()}
    return _HINTS[name]


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type: int is an integer but not a bool, float any finite real number
    but not a bool, a tuple or Sequence a list or tuple whose items fit; an annotation not understood accepts all."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and (isinstance(value, numbers.Integral) or math.isfinite(value)))
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if origin in (collections.abc.Sequence, collections.abc.MutableSequence, list):
        return isinstance(value, (tuple, list)) and all(_fits(v, args[0] if args else Any) for v in value)
    if isinstance(origin or hint, type):
        return isinstance(value, origin or hint)
    return True


def _describe(hint: Any) -> str:
    if hint is None or hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("collections.abc.", "").replace("typing.", "")


def check_arguments(name: str, kwargs: dict[str, Any]) -> None:
    """Check builder keywords for model `name` before building: every key must be a parameter of the builder and
    every value of its annotated type (`typing.get_type_hints` of the builder). Raises a one-line
    `BetterConvError` naming the model, the keyword and the value (cut to 60 characters), e.g.
    ``resnet50: num_classes='abc' must be int (values are Python literals: 21, 0.5, (6, 12), None, True)``."""
    hints = _hints(name)
    unknown = [k for k in kwargs if k not in hints]
    if unknown:
        shown = shorten(", ".join(show_value(k, 40) if not str(k).isidentifier() else str(k) for k in unknown), 160)
        raise BetterConvError(f"{name} got unknown argument(s) {shown}; "
                              f"it takes: {', '.join(hints) or 'no arguments'}")
    for key, value in kwargs.items():
        hint = hints[key]
        if not _fits(value, hint):
            why = " (not a finite number)" if isinstance(value, float) and not math.isfinite(value) else ""
            raise BetterConvError(f"{name}: {key}={show_value(value)} must be {_describe(hint)}{why} (values are "
                                  f"Python literals: 21, 0.5, (6, 12), None, True)")


# what a builder raises for a value of the right type that it cannot use (num_classes=-1, round_nearest=0, ...)
_BUILD_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError, LookupError, AssertionError, MemoryError)


def build(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build model `name` from builder keywords `kwargs`, checked first (`check_arguments`); a builder that fails
    on the values given raises one `BetterConvError` line naming them. Records `model_name` and `model_kwargs` on
    the model (what `save_weights` writes to rebuild it)."""
    builder = get_builder(name)
    check_arguments(name, kwargs)
    try:
        model = builder(**kwargs)
    except BetterConvError:
        raise
    except _BUILD_ERRORS as e:
        if not kwargs:  # the defaults always build: a failure there is a bug, not a user error
            raise
        given = shorten(", ".join(f"{k}={show_value(v)}" for k, v in kwargs.items()), 200)
        raise BetterConvError(f"{name} cannot be built with {given}: {type(e).__name__}: {first_line(e, 160)}"
                              ) from None
    model.model_name, model.model_kwargs = name, dict(kwargs)  # what rebuilds it: saved with its weights
    return model


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model with random weights; unknown keywords raise `BetterConvError` naming the keywords
    it does take. `betterconv.create_model` (in `betterconv.weights`) also loads weights."""
    return build(name, kwargs)


def paper_input_size(name: str) -> tuple[int, int]:
    """The (H, W) at which model `name`'s paper reports its costs."""
    return model_info(name).input_size
