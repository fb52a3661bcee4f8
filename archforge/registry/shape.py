"""The shape of the tensor flowing along one edge of the graph, without the batch.

Three layouts exist:

* ``map``: a feature map ``(B, C, H, W)``;
* ``tokens``: a sequence ``(B, N, C)`` laid out on an ``H × W`` grid, with
  ``extra_tokens`` (e.g. a class token) *prepended*: ``N = extra_tokens + H * W``;
* ``vector``: one feature vector per sample, ``(B, C)``.

Tracking the grid alongside tokens is what lets positional blocks and the
automatic map ↔ tokens conversions know the geometry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Layout = Literal["map", "tokens", "vector"]
LAYOUTS: tuple[Layout, ...] = ("map", "tokens", "vector")


@dataclass(frozen=True)
class Shape:
    """Per-sample shape plus layout; ``str(shape)`` prints it with a leading ``B``."""

    layout: Layout
    channels: int
    grid: tuple[int, int] | tuple[()] = ()
    extra_tokens: int = 0

    @classmethod
    def map(cls, channels: int, height: int, width: int) -> "Shape":
        return cls("map", channels, (height, width))

    @classmethod
    def tokens(cls, channels: int, grid: tuple[int, int], extra_tokens: int = 0) -> "Shape":
        return cls("tokens", channels, tuple(grid), extra_tokens)  # type: ignore[arg-type]

    @classmethod
    def vector(cls, channels: int) -> "Shape":
        return cls("vector", channels)

    @property
    def height(self) -> int:
        return self.grid[0] if self.grid else 1

    @property
    def width(self) -> int:
        return self.grid[1] if self.grid else 1

    @property
    def num_tokens(self) -> int:
        """``N`` of a tokens layout: grid positions plus extra tokens."""
        return self.extra_tokens + self.height * self.width

    def dims(self) -> tuple[int, ...]:
        """The tensor shape without the batch dimension."""
        if self.layout == "map":
            return (self.channels, self.height, self.width)
        if self.layout == "tokens":
            return (self.num_tokens, self.channels)
        return (self.channels,)

    def replace(self, **changes: object) -> "Shape":
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def example(self, batch: int = 1, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A random tensor of this shape (use ``device='meta'`` to allocate nothing)."""
        return torch.randn((batch, *self.dims()), device=device, dtype=dtype)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.dims())
        text = f"(B, {dims})"
        if self.layout == "tokens":
            extra = f"+{self.extra_tokens}" if self.extra_tokens else ""
            text += f" tokens {self.height}×{self.width}{extra}"
        return text


class MapToTokens(nn.Module):
    """``(B, C, H, W) -> (B, H*W, C)``, row-major over the grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class TokensToMap(nn.Module):
    """``(B, H*W, C) -> (B, C, H, W)``; the inverse of :class:`MapToTokens`."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).unflatten(2, (self.height, self.width))

    def extra_repr(self) -> str:
        return f"grid={self.height}x{self.width}"


def convert_shape(shape: Shape, layout: Layout) -> Shape | None:
    """The shape after an automatic layout conversion, or ``None`` if none exists."""
    if shape.layout == layout:
        return shape
    if shape.layout == "map" and layout == "tokens":
        return Shape.tokens(shape.channels, shape.grid)  # type: ignore[arg-type]
    if shape.layout == "tokens" and layout == "map" and shape.extra_tokens == 0:
        return Shape.map(shape.channels, shape.height, shape.width)
    return None


def conversion_module(shape: Shape, layout: Layout) -> nn.Module:
    """The module performing :func:`convert_shape` on tensors."""
    if shape.layout == "map" and layout == "tokens":
        return MapToTokens()
    if shape.layout == "tokens" and layout == "map":
        return TokensToMap(shape.height, shape.width)
    raise ValueError(f"no conversion from {shape.layout} to {layout}")
