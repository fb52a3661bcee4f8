"""archforge-halo: HaloNet's blocked halo attention and LambdaNetworks' lambda layer as archforge blocks.

archforge loads :mod:`archforge_halo.blocks` through the ``halo`` entry point of the
``archforge`` group; importing this package does not import archforge.
"""

__version__ = "0.1.0"
