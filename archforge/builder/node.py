"""Building one node: the block's ``build`` call, with every failure attributed to the plugin and the node."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from archforge.errors import PLUGIN_FAULTS, SpecError, describe_exception
from archforge.graph import GraphNode
from archforge.registry.parameter_node import ParameterNode, parameter_node_problem


def build_node(node: GraphNode, *, device: Any = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Call the node's block ``build``, attributing any failure to the plugin and the node.

    A block that raises :class:`SystemExit` (a plugin calling ``sys.exit``) or ``GeneratorExit``
    is reported the same way as one that raises an exception (see :data:`~archforge.errors.PLUGIN_FAULTS`):
    a located :class:`SpecError`, never a silent exit of the process. ``KeyboardInterrupt`` goes through untouched.
    """
    try:
        module = node.entry.block.build(node.block_input, node.args, device=device, dtype=dtype)
    except PLUGIN_FAULTS as exc:
        raise node_error(node, "failed to build", exc) from None
    if not isinstance(module, nn.Module):
        raise SpecError(
            f"block '{node.block}' from plugin '{node.entry.plugin.distribution}' returned "
            f"{type(module).__name__} instead of an nn.Module for node '{node.path}'",
            node.location, node.path,
        )
    if isinstance(module, ParameterNode):
        problem = parameter_node_problem(module)
        if problem is not None:
            raise SpecError(f"block '{node.block}' from plugin '{node.entry.plugin.distribution}' built a module for node "
                            f"'{node.path}' that breaks the ParameterNode contract: {problem}", node.location, node.path)
    return module


def node_error(node: GraphNode, what: str, exc: BaseException) -> SpecError:
    """``block 'x' from plugin 'p' <what> node 'n': Type: message``, located at the node (even when ``str(exc)`` fails)."""
    return SpecError(
        f"block '{node.block}' from plugin '{node.entry.plugin.distribution}' {what} node '{node.path}': {describe_exception(exc)}",
        node.location, node.path,
    )


__all__ = ["build_node", "node_error"]
