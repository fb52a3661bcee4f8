"""The plugin API: everything a block plugin needs, and nothing of the builder or search."""

from archforge.errors import ShapeError
from archforge.registry.block import FAMILIES, Block, BlockArgs
from archforge.registry.extensions import DatasetSource, ImageData, Metric, MetricContext
from archforge.registry.hookspecs import hookimpl
from archforge.registry.manager import PLUGIN_API_VERSION, Registry, default_registry, load_registry
from archforge.registry.names import BUILTIN_DISTRIBUTION, BlockEntry, PluginInfo
from archforge.registry.shape import LAYOUTS, Layout, MapToTokens, Shape, TokensToMap

__all__ = [
    "BUILTIN_DISTRIBUTION", "FAMILIES", "LAYOUTS", "PLUGIN_API_VERSION", "Block", "BlockArgs", "BlockEntry", "DatasetSource",
    "ImageData", "Layout", "MapToTokens", "Metric", "MetricContext", "PluginInfo", "Registry", "Shape", "ShapeError",
    "TokensToMap", "default_registry", "hookimpl", "load_registry",
]
