"""The build stage: modules from graphs, checkpoints, and what can be measured on them."""

from archforge.builder.checkpoint import load_checkpoint, save_checkpoint
from archforge.builder.metrics import NodeSummary, Summary, count_flops, summarize
from archforge.builder.network import as_graph, build, build_node

__all__ = ["NodeSummary", "Summary", "as_graph", "build", "build_node", "count_flops", "load_checkpoint", "save_checkpoint", "summarize"]
