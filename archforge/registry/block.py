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

from typing import Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict
from torch import nn

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
    def contract_problems(cls) -> Sequence[str]:
        """Ways in which this class breaks the contract (empty when it is fine)."""
        problems = []
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(f"{cls.__qualname__}.name must be an identifier, got {name!r}")
        if not (isinstance(cls.Args, type) and issubclass(cls.Args, BaseModel)):
            problems.append(f"{cls.__qualname__}.Args must be a pydantic BaseModel subclass")
        if cls.layout != "any" and not set(cls.accepted_layouts()) <= set(LAYOUTS):
            problems.append(f"{cls.__qualname__}.layout must be 'any' or among {LAYOUTS}, got {cls.layout!r}")
        if cls.inputs is not None and (not isinstance(cls.inputs, int) or cls.inputs < 1):
            problems.append(f"{cls.__qualname__}.inputs must be a positive int or None")
        if cls.family not in FAMILIES:
            problems.append(f"{cls.__qualname__}.family must be one of {FAMILIES}, got {cls.family!r}")
        if cls.infer is Block.infer or cls.build is Block.build:
            problems.append(f"{cls.__qualname__} must implement infer() and build()")
        return problems
