"""Every hook a plugin can implement. This file is the plugin author's manual.

A plugin is a Python module that implements one or more of these functions, marked
with ``@archforge.hookimpl``, and is announced by its distribution through an entry
point in the ``archforge`` group::

    # pyproject.toml of the plugin package
    [project.entry-points.archforge]
    halo = "archforge_halo.blocks"

archforge imports each entry point once, on first use. A module that fails to import
(whatever it raises, ``SystemExit`` included), a hook that raises or returns the wrong
type, a misspelt hook name and a hook without ``@hookimpl`` are each reported with one
warning naming the entry point and the distribution; the other plugins keep working.
archforge's own blocks come in through exactly the same door (the ``builtin`` entry
point of the ``archforge`` distribution).

Each hook returns a list (or tuple) of its items, or ``None`` for none.
"""

from __future__ import annotations

from typing import Sequence

import pluggy

from archforge.registry.block import Block
from archforge.registry.extensions import DatasetSource, Metric

PROJECT = "archforge"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def archforge_blocks() -> Sequence[type[Block]]:
    """Return the :class:`~archforge.Block` subclasses this plugin provides.

    Classes, not instances: archforge instantiates each with no arguments. A block is
    reachable by its short ``name`` and by ``<entry point>:<name>``; a built-in keeps
    its short name against any plugin (the plugin's block gets a warning), and a short
    name several plugins provide is an error naming their qualified names, raised only
    when a spec uses it. A class that breaks the block contract (no name, an ``Args``
    that is not a pydantic model, ...) or whose constructor raises is skipped with a
    warning.
    """


@hookspec
def archforge_datasets() -> Sequence[DatasetSource]:
    """Return :class:`~archforge.registry.DatasetSource` objects a search can train on.

    ``load`` is called only when a search uses the dataset, so importing the plugin
    stays cheap. It must not download anything at run time.
    """


@hookspec
def archforge_metrics() -> Sequence[Metric]:
    """Return extra :class:`~archforge.registry.Metric` objects to measure on each candidate."""
