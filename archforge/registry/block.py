"""How the registry checks a block class against the contract of :class:`archforge.plugin.Block`.

The contract itself (what each attribute means, what ``infer`` and ``build`` get and
return) is written in :mod:`archforge.plugin`, with ``Block``, ``BlockArgs`` and
``FAMILIES``; they are imported here for the registry's own modules.
"""

from __future__ import annotations

import re
from typing import Callable

from pydantic import BaseModel

from archforge.plugin import FAMILIES, Block, BlockArgs
from archforge.registry import isolation
from archforge.registry.shape import LAYOUTS


def contract_problems(cls: type) -> list[str]:
    """:meth:`Block.contract_problems` for any class, even one whose metaclass hides that method."""
    label = class_label(cls)
    problems = []
    for attribute, check in _CHECKS:
        try:
            problem = isolation.call(check, cls)
        except isolation.PluginFault as fault:
            problem = f"cannot be read: {fault}"
        if problem:
            problems.append(f"{label}.{attribute} {problem}" if attribute != "infer/build" else f"{label} {problem}")
    return problems


#: What a spec's ``block:`` accepts as a name (the spec schema's identifier, ASCII only).
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_name(cls: type) -> str | None:
    # getattr, not cls.name: Block only annotates `name`, so a subclass that forgets it has no such attribute.
    name = getattr(cls, "name", None)
    if not (type(name) is str and NAME_PATTERN.fullmatch(name)):
        return f"must be an identifier ([A-Za-z_][A-Za-z0-9_]*, as written in a spec's 'block:'), got {isolation.show(name)}"
    return None


def _check_layout(cls: type) -> str | None:
    layout = cls.layout
    if type(layout) is str and (layout == "any" or layout in LAYOUTS):
        return None
    if isinstance(layout, (tuple, list)) and layout and all(type(item) is str and item in LAYOUTS for item in layout):
        return None
    return f"must be 'any', one of {LAYOUTS} or a non-empty tuple of them, got {isolation.show(layout)}"


def _check_inputs(cls: type) -> str | None:
    inputs = cls.inputs
    if inputs is None or (type(inputs) is int and inputs >= 1):
        return None
    return f"must be a positive int (the number of inputs) or None (two or more), got {isolation.show(inputs)}"


def _check_family(cls: type) -> str | None:
    family = cls.family
    if type(family) is str and family in FAMILIES:
        return None
    return f"must be one of {FAMILIES}, got {isolation.show(family)}"


def _check_args(cls: type) -> str | None:
    args = cls.Args
    if isinstance(args, type) and issubclass(args, BaseModel):
        return None
    return f"must be a pydantic BaseModel subclass (subclass archforge.BlockArgs), got {isolation.show(args)}"


def _check_methods(cls: type) -> str | None:
    missing = [m for m in ("infer", "build") if getattr(cls, m) is getattr(Block, m) or not callable(getattr(cls, m))]
    return f"must implement {' and '.join(m + '()' for m in missing)}" if missing else None


def _check_accepted_layouts(cls: type) -> str | None:
    if cls.accepted_layouts.__func__ is Block.accepted_layouts.__func__:
        return None  # derived from layout, checked above
    layouts = cls.accepted_layouts()
    if isinstance(layouts, tuple) and layouts and all(type(item) is str and item in LAYOUTS for item in layouts):
        return None
    return f"must return a non-empty tuple of {LAYOUTS}, got {isolation.show(layouts)}; or do not override it"


def _check_doc(cls: type) -> str | None:
    doc = cls.__doc__
    return None if doc is None or type(doc) is str else f"must be a string or None, got {isolation.show(doc)}"


_CHECKS: tuple[tuple[str, Callable[[type], str | None]], ...] = (
    ("name", _check_name), ("layout", _check_layout), ("inputs", _check_inputs), ("family", _check_family),
    ("Args", _check_args), ("infer/build", _check_methods), ("accepted_layouts()", _check_accepted_layouts), ("__doc__", _check_doc),
)


def class_label(cls: type) -> str:
    """The class's qualified name, read past a metaclass that overrides attribute access."""
    try:
        label = type.__dict__["__qualname__"].__get__(cls)
    except Exception:
        label = None
    return label if type(label) is str else isolation.show(cls)


__all__ = ["FAMILIES", "NAME_PATTERN", "Block", "BlockArgs", "class_label", "contract_problems"]
