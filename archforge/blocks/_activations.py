"""Activation functions by name, shared by the blocks that end in one."""

from __future__ import annotations

from typing import Literal

from torch import nn

ActivationName = Literal["relu", "relu6", "gelu", "gelu_tanh", "silu", "swish", "hardswish", "sigmoid", "tanh", "elu", "leaky_relu", "mish", "none"]


def make_activation(name: ActivationName) -> nn.Module:
    """A fresh module for ``name`` (``"none"`` gives ``nn.Identity``)."""
    if name in ("relu",):
        return nn.ReLU(inplace=False)
    if name == "relu6":
        return nn.ReLU6()
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name in ("silu", "swish"):
        return nn.SiLU()
    if name == "hardswish":
        return nn.Hardswish()
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
