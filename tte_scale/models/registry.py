"""Model registry: model names -> functions that return a model config (a leaf module, as timm's).

A model file registers its sizes with ``@register_model`` (``tte_scale.models.vit3d``); this module
imports no model, so any module may import it. ``get_config("vit3d_base", depth=6)`` calls the
registered function with the overrides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register_model", "list_models", "get_config"]

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` (returns a model config from ``**overrides``) under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Registered names, smallest first (registration order)."""
    return list(_REGISTRY)


def get_config(name: str, **overrides) -> Any:
    """The config of registered model ``name`` with ``overrides`` (its config's fields) applied."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](**overrides)
