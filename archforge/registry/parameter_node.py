"""A node that is one learned tensor: its parameter is named after the node, as reference models name it.

timm, torchvision and the papers' code keep tensors such as ViT's class token and position
embedding directly on the network (``cls_token``, ``pos_embed``), not inside a module that
holds them (``cls_token.cls_token``). A block whose module subclasses :class:`ParameterNode`
gets that naming: the builder registers ``module.tensor`` on the network under the node's own
name and calls ``type(module).apply(*inputs, tensor)`` in the generated forward (through
:func:`apply_parameter_node`, which names the class by a string so that the network can be
pickled), so a spec node ``cls_token`` has the parameter ``cls_token`` and a timm state_dict
loads unchanged.

Everything else (shape checks, parameter counts, ``module(x)`` on its own) sees an ordinary
module whose ``forward`` is ``apply(*inputs, self.tensor)``. Example::

    class PrependClassToken(ParameterNode):
        def __init__(self, dim, *, device=None, dtype=None):
            super().__init__(torch.zeros(1, 1, dim, device=device, dtype=dtype))

        @staticmethod
        def apply(x, tensor):                                  # x: (B, N, C)
            return torch.cat([tensor.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, C)
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

import torch
from torch import fx, nn


class ParameterNode(nn.Module):
    """One learned tensor and a pure function of the node's inputs and it.

    Subclasses implement :meth:`apply` as a ``@staticmethod`` of plain tensor operations (it is
    called from the generated forward, so it must not read ``self``), do not override
    ``forward``, hold nothing but ``tensor`` (no other parameters, buffers or submodules), and
    are defined at the top level of a module (the network names them by import path).
    """

    def __init__(self, tensor: torch.Tensor) -> None:
        super().__init__()
        self.tensor = nn.Parameter(tensor)

    @staticmethod
    def apply(*inputs: torch.Tensor) -> torch.Tensor:
        """The node's output for its inputs followed by the tensor: ``apply(x, tensor)`` for one input."""
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.apply(*inputs, self.tensor)


def parameter_node_problem(module: nn.Module) -> str | None:
    """Why ``module`` cannot be installed as a bare tensor (``None`` when it can)."""
    cls = type(module)
    owner = next(klass for klass in cls.__mro__ if "apply" in klass.__dict__)
    if owner is ParameterNode:
        return f"{cls.__name__} subclasses ParameterNode but does not implement apply()"
    if not isinstance(owner.__dict__["apply"], staticmethod):
        return f"{owner.__name__}.apply must be a @staticmethod: the generated forward calls it without the module"
    if cls.forward is not ParameterNode.forward:
        return f"{cls.__name__} overrides forward(): the network calls apply(*inputs, tensor), so forward must stay ParameterNode's"
    if _importable(f"{cls.__module__}:{cls.__qualname__}") is not cls:
        return (f"{cls.__qualname__} cannot be imported as {cls.__module__}.{cls.__qualname__}: define it at the top level "
                "of a module (not in a function or with type()), where a saved network can import it")
    names = [name for name, _ in module.named_parameters() if name != "tensor"]
    names += [name for name, _ in module.named_buffers()]
    names += [name for name, _ in module.named_children()]
    if names:
        return f"{cls.__name__} is a ParameterNode but also holds {', '.join(names)}: it may hold only 'tensor'"
    return None


def _importable(target: str) -> Any:
    """The object ``"<module>:<qualname>"`` names (importing the module), or ``None``."""
    module_name, _, qualname = target.partition(":")
    try:
        owner: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
        for part in qualname.split("."):
            owner = getattr(owner, part)
    except Exception:  # any failure means: not importable by that name
        return None
    return owner


#: ``"<module>:<class qualname>[#n]"`` -> that class's ``apply``, filled when a network is built or first run.
_APPLY: dict[str, Callable[..., torch.Tensor]] = {}


def parameter_node_target(module: ParameterNode) -> str:
    """The string the generated forward names ``module``'s class by; registers its ``apply``.

    A class defined again under the same name (a notebook cell run twice, a reloaded plugin)
    gets a new ``#n`` key, so networks built before keep calling the ``apply`` they were built with.
    """
    cls = type(module)
    target = base = f"{cls.__module__}:{cls.__qualname__}"
    n = 0
    while _APPLY.get(target, cls.apply) is not cls.apply:
        n += 1
        target = f"{base}#{n}"
    _APPLY[target] = cls.apply
    return target


def apply_parameter_node(target: str, *inputs: Any) -> Any:
    """``apply(*inputs)`` of the ParameterNode class ``target`` (``"<module>:<class qualname>"``).

    What a network's generated forward calls for a ParameterNode node. The class is named by a
    string, not by its function object, because a pickled network re-imports what its code
    names and a staticmethod cannot be imported by name. Under ``torch.fx`` tracing (which
    unpickling a network repeats) the call stays one node, as the builder emitted it.
    """
    for value in inputs:
        if isinstance(value, fx.Proxy):
            return value.tracer.create_proxy("call_function", apply_parameter_node, (target, *inputs), {})
    apply = _APPLY.get(target)
    if apply is None:  # a network unpickled in a fresh process
        owner = _importable(target.partition("#")[0])
        if owner is None:
            raise RuntimeError(f"the network calls the ParameterNode class {target.partition('#')[0]!r}, which cannot be "
                               "imported here: install the plugin that provides it")
        apply = _APPLY[target] = owner.apply
    return apply(*inputs)
