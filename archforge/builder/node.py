"""Building one node: the block's ``build`` and ``init_weights`` calls, with every failure attributed to the plugin and the node."""

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


def init_node(node: GraphNode, module: nn.Module) -> None:
    """Apply the block's reference initialisation to ``module`` (what ``build`` returned for ``node``).

    The block may change values only: a parameter or buffer added, removed, replaced, or
    given another shape, dtype or device, and any exception, is a located :class:`SpecError`
    naming the plugin and the node.
    """
    before = module_tensors(module)
    try:
        with torch.no_grad():
            node.entry.block.init_weights(module, node.block_input, node.args)
    except PLUGIN_FAULTS as exc:
        raise node_error(node, "failed to initialise", exc) from None
    after = module_tensors(module)
    problem = tensor_change(before, after)
    if problem is not None:
        raise SpecError(f"block '{node.block}' from plugin '{node.entry.plugin.distribution}' init_weights {problem} of node "
                        f"'{node.path}': it may change values only (in place, e.g. with torch.nn.init)", node.location, node.path)


def module_tensors(module: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Size, torch.dtype, torch.device]]:
    """Every parameter and buffer by name, with the shape, dtype and device it has now."""
    named = [*((f"parameter '{n}'", p) for n, p in module.named_parameters()),
             *((f"buffer '{n}'", b) for n, b in module.named_buffers())]
    return {name: (tensor, tensor.shape, tensor.dtype, tensor.device) for name, tensor in named}


def tensor_change(before: dict[str, tuple], after: dict[str, tuple]) -> str | None:
    """How ``after`` differs from ``before`` (both from :func:`module_tensors`) other than in values; None when it does not."""
    for name in before.keys() - after.keys():
        return f"removed the {name}"
    for name in after.keys() - before.keys():
        return f"added a {name}"
    for name, (old, *old_meta) in before.items():
        new, *new_meta = after[name]
        if new is not old:
            return f"replaced the {name}"
        for what, was, now in zip(("shape", "dtype", "device"), old_meta, new_meta):
            if was != now:  # a `.data =` assignment keeps the object but not its shape
                return f"changed the {what} of the {name} from {was} to {now}"
    return None


def node_error(node: GraphNode, what: str, exc: BaseException) -> SpecError:
    """``block 'x' from plugin 'p' <what> node 'n': Type: message``, located at the node (even when ``str(exc)`` fails)."""
    return SpecError(
        f"block '{node.block}' from plugin '{node.entry.plugin.distribution}' {what} node '{node.path}': {describe_exception(exc)}",
        node.location, node.path,
    )


__all__ = ["build_node", "init_node", "module_tensors", "node_error", "tensor_change"]
