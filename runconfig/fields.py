"""Typed parsing of flat Flower run-config values into dataclass sections.

Flower flattens ``[tool.flwr.app.config]`` into ``{"section.key": scalar}``. Each section
of :mod:`runconfig.schema` is a dataclass whose fields carry ``help`` metadata, in the
manner of PEFT's ``LoraConfig``; this module turns the flat mapping into those dataclasses
and reports every bad key or value by its full TOML name.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A run-config key is unknown, ill-typed or out of range. The message names the key."""


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and a ``help`` text."""
    return dataclasses.field(default=default, metadata={"help": help})


def toml_key(section: str, name: str) -> str:
    """``("train", "batch_size")`` -> ``"train.batch-size"`` (kebab-case, as in pyproject)."""
    key = name.replace("_", "-")
    return f"{section}.{key}" if section else key


_INT64 = 2**63  # TOML's integers and Flower's config values are 64-bit


def _finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):  # math.isfinite raises OverflowError beyond any float
        return -_INT64 <= value < _INT64
    return math.isfinite(value)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's annotation; convert only lossless cases."""
    origin = typing.get_origin(annotation)
    if origin is tuple:  # comma-separated list of strings in TOML
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: expected a comma-separated string")
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key} = {value!r}: expected true or false")
    if annotation is int:
        if not _finite_number(value) or value != int(value):
            raise ConfigError(f"{key} = {value!r}: expected an integer")
        return int(value)
    if annotation is float:
        # Every float key is finite: inf or nan as a learning rate, alpha, timeout or clip
        # norm passes a "> 0" check and then ruins the run far from its cause.
        if not _finite_number(value):
            raise ConfigError(f"{key} = {value!r}: expected a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: expected a string")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(
                f"{key} = {value!r}: control characters (NUL, newline) are not allowed"
            )
        return value
    raise TypeError(f"unsupported config annotation {annotation!r} for {key}")


def build_section(cls: type, section: str, values: Mapping[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``values`` (keys without the section prefix).

    Unknown keys raise :class:`ConfigError` listing the valid ones.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(toml_key(section, k) for k in sorted(fields))
        # Name the key exactly as it was written: "train.batch_size", not "train.batch-size".
        key = f"{section}.{unknown[0]}" if section else unknown[0]
        raise ConfigError(f"unknown config key {key!r}; valid: {valid}")
    kwargs = {}
    for kebab, value in values.items():
        field = fields[kebab]
        annotation = hints[field.name]
        if isinstance(annotation, types.UnionType):
            raise TypeError(f"{cls.__name__}.{field.name}: optional fields are not supported")
        kwargs[field.name] = _coerce(toml_key(section, kebab), value, annotation)
    return cls(**kwargs)


def require(condition: bool, section: str, name: str, value: Any, why: str) -> None:
    """Raise :class:`ConfigError` naming ``section.name`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{toml_key(section, name)} = {value!r}: {why}")


def at_most(section: str, name: str, value: float, high: float) -> None:
    """Raise :class:`ConfigError` naming ``section.name`` if ``value`` exceeds ``high``."""
    require(value <= high, section, name, value, f"must be <= {high}")


def one_of(section: str, name: str, value: str, valid: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is in ``valid``; the error lists them."""
    require(value in valid, section, name, value, f"must be one of {', '.join(valid)}")


def flatten_section(obj: Any, section: str) -> dict[str, Any]:
    """Inverse of :func:`build_section`: the dataclass as flat ``{"section.key": value}``."""
    out = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        out[toml_key(section, field.name)] = value
    return out
