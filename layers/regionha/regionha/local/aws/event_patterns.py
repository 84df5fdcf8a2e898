"""EventBridge event patterns, matched as AWS matches them (event-ruler semantics: exists, prefix,
suffix, anything-but, numeric, cidr, wildcard, equals-ignore-case, $or, arrays of objects).

moto's matcher (``moto.events.models.EventPattern``) accepts unknown filters as matching, does not
look into arrays of objects and treats an ``exists`` on an object as a leaf; this one follows EventBridge."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from regionha.errors import ConfigurationError

_MISSING = object()


def pattern_matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """True when ``event`` matches the EventBridge event ``pattern`` (both already parsed JSON).

    Supported: exact values (any of an array; an array in the event matches when any element
    does), nested objects, arrays of objects in the event, ``$or``, ``prefix``, ``suffix``,
    ``equals-ignore-case``, ``wildcard``, ``anything-but`` (value, list, prefix/suffix/
    equals-ignore-case/wildcard), ``numeric``, ``exists`` (leaf values only, as AWS) and ``cidr``.
    An unknown filter raises ``ConfigurationError`` instead of silently matching.
    """
    if not isinstance(pattern, dict):
        raise ConfigurationError(f"an event pattern must be a JSON object, got {pattern!r}")
    return _match_object(pattern, event)


def _match_object(pattern: dict[str, Any], node: Any) -> bool:
    for key, sub in pattern.items():
        if key == "$or":
            if not isinstance(sub, list) or not sub:
                raise ConfigurationError("$or takes a non-empty array of patterns")
            if not any(_match_object(alt, node) for alt in sub):
                return False
            continue
        value = node.get(key, _MISSING) if isinstance(node, dict) else _MISSING
        if isinstance(sub, dict):
            if not _match_nested(sub, value):
                return False
        elif isinstance(sub, list):
            if not sub:
                raise ConfigurationError(f"empty array for {key!r} in an event pattern")
            if not _match_leaf(sub, value):
                return False
        else:
            raise ConfigurationError(f"{key!r} must be an object or an array in an event pattern")
    return True


def _match_nested(sub: dict[str, Any], value: Any) -> bool:
    if isinstance(value, list):
        # Fields of objects inside an array are matched within one element, as event-ruler does.
        return any(_match_object(sub, v) for v in value if isinstance(v, dict))
    if isinstance(value, dict):
        return _match_object(sub, value)
    # A nested pattern against a missing or scalar field: only all-"exists: false" leaves match.
    return _match_object(sub, {})


def _leaf_values(value: Any) -> list[Any]:
    """The leaf values at a path: objects are not leaves, arrays contribute each scalar element."""
    if value is _MISSING or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [v for v in value if not isinstance(v, dict | list)]
    return [value]


def _match_leaf(filters: list[Any], value: Any) -> bool:
    values = _leaf_values(value)
    for f in filters:
        if isinstance(f, dict):
            if _match_named(f, values):
                return True
        elif any(_same(f, v) for v in values):
            return True
    return False


def _same(expected: Any, actual: Any) -> bool:
    # Python's True == 1 must not leak into matching: JSON booleans only match booleans.
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    return type(expected) is type(actual) and expected == actual


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _match_named(f: dict[str, Any], values: list[Any]) -> bool:
    if len(f) != 1:
        raise ConfigurationError(f"a filter object has exactly one key, got {f!r}")
    name, arg = next(iter(f.items()))
    if name == "exists":
        if not isinstance(arg, bool):
            raise ConfigurationError("exists takes true or false")
        return bool(values) == arg
    if name == "anything-but":
        # Per value, as event-ruler: ["a", "b"] matches anything-but "a" through "b".
        return any(not _match_string_filter_or_values(arg, v) for v in values)
    if name == "numeric":
        return any(_match_numeric(arg, v) for v in values)
    if name == "cidr":
        net = ipaddress.ip_network(arg, strict=False)
        return any(_in_network(v, net) for v in values)
    return any(_match_string_filter({name: arg}, v) for v in values)


def _match_string_filter_or_values(arg: Any, v: Any) -> bool:
    """Whether ``v`` is one of the things an ``anything-but`` excludes."""
    if isinstance(arg, dict):
        return _match_string_filter(arg, v)
    if isinstance(arg, list):
        return any(_same(a, v) for a in arg)
    return _same(arg, v)


def _match_string_filter(f: dict[str, Any], v: Any) -> bool:
    name, arg = next(iter(f.items()))
    if not isinstance(v, str):
        return False
    if name in ("prefix", "suffix"):
        ignore_case = isinstance(arg, dict)
        needles = arg.get("equals-ignore-case") if ignore_case else arg
        needles = needles if isinstance(needles, list) else [needles]
        text = v.lower() if ignore_case else v
        for needle in needles:
            n = needle.lower() if ignore_case else needle
            if text.startswith(n) if name == "prefix" else text.endswith(n):
                return True
        return False
    if name == "equals-ignore-case":
        needles = arg if isinstance(arg, list) else [arg]
        return any(v.lower() == n.lower() for n in needles)
    if name == "wildcard":
        needles = arg if isinstance(arg, list) else [arg]
        return any(_wildcard(n).fullmatch(v) is not None for n in needles)
    raise ConfigurationError(f"unsupported event pattern filter {name!r}")


def _wildcard(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\\\*|\\\\|\*)", pattern)
    regex = "".join(".*" if p == "*" else re.escape(p[1:] if p in ("\\*", "\\\\") else p) for p in parts)
    return re.compile(regex, re.DOTALL)


_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


def _match_numeric(arg: list[Any], v: Any) -> bool:
    if not isinstance(arg, list) or len(arg) % 2 or not arg:
        raise ConfigurationError(f"numeric takes operator/value pairs, got {arg!r}")
    if not _is_number(v):
        return False
    for op, bound in zip(arg[::2], arg[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_number(bound):
            raise ConfigurationError(f"bad numeric comparison {op!r} {bound!r}")
        if not _NUMERIC_OPS[op](float(v), float(bound)):
            return False
    return True


def _in_network(v: Any, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return isinstance(v, str) and ipaddress.ip_address(v) in net
    except ValueError:
        return False
