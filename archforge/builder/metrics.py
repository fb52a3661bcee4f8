"""Parameters, FLOPs and output shapes, per node and in total.

FLOPs are counted the way :mod:`torch.utils.flop_counter` counts them: convolutions,
matrix products and attention (2 FLOPs per multiply-accumulate); elementwise ops,
norms and softmax are not counted. Counting runs on the ``meta`` device, so even a
ViT-Base is summarised without allocating its weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from archforge.builder.network import SpecLike, as_graph, build_node
from archforge.errors import SpecError
from archforge.graph import Graph, GraphNode
from archforge.registry import Registry


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward call of ``module`` on ``inputs``.

    Attention goes through the math backend while counting: FlopCounterMode counts
    zero FLOPs for the fused CPU kernel of ``scaled_dot_product_attention``.
    """
    return _flops_and_output(module, inputs)[0]


@dataclass
class NodeSummary:
    """One row of a summary: a node, its output shape, its parameters and FLOPs (batch 1)."""

    path: str
    module: str
    block: str
    family: str
    layout: str
    shape: list[int]
    shape_text: str
    params: int
    flops: int


@dataclass
class Summary:
    """Totals and per-node figures of a network; FLOPs are for one sample."""

    name: str
    input: list[int]
    output: list[int]
    params: int
    flops: int
    nodes: list[NodeSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return self.flops // 2

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["macs"] = self.macs
        for row in data["nodes"]:
            row.pop("shape_text")
        return data


def summarize(spec: SpecLike, *, registry: Registry | None = None) -> Summary:
    """Validate and measure a spec: per-node output shape, parameters and FLOPs, and totals.

    Each node's module is built on the ``meta`` device and run once on inputs of the
    inferred shapes; the actual output shape must equal the inferred one, so a block
    whose ``infer`` disagrees with its module is caught here.
    """
    graph = as_graph(spec, registry)
    rows = [_measure(graph, node) for node in graph.live_nodes()]
    return Summary(
        name=graph.name,
        input=list(graph.input.dims()),
        output=list(graph.output_shape.dims()),
        params=sum(r.params for r in rows),
        flops=sum(r.flops for r in rows),
        nodes=rows,
        warnings=[str(w) for w in graph.warnings],
    )


def _measure(graph: Graph, node: GraphNode) -> NodeSummary:
    try:
        module = build_node(node, device="meta")
        inputs = [shape.example(1, device="meta") for shape in node.input_shapes]
        flops, output = _flops_and_output(module.eval(), inputs)
    except (NotImplementedError, RuntimeError):  # some ops have no meta kernel: measure for real
        module = build_node(node)
        inputs = [shape.example(1) for shape in node.input_shapes]
        flops, output = _flops_and_output(module.eval(), inputs)
    _check_output(node, output)
    assert node.shape is not None
    return NodeSummary(
        path=node.path, module=node.name, block=node.block, family=node.entry.block.family,
        layout=node.shape.layout, shape=list(node.shape.dims()), shape_text=str(node.shape),
        params=sum(p.numel() for p in module.parameters()), flops=flops,
    )


def _flops_and_output(module: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[int, Any]:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        output = module(*inputs)
    return int(counter.get_total_flops()), output


def _check_output(node: GraphNode, output: Any) -> None:
    assert node.shape is not None
    expected = (1, *node.shape.dims())
    actual = tuple(output.shape) if isinstance(output, torch.Tensor) else None
    if actual != expected:
        got = f"a {type(output).__name__}" if actual is None else str(list(actual))
        raise SpecError(
            f"block '{node.block}' from plugin '{node.entry.plugin.distribution}' infers {list(expected)} for node "
            f"'{node.path}' but its module returns {got}",
            node.location, node.path,
        )
