"""The graph stage: expansion, DAG checks and shape inference. ``compile_graph`` runs all three."""

from __future__ import annotations

import warnings
from math import prod

import networkx as nx

from archforge.errors import SpecError, SpecWarning
from archforge.graph import bounds
from archforge.graph.expand import expand
from archforge.graph.infer import infer_shapes
from archforge.graph.model import INPUT, Graph, GraphNode
from archforge.registry import Registry, Shape, default_registry
from archforge.spec.schema import Spec

__all__ = ["INPUT", "Graph", "GraphNode", "compile_graph", "input_shape"]


def input_shape(spec: Spec) -> Shape:
    """The network input: ``[C, H, W]`` is a feature map, ``[N, C]`` tokens (on a 1×N grid), ``[C]`` a vector."""
    dims = spec.input.shape
    location = spec.document.locate(("input", "shape"))
    if any(d < 1 for d in dims):
        raise SpecError(f"input shape must be positive, got {dims}", location)
    count = prod(dims)
    if count > bounds.MAX_ELEMENTS:
        raise SpecError(f"input shape {dims} is too large: {bounds.too_large(count, bounds.MAX_ELEMENTS, 'MAX_ELEMENTS')}", location)
    if len(dims) == 3:
        return Shape.map(*dims)
    if len(dims) == 2:
        return Shape.tokens(dims[1], (1, dims[0]))
    return Shape.vector(dims[0])


def compile_graph(spec: Spec, registry: Registry | None = None) -> Graph:
    """Validate a spec completely and return its typed graph. Raises :class:`SpecError`."""
    registry = registry or default_registry()
    expansion = expand(spec, registry)
    nodes = expansion.nodes

    resolved: dict[str, str] = {}

    def resolve(handle: str) -> str:
        # Aliases can chain for long (a repeat of defines that pass their input through): follow
        # each chain once, remembering where every alias on it leads.
        chain: list[str] = []
        on_chain: set[str] = set()
        while handle in expansion.aliases and handle not in resolved:
            if handle in on_chain:
                display, location = expansion.alias_paths[handle]
                names = " → ".join(expansion.alias_paths[h][0] for h in (*chain[chain.index(handle):], handle))
                raise SpecError(f"cycle: {names}", location, display)
            chain.append(handle)
            on_chain.add(handle)
            handle = expansion.aliases[handle]
        target = resolved.get(handle, handle)
        for alias in chain:
            resolved[alias] = target
        return target

    for node in nodes.values():
        node.inputs = [resolve(name) for name in node.inputs]
    output = resolve(expansion.output)

    dag = nx.DiGraph()
    dag.add_node(INPUT)
    dag.add_nodes_from(nodes)
    dag.add_edges_from((source, node.name) for node in nodes.values() for source in node.inputs)
    try:
        cycle = nx.find_cycle(dag)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        members = [nodes[u] for u, _ in cycle]
        first = min(members, key=lambda n: n.order)
        start = members.index(first)
        ordered = members[start:] + members[:start]
        chain = " → ".join(n.path for n in [*ordered, first])
        raise SpecError(f"cycle: {chain}", first.location, first.path)

    order = list(nx.lexicographical_topological_sort(dag, key=lambda name: -1 if name == INPUT else nodes[name].order))
    graph = Graph(
        name=spec.name, input=input_shape(spec), nodes={name: nodes[name] for name in order if name != INPUT},
        output=output, dag=dag, spec=spec,
    )
    infer_shapes(graph)
    for warning in expansion.warnings:
        graph.warnings.append(warning)
        warnings.warn(warning, stacklevel=2)

    live = nx.ancestors(dag, output) | {output}
    for node in graph.nodes.values():
        if node.name not in live:
            warning = SpecWarning(f"node '{node.path}' does not reach the output '{graph.path_of(output)}'", node.location, node.path)
            graph.warnings.append(warning)
            warnings.warn(warning, stacklevel=2)
    return graph
