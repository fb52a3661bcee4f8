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

from archforge.builder.node import build_node, init_node, node_error
from archforge.builder.probe import NodeProbe, check_output, probe_graph, run_node
from archforge.builder.weights import WeightsSource, check_weights_source, load_weights
from archforge.errors import PLUGIN_FAULTS, SettingError, describe_exception
from archforge.graph import INPUT, Graph, compile_graph
from archforge.registry import Registry, Shape
from archforge.registry.parameter_node import ParameterNode, apply_parameter_node, parameter_node_target
from archforge.spec.load import load_spec
from archforge.spec.schema import INIT_MODES, InitMode, Spec

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
    weights: WeightsSource | None = None,
    init: InitMode | None = None,
) -> fx.GraphModule:
    """Build the network of a spec (path, :class:`Spec` or :class:`Graph`) as a plain ``nn.Module``.

    Parameter names follow node ids (``local.3.attn.qkv.weight``); a node whose module is a
    :class:`~archforge.registry.parameter_node.ParameterNode` has its tensor under the node's own
    name (``cls_token``), as timm and torchvision name such tensors. The compiled graph is
    kept in ``module.meta["archforge_graph"]``.

    ``weights`` loads a state_dict (a file path or a mapping) with ``strict=True`` once the
    network is built; see :func:`archforge.builder.weights.load_weights`.

    ``init`` chooses the initial values: ``"reference"`` calls each block's
    ``init_weights`` right after its ``build`` (the initialisation of the block's reference
    implementation: timm's ViT, ConViT, ResNet ...), ``"pytorch"`` keeps what ``build``
    made (torch's layer defaults). ``None`` takes the spec's top-level ``init:`` (default
    ``reference``); a value given here replaces that one, while a node's own ``init:`` still
    applies to it. Nothing is initialised on the ``meta`` device, nor when ``weights`` replace it all.

    Before any weight is allocated, every node is built and run once on the ``meta``
    device: a block whose module does not return the shape its ``infer`` promised is a
    located :class:`SpecError`, and so is a network with more than ``max_params``
    parameters and buffer elements (default: ``$ARCHFORGE_MAX_PARAMS``, else 10^9).
    A node whose ops cannot run on ``meta`` is checked after it is built, on a batch of 1.
    A ``device`` torch does not know or cannot use here, and a ``dtype`` that is not a
    floating type, are a :class:`~archforge.errors.SettingError` before any work is done.
    """
    check_device(device)
    check_dtype(dtype)
    if init is not None and init not in INIT_MODES:
        raise SettingError(f"init must be one of {', '.join(map(repr, INIT_MODES))}, got {init!r}")
    if weights is not None:
        check_weights_source(weights)  # a missing file is refused before the network is built for it
    graph = as_graph(spec, registry)
    probes = probe_graph(graph, dtype=dtype, max_params=max_params)
    default_init = init or getattr(graph.spec, "init", "reference")
    skip_init = weights is not None or (device is not None and torch.device(device).type == "meta")
    root = nn.Module()
    tensor_nodes: dict[str, str] = {}  # node name -> the ParameterNode class installed there as a bare tensor
    for probe in probes:
        module = build_node(probe.node, device=device, dtype=dtype)
        if (probe.node.init or default_init) == "reference" and not skip_init:
            init_node(probe.node, module)
        if probe.output is None:
            _check_for_real(probe, module, device, dtype)
        if isinstance(module, ParameterNode):  # build_node has checked its contract
            tensor_nodes[probe.node.name] = parameter_node_target(module)
            _install(root, probe.node.name, module.tensor)
        else:
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
        if node.name in tensor_nodes:
            tensor = fx_graph.get_attr(node.name)
            values[node.name] = fx_graph.create_node("call_function", apply_parameter_node, (tensor_nodes[node.name], *inputs, tensor),
                                                     name=node.name.replace(".", "_") + "_out")
        else:
            values[node.name] = fx_graph.call_module(node.name, tuple(inputs))
    fx_graph.output(values[graph.output])

    module = fx.GraphModule(root, fx_graph, class_name=_class_name(graph.name))
    module.meta["archforge_graph"] = graph
    if weights is not None:
        load_weights(module, weights, max_params=max_params)
    return module


def check_device(device: Any) -> None:
    """Refuse a device torch cannot parse or this machine cannot use, so that no block is blamed for it."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except PLUGIN_FAULTS as exc:
        raise SettingError(f"device {device!r} is not a torch device ({describe_exception(exc, 200)}); use e.g. 'cpu', 'cuda', 'cuda:0' or 'mps'") from None
    if parsed.type in ("cpu", "meta"):
        return
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise SettingError(f"device '{parsed}' is not available: {why} (torch.cuda.is_available() is False); use the CPU ('cpu') or install a CUDA build of torch")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise SettingError(f"device '{parsed}' is not available: torch sees {count} CUDA device{'s' if count != 1 else ''} "
                               f"(cuda:0 to cuda:{count - 1})")
        return
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise SettingError(f"device '{parsed}' is not available: torch.backends.mps.is_available() is False; use the CPU ('cpu')")
    try:  # any other backend: allocating nothing on it says whether it is there
        torch.empty(0, device=parsed)
    except PLUGIN_FAULTS as exc:
        raise SettingError(f"device '{parsed}' is not available: {describe_exception(exc, 200)}") from None


def check_dtype(dtype: Any) -> None:
    """Weights are floating point: refuse anything else before a block gets to fail on it."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise SettingError(f"dtype must be a floating torch.dtype such as torch.float32 or torch.bfloat16, got {dtype!r}")


def _check_for_real(probe: NodeProbe, module: nn.Module, device: Any, dtype: torch.dtype | None) -> None:
    node = probe.node
    training = module.training
    try:
        inputs = [shape.example(1, device=device, dtype=dtype) for shape in node.input_shapes]
        _, output = run_node(module.eval(), inputs, flops=False)
    except PLUGIN_FAULTS as exc:
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


def _install(root: nn.Module, name: str, module: nn.Module | nn.Parameter) -> None:
    *parents, leaf = name.split(".")
    parent = root
    for part in parents:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    if isinstance(module, nn.Parameter):
        parent.register_parameter(leaf, module)
    else:
        parent.add_module(leaf, module)


def _class_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\W]+", name) if part) or "Network"
