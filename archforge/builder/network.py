"""Graph → ``nn.Module``: one submodule per node, wired by a generated ``forward``.

The forward is generated with :mod:`torch.fx` as straight-line code (one call per
node, layout conversions inlined as ``flatten``/``transpose``), so a built network
costs exactly what the same network written by hand costs, and ``torch.compile`` and
``torch.export`` see plain PyTorch.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import fx, nn

from archforge.builder.node import build_node, node_error
from archforge.builder.probe import NodeProbe, check_output, probe_graph, run_node
from archforge.graph import INPUT, Graph, compile_graph
from archforge.registry import Registry, Shape
from archforge.spec.load import load_spec
from archforge.spec.schema import Spec

SpecLike = Spec | Graph | str | os.PathLike[str]


def as_graph(spec: SpecLike, registry: Registry | None = None) -> Graph:
    """Accept a path, a :class:`Spec` or an already compiled :class:`Graph`."""
    if isinstance(spec, Graph):
        return spec
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return compile_graph(spec, registry)


def build(
    spec: SpecLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    registry: Registry | None = None,
    max_params: int | None = None,
) -> fx.GraphModule:
    """Build the network of a spec (path, :class:`Spec` or :class:`Graph`) as a plain ``nn.Module``.

    Parameter names follow node ids (``local.3.attn.qkv.weight``). The compiled graph
    is kept in ``module.meta["archforge_graph"]``.

    Before any weight is allocated, every node is built and run once on the ``meta``
    device: a block whose module does not return the shape its ``infer`` promised is a
    located :class:`SpecError`, and so is a network with more than ``max_params``
    parameters and buffer elements (default: ``$ARCHFORGE_MAX_PARAMS``, else 10^9).
    A node whose ops cannot run on ``meta`` is checked after it is built, on a batch of 1.
    """
    graph = as_graph(spec, registry)
    probes = probe_graph(graph, dtype=dtype, max_params=max_params)
    root = nn.Module()
    for probe in probes:
        module = build_node(probe.node, device=device, dtype=dtype)
        if probe.output is None:
            _check_for_real(probe, module, device, dtype)
        _install(root, probe.node.name, module)

    fx_graph = fx.Graph()
    values: dict[str, fx.Node] = {INPUT: fx_graph.placeholder("x")}
    converted: dict[tuple[str, str], fx.Node] = {}
    for node in graph.live_nodes():
        inputs = []
        for source, layout in zip(node.inputs, node.conversions):
            value = values[source]
            if layout is not None:  # convert once per producer and layout, however many consumers
                key = (source, layout)
                if key not in converted:
                    converted[key] = _convert(fx_graph, value, graph.shape_of(source), layout)
                value = converted[key]
            inputs.append(value)
        values[node.name] = fx_graph.call_module(node.name, tuple(inputs))
    fx_graph.output(values[graph.output])

    module = fx.GraphModule(root, fx_graph, class_name=_class_name(graph.name))
    module.meta["archforge_graph"] = graph
    return module


def _check_for_real(probe: NodeProbe, module: nn.Module, device: Any, dtype: torch.dtype | None) -> None:
    node = probe.node
    training = module.training
    try:
        inputs = [shape.example(1, device=device, dtype=dtype) for shape in node.input_shapes]
        _, output = run_node(module.eval(), inputs, flops=False)
    except (Exception, SystemExit) as exc:
        raise node_error(node, "failed to run", exc) from None
    finally:
        module.train(training)
    check_output(node, output)


def _convert(fx_graph: fx.Graph, value: fx.Node, shape: Shape, layout: str) -> fx.Node:
    if shape.layout == "map" and layout == "tokens":  # (B, C, H, W) -> (B, H*W, C)
        return fx_graph.call_method("transpose", (fx_graph.call_method("flatten", (value, 2)), 1, 2))
    if shape.layout == "tokens" and layout == "map":  # (B, H*W, C) -> (B, C, H, W)
        return fx_graph.call_method("unflatten", (fx_graph.call_method("transpose", (value, 1, 2)), 2, shape.grid))
    raise AssertionError(f"no conversion {shape.layout} -> {layout}")  # excluded by shape inference


def _install(root: nn.Module, name: str, module: nn.Module) -> None:
    *parents, leaf = name.split(".")
    parent = root
    for part in parents:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(leaf, module)


def _class_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\W]+", name) if part) or "Network"
