"""archforge: compose and search neural network architectures from YAML graphs of blocks.

The public API::

    spec = archforge.load_spec("resnet_tiny")       # a bundled model by name, or any spec file
    graph = archforge.validate(spec)          # every error is a located SpecError
    model = archforge.build(spec)             # a plain nn.Module (refused over max_params, default 10^9)
    print(archforge.summarize(spec).params)
    result = archforge.search("placement_mnist")     # which placement wins (archforge.search is callable)

Plugin authors import from :mod:`archforge.plugin`, which is also the manual of the
plugin contract (:class:`Block`, :class:`BlockArgs`, :class:`Shape`, :class:`ShapeError`,
:data:`hookimpl`, the hooks).

Every name here is imported on first use, so ``import archforge`` (and a plugin's
``import archforge.plugin``) loads neither the builder, the graph nor the search.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from archforge._lazy import lazy_attributes

if TYPE_CHECKING:
    from archforge.builder import Summary, build, load_checkpoint, summarize
    from archforge.errors import CheckpointError, Location, PluginError, SettingError, ShapeError, SpecError, SpecWarning
    from archforge.graph import Graph, compile_graph
    from archforge.plugin import Block, BlockArgs, Shape, hookimpl
    from archforge.registry import Registry
    from archforge import search
    from archforge.search import SearchResult
    from archforge.spec import Spec, load_spec, parse_spec
    from archforge.spec.zoo import list_models

__version__ = "0.1.0"

#: Where each public name lives.
_HOMES = {
    "Summary": "archforge.builder", "build": "archforge.builder", "load_checkpoint": "archforge.builder",
    "summarize": "archforge.builder",
    "CheckpointError": "archforge.errors", "Location": "archforge.errors", "PluginError": "archforge.errors",
    "SettingError": "archforge.errors", "ShapeError": "archforge.errors", "SpecError": "archforge.errors",
    "SpecWarning": "archforge.errors",
    "Graph": "archforge.graph", "compile_graph": "archforge.graph",
    "Block": "archforge.plugin", "BlockArgs": "archforge.plugin", "Shape": "archforge.plugin", "hookimpl": "archforge.plugin",
    "Registry": "archforge.registry",
    "SearchResult": "archforge.search",
    "Spec": "archforge.spec", "load_spec": "archforge.spec", "parse_spec": "archforge.spec",
    "list_models": "archforge.spec.zoo",
}


def validate(spec: Spec | str | os.PathLike[str], *, registry: Registry | None = None) -> Graph:
    """Check a spec completely (structure, blocks, args, graph, shapes) without allocating weights.

    Returns the typed :class:`Graph`; raises :class:`SpecError` naming the file, line, node and problem.
    """
    from archforge.graph import compile_graph
    from archforge.spec import Spec, load_spec

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return compile_graph(spec, registry)


__getattr__, __dir__ = lazy_attributes(globals(), _HOMES, subpackages=True)

__all__ = [
    "Block", "BlockArgs", "CheckpointError", "Graph", "Location", "PluginError", "Registry", "SearchResult", "SettingError", "Shape", "ShapeError", "Spec",
    "SpecError", "SpecWarning", "Summary", "build", "hookimpl", "list_models", "load_checkpoint", "load_spec", "parse_spec", "search",
    "summarize", "validate",
]
