"""Diagrams of an architecture from its compiled :class:`~archforge.Graph`.

* :func:`to_dot`: Graphviz DOT text;
* :func:`to_mermaid`: a Mermaid ``flowchart`` (renders in GitHub Markdown and most wikis);
* :func:`render`: a file chosen by suffix: ``.dot``, ``.mmd``, ``.svg`` or ``.png``.

All three show the same picture: one box per live node (nodes that reach the output),
coloured by the block's family (:data:`FAMILY_COLOURS`), labelled with its id and block;
edges labelled with the producer's output shape, e.g. ``(B, 64, 8, 8)``; the network
input and output as rounded end points; and the nodes stamped from one ``define`` or
one ``repeat`` grouped in a frame named by their common path prefix (``stage1``,
``stage1[0]``, ...), nested the way the paths are.

SVG and PNG come from Graphviz's ``dot`` when it is on ``PATH``. Without it (a bare
machine with only pip packages) they are drawn with matplotlib from a layered layout
computed here: longest-path layering from the input, dummy points on edges that span
several layers, barycentre ordering sweeps that reduce crossings, horizontal positions
relaxed towards the neighbours, and long networks wrapped into side-by-side columns,
cut at narrow layers so that residual blocks stay whole.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

from archforge.graph.model import INPUT, Graph, GraphNode

#: Fill colour of each block family (see :data:`archforge.registry.FAMILIES`).
FAMILY_COLOURS: dict[str, str] = {
    "conv": "#9ecae1",
    "attention": "#fdae6b",
    "mlp": "#a1d99b",
    "positional": "#c6b3e6",
    "norm": "#e0e0e0",
    "activation": "#fff3b0",
    "merge": "#f4a6a6",
    "pool": "#7fcdbb",
    "head": "#f2b5d4",
    "layout": "#f7f7f7",
    "other": "#d0c8b0",
}
#: Colour of the input and output end points.
IO_COLOUR = "#ffffff"
SUFFIXES = (".dot", ".mmd", ".svg", ".png")

#: Live nodes a diagram may have. Laying out and drawing grow faster than the node count: a
#: 90,000-node spec ran for minutes in 2 GB. Raise it with ``render(..., max_nodes=N)``,
#: ``archforge graph --max-nodes N`` or by setting this constant.
MAX_DIAGRAM_NODES = 2_000


class DiagramTooLarge(RuntimeError):
    """A graph with more live nodes than a diagram may draw (:data:`MAX_DIAGRAM_NODES`)."""


def check_drawable(graph: Graph, max_nodes: int | None = None) -> None:
    """Refuse, before any layout work, a graph with more live nodes than ``max_nodes`` (default :data:`MAX_DIAGRAM_NODES`)."""
    bound = MAX_DIAGRAM_NODES if max_nodes is None else max_nodes
    count = len(graph.live_nodes())
    if count > bound:
        raise DiagramTooLarge(
            f"'{graph.name}' has {count:,} nodes to draw, more than the {bound:,} a diagram may have "
            "(archforge.diagram.MAX_DIAGRAM_NODES); raise it with render(..., max_nodes=N) or 'archforge graph --max-nodes N'"
        )


# Pseudo node names; never a node's module path (those are identifiers joined by dots).
_IN, _OUT = "<input>", "<output>"


def family_colour(family: str) -> str:
    return FAMILY_COLOURS.get(family, FAMILY_COLOURS["other"])


# ----------------------------------------------------------------------------- model of the picture


@dataclass
class _Cluster:
    prefix: str  # display path prefix: "stage1", "stage1[0]"
    depth: int
    nodes: list[str] = field(default_factory=list)  # direct members (module names)
    children: list[str] = field(default_factory=list)  # direct sub-cluster prefixes


@dataclass
class _Picture:
    """What every output format draws: live nodes, labelled edges, clusters."""

    graph: Graph
    nodes: list[GraphNode]
    edges: list[tuple[str, str, str]]  # (source, target, label); source/target are module names or _IN/_OUT
    clusters: dict[str, _Cluster]
    roots: list[str]  # top-level cluster prefixes
    top_nodes: list[str]  # nodes in no cluster
    parent: dict[str, str | None]  # node name -> innermost cluster prefix (or None)

    def label(self, name: str) -> str:
        """A node's short label: its path without the enclosing cluster's prefix (``conv1``, or ``[2]`` for a repeat)."""
        node = self.graph.nodes[name]
        owner = self.parent[name]
        return node.path if owner is None else node.path[len(owner):].removeprefix(".")


_PATH_PART = re.compile(r"\[\d+\]|[^.\[\]]+")


def path_prefixes(path: str) -> list[str]:
    """The enclosing groups of a display path: ``stage1[0].conv1`` → ``['stage1', 'stage1[0]']``."""
    parts = _PATH_PART.findall(path)
    prefixes, current = [], ""
    for part in parts[:-1]:
        current = current + part if part.startswith("[") or not current else f"{current}.{part}"
        prefixes.append(current)
    return prefixes


def _edge_label(graph: Graph, node: GraphNode, index: int, source: str) -> str:
    label = str(graph.shape_of(source))
    conversion = node.conversions[index] if index < len(node.conversions) else None
    return f"{label} → {conversion}" if conversion else label


def _picture(graph: Graph) -> _Picture:
    nodes = graph.live_nodes()
    edges: list[tuple[str, str, str]] = []
    for node in nodes:
        for i, source in enumerate(node.inputs):
            edges.append((_IN if source == INPUT else source, node.name, _edge_label(graph, node, i, source)))
    edges.append((_IN if graph.output == INPUT else graph.output, _OUT, str(graph.output_shape)))

    clusters: dict[str, _Cluster] = {}
    parent: dict[str, str | None] = {}
    roots: list[str] = []
    top_nodes: list[str] = []
    for node in nodes:
        prefixes = path_prefixes(node.path)
        for depth, prefix in enumerate(prefixes):
            if prefix not in clusters:
                clusters[prefix] = _Cluster(prefix, depth)
                if depth == 0:
                    roots.append(prefix)
                else:
                    clusters[prefixes[depth - 1]].children.append(prefix)
        if prefixes:
            clusters[prefixes[-1]].nodes.append(node.name)
            parent[node.name] = prefixes[-1]
        else:
            top_nodes.append(node.name)
            parent[node.name] = None
    return _Picture(graph, nodes, edges, clusters, roots, top_nodes, parent)


# ----------------------------------------------------------------------------- DOT


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _nested_lines(picture: "_Picture", node_line: Callable[[str, str], str],
                  open_cluster: Callable[[int, str, str], list[str]], close: str) -> list[str]:
    """Clusters (nested by path prefix) with their nodes, then the top-level nodes: the shared
    skeleton of the DOT and Mermaid writers, which differ only in how a cluster opens and closes."""
    counter = iter(range(1_000_000))

    def cluster_lines(prefix: str, indent: str) -> list[str]:
        cluster = picture.clusters[prefix]
        out = open_cluster(next(counter), prefix, indent)
        for child in cluster.children:
            out.extend(cluster_lines(child, indent + "  "))
        out.extend(node_line(name, indent + "  ") for name in cluster.nodes)
        out.append(f"{indent}{close}")
        return out

    lines: list[str] = []
    for prefix in picture.roots:
        lines.extend(cluster_lines(prefix, "  "))
    lines.extend(node_line(name, "  ") for name in picture.top_nodes)
    return lines


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text of ``graph`` (``dot -Tsvg`` renders it)."""
    picture = _picture(graph)
    title = f"{graph.name}: {graph.input} → {graph.output_shape}"
    lines = [
        f"digraph {_dot_quote(graph.name)} {{",
        f'  graph [rankdir=TB, fontname="Helvetica", fontsize=12, labelloc=t, label={_dot_quote(title)}, '
        'nodesep=0.3, ranksep=0.35, newrank=true];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, color="#555555", margin="0.12,0.04"];',
        '  edge [fontname="Helvetica", fontsize=8, fontcolor="#444444", color="#666666", arrowsize=0.6];',
        f'  {_dot_quote(_IN)} [label={_dot_quote("input" + chr(10) + str(graph.input))}, shape=box, style="rounded,filled,bold", fillcolor="{IO_COLOUR}"];',
        f'  {_dot_quote(_OUT)} [label={_dot_quote("output" + chr(10) + str(graph.output_shape))}, shape=box, style="rounded,filled,bold", fillcolor="{IO_COLOUR}"];',
    ]

    def node_line(name: str, indent: str) -> str:
        node = graph.nodes[name]
        family = node.entry.block.family
        label = f"{picture.label(name)}\n{node.block}"
        tooltip = f"{node.path}: {node.block} ({family}) → {node.shape}"
        return (f"{indent}{_dot_quote(name)} [label={_dot_quote(label)}, fillcolor=\"{family_colour(family)}\", "
                f"tooltip={_dot_quote(tooltip)}, class={_dot_quote(family)}];")

    def open_cluster(number: int, prefix: str, indent: str) -> list[str]:
        return [f"{indent}subgraph {_dot_quote(f'cluster_{number}')} {{",
                f'{indent}  label={_dot_quote(prefix)}; labeljust=l; fontsize=9; fontcolor="#555555"; '
                f'style="rounded,dashed"; color="#9a9a9a"; bgcolor="#0000000a";']

    lines.extend(_nested_lines(picture, node_line, open_cluster, "}"))
    for source, target, label in picture.edges:
        lines.append(f"  {_dot_quote(source)} -> {_dot_quote(target)} [label={_dot_quote(' ' + label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- Mermaid


def _mermaid_text(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "#quot;").replace("<", "&lt;").replace(">", "&gt;")


def to_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart TB`` of ``graph``; families are ``classDef`` classes."""
    picture = _picture(graph)
    ids = {_IN: "n_in", _OUT: "n_out"} | {node.name: f"n{i}" for i, node in enumerate(picture.nodes)}
    lines = ["flowchart TB", f"  %% {graph.name}: {graph.input} → {graph.output_shape}"]
    families = sorted({node.entry.block.family for node in picture.nodes})
    for family in families:
        lines.append(f"  classDef {family} fill:{family_colour(family)},stroke:#555555,color:#111111")
    lines.append(f"  classDef io fill:{IO_COLOUR},stroke:#333333,stroke-width:2px,color:#111111")
    lines.append(f'  n_in(["input<br/>{_mermaid_text(str(graph.input))}"]):::io')
    lines.append(f'  n_out(["output<br/>{_mermaid_text(str(graph.output_shape))}"]):::io')

    def node_line(name: str, indent: str) -> str:
        node = graph.nodes[name]
        label = f"{_mermaid_text(picture.label(name))}<br/><i>{_mermaid_text(node.block)}</i>"
        return f'{indent}{ids[name]}["{label}"]:::{node.entry.block.family}'

    def open_cluster(number: int, prefix: str, indent: str) -> list[str]:
        return [f'{indent}subgraph c{number} ["{_mermaid_text(prefix)}"]', f"{indent}  direction TB"]

    lines.extend(_nested_lines(picture, node_line, open_cluster, "end"))
    for source, target, label in picture.edges:
        lines.append(f'  {ids[source]} -->|"{_mermaid_text(label)}"| {ids[target]}')
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- layered layout


@dataclass
class Layout:
    """Positions of the layered drawing: centres in data units (one layer = 1 unit of height)."""

    position: dict[str, tuple[float, float]]  # node or dummy -> (x, y)
    layer: dict[str, int]
    column: dict[str, int]
    routes: list[tuple[str, str, list[tuple[float, float]]]]  # (source, target, polyline from source to target)
    column_bounds: list[tuple[float, float, float, float]]  # per column: (x_min, x_max, y_top, y_bottom)


def _crossings(upper: list[str], lower: list[str], down: dict[str, list[str]]) -> int:
    index = {name: i for i, name in enumerate(lower)}
    pairs = [(i, index[t]) for i, name in enumerate(upper) for t in down.get(name, ()) if t in index]
    count = 0
    for a in range(len(pairs)):
        for b in range(a + 1, len(pairs)):
            if (pairs[a][0] - pairs[b][0]) * (pairs[a][1] - pairs[b][1]) < 0:
                count += 1
    return count


def layered_layout(graph: Graph, *, max_column_layers: int | None = None, max_nodes: int | None = None) -> Layout:
    """Sugiyama-style layout of the live graph, top to bottom; see the module docstring.

    A graph over ``max_nodes`` live nodes (default :data:`MAX_DIAGRAM_NODES`) is a :class:`DiagramTooLarge`.
    """
    check_drawable(graph, max_nodes)
    picture = _picture(graph)
    order = [_IN, *(n.name for n in picture.nodes), _OUT]
    preds: dict[str, list[str]] = {name: [] for name in order}
    for source, target, _ in picture.edges:
        if source not in preds[target]:
            preds[target].append(source)

    layer: dict[str, int] = {_IN: 0}
    for name in order[1:]:
        layer[name] = 1 + max((layer[p] for p in preds[name]), default=0)

    # Dummy points on long edges, so that every layered edge joins adjacent layers.
    down: dict[str, list[str]] = {name: [] for name in order}
    up: dict[str, list[str]] = {name: [] for name in order}
    chains: dict[tuple[str, str], list[str]] = {}
    for target in order:
        for source in preds[target]:
            chain = [source]
            for k in range(layer[source] + 1, layer[target]):
                dummy = f"\0{source}\0{target}\0{k}"
                layer[dummy] = k
                down[dummy], up[dummy] = [], []
                chain.append(dummy)
            chain.append(target)
            for a, b in zip(chain, chain[1:]):
                down[a].append(b)
                up[b].append(a)
            chains[(source, target)] = chain

    depth = max(layer.values())
    layers: list[list[str]] = [[] for _ in range(depth + 1)]
    for name in order:  # real nodes in execution order, dummies placed after their source
        layers[layer[name]].append(name)
    for chain in chains.values():
        for dummy in chain[1:-1]:
            layers[layer[dummy]].append(dummy)

    # Barycentre sweeps; keep the ordering with the fewest crossings.
    def total_crossings() -> int:
        return sum(_crossings(layers[i], layers[i + 1], down) for i in range(depth))

    def sweep(neighbours: dict[str, list[str]], sequence: Iterable[int], reference: int) -> None:
        for i in sequence:
            pos = {name: j for j, name in enumerate(layers[i + reference])}
            keyed = []
            for j, name in enumerate(layers[i]):
                ns = [pos[n] for n in neighbours[name] if n in pos]
                keyed.append((sum(ns) / len(ns) if ns else j, j, name))
            layers[i] = [name for _, _, name in sorted(keyed)]

    best, best_count = [list(l) for l in layers], total_crossings()
    for _ in range(8):
        if best_count == 0:
            break
        sweep(up, range(1, depth + 1), -1)
        sweep(down, range(depth - 1, -1, -1), +1)
        count = total_crossings()
        if count < best_count:
            best, best_count = [list(l) for l in layers], count
    layers = best

    # Horizontal positions: start packed, relax towards the neighbours' mean, keep order and spacing.
    def gap(a: str, b: str) -> float:
        return 0.55 if a.startswith("\0") and b.startswith("\0") else (0.85 if a.startswith("\0") or b.startswith("\0") else 1.3)

    x: dict[str, float] = {}
    for names in layers:
        offset = 0.0
        for j, name in enumerate(names):
            if j:
                offset += gap(names[j - 1], name)
            x[name] = offset
        shift = offset / 2
        for name in names:
            x[name] -= shift
    for iteration in range(24):
        for names in (layers if iteration % 2 == 0 else reversed(layers)):
            wanted = []
            for name in names:
                ns = up[name] + down[name]
                wanted.append(sum(x[n] for n in ns) / len(ns) if ns else x[name])
            # keep the order: push right where too close, then pull back to the wanted mean
            placed = list(wanted)
            for j in range(1, len(names)):
                placed[j] = max(placed[j], placed[j - 1] + gap(names[j - 1], names[j]))
            for j in range(len(names) - 2, -1, -1):
                placed[j] = min(placed[j], placed[j + 1] - gap(names[j], names[j + 1]))
            correction = (sum(wanted) - sum(placed)) / len(names)
            for name, value in zip(names, placed):
                x[name] = value + correction

    # Wrap long networks into columns, cutting at narrow layers.
    prefixes = {node.name: path_prefixes(node.path) for node in picture.nodes}
    starts = _column_starts(layers, down, prefixes, max_column_layers)
    column_of_layer = [0] * (depth + 1)
    for c, start in enumerate(starts):
        for i in range(start, depth + 1):
            column_of_layer[i] = c
    column_x: list[tuple[float, float]] = []
    for c, start in enumerate(starts):
        end = starts[c + 1] if c + 1 < len(starts) else depth + 1
        xs = [x[name] for i in range(start, end) for name in layers[i]]
        column_x.append((min(xs), max(xs)))
    offsets, cursor = [], 0.0
    for c, (lo, hi) in enumerate(column_x):
        offsets.append(cursor - lo)
        cursor += (hi - lo) + 2.2
    position: dict[str, tuple[float, float]] = {}
    column: dict[str, int] = {}
    for i, names in enumerate(layers):
        c = column_of_layer[i]
        for name in names:
            position[name] = (x[name] + offsets[c], -float(i - starts[c]))
            column[name] = c
    bounds = []
    for c, start in enumerate(starts):
        end = starts[c + 1] if c + 1 < len(starts) else depth + 1
        lo, hi = column_x[c]
        bounds.append((lo + offsets[c], hi + offsets[c], 0.0, -float(end - 1 - start)))

    routes = []
    for (source, target), chain in chains.items():
        points: list[tuple[float, float]] = [position[chain[0]]]
        for a, b in zip(chain, chain[1:]):
            if column[a] != column[b]:  # wrap: down out of this column, across, into the top of the next
                _, hi, _, bottom = bounds[column[a]]
                lo_next, _, top, _ = bounds[column[b]]
                xa, xb, gap_x = position[a][0], position[b][0], (hi + lo_next) / 2
                points += [(xa, bottom - 0.55), (gap_x, bottom - 0.55), (gap_x, top + 0.55), (xb, top + 0.55)]
            points.append(position[b])
        routes.append((source, target, points))
    real_layer = {name: layer[name] for name in order}
    return Layout(position, real_layer, column, routes, bounds)


def _column_starts(layers: list[list[str]], down: dict[str, list[str]], prefixes: dict[str, list[str]],
                   max_column_layers: int | None) -> list[int]:
    """First layer of each column. Cuts go between groups (define/repeat instances) where few edges cross."""
    count = len(layers)
    width = max(len(names) for names in layers)
    if max_column_layers is None:
        # about twice as tall as wide, never fewer than 16 layers per column
        columns = max(1, round(math.sqrt(count * _Y_INCH / (2.0 * max(width, 1.5) * 1.3 * _X_INCH))))
        max_column_layers = max(16, math.ceil(count / columns))
    if count <= max_column_layers:
        return [0]

    def groups(names: list[str]) -> set[str]:
        return {prefix for name in names if not name.startswith("\0") for prefix in prefixes.get(name, ())}

    def cost(i: int, ideal: int) -> tuple[int, int, int]:
        shared = len(groups(layers[i - 1]) & groups(layers[i]))  # groups the cut would split
        crossing = sum(len(down[name]) for name in layers[i - 1])  # edges running into the next column
        return (shared, crossing, abs(i - ideal))

    columns = math.ceil(count / max_column_layers)
    span = max(1, count // (columns * 6))  # how far a cut may move from the even split to find a good place
    starts = [0]
    for c in range(1, columns):
        ideal = round(c * count / columns)
        window = range(max(ideal - span, starts[-1] + 2), min(ideal + span, count - 2) + 1)
        starts.append(min(window, key=lambda i: cost(i, ideal)) if window else max(ideal, starts[-1] + 1))
    return starts


# ----------------------------------------------------------------------------- matplotlib drawing

_BOX_W, _BOX_H = 1.05, 0.46
_X_INCH, _Y_INCH = 1.55, 0.78


def draw_matplotlib(graph: Graph, path: str | os.PathLike[str], *, dpi: int = 110, max_nodes: int | None = None) -> None:
    """Draw ``graph`` with matplotlib into ``path`` (.svg or .png); at most ``max_nodes`` live nodes (see :func:`check_drawable`)."""
    check_drawable(graph, max_nodes)
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": "DejaVu Sans"}):  # SVG text stays searchable text
        _draw(graph, path, dpi, max_nodes)


def _draw(graph: Graph, path: str | os.PathLike[str], dpi: int, max_nodes: int | None) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
    from matplotlib.path import Path as MplPath

    picture = _picture(graph)
    layout = layered_layout(graph, max_nodes=max_nodes)
    pos = layout.position
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    x_min, x_max = min(xs) - 1.2, max(xs) + 1.2
    y_min, y_max = min(ys) - 1.0, max(ys) + 0.9
    legend_inches = 1.7
    width = (x_max - x_min) * _X_INCH + legend_inches
    height = max((y_max - y_min) * _Y_INCH + 0.5, 3.0)
    fig = Figure(figsize=(width, height), dpi=dpi)
    axes_width = (width - legend_inches) / width
    ax = fig.add_axes((0.0, 0.0, axes_width, 1.0 - 0.45 / height))
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(y_min, y_max)
    ax.axis("off")
    fig.text(0.01, 1.0 - 0.12 / height, f"{graph.name}   {graph.input} → {graph.output_shape}   "
             f"{len(picture.nodes)} nodes", ha="left", va="top", fontsize=10, fontweight="bold")

    # Clusters behind everything, outer ones first and larger.
    max_depth = max((c.depth for c in picture.clusters.values()), default=0)
    members: dict[str, list[str]] = {prefix: [] for prefix in picture.clusters}
    for node in picture.nodes:
        for prefix in path_prefixes(node.path):
            members[prefix].append(node.name)
    for prefix, cluster in sorted(picture.clusters.items(), key=lambda item: item[1].depth):
        levels = max_depth - cluster.depth  # nested frames inside this one
        side, top_pad = 0.07 + 0.07 * min(levels, 3), 0.05 + 0.09 * min(levels, 2)
        by_column: dict[int, list[tuple[float, float]]] = {}
        for name in members[prefix]:
            by_column.setdefault(layout.column[name], []).append(pos[name])
        for points in by_column.values():
            left = min(p[0] for p in points) - _BOX_W / 2 - side
            right = max(p[0] for p in points) + _BOX_W / 2 + side
            bottom = min(p[1] for p in points) - _BOX_H / 2 - 0.05 - 0.035 * min(levels, 2)
            top = max(p[1] for p in points) + _BOX_H / 2 + top_pad + 0.1
            ax.add_patch(FancyBboxPatch((left, bottom), right - left, top - bottom, boxstyle="round,pad=0,rounding_size=0.08",
                                        facecolor="#000000", alpha=0.035, edgecolor="none", zorder=0))
            ax.add_patch(FancyBboxPatch((left, bottom), right - left, top - bottom, boxstyle="round,pad=0,rounding_size=0.08",
                                        facecolor="none", edgecolor="#8c8c8c", linestyle=(0, (3, 2)), linewidth=0.7, zorder=0.5))
            # nested frames share a top edge region: alternate the corner their names go in
            at_left = cluster.depth % 2 == 0
            ax.text(left + 0.05 if at_left else right - 0.05, top - 0.02, prefix, ha="left" if at_left else "right", va="top",
                    fontsize=6.5, color="#555555", zorder=0.6)

    # Edges: polylines through the dummy points, arrow at the target.
    for source, target, points in layout.routes:
        start = (points[0][0], points[0][1] - _BOX_H / 2)
        end = (points[-1][0], points[-1][1] + _BOX_H / 2)
        verts = [start, *points[1:-1], end]
        arrow = FancyArrowPatch(path=MplPath(verts), arrowstyle="-|>,head_length=3.5,head_width=2", color="#5a5a5a",
                                linewidth=0.8, shrinkA=0, shrinkB=0, zorder=1)
        ax.add_patch(arrow)

    # Output shape of each producer, written once beside its outgoing edges.
    shapes: dict[str, str] = {}
    for source, _, label in picture.edges:
        shapes.setdefault(source, str(graph.input) if source == _IN else str(graph.shape_of(source)))
    first_steps: dict[str, list[float]] = {}
    for source, _, points in layout.routes:
        first_steps.setdefault(source, []).append(points[1][0] - points[0][0])
    for source, text in shapes.items():
        x, y = pos[source]
        steps = first_steps.get(source, [0.0])
        left = any(step > 0.05 for step in steps) and not any(step < -0.05 for step in steps)  # the side without edges
        ax.text(x - 0.05 if left else x + 0.05, y - _BOX_H / 2 - 0.06, text, ha="right" if left else "left", va="top",
                fontsize=5.8, color="#3b3b3b", zorder=3,
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})

    def box(name: str, title: str, subtitle: str, colour: str, bold_edge: bool = False) -> None:
        x, y = pos[name]
        ax.add_patch(FancyBboxPatch((x - _BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H, boxstyle="round,pad=0,rounding_size=0.07",
                                    facecolor=colour, edgecolor="#333333" if bold_edge else "#666666",
                                    linewidth=1.3 if bold_edge else 0.7, zorder=2))
        ax.text(x, y + 0.08, _fit(title, 20), ha="center", va="center", fontsize=7, fontweight="bold", zorder=4)
        ax.text(x, y - 0.11, _fit(subtitle, 24), ha="center", va="center", fontsize=6.2, style="italic", color="#333333", zorder=4)

    box(_IN, "input", str(graph.input), IO_COLOUR, True)
    box(_OUT, "output", str(graph.output_shape), IO_COLOUR, True)
    for node in picture.nodes:
        box(node.name, picture.label(node.name), node.block, family_colour(node.entry.block.family))

    families = sorted({node.entry.block.family for node in picture.nodes}, key=lambda f: list(FAMILY_COLOURS).index(f) if f in FAMILY_COLOURS else 99)
    handles = [Patch(facecolor=family_colour(f), edgecolor="#666666", label=f) for f in families]
    if handles:
        fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(1.0, 1.0 - 0.35 / height), fontsize=7.5,
                   title="family", title_fontsize=8, frameon=False)
    fig.savefig(path, format=Path(path).suffix[1:], dpi=dpi, facecolor="white")


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- files


def render(graph: Graph, path: str | os.PathLike[str], *, engine: Literal["auto", "graphviz", "matplotlib"] = "auto",
           max_nodes: int | None = None) -> Path:
    """Write a diagram of ``graph`` to ``path``; the suffix chooses the format (.dot, .mmd, .svg, .png).

    ``.svg``/``.png`` use Graphviz's ``dot`` when it is on ``PATH`` (``engine="auto"``)
    and matplotlib otherwise; ``engine`` forces one of the two. A graph with more than
    ``max_nodes`` live nodes (default :data:`MAX_DIAGRAM_NODES`) is refused with a
    :class:`DiagramTooLarge` before any layout work, in every format.
    """
    if engine not in ("auto", "graphviz", "matplotlib"):
        raise ValueError(f"unknown engine {engine!r}: use 'auto', 'graphviz' or 'matplotlib'")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        shown = f"'{path.suffix}'" if path.suffix else "no suffix"
        raise ValueError(f"cannot write a diagram to '{path}': unsupported format {shown}; use one of {', '.join(SUFFIXES)}")
    check_drawable(graph, max_nodes)
    if suffix == ".dot":
        path.write_text(to_dot(graph), encoding="utf-8")
    elif suffix == ".mmd":
        path.write_text(to_mermaid(graph), encoding="utf-8")
    else:
        dot = shutil.which("dot") if engine != "matplotlib" else None
        if engine == "graphviz" and dot is None:
            raise RuntimeError("Graphviz's 'dot' is not on PATH; install graphviz or use engine='matplotlib'")
        if dot is not None:
            try:
                subprocess.run([dot, f"-T{suffix[1:]}", "-o", str(path)], input=to_dot(graph), text=True, check=True,
                               capture_output=True, timeout=120)
                return path
            except (OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", None) or exc
                if engine == "graphviz":
                    raise RuntimeError(f"Graphviz's dot failed: {str(detail).strip()}") from None
                warnings.warn(f"Graphviz's dot failed ({str(detail).strip()}); drawing with matplotlib instead", RuntimeWarning, stacklevel=2)
        draw_matplotlib(graph, path, max_nodes=max_nodes)
    return path


__all__ = ["FAMILY_COLOURS", "IO_COLOUR", "MAX_DIAGRAM_NODES", "SUFFIXES", "DiagramTooLarge", "Layout", "check_drawable", "draw_matplotlib", "family_colour", "layered_layout",
           "path_prefixes", "render", "to_dot", "to_mermaid"]
