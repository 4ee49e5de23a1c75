"""Typed configs: kw-only dataclasses built from YAML, with ``--set a.b=c`` overrides.

Every component owns a small ``@dataclass(kw_only=True, slots=True)`` config with a docstring
line under each field and validation in ``__post_init__`` (raise :class:`ConfigError` with the
key's name). This module only turns plain data (YAML, ``--set`` strings) into those dataclasses
and back, with errors that name the offending key, e.g.::

    ConfigError: model.dept: unknown key (did you mean 'depth'?)

Example::

    cfg = load_config(PretrainConfig, "configs/pretrain/demo.yaml", ["model.depth=12"])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "from_dict",
    "to_dict",
    "load_config",
    "parse_overrides",
    "apply_overrides",
    "check",
    "packaged_config",
    "resolve_config_path",
]


class ConfigError(ValueError):
    """A config value or key is wrong; the message starts with the dotted key."""


def check(ok: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("key: message")`` unless ``ok``; for ``__post_init__`` validation."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML) to the annotated type ``tp`` or raise naming ``key``."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {args}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-3` (no dot) as a string; accept any float literal.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping; unknown keys raise with a suggestion, missing
    required keys with their names (a TypeError from the constructor would be a traceback)."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            where = f"{prefix}.{name}" if prefix else name
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(fields))})"
            raise ConfigError(f"{where}: unknown key{hint}")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = ", ".join(f"{prefix}.{m}" if prefix else m for m in missing)
        raise ConfigError(f"{where}: required key{'s' if len(missing) > 1 else ''} missing")
    kwargs = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}.{exc}") from None
        raise


def to_dict(cfg: Any) -> Any:
    """Plain data (YAML/JSON-safe) from a config dataclass, recursively."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def parse_overrides(overrides: list[str] | tuple[str, ...] | None) -> list[tuple[list[str], Any]]:
    """``["model.depth=12", "name=x"]`` -> ``[(["model", "depth"], 12), (["name"], "x")]``.

    Values are parsed as YAML scalars/lists, so ``true``, ``1e-3``, ``[1, 2]`` and ``null`` work.
    """
    parsed = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.depth=12")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from None
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``data`` with ``--set`` overrides applied (unknown keys are caught later)."""
    import copy

    out = copy.deepcopy(data)
    for parts, value in parse_overrides(overrides):
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def packaged_config(*parts: str) -> Path:
    """A file of the configs installed with the package, e.g. ``packaged_config("shard", "demo.yaml")``."""
    import importlib.resources

    return Path(str(importlib.resources.files("tte_scale.configs"))).joinpath(*parts)


def resolve_config_path(path: str | Path) -> Path:
    """``path`` as given (relative to the cwd) when it exists; otherwise the same file among the
    configs installed with the package (``configs/pretrain/demo.yaml`` or ``pretrain/demo.yaml``),
    so the shipped configs work outside a checkout. A path found in neither is returned as given."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    rel = p.parts[1:] if p.parts[:1] == ("configs",) else p.parts
    packaged = packaged_config(*rel)
    return packaged if rel and packaged.is_file() else p


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (a packaged config when ``path`` names one that is not in the cwd, see
    :func:`resolve_config_path`); a clear error for a missing file or a non-mapping document."""
    path = resolve_config_path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus ``--set`` overrides."""
    data = read_yaml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides))
