"""The reference initialisations the built-in blocks share (used by their ``init_weights``).

Two families, each as its reference implementation draws it:

* transformers (timm's ViT/DeiT ``init_weights_vit_timm``, ConViT ``_init_weights``): every
  linear weight ``W ~ N(0, 0.02²)`` truncated at ±2 (absolute, so at this std a plain
  normal), every linear bias 0; LayerNorm ``γ = 1, β = 0`` (torch's default already);
* CNNs (timm's ResNet ``init_weights``, torchvision's ResNet): every convolution weight
  kaiming-normal in fan-out mode for ReLU, ``W ~ N(0, 2 / (k·k·C_out))``; BatchNorm
  ``γ = 1, β = 0``; convolution biases left as torch makes them (only the SE gate's 1×1
  convolutions have one in timm's SE-ResNets, and timm leaves it too); linears (the ``fc``)
  left at torch's default. With ``zero_init_last`` (timm's default) the last BatchNorm of
  each residual branch gets ``γ = 0``, so that every residual block starts as the identity
  (Goyal et al. 2017).
"""

from __future__ import annotations

import math

from torch import nn

#: Std of timm's transformer linears (and of ConvNeXt's convolutions).
TRANSFORMER_STD = 0.02


def transformer_linear_(layer: nn.Linear | nn.Conv2d, std: float = TRANSFORMER_STD) -> None:
    """``W ~ N(0, std²)`` truncated at ±2, bias 0 (timm's ``init_weights_vit_timm``: std 0.02)."""
    nn.init.trunc_normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def conv_fan_out_(conv: nn.Conv2d) -> None:
    """``W ~ N(0, 2 / fan_out)``, ``fan_out = C_out · k·k`` (timm's ResNet: ``kaiming_normal_(mode='fan_out')``)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


def projection_fan_out_(linear: nn.Linear, outputs: int) -> None:
    """A linear holding several 1×1 projections of ``outputs`` channels each (q, k, v), each weight
    drawn as its own 1×1 convolution would be by :func:`conv_fan_out_`, ``N(0, 2 / outputs)``; a bias, if any, 0."""
    nn.init.normal_(linear.weight, std=math.sqrt(2.0 / outputs))
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def cnn_(module: nn.Module) -> None:
    """:func:`conv_fan_out_` on every ``Conv2d`` in ``module``; norms keep torch's ``γ = 1, β = 0``."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            conv_fan_out_(layer)
