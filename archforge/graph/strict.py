"""Strict kinds for block arguments: a boolean is not a number, a string is not a number or a boolean.

Pydantic's default (lax) mode reads ``channels: true`` as 1, ``channels: '4'`` as 4 and
``bias: 1`` or ``bias: 'off'`` as booleans. Its strict mode refuses those, but also the
YAML list that fills a ``tuple[int, int]`` and the ``2.0`` that an expression such as
``${dim / 2}`` gives for an ``int``. So, before a block's ``Args`` validate a node's
arguments (laxly, for everything else), :func:`strictness_problem` walks each argument
alongside its annotation and reports the first value whose *kind* the annotation does
not admit. It reads the annotation only, so it holds for every block, built-in or
plugin: ``int``, ``float``, ``bool``, ``str``, ``Literal``, enums, ``X | None``,
unions, ``Annotated``, lists, tuples, sets, dicts and nested models. An annotation it
does not know (``Any``, a custom type) admits anything, and pydantic decides.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

_UNKNOWN = "unknown"
_NUMBERS = {"int", "float"}


@dataclass(frozen=True)
class Problem:
    """Where below the argument (a path of keys and indices) and what is wrong there."""

    path: tuple[Any, ...]
    message: str
    hint: str = ""  # goes last, after whoever reports the problem has said where


def strictness_problem(model: type[BaseModel], args: Mapping[str, Any]) -> Problem | None:
    """The first argument of ``args`` whose kind ``model``'s fields do not admit, or ``None``."""
    try:
        return _model_problem(model, args, ())
    except Exception:  # typing this reader does not know (a plugin's own constructs): pydantic alone decides
        return None


def _model_problem(model: type[BaseModel], data: Mapping[Any, Any], path: tuple[Any, ...]) -> Problem | None:
    fields = {}
    for name, field in model.model_fields.items():
        fields[name] = field.annotation
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                fields[alias] = field.annotation
    for key, value in data.items():
        if key in fields:  # unknown keys are pydantic's to report
            problem = _problem(fields[key], value, path + (key,))
            if problem is not None:
                return problem
    return None


def _problem(annotation: Any, value: Any, path: tuple[Any, ...]) -> Problem | None:
    members = _members(annotation)
    kinds = set().union(*(_kinds(m) for m in members))
    if _UNKNOWN in kinds:
        return None
    if isinstance(value, bool):
        if "bool" not in kinds and kinds & _NUMBERS:
            return Problem(path, f"expected {_expected(members)}, not a boolean (got {str(value).lower()})")
        return None
    if isinstance(value, (int, float)):
        if "bool" in kinds and not kinds & _NUMBERS:
            return Problem(path, f"expected {_expected(members)}, not a number (got {value!r})")
        return None
    if isinstance(value, str):
        words = _literal_strings(members)
        if "str" not in kinds and value not in words and kinds & (_NUMBERS | {"bool"}):
            kind = "" if words else ", not a string"  # 'full' for `int | Literal['same']` is the wrong word, not the wrong kind
            return Problem(path, f"expected {_expected(members)}{kind} (got {_quoted(value)})", _unquote_hint(value))
        return None
    if isinstance(value, (list, tuple)):
        return _first_fit(members, value, path, _items_problem)
    if isinstance(value, dict):
        return _first_fit(members, value, path, _mapping_problem)
    return None


def _first_fit(members: list[Any], value: Any, path: tuple[Any, ...], check: Any) -> Problem | None:
    """``None`` if one member of a union takes ``value`` without a problem (or none can check it), else the first problem."""
    problems = []
    for member in members:
        problem = check(member, value, path)
        if problem is None:
            return None
        if problem is not _NOT_APPLICABLE:
            problems.append(problem)
    return problems[0] if problems else None


_NOT_APPLICABLE: Any = Problem((), "")


