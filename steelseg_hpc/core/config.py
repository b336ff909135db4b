"""Strict TOML configuration: pydantic models that reject unknown keys, and one-line errors.

Example:
    >>> from steelseg_hpc.core.config import StrictModel
    >>> class Run(StrictModel):
    ...     epochs: int = 10
    >>> Run.model_validate({"epochs": 3}).epochs
    3
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from steelseg_hpc.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def describe_validation_error(err: ValidationError, source: str) -> str:
    """Format the first pydantic error as ``source: field a.b: message`` (+ how many more)."""
    errors = err.errors()
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see the documented fields)"
    else:
        message = first["msg"]
        if "input" in first and first["type"] not in ("missing",):
            message += f", got {first['input']!r}"
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    return f"{source}: field '{location}': {message}{more}"


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing file or a syntax error into a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None


def validate(model_cls: type[M], data: dict[str, Any], source: str) -> M:
    """Validate ``data`` against ``model_cls``; errors name ``source`` and the field."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None


def load_toml(path: str | Path, model_cls: type[M], overrides: list[str] | None = None) -> M:
    """Load ``path`` into ``model_cls``, after applying ``KEY=VALUE`` dotted overrides."""
    data = read_toml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(model_cls, data, str(path))


def parse_value(text: str) -> Any:
    """Parse an override value as TOML would (numbers, booleans, lists, strings)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=VALUE`` overrides applied.

    Whether a key exists is checked by the model validation that follows, so a typo is still an
    error (``extra="forbid"``) rather than a silently ignored value.
    """
    import copy

    result = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.base_channels=8")
        parts = key.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = parse_value(raw.strip())
    return result


def dump_toml(data: dict[str, Any]) -> str:
    """Serialise a nested dict of plain values as TOML (enough for resolved configs)."""
    lines: list[str] = []

    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        if value is None:
            raise ValueError("TOML has no null")
        raise TypeError(f"cannot write {type(value).__name__} to TOML")

    def emit(table: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {fmt(value)}")
        if scalars:
            lines.append("")
        for key, value in tables.items():
            emit(value, f"{prefix}.{key}" if prefix else key)

    emit(data, "")
    return "\n".join(lines).rstrip() + "\n"
