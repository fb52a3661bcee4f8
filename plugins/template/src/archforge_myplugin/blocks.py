"""The plugin module: the entry point in pyproject.toml names it, archforge imports it.

It does two things: says which plugin API it was written for, and hands archforge
its block classes through the ``archforge_blocks`` hook. Every hook and the whole
block contract are documented in :mod:`archforge.plugin`.
"""

from __future__ import annotations

from archforge.plugin import Block, hookimpl

from archforge_myplugin.scale import ExampleScale

# The major version of archforge's plugin API this module was written against. archforge
# refuses (with a warning naming your distribution) a plugin declaring another major;
# majors change only when the API breaks.
ARCHFORGE_PLUGIN_API = 1


@hookimpl
def archforge_blocks() -> list[type[Block]]:
    # Add each new block class here.
    return [ExampleScale]
