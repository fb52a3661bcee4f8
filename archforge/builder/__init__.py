"""The build stage: modules from graphs, checkpoints, and what can be measured on them."""

from archforge.builder.checkpoint import load_checkpoint, save_checkpoint
from archforge.builder.metrics import NodeSummary, Summary, count_flops, summarize
from archforge.builder.network import as_graph, build
from archforge.builder.node import build_node
from archforge.builder.probe import DEFAULT_MAX_PARAMS, MAX_PARAMS_ENV

__all__ = ["DEFAULT_MAX_PARAMS", "MAX_PARAMS_ENV", "NodeSummary", "Summary", "as_graph", "build", "build_node", "count_flops",
           "load_checkpoint", "save_checkpoint", "summarize"]
