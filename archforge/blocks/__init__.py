"""archforge's built-in blocks, one concept per module.

This package is a plugin like any other: archforge's distribution announces it
through the ``builtin`` entry point of the ``archforge`` group, and it registers its
blocks through the ``archforge_blocks`` hook.
"""

from __future__ import annotations

from archforge.blocks.activation import Activation
from archforge.blocks.classifier import Classifier
from archforge.blocks.conv import Conv
from archforge.blocks.dropout import Dropout
from archforge.blocks.identity import Identity
from archforge.blocks.layout import Flatten, ToMap, ToTokens
from archforge.blocks.linear import Linear
from archforge.blocks.merge import Add, Concat, Mul
from archforge.blocks.norm import BatchNorm, LayerNorm
from archforge.blocks.patch_embed import PatchEmbed
from archforge.blocks.pool import GlobalPool, Pool
from archforge.registry import Block, hookimpl

BUILTIN_BLOCKS: list[type[Block]] = [
    Activation, Add, BatchNorm, Classifier, Concat, Conv, Dropout, Flatten, GlobalPool, Identity,
    LayerNorm, Linear, Mul, PatchEmbed, Pool, ToMap, ToTokens,
]


@hookimpl
def archforge_blocks() -> list[type[Block]]:
    return BUILTIN_BLOCKS
