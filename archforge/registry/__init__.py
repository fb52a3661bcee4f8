"""The registry of blocks, datasets and metrics that plugins provide, loaded through entry points.

Plugin authors import from :mod:`archforge.plugin`, the plugin contract; this package is
what archforge reads plugins with: :func:`load_registry` and :func:`default_registry`
give a :class:`Registry` (``blocks``, ``qualified``, ``conflicts``, ``block(name)``,
``datasets``, ``metrics``, ``plugins``, ``problems``). Names are imported on first use,
so importing one submodule (``archforge.registry.shape``) loads nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archforge._lazy import lazy_attributes

if TYPE_CHECKING:
    from archforge.errors import ShapeError
    from archforge.registry.block import FAMILIES, Block, BlockArgs
    from archforge.registry.extensions import DatasetSource, ImageData, Metric, MetricContext
    from archforge.registry.hookspecs import hookimpl
    from archforge.registry.manager import PLUGIN_API_VERSION, Registry, default_registry, load_registry
    from archforge.registry.names import BUILTIN_DISTRIBUTION, BlockEntry, PluginInfo
    from archforge.registry.shape import LAYOUTS, Layout, MapToTokens, Shape, TokensToMap

#: Where each public name lives.
_HOMES = {
    "ShapeError": "archforge.errors",
    "FAMILIES": "archforge.plugin", "Block": "archforge.plugin", "BlockArgs": "archforge.plugin", "hookimpl": "archforge.plugin",
    "DatasetSource": "archforge.registry.extensions", "ImageData": "archforge.registry.extensions",
    "Metric": "archforge.registry.extensions", "MetricContext": "archforge.registry.extensions",
    "PLUGIN_API_VERSION": "archforge.registry.manager", "Registry": "archforge.registry.manager",
    "default_registry": "archforge.registry.manager", "load_registry": "archforge.registry.manager",
    "BUILTIN_DISTRIBUTION": "archforge.registry.names", "BlockEntry": "archforge.registry.names",
    "PluginInfo": "archforge.registry.names",
    "LAYOUTS": "archforge.registry.shape", "Layout": "archforge.registry.shape", "MapToTokens": "archforge.registry.shape",
    "Shape": "archforge.registry.shape", "TokensToMap": "archforge.registry.shape",
}


__getattr__, __dir__ = lazy_attributes(globals(), _HOMES)


__all__ = [
    "BUILTIN_DISTRIBUTION", "FAMILIES", "LAYOUTS", "PLUGIN_API_VERSION", "Block", "BlockArgs", "BlockEntry", "DatasetSource",
    "ImageData", "Layout", "MapToTokens", "Metric", "MetricContext", "PluginInfo", "Registry", "Shape", "ShapeError",
    "TokensToMap", "default_registry", "hookimpl", "load_registry",
]
