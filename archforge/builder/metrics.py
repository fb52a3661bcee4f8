"""Parameters, FLOPs and output shapes, per node and in total.

FLOPs are counted the way :mod:`torch.utils.flop_counter` counts them: convolutions,
matrix products and attention (2 FLOPs per multiply-accumulate); elementwise ops,
norms and softmax are not counted. Counting runs on the ``meta`` device, so even a
ViT-Base is summarised without allocating its weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from archforge.builder.network import SpecLike, as_graph
from archforge.builder.node import build_node, node_error
from archforge.builder.probe import ProbeCache, check_node_bound, check_output, max_params_bound, run_node
from archforge.errors import PLUGIN_FAULTS
from archforge.graph import GraphNode
from archforge.registry import Registry


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward call of ``module`` on ``inputs``.

    Attention goes through the math backend while counting: FlopCounterMode counts
    zero FLOPs for the fused CPU kernel of ``scaled_dot_product_attention``.
    """
    return run_node(module, inputs)[0]


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


def summarize(spec: SpecLike, *, registry: Registry | None = None, max_params: int | None = None) -> Summary:
    """Validate and measure a spec: per-node output shape, parameters and FLOPs, and totals.

    Each node's module is built on the ``meta`` device and run once on inputs of the
    inferred shapes; the actual output shape must equal the inferred one, so a block
    whose ``infer`` disagrees with its module is caught here. Nothing is allocated, so
    a network of any size can be summarised; only a node whose ops have no ``meta``
    kernel is measured for real, and only when it is within ``max_params`` (see
    :func:`archforge.build`).
    """
    graph = as_graph(spec, registry)
    bound = max_params_bound(max_params)
    cache = ProbeCache()  # identical repeated nodes are probed once
    rows = [_measure(node, bound, cache) for node in graph.live_nodes()]
    return Summary(
        name=graph.name,
        input=list(graph.input.dims()),
        output=list(graph.output_shape.dims()),
        params=sum(r.params for r in rows),
        flops=sum(r.flops for r in rows),
        nodes=rows,
        warnings=[str(w) for w in graph.warnings],
    )


def _measure(node: GraphNode, bound: int, cache: ProbeCache) -> NodeSummary:
    probe = cache.probe(node, flops=True)
    flops = probe.flops
    if flops is None:  # some ops have no meta kernel: measure for real, if that is affordable
        check_node_bound(node, probe.weights, bound, "measuring it for real (its ops do not run on the meta device),")
        module = build_node(node)
        try:
            flops, output = run_node(module.eval(), [shape.example(1) for shape in node.input_shapes])
        except PLUGIN_FAULTS as exc:
            raise node_error(node, "failed to run", exc) from None
        check_output(node, output)
    assert node.shape is not None
    return NodeSummary(
        path=node.path, module=node.name, block=node.block, family=node.entry.block.family,
        layout=node.shape.layout, shape=list(node.shape.dims()), shape_text=str(node.shape),
        params=probe.params, flops=flops,
    )
