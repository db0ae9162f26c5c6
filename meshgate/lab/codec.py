"""Frozen dataclasses to JSON-able data and back (plans and state files), without a validation
framework: the data was validated when the topology was read, and the runner wrote the file."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


def dump(value: Any) -> Any:
    """``value`` as dicts, lists and scalars (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): dump(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [dump(item) for item in value]
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def load(cls: type[T], data: Any) -> T:
    """The ``cls`` (a dataclass) that ``dump`` turned into ``data``."""
    return typing.cast(T, _load(cls, data))


def _load(annotation: Any, data: Any) -> Any:
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        hints = _hints(annotation)
        names = {f.name for f in dataclasses.fields(annotation) if f.init}
        return annotation(**{k: _load(hints[k], v) for k, v in data.items() if k in names})
    if origin in (types.UnionType, typing.Union):
        if data is None:
            return None
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _load(options[0], data)
    if origin is tuple:
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(args[0], item) for item in data)
        return tuple(_load(arg, item) for arg, item in zip(args, data, strict=True))
    if origin is list:
        return [_load(get_args(annotation)[0], item) for item in data]
    if origin is dict:
        value_type = get_args(annotation)[1]
        return {key: _load(value_type, item) for key, item in data.items()}
    if annotation is float and isinstance(data, int):
        return float(data)
    return data
