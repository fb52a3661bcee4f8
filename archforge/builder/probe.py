"""The meta pass: each node built on the ``meta`` device and run once, before any weight exists.

It measures a node (parameters, buffers, FLOPs) and checks that the block's module returns
the shape its ``infer`` promised. :func:`archforge.build` runs it for every node and checks
the total against a bound before allocating real weights; :func:`archforge.summarize`
reports what it measures.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from archforge.builder.node import build_node, node_error
from archforge.errors import PLUGIN_FAULTS, SettingError, SpecError
from archforge.graph import Graph, GraphNode

#: Default bound on the parameter and buffer elements of a built network: 10^9 float32 weights
#: are 4 GB, half of the 8 GB address space archforge is tested under.
DEFAULT_MAX_PARAMS = 1_000_000_000
MAX_PARAMS_ENV = "ARCHFORGE_MAX_PARAMS"
_RAISE_HINT = f"raise the bound with archforge.build(..., max_params=N), 'archforge build --max-params N' or {MAX_PARAMS_ENV}=N"


@dataclass
class NodeProbe:
    """What the meta pass learnt about one node; ``output`` is ``None`` when the module cannot run on ``meta``."""

    node: GraphNode
    module: nn.Module
    params: int
    buffers: int
    flops: int | None
    output: tuple[int, ...] | None

    @property
    def weights(self) -> int:
        """Elements the node allocates: parameters and buffers."""
        return self.params + self.buffers


def max_params_bound(max_params: int | float | None = None) -> int:
    """``max_params`` if given, else ``$ARCHFORGE_MAX_PARAMS``, else :data:`DEFAULT_MAX_PARAMS`."""
    if max_params is not None:
        if isinstance(max_params, float) and math.isfinite(max_params) and max_params.is_integer():
            max_params = int(max_params)  # 2e9 written as a float
        if isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 0:
            raise SettingError(f"max_params must be a non-negative integer, got {max_params!r}")
        return max_params
    text = os.environ.get(MAX_PARAMS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PARAMS
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise SettingError(f"{MAX_PARAMS_ENV} must be a non-negative integer such as 2e9, got {text!r}")
    return int(value)


def probe_node(node: GraphNode, *, dtype: torch.dtype | None = None, flops: bool = False) -> NodeProbe:
    """Build ``node`` on ``meta`` and run it on a batch of 1; a wrong output shape is a located :class:`SpecError`."""
    module = build_node(node, device="meta", dtype=dtype)
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers())
    try:
        inputs = [shape.example(1, device="meta", dtype=dtype) for shape in node.input_shapes]
        counted, output = run_node(module.eval(), inputs, flops=flops)
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: the caller decides
        return NodeProbe(node, module, params, buffers, None, None)
    except PLUGIN_FAULTS as exc:
        raise node_error(node, "failed to run", exc) from None
    check_output(node, output)
    return NodeProbe(node, module, params, buffers, counted if flops else None, tuple(output.shape))


class ProbeCache:
    """The probes of one pass, shared by nodes that the same block builds from the same args and input shapes.

    A repeat stamps out identical nodes, and probing each copy anew made a 5,000-node network
    take minutes. What a probe measures depends only on the block, its args, the input shapes,
    the dtype and whether FLOPs are counted; a node whose args do not hash (a plugin's Args
    model that is not frozen) is simply probed on its own.
    """

    def __init__(self) -> None:
        self._probes: dict[Hashable, NodeProbe] = {}

    def probe(self, node: GraphNode, *, dtype: torch.dtype | None = None, flops: bool = False) -> NodeProbe:
        key = (node.entry.qualified_name, node.args, tuple(node.input_shapes), dtype, flops)
        try:  # hashing and comparing args runs the plugin's model code: any failure means no sharing
            cached = self._probes.get(key)
        except PLUGIN_FAULTS:
            return probe_node(node, dtype=dtype, flops=flops)
        if cached is None:
            probe = probe_node(node, dtype=dtype, flops=flops)
            self._probes[key] = probe
            return probe
        if cached.output is not None and node.shape is not None and cached.output != (1, *node.shape.dims()):
            return probe_node(node, dtype=dtype, flops=flops)  # an infer that disagrees for this node: report it here
        return NodeProbe(node, cached.module, cached.params, cached.buffers, cached.flops, cached.output)


def probe_graph(graph: Graph, *, dtype: torch.dtype | None = None, max_params: int | None = None) -> list[NodeProbe]:
    """Probe every live node and refuse a network over the parameter bound, before anything real is allocated."""
    bound = max_params_bound(max_params)
    cache = ProbeCache()
    probes = [cache.probe(node, dtype=dtype) for node in graph.live_nodes()]
    check_bound(graph, probes, bound)
    return probes


def check_bound(graph: Graph, probes: Sequence[NodeProbe], bound: int) -> None:
    total = sum(p.weights for p in probes)
    if total <= bound:
        return
    largest = max(probes, key=lambda p: p.weights)
    raise SpecError(
        f"network '{graph.name}' would allocate {total:,} parameters and buffer elements, more than the bound "
        f"max_params = {bound:,} (largest node '{largest.node.path}': {largest.weights:,}); {_RAISE_HINT}",
        largest.node.location, largest.node.path,
    )


def check_node_bound(node: GraphNode, weights: int, bound: int, what: str) -> None:
    """Refuse to allocate one node for real (``what``: why it would be) when it is over the bound."""
    if weights > bound:
        raise SpecError(
            f"{what} node '{node.path}' would allocate {weights:,} parameters and buffer elements, more than the "
            f"bound max_params = {bound:,}; {_RAISE_HINT}",
            node.location, node.path,
        )


def run_node(module: nn.Module, inputs: Sequence[torch.Tensor], *, flops: bool = True) -> tuple[int, Any]:
    """FLOPs (0 unless counted) and output of one forward call without gradients.

    Attention goes through the math backend while counting: FlopCounterMode counts
    zero FLOPs for the fused CPU kernel of ``scaled_dot_product_attention``.
    """
    if not flops:
        with torch.no_grad():
            return 0, module(*inputs)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        output = module(*inputs)
    return int(counter.get_total_flops()), output


def check_output(node: GraphNode, output: Any) -> None:
    """The module's real output (batch 1) must have the shape the block's ``infer`` promised."""
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


__all__ = ["DEFAULT_MAX_PARAMS", "MAX_PARAMS_ENV", "NodeProbe", "ProbeCache", "check_bound", "check_node_bound", "check_output",
           "max_params_bound", "probe_graph", "probe_node", "run_node"]
