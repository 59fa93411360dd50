"""Model registry filled by the `register_model` decorator.

    @register_model("retina_unet")
    class RetinaUNet(AnchorDetector): ...

    det = build_model("retina_unet", plans)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from retinaunet.plans import Plans

T = TypeVar("T", bound=type)

_MODELS: dict[str, type] = {}


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator that registers a detector under `name` and stores it as `cls.model_name`."""

    def wrap(cls: T) -> T:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_MODELS[name].__name__}")
        _MODELS[name] = cls
        cls.model_name = name
        return cls

    return wrap


def get_model(name: str) -> type:
    """The detector class registered as `name`."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None


def build_model(name: str, plans: Plans) -> nn.Module:
    """Instantiate the detector `name` for `plans` (a `Plans` or a plain plans dict)."""
    return get_model(name)(plans)


def available_models() -> list[str]:
    """Names of the registered detectors, sorted."""
    return sorted(_MODELS)
