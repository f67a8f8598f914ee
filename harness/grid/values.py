"""TOML values checked against what a grid key or a plugin parameter allows; every error names file and key.

Nothing is evaluated: ``"8/255"`` is parsed as a fraction by a regular expression.
"""

from __future__ import annotations

import math
import re
import types
import typing
import unicodedata
from typing import Any, Literal, get_args, get_origin

from harness.api.errors import ConfigError
from harness.api.registry import suggest
from harness.api.specs import Param
from harness.api.threat import Norm

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]+)\s*$")
NUMBER = "a number such as 0.5 or a fraction such as \"8/255\""


def parse_number(value: Any, file: str, key: str) -> float:
    """A float, an int, or a fraction written as a string such as "8/255"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match and float(match.group(2)) != 0:
            return float(match.group(1)) / float(match.group(2))
    raise ConfigError(file, key, f"expected a number, got {value!r}", NUMBER)


def radius(value: Any, norm: Norm, file: str, key: str) -> float:
    """A threat model's ε: finite, >= 0, and at most 1 under L∞ (images live in [0,1])."""
    eps = parse_number(value, file, key)
    if not math.isfinite(eps):
        raise ConfigError(file, key, f"must be finite, got {eps}", "a number >= 0, e.g. \"8/255\"")
    if eps < 0:
        raise ConfigError(file, key, f"must be >= 0, got {eps}", "a number >= 0, e.g. \"8/255\"")
    if norm is Norm.LINF and eps > 1:
        raise ConfigError(file, key, f"an L∞ radius of {eps:g} is larger than the whole image range [0,1]",
                          "a number in [0, 1], e.g. \"8/255\"")
    return eps


def label(value: Any, file: str, key: str) -> str:
    """A display label: a non-empty string without control characters (they would break report tables)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(file, key, f"expected a non-empty string, got {value!r}")
    bad = next((ch for ch in value if unicodedata.category(ch).startswith("C")), None)
    if bad is not None:
        raise ConfigError(file, key, f"the label {value!r} contains the control character {bad!r}",
                          "printable text on one line")
    return value


def integer(raw: dict, key: str, default: int | None, file: str, minimum: int, maximum: int | None = None) -> int:
    if key not in raw:
        if default is None:
            raise ConfigError(file, key, "missing", f"an integer >= {minimum}")
        return default
    value = raw[key]
    allowed = f"an integer >= {minimum}" + (f" and at most {maximum:,}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(file, key, f"expected {allowed}, got {value!r}", allowed)
    return value


def coerce(value: Any, param: Param, file: str, key: str) -> Any:
    """Check a TOML value against a plugin parameter's declared type and range; return it in that type."""
    out = _typed(value, param.type, file, key)
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        if not math.isfinite(out) or (param.minimum is not None and out < param.minimum) or \
                (param.maximum is not None and out > param.maximum):
            raise ConfigError(file, key, f"{out!r} is out of range", param.range_text() if
                              param.minimum is not None or param.maximum is not None else "a finite number")
    return out


def _typed(value: Any, tp: Any, file: str, key: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(file, key, f"{value!r} is not allowed{suggest(str(value), [str(a) for a in allowed])}",
                              ", ".join(repr(a) for a in allowed))
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _typed(value, option, file, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected true or false, got {value!r}", "true, false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"expected an integer, got {value!r}", "an integer")
        return value
    if tp is float:
        return parse_number(value, file, key)
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table such as {{steps = 10}}, got {value!r}", "a TOML table")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected a string, got {value!r}", "a string")
        return value
    return value
