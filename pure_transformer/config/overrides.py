"""Override dataclass configs from YAML files and ``--set key=value`` strings.

Values from ``--set`` are parsed as YAML scalars (``3e-4``, ``true``, ``[1, 2]``,
``{a: 0.5}``) and then checked against the field's annotated type, so a typo in
a key or a wrongly typed value fails with one line that names it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from ..errors import ConfigError

C = TypeVar("C")
MAX_INT = 10**15
"""No count a config holds (tokens, steps, sizes) is near this; a larger one is a typo."""


def _coerce(name: str, value: Any, annotation: Any, strict: bool = False) -> Any:
    """Check (and gently convert) ``value`` against a field annotation; ``strict`` (saved
    metadata, which our own code wrote) converts no text to numbers."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg, strict)
            except ConfigError as e:
                errors.append(str(e))
        head, tail = f"{name} must be ", f", got {value!r}"
        if len(errors) > 1 and all(e.startswith(head) and e.endswith(tail) for e in errors):
            # "x must be bool or one of selective, got 'full'": every alternative, one line
            raise ConfigError(head + " or ".join(e[len(head):-len(tail)] for e in errors) + tail)
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (dict, list, tuple):
        expected = {dict: dict, list: (list, tuple), tuple: (list, tuple)}[origin]
        if not isinstance(value, expected):
            raise ConfigError(f"{name} must be a {origin.__name__}, got {value!r}")
        if origin is dict:
            key_type, value_type = args or (Any, Any)
            return {_coerce(name, k, key_type, strict): _coerce(f"{name}[{k!r}]", v, value_type, strict)
                    for k, v in value.items()}
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):  # betas=[0.9, 0.95, 0.99] would crash the optimizer at step 1
                raise ConfigError(f"{name} must have {len(args)} values, got {len(value)}: {list(value)!r}")
            return tuple(_coerce(f"{name}[{i}]", v, a, strict) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(f"{name}[{i}]", v, item, strict) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation in (int, float) and isinstance(value, str) and not strict:
        try:  # YAML 1.1 reads exponent forms without a dot ("1e-3") as strings
            value = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be {annotation.__name__}, got {value!r}") from None
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if annotation is int and isinstance(value, float):
        if not (value.is_integer() and abs(value) <= MAX_INT):  # "2e9" is read by YAML as a float
            raise ConfigError(f"{name} must be a whole number of at most {MAX_INT:.0e}, got {value!r}")
        return int(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{name} must be a whole number of at most {MAX_INT:.0e}, got {value!r}")
    if annotation in (int, float, str, bool) and not (
            isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))):
        raise ConfigError(f"{name} must be {annotation.__name__}, got {value!r}")
    return value


def apply_overrides(cfg: C, overrides: dict[str, Any], strict: bool = False) -> C:
    """A copy of dataclass ``cfg`` with ``overrides`` applied (validated again); ``strict``
    as in :func:`_coerce`."""
    hints = typing.get_type_hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown config key '{key}'; valid keys: {', '.join(sorted(fields))}")
        changes[key] = _coerce(key, value, hints[key], strict)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def parse_set(pairs: list[str] | None) -> dict[str, Any]:
    """``["lr=3e-4", "compile=true"]`` -> ``{"lr": 0.0003, "compile": True}``."""
    out = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value '{raw}'") from None
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a config file, with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of key: value")
    return data


def require_positive(cfg: Any, names: tuple[str, ...], label: str = "") -> None:
    """Raise a one-line ConfigError naming the first of ``names`` that is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        if value <= 0:
            raise ConfigError(f"{label}{name} must be positive, got {value}")


def pick_preset(presets: dict[str, Callable[[], C]], name: str, phase: str, by_phase: bool = True) -> C:
    """``presets[name]()`` for a ``phase`` preset, named bare (``debug``) or by its phase
    (``pretrain:debug``); an unknown name, or another phase's, is a one-line ConfigError
    listing the choices by their full names. ``by_phase=False`` (model presets, whose names
    no phase shares) takes and lists bare names only."""
    prefix, qualified, bare = name.rpartition(":") if by_phase else ("", "", name)
    choices = ", ".join(preset_names(presets, phase) if by_phase else presets)
    if qualified and prefix != phase:
        raise ConfigError(f"'{name}' is not a {phase} preset; choose one of: {choices}")
    if bare not in presets:
        raise ConfigError(f"unknown {phase} preset '{name}'; choose one of: {choices}")
    return presets[bare]()


def preset_names(presets: dict[str, Callable[[], C]], phase: str) -> list[str]:
    """The presets as users read them, named by phase: ``pretrain:debug``, ``rl:debug``."""
    return [f"{phase}:{key}" for key in presets]
