"""The id a node gets when its spec writes none: ``<block>_<index>``.

One rule for every place that names nodes: expansion of a plain spec
(:mod:`archforge.graph.expand`) and the concrete specs of a search space, which must
name a node exactly as expansion would, so that parameter names (``conv_0.weight``)
do not depend on how a spec came to be.
"""

from __future__ import annotations


def default_node_id(block: str, index: int) -> str:
    """The id of the node at ``index`` of its list whose block is ``block`` and whose spec gives no id.

    A ``$param`` block is named after the param, a plugin's qualified block after its
    short name: ``conv_0``, ``blk_3`` for ``$blk``, ``se_2`` for ``halo:se``.
    """
    return f"{block.lstrip('$').rpartition(':')[2]}_{index}"
