"""The build stage: modules from graphs, and what can be measured on them."""

from archforge.build.builder import as_graph, build, build_node
from archforge.build.metrics import NodeSummary, Summary, count_flops, summarize

__all__ = ["NodeSummary", "Summary", "as_graph", "build", "build_node", "count_flops", "summarize"]
