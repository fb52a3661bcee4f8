"""Size bounds the graph stage enforces before anything is allocated.

A spec controls every size in the network, so a few characters (``shape: [1, 10**12,
10**12]``, ``channels: 1000000000``) could ask for more memory than any machine has, or
overflow the 64-bit sizes torch computes with. Every tensor the graph stage can see (the
input and each node's output, per sample) is checked here against these module-level
bounds; raise them here if a spec ever legitimately needs more. Parameter counts, which
only a built module knows, are bounded by the builder.
"""

from __future__ import annotations

from math import prod

from archforge.registry import Shape

#: Elements of one tensor for one sample: 2**28 is 1 GiB in float32, 16 times a 3×1024×1024 image.
MAX_ELEMENTS = 2**28
#: Elements of all node outputs together, for one sample (what a training step keeps for the backward pass).
MAX_TOTAL_ELEMENTS = 2**32


def elements(shape: Shape) -> int:
    """Elements of a tensor of this shape for one sample (exact, however large)."""
    return prod(shape.dims())


def too_large(count: int, bound: int, name: str) -> str:
    """The end of a diagnostic that says which bound was passed and how to raise it."""
    return f"{_number(count)} elements per sample, more than {bound:,} (archforge.graph.bounds.{name}; raise it there if this is intended)"


def describe(shape: Shape) -> str:
    """``str(shape)``, unless its sizes are too long to print (Python refuses ints of over 4300 digits)."""
    if max(shape.dims()) < 10**30:
        return str(shape)
    return f"a {shape.layout} with sizes too long to print"


def _number(count: int) -> str:
    if count < 10**30:
        return f"{count:,}"
    return f"about 10^{int(count.bit_length() * 0.30103)}"
