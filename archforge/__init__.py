"""archforge: compose and search neural network architectures from YAML graphs of blocks.

The public API::

    spec = archforge.load_spec("archforge/zoo/models/resnet_tiny.yaml")
    graph = archforge.validate(spec)          # every error is a located SpecError
    model = archforge.build(spec)             # a plain nn.Module (refused over max_params, default 10^9)
    print(archforge.summarize(spec).params)
    result = archforge.search("archforge/zoo/spaces/placement_mnist.yaml")   # which placement wins

Plugin authors need :class:`Block`, :class:`BlockArgs`, :class:`Shape`,
:class:`ShapeError` and :data:`hookimpl` (see ``archforge.registry.hookspecs``).
"""

from __future__ import annotations

import os

from archforge.builder import Summary, build, load_checkpoint, summarize
from archforge.errors import CheckpointError, Location, PluginError, SettingError, ShapeError, SpecError, SpecWarning
from archforge.graph import Graph, compile_graph
from archforge.registry import Block, BlockArgs, Registry, Shape, hookimpl
from archforge.spec import Spec, load_spec, parse_spec
# Bound after the subpackage import, so `archforge.search` is the function; the package's
# other names are imported from it directly: `from archforge.search import load_space`.
from archforge.search import SearchResult, search

__version__ = "0.1.0"


def validate(spec: Spec | str | os.PathLike[str], *, registry: Registry | None = None) -> Graph:
    """Check a spec completely (structure, blocks, args, graph, shapes) without allocating weights.

    Returns the typed :class:`Graph`; raises :class:`SpecError` naming the file, line, node and problem.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return compile_graph(spec, registry)


__all__ = [
    "Block", "BlockArgs", "CheckpointError", "Graph", "Location", "PluginError", "Registry", "SearchResult", "SettingError", "Shape", "ShapeError", "Spec",
    "SpecError", "SpecWarning", "Summary", "build", "hookimpl", "load_checkpoint", "load_spec", "parse_spec", "search",
    "summarize", "validate",
]
