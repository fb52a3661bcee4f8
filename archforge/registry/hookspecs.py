"""The hook specifications exactly as pluggy registers them (``PluginManager.add_hookspecs(hookspecs)``).

They are written, and their contracts documented, in :mod:`archforge.plugin` (the plugin
author's manual); this module holds the three hook functions and nothing else, so that
pluggy registers exactly those.
"""

from archforge.plugin import PROJECT, archforge_blocks, archforge_datasets, archforge_metrics, hookimpl, hookspec

__all__ = ["PROJECT", "archforge_blocks", "archforge_datasets", "archforge_metrics", "hookimpl", "hookspec"]
