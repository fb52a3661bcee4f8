"""The contract every block fulfils, built-in or third-party.

A block is a small class with four things:

* ``name``: the word a spec writes in ``block:``;
* ``layout``: which layout(s) it consumes (``"map"``, ``"tokens"``, ``"vector"``, a
  tuple of them, or ``"any"``); the graph stage converts map ↔ tokens for it;
* ``Args``: a pydantic model of its arguments (validated before anything is built);
* ``infer`` and ``build``: the output shape, and the ``nn.Module``, for given input
  shapes and arguments.

Example::

    class Scale(archforge.Block):
        \"\"\"Multiply by a learnable per-channel factor.\"\"\"
        name = "scale"
        layout = ("map", "tokens")
        family = "other"

        class Args(archforge.Block.Args):
            init: float = 1.0

        def infer(self, x, args):
            return x

        def build(self, x, args, *, device=None, dtype=None):
            return ScaleModule(x.channels, args.init, device=device, dtype=dtype)

``infer`` must not allocate weights; raise :class:`archforge.ShapeError` with a short
message when the input does not fit (the core adds the node, line and input names).
"""

from __future__ import annotations

import re
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict
from torch import nn

from archforge.registry import isolation
from archforge.registry.shape import LAYOUTS, Layout, Shape

FAMILIES = ("conv", "attention", "mlp", "positional", "norm", "activation", "merge", "pool", "head", "layout", "other")


class BlockArgs(BaseModel):
    """Base of every block's ``Args``: unknown keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Block:
    """Base class of all blocks. Subclass it, set the class attributes, implement ``infer`` and ``build``."""

    name: ClassVar[str]
    #: Layout(s) consumed. Inputs in another layout are converted map ↔ tokens when possible.
    layout: ClassVar[Layout | tuple[Layout, ...] | str] = "any"
    #: Number of inputs; ``None`` means two or more (merges such as ``add``).
    inputs: ClassVar[int | None] = 1
    #: Used to colour diagrams and to summarise placements: one of :data:`FAMILIES`.
    family: ClassVar[str] = "other"

    Args: ClassVar[type[BaseModel]] = BlockArgs

    def infer(self, x: Any, args: Any) -> Shape:
        """Output shape for input ``x`` (a :class:`Shape`, or a list of them when ``inputs != 1``)."""
        raise NotImplementedError

    def build(self, x: Any, args: Any, *, device: Any = None, dtype: Any = None) -> nn.Module:
        """The module; its ``forward`` takes one tensor per input, in order, and returns one tensor."""
        raise NotImplementedError

    @classmethod
    def accepted_layouts(cls) -> tuple[Layout, ...]:
        if cls.layout == "any":
            return LAYOUTS
        if isinstance(cls.layout, str):
            return (cls.layout,)  # type: ignore[return-value]
        return tuple(cls.layout)

    @classmethod
    def contract_problems(cls) -> list[str]:
        """Ways in which this class breaks the contract (empty when it is fine).

        Never raises, whatever the class holds (an attribute of the wrong type, a
        metaclass whose attribute access raises, ...): each unreadable attribute is
        itself a problem. Each problem says what to change.
        """
        return contract_problems(cls)


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
