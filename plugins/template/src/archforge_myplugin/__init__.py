"""An archforge plugin (rename me). archforge loads :mod:`archforge_myplugin.blocks` through the entry point."""

__version__ = "0.1.0"
