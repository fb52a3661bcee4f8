"""The plugin module archforge loads (entry point ``halo`` of the ``archforge`` group).

It declares the plugin API major version it was written against and returns its block
classes from the ``archforge_blocks`` hook. archforge refuses, with a message naming
this distribution, a plugin module whose ``ARCHFORGE_PLUGIN_API`` differs from its own.
The contract these blocks meet is written in :mod:`archforge.plugin`.
"""

from __future__ import annotations

from archforge.plugin import Block, hookimpl

from archforge_halo.halo_attention import HaloAttention
from archforge_halo.lambda_layer import LambdaLayer

#: Major version of archforge's plugin API (hooks, Block contract, Shape) this plugin targets.
ARCHFORGE_PLUGIN_API = 1

BLOCKS: list[type[Block]] = [HaloAttention, LambdaLayer]


@hookimpl
def archforge_blocks() -> list[type[Block]]:
    return BLOCKS
