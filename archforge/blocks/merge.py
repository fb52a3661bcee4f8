"""Merges of two or more inputs: ``add`` (residuals), ``concat`` (channel concatenation), ``mul`` (gating).

These are what make a spec a graph rather than a stack: ``add`` closes a residual
connection (He et al. 2016), ``concat`` joins branches (Szegedy et al. 2015; Huang et
al. 2017), ``mul`` gates one branch by another (Hu et al. 2018 when the gate is a
per-channel vector).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from archforge.plugin import Block, BlockArgs, Shape, ShapeError


def _same_shapes(xs: list[Shape], what: str) -> Shape:
    first = xs[0]
    for i, other in enumerate(xs[1:], start=1):
        if other != first:
            raise ShapeError(f"{what} needs equal shapes, but input 0 is {first} and input {i} is {other}{layout_hint(first, other)}")
    return first


def layout_hint(first: Shape, other: Shape) -> str:
    """Why a map and a tokens input were not converted to one layout (the graph converts them when it can)."""
    if {first.layout, other.layout} != {"map", "tokens"}:
        return ""
    tokens = first if first.layout == "tokens" else other
    if tokens.extra_tokens:
        return (f" ({tokens.extra_tokens} extra (class) token(s) cannot be laid out on a grid: merge before the "
                f"'class_token' node, or drop the extra tokens first)")
    return ""


class Add(Block):
    """Elementwise sum ``y = x₀ + x₁ + …`` of inputs with identical shapes."""

    name = "add"
    layout = "any"
    inputs = None
    family = "merge"

    def infer(self, xs: list[Shape], args: BlockArgs) -> Shape:
        return _same_shapes(xs, "add")

    def build(self, xs: list[Shape], args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return AddModule()


class AddModule(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out


class Concat(Block):
    """Concatenation along the channels (dim 1 of a map, the last dim of tokens and vectors)."""

    name = "concat"
    layout = "any"
    inputs = None
    family = "merge"

    def infer(self, xs: list[Shape], args: BlockArgs) -> Shape:
        first = xs[0]
        for i, other in enumerate(xs[1:], start=1):
            if other.replace(channels=first.channels) != first:
                raise ShapeError(f"concat needs equal shapes apart from channels, but input 0 is {first} and input {i} is {other}"
                                 f"{layout_hint(first, other)}")
        return first.replace(channels=sum(x.channels for x in xs))

    def build(self, xs: list[Shape], args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return ConcatModule(1 if xs[0].layout == "map" else -1)


class ConcatModule(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


class Mul(Block):
    """Elementwise product; a ``vector`` input of matching channels broadcasts over positions (a gate)."""

    name = "mul"
    layout = "any"
    inputs = None
    family = "merge"

    class Args(BlockArgs):
        gate: Literal["none", "sigmoid"] = "none"

    def infer(self, xs: list[Shape], args: Args) -> Shape:
        full = [x for x in xs if x.layout != "vector"]
        if not full:
            return _same_shapes(xs, "mul")
        shape = _same_shapes(full, "mul")
        for i, x in enumerate(xs):
            if x.layout == "vector" and x.channels != shape.channels:
                raise ShapeError(f"mul broadcasts a vector over positions, but input {i} has {x.channels} channels and the others {shape.channels}")
        return shape

    def build(self, xs: list[Shape], args: Args, *, device=None, dtype=None) -> nn.Module:
        target = next((x.layout for x in xs if x.layout != "vector"), "vector")
        return MulModule([x.layout == "vector" and target != "vector" for x in xs], target == "map", args.gate == "sigmoid")


class MulModule(nn.Module):
    def __init__(self, broadcast: list[bool], to_map: bool, sigmoid_gate: bool):
        super().__init__()
        self.broadcast = broadcast
        self.to_map = to_map
        self.sigmoid_gate = sigmoid_gate

    def _expand(self, x: torch.Tensor, i: int) -> torch.Tensor:
        if not self.broadcast[i]:
            return x
        if self.sigmoid_gate:
            x = x.sigmoid()
        return x[:, :, None, None] if self.to_map else x[:, None, :]  # (B, C, 1, 1) or (B, 1, C)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self._expand(xs[0], 0)
        for i in range(1, len(xs)):
            out = out * self._expand(xs[i], i)
        return out