def _items_problem(member: Any, value: Sequence[Any], path: tuple[Any, ...]) -> Problem | None:
    origin = typing.get_origin(member) or member
    if not (isinstance(origin, type) and issubclass(origin, (list, tuple, set, frozenset, Sequence)) and origin is not str):
        return _NOT_APPLICABLE
    args = typing.get_args(member)
    if not args:
        return None
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(args) != len(value):
            return None  # a wrong length is pydantic's to report
        pairs = list(zip(args, value))
    else:
        pairs = [(args[0], item) for item in value]
    for i, (item_annotation, item) in enumerate(pairs):
        problem = _problem(item_annotation, item, path + (i,))
        if problem is not None:
            return problem
    return None


def _mapping_problem(member: Any, value: Mapping[Any, Any], path: tuple[Any, ...]) -> Problem | None:
    if isinstance(member, type) and issubclass(member, BaseModel):
        return _model_problem(member, value, path)
    origin = typing.get_origin(member) or member
    if not (isinstance(origin, type) and issubclass(origin, Mapping)):
        return _NOT_APPLICABLE
    args = typing.get_args(member)
    if len(args) != 2:
        return None
    for key, item in value.items():
        problem = _problem(args[1], item, path + (key,))
        if problem is not None:
            return problem
    return None


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (``Annotated`` and ``Optional`` unwrapped), or ``[annotation]``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    if isinstance(annotation, typing.TypeAliasType if hasattr(typing, "TypeAliasType") else ()):
        return _members(annotation.__value__)
    return [annotation]


def _kinds(member: Any) -> set[str]:
    """The kinds of plain value ``member`` admits: int, float, bool, str, none, container, or unknown."""
    if member is type(None) or member is None:
        return {"none"}
    origin = typing.get_origin(member)
    if origin is typing.Literal:
        return set().union(*(_value_kinds(v) for v in typing.get_args(member)))
    if isinstance(member, type):
        if issubclass(member, enum.Enum):
            return set().union(*(_value_kinds(m.value) for m in member)) or {_UNKNOWN}
        if issubclass(member, bool):
            return {"bool"}
        if issubclass(member, int):
            return {"int"}
        if issubclass(member, float):
            return {"float"}
        if issubclass(member, str):
            return {"str"}
        if issubclass(member, (BaseModel, Mapping, list, tuple, set, frozenset)):
            return {"container"}
    if isinstance(origin, type) and issubclass(origin, (Mapping, list, tuple, set, frozenset, Sequence)):
        return {"container"}
    return {_UNKNOWN}


def _value_kinds(value: Any) -> set[str]:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return {"none"}
    if isinstance(value, str):
        return {"literal"}  # one given string, not any string: `int | Literal['same']` must not take '4'
    for kind in (bool, int, float):
        if isinstance(value, kind):
            return {kind.__name__}
    return {_UNKNOWN}


def _literal_strings(members: list[Any]) -> set[str]:
    """The strings that ``Literal`` and enum members of a union accept."""
    strings = set()
    for member in members:
        if typing.get_origin(member) is typing.Literal:
            values = typing.get_args(member)
        elif isinstance(member, type) and issubclass(member, enum.Enum):
            values = tuple(m.value for m in member)
        else:
            continue
        strings.update(v.value if isinstance(v, enum.Enum) else v for v in values)
    return {v for v in strings if isinstance(v, str)}


def _expected(members: list[Any]) -> str:
    names: list[str] = []
    for member in members:
        origin = typing.get_origin(member)
        if origin is typing.Literal:
            names.extend(_literal(v) for v in typing.get_args(member))
            continue
        if isinstance(member, type) and issubclass(member, enum.Enum):
            names.extend(_literal(m.value) for m in member)
            continue
        names.append(_NAMES.get(next(iter(_kinds(member))), "a value"))
    return " or ".join(dict.fromkeys(names))


_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "none": "null", "container": "a list or mapping"}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _quoted(text: str) -> str:
    quoted = repr(text)
    return quoted if len(quoted) < 40 else quoted[:37] + "..."


_NUMBER = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?$")


def _unquote_hint(text: str) -> str:
    word = text.strip()
    if _NUMBER.match(word) or word in ("true", "false"):
        return f": write {word} without quotes"
    return ""
