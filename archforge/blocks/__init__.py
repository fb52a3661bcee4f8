"""archforge's built-in blocks, one concept per module.

This package is a plugin like any other: archforge's distribution announces it
through the ``builtin`` entry point of the ``archforge`` group, and it registers its
blocks through the ``archforge_blocks`` hook.
"""

from __future__ import annotations

from archforge.blocks.activation import Activation
from archforge.blocks.bottleneck import BasicBlock, Bottleneck
from archforge.blocks.bottleneck_attn import BottleneckAttn
from archforge.blocks.class_token import ClassToken
from archforge.blocks.drop_path import DropPath
from archforge.blocks.classifier import Classifier
from archforge.blocks.conv import Conv
from archforge.blocks.dropout import Dropout
from archforge.blocks.gpsa import GPSA
from archforge.blocks.identity import Identity
from archforge.blocks.layout import Flatten, ToMap, ToTokens
from archforge.blocks.linear import Linear
from archforge.blocks.local_attention import LocalAttention
from archforge.blocks.merge import Add, Concat, Mul
from archforge.blocks.mhsa import MHSA
from archforge.blocks.mlp import MLP
from archforge.blocks.norm import BatchNorm, LayerNorm
from archforge.blocks.patch_embed import PatchEmbed
from archforge.blocks.pool import GlobalPool, Pool
from archforge.blocks.pos_embed import LearnedPosEmbed, SinCosPosEmbed
from archforge.blocks.sagan import SaganAttention
from archforge.blocks.se import SqueezeExcitation
from archforge.blocks.stem import Stem
from archforge.plugin import Block, hookimpl

BUILTIN_BLOCKS: list[type[Block]] = [
    Activation, Add, BasicBlock, BatchNorm, Bottleneck, BottleneckAttn, ClassToken, Classifier, Concat, Conv, DropPath,
    Dropout, Flatten, GlobalPool, GPSA, Identity, LayerNorm, LearnedPosEmbed, Linear, LocalAttention, MHSA, MLP, Mul,
    PatchEmbed, Pool, SaganAttention, SinCosPosEmbed, SqueezeExcitation, Stem, ToMap, ToTokens,
]


@hookimpl
def archforge_blocks() -> list[type[Block]]:
    return BUILTIN_BLOCKS
