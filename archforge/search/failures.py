"""How a failed candidate is reported: :class:`TrialError`, one readable line per failure.

A candidate can fail in many ways (a spec that does not build, shapes that do not fit the
data, a NaN loss, out of memory, a block raising in forward); :func:`describe_failure`
turns an exception raised while running one into a :class:`TrialError` that says what
happened, where (which block, which epoch and step) and keeps the traceback as text only.
"""

from __future__ import annotations

import traceback
from typing import Any

import torch
from torch import nn

from archforge.errors import one_line
from archforge.graph import Graph, GraphNode
from archforge.registry.parameter_node import apply_parameter_node


class TrialError(Exception):
    """A candidate that could not be trained or measured; ``str(error)`` is one readable line.

    ``kind`` is ``"spec"`` (does not validate or build), ``"shape"`` (does not fit the
    data), ``"nan"`` (non-finite loss), ``"oom"`` (out of memory), ``"metric"`` (a plugin
    metric raised or gave no finite number) or ``"error"`` (an exception while running it); ``epoch``/``step`` say when, where it applies.
    ``details`` holds the formatted traceback of the original exception, for logs (the
    exception objects themselves are not kept, so a failed trial frees its memory).
    """

    def __init__(self, message: str, *, kind: str = "error", epoch: int | None = None, step: int | None = None, details: str = ""):
        self.message = one_line(message)
        self.kind = kind
        self.epoch = epoch
        self.step = step
        self.details = details
        super().__init__(self.message)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or the host) ran out of memory."""
    text = str(exc).lower()
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text or "can't allocate memory" in text


def format_traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc``, as text to keep instead of the exception."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def describe_failure(
    exc: Exception,
    *,
    where: str,
    batch_size: int,
    device: torch.device,
    epoch: int | None = None,
    step: int | None = None,
    model: nn.Module | None = None,
    graph: Graph | None = None,
) -> TrialError:
    """The :class:`TrialError` for ``exc`` raised ``where`` (e.g. "at epoch 1 step 3") while running a candidate.

    Out of memory is said as such, with the batch and device; any other exception names
    the innermost block of ``graph`` on its stack, when there is one.
    """
    details = format_traceback(exc)
    if is_out_of_memory(exc):
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return TrialError(f"out of memory {where} (batch {batch_size} on {device}): {first_line[:200]}",
                          kind="oom", epoch=epoch, step=step, details=details)
    node = failing_node(exc, model, graph)
    culprit = f"block '{node.block}' (node '{node.path}') raised" if node is not None else "the network raised"
    return TrialError(f"{culprit} {type(exc).__name__}: {exc} ({where})", kind="error", epoch=epoch, step=step, details=details)


def failing_node(exc: BaseException, model: nn.Module | None, graph: Graph | None) -> GraphNode | None:
    """The innermost graph node on the exception's stack: a frame of its module, a frame with a ``node`` local, or
    the call of a :class:`~archforge.registry.parameter_node.ParameterNode`'s ``apply`` on the node's own tensor."""
    if graph is None:
        return None
    nodes = {node.name: node for node in graph.live_nodes()}
    modules = {id(m): name for name, m in model.named_modules() if name} if model is not None else {}
    # A ParameterNode's apply is a staticmethod, with no module in its frame: the node's tensor, its last argument, names it.
    tensors = {id(p): name for name, p in model.named_parameters() if name in nodes} if model is not None else {}
    found: GraphNode | None = None
    tb = exc.__traceback__
    while tb is not None:
        local: dict[str, Any] = tb.tb_frame.f_locals
        owner = local.get("self")
        name = modules.get(id(owner)) if owner is not None else None
        if tb.tb_frame.f_code is apply_parameter_node.__code__ and local.get("inputs"):
            name = tensors.get(id(local["inputs"][-1]))
        while name and name not in nodes:
            name = name.rpartition(".")[0]
        if name:
            found = nodes[name]
        elif isinstance(local.get("node"), GraphNode):
            found = local["node"]
        tb = tb.tb_next
    return found
