"""Checking JSON read from a file against the annotated types of the dataclass it becomes.

A manifest or a report's record comes from disk, perhaps damaged, perhaps written by
someone hostile. Checked here first, every value has the type its field declares, so
the code using it never meets ``None`` where it expects a list or a string where it
adds numbers; a wrong value is refused with one message naming the field::

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Point:
    ...     x: int
    ...     label: str = ""
    >>> Point(**fields_of(Point, {"x": 3}, "point.json"))
    Point(x=3, label='')
    >>> fields_of(Point, {"x": "3"}, "point.json")
    Traceback (most recent call last):
    ...
    lib.json_shape.ShapeError: point.json: x must be an integer, not a string

Types understood: ``Any``, ``str``, ``int`` (a JSON integer that fits 64 bits; ``true``
is not one), ``float`` (any JSON number), ``bool``, ``None``, unions, ``list[T]``,
``dict[str, T]`` and dataclasses (a JSON object with their fields).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

INT_LIMIT = 2**63
"""Integers must lie strictly between -INT_LIMIT and INT_LIMIT (numpy's int64)."""
MAX_DEPTH = 64
"""JSON nested deeper than this is refused (no manifest or record nests past 8)."""


class ShapeError(ValueError):
    """A JSON value does not have the type or form its field needs. ``where`` names the
    file and the field (``manifest.json: segments[2].name``)."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def describe(value: object) -> str:
    """A JSON value's kind in words: "null", "a list", "a string", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kinds = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return kinds.get(type(value), type(value).__name__)


def depth(value: object) -> int:
    """How deeply ``value`` nests (a scalar: 0, ``[[1]]``: 2), counted without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def check_depth(value: object, where: str, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`ShapeError` when ``value`` nests deeper than ``limit``."""
    if depth(value) > limit:
        raise ShapeError(where, f"nested more than {limit} levels deep")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields_of(
    cls: type, data: object, where: str, *, unknown: str = "ignore", field: str = ""
) -> dict[str, Any]:
    """The keyword arguments that make a ``cls`` (a dataclass) from the JSON object
    ``data``: its keys that name fields, each checked against the field's type.

    Args:
        where: the file, for messages.
        unknown: "ignore" keys that name no field (newer writers may add some), or
            "refuse" them.
        field: the path of ``data`` inside the file ("" at the top).

    Raises:
        ShapeError: not an object, a field without default missing, a value of the wrong
            type, or (``unknown="refuse"``) an unknown key.
    """
    label = field or "the top level"
    if not isinstance(data, dict):
        raise ShapeError(where, f"{label} must be an object, not {describe(data)}")
    hints = _hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        path = f"{field}.{f.name}" if field else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ShapeError(where, f"{path} is missing")
            continue
        check(data[f.name], hints[f.name], where, path)
        out[f.name] = data[f.name]
    if unknown == "refuse":
        extra = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if extra:
            raise ShapeError(where, f"{label} has unknown key(s) {', '.join(map(repr, extra))}")
    return out


def check(value: object, annotation: Any, where: str, field: str) -> None:
    """Raise :class:`ShapeError` unless ``value`` has the type ``annotation`` describes."""
    problem = _problem(value, annotation, where, field)
    if problem:
        raise ShapeError(where, f"{field} {problem}")


def _problem(value: object, annotation: Any, where: str, field: str) -> str:
    """Why ``value`` is not an ``annotation`` ("must be ..."), or "" when it is one."""
    if annotation is Any:
        return ""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        arms = typing.get_args(annotation)
        if any(not _problem(value, arm, where, field) for arm in arms):
            return ""
        return f"must be {' or '.join(_name(a) for a in arms)}, not {describe(value)}"
    if origin is list:
        if not isinstance(value, list):
            return f"must be a list, not {describe(value)}"
        (item,) = typing.get_args(annotation)
        for i, v in enumerate(value):
            check(v, item, where, f"{field}[{i}]")
        return ""
    if origin is dict or origin is Mapping:
        if not isinstance(value, dict):
            return f"must be an object, not {describe(value)}"
        _, item = typing.get_args(annotation)
        for k, v in value.items():
            check(v, item, where, f"{field}.{k}")
        return ""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        fields_of(annotation, value, where, unknown="refuse", field=field)
        return ""
    if _fits(value, annotation):
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and annotation in (int, float):
        return f"is out of range ({value:.3g}; at most about 9.2e18)"
    return f"must be {_name(annotation)}, not {describe(value)}"


def _fits(value: object, annotation: Any) -> bool:
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and -INT_LIMIT < value < INT_LIMIT
        )
    if annotation is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return -INT_LIMIT < value < INT_LIMIT
        return isinstance(value, float)
    if annotation is str:
        return isinstance(value, str)
    raise TypeError(f"json_shape cannot check the type {annotation!r}")  # a programming error


def _name(annotation: Any) -> str:
    names = {
        type(None): "null",
        None: "null",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
    }
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(annotation):
        return "an object"
    return str(annotation)
