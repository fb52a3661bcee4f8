"""The typed graph: what the graph stage produces and the builder consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from pydantic import BaseModel

from archforge.errors import Location, SpecWarning, describe_exception  # noqa: F401 (kept importable from here)
from archforge.registry import BlockEntry, Layout, Shape

#: Graph name of the network input.
INPUT = "input"


@dataclass
class GraphNode:
    """One block instance after expansion (macros, repeats and params resolved)."""

    name: str  # module path, also the parameter prefix: "local.3.attn"
    path: str  # how errors print it: "local[3].attn"
    entry: BlockEntry
    args: BaseModel
    inputs: list[str]  # graph names of the producers (or INPUT)
    location: Location
    order: int  # position in expansion order, for stable topological sorting
    init: str | None = None  # "reference" / "pytorch" set by the node or an enclosing define/repeat; None: the spec's
    defines: tuple[str, ...] = ()  # the defines whose expansion made it, outermost first: ("encoder_layer",)
    # Filled in by shape inference:
    input_shapes: list[Shape] = field(default_factory=list)  # after layout conversion
    conversions: list[Layout | None] = field(default_factory=list)  # per input: target layout or None
    shape: Shape | None = None

    @property
    def block(self) -> str:
        return self.entry.name

    @property
    def block_input(self) -> Any:
        """What ``Block.infer``/``build`` receive: one shape, or the list for multi-input blocks."""
        return self.input_shapes[0] if self.entry.block.inputs == 1 else list(self.input_shapes)


@dataclass
class Graph:
    """A validated network: nodes in topological order, every shape known, nothing allocated."""

    name: str
    input: Shape
    nodes: dict[str, GraphNode]
    output: str
    dag: nx.DiGraph
    warnings: list[SpecWarning] = field(default_factory=list)
    spec: Any = None  # the Spec it was compiled from

    @property
    def output_shape(self) -> Shape:
        return self.input if self.output == INPUT else self.nodes[self.output].shape  # type: ignore[return-value]

    def live_nodes(self) -> list[GraphNode]:
        """Nodes that contribute to the output, in execution order."""
        if self.output == INPUT:
            return []
        live = nx.ancestors(self.dag, self.output) | {self.output}
        return [node for name, node in self.nodes.items() if name in live]

    def shape_of(self, name: str) -> Shape:
        return self.input if name == INPUT else self.nodes[name].shape  # type: ignore[return-value]

    def path_of(self, name: str) -> str:
        return INPUT if name == INPUT else self.nodes[name].path
