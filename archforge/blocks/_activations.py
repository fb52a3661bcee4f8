"""Activation functions by name, shared by the blocks that end in one."""

from __future__ import annotations

from typing import Literal

from torch import nn

ActivationName = Literal["relu", "relu6", "gelu", "gelu_tanh", "silu", "swish", "hardswish", "sigmoid", "tanh", "elu", "leaky_relu", "mish", "none"]


def make_activation(name: ActivationName, *, inplace: bool = False) -> nn.Module:
    """A fresh module for ``name`` (``"none"`` gives ``nn.Identity``).

    ``inplace=True`` is for composite modules that apply the activation to a tensor they
    just created (a norm's output, a residual sum), as torchvision does; it saves a
    memory pass. The standalone ``act`` block must not, since its input is another node's output.
    """
    if name in ("relu",):
        return nn.ReLU(inplace=inplace)
    if name == "relu6":
        return nn.ReLU6(inplace=inplace)
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name in ("silu", "swish"):
        return nn.SiLU(inplace=inplace)
    if name == "hardswish":
        return nn.Hardswish(inplace=inplace)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "elu":
        return nn.ELU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "mish":
        return nn.Mish()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation '{name}'")
