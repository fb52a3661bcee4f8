"""Shape and layout inference over the expanded graph, before any weight exists."""

from __future__ import annotations

from archforge.errors import PLUGIN_FAULTS, ShapeError, SpecError, describe_exception
from archforge.graph import bounds
from archforge.graph.model import Graph, GraphNode
from archforge.registry import Shape
from archforge.registry.shape import convert_shape


def infer_shapes(graph: Graph) -> None:
    """Fill ``input_shapes``, ``conversions`` and ``shape`` of every node, in topological order."""
    total = 0
    for node in graph.nodes.values():
        _adapt_layouts(graph, node)
        try:
            shape = node.entry.block.infer(node.block_input, node.args)
        except ShapeError as exc:
            raise SpecError(f"node '{node.path}' ({node.block}): {describe_exception(exc, named=False)}; {_describe_inputs(graph, node)}", node.location, node.path) from None
        except PLUGIN_FAULTS as exc:  # a bug in the block, not in the spec: say whose
            raise SpecError(
                f"block '{node.block}' from plugin '{node.entry.plugin.distribution}' failed in shape inference "
                f"of node '{node.path}': {describe_exception(exc)}",
                node.location, node.path,
            ) from None
        _check_result(node, shape)
        count = bounds.elements(shape)
        if count > bounds.MAX_ELEMENTS:
            raise SpecError(
                f"node '{node.path}' ({node.block}) outputs {bounds.describe(shape)}: {bounds.too_large(count, bounds.MAX_ELEMENTS, 'MAX_ELEMENTS')}",
                node.location, node.path,
            )
        total += count
        if total > bounds.MAX_TOTAL_ELEMENTS:
            raise SpecError(
                f"the outputs of the nodes up to '{node.path}' hold {bounds.too_large(total, bounds.MAX_TOTAL_ELEMENTS, 'MAX_TOTAL_ELEMENTS')}",
                node.location, node.path,
            )
        node.shape = shape


def _merge_layout(graph: Graph, node: GraphNode) -> str | None:
    """The layout a merge's map and tokens inputs meet in: the first such input's (``None`` for other blocks).

    ``add``, ``concat`` and ``mul`` of a conv branch and an attention branch would otherwise
    fail on equal shapes in different layouts; converting to the first input's layout is what
    a ``to_map``/``to_tokens`` node in front of the others would do.
    """
    block = node.entry.block
    if block.family != "merge" or block.inputs == 1:
        return None
    layouts = [graph.shape_of(name).layout for name in node.inputs]
    return next((layout for layout in layouts if layout in ("map", "tokens")), None)


def _adapt_layouts(graph: Graph, node: GraphNode) -> None:
    accepted = node.entry.block.accepted_layouts()
    target = _merge_layout(graph, node)
    node.input_shapes, node.conversions = [], []
    for name in node.inputs:
        shape = graph.shape_of(name)
        if target is not None and shape.layout in ("map", "tokens") and shape.layout != target and target in accepted:
            converted = convert_shape(shape, target)
            if converted is not None:
                node.input_shapes.append(converted)
                node.conversions.append(target)
                continue
        if shape.layout in accepted:
            node.input_shapes.append(shape)
            node.conversions.append(None)
            continue
        for layout in accepted:
            converted = convert_shape(shape, layout)
            if converted is not None:
                node.input_shapes.append(converted)
                node.conversions.append(layout)
                break
        else:
            wanted = " or ".join(accepted)
            hint = ""
            if shape.layout == "tokens" and shape.extra_tokens and "map" in accepted:
                hint = f": {shape.extra_tokens} extra (class) token(s) cannot be laid out on a grid"
            elif shape.layout == "vector":
                hint = ": a vector has no grid to convert back from"
            elif "vector" in accepted:
                hint = ": pool it first (e.g. a 'pool' or 'classifier' block)"
            raise SpecError(
                f"block '{node.block}' in node '{node.path}' takes {wanted}, but input '{graph.path_of(name)}' "
                f"is {shape.layout} {shape}{hint}",
                node.location, node.path,
            )


def _describe_inputs(graph: Graph, node: GraphNode) -> str:
    parts = [f"'{graph.path_of(name)}' is {shape}" for name, shape in zip(node.inputs, node.input_shapes)]
    return ("inputs: " if len(parts) > 1 else "input: ") + ", ".join(parts)


_GRID_SIZES = {"map": 2, "tokens": 2, "vector": 0}


def _malformed(shape: Shape) -> bool:
    try:
        sizes = (shape.channels, *shape.grid, shape.extra_tokens)
        return not all(type(d) is int for d in sizes) or len(shape.grid) != _GRID_SIZES.get(shape.layout, -1)
    except TypeError:  # a grid that is not a tuple
        return True


def _check_result(node: GraphNode, shape: object) -> None:
    problem = None
    if not isinstance(shape, Shape):
        problem = f"returned {type(shape).__name__}, not a Shape"
    elif _malformed(shape):
        problem = "returned a malformed Shape (sizes must be integers, a map or tokens grid two of them, a vector none)"
        shape = None
    elif shape.channels < 1 or any(d < 1 for d in shape.grid) or shape.extra_tokens < 0:
        problem = f"returned the empty shape {shape}"
    if problem:
        if isinstance(shape, Shape):  # a legitimate spec problem: e.g. too many stride-2 layers
            raise SpecError(f"node '{node.path}' ({node.block}) produces the empty shape {shape}; input: {node.input_shapes[0] if node.input_shapes else '?'}", node.location, node.path)
        raise SpecError(
            f"block '{node.block}' from plugin '{node.entry.plugin.distribution}' {problem} for node '{node.path}'",
            node.location, node.path,
        )
