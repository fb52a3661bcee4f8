"""Diagrams: DOT and Mermaid text checked against the graph, files for every suffix, the matplotlib layout."""

import argparse
import os
import re
import stat
import sys
import warnings
import xml.etree.ElementTree as ET
from collections import Counter

import matplotlib.image
import pytest

import archforge
from archforge.diagram import FAMILY_COLOURS, layered_layout, path_prefixes, render, to_dot, to_mermaid
from archforge.graph import INPUT
from archforge.cli.tools import add_commands
from conftest import SPECS

RESNET_TINY = SPECS / "models" / "resnet_tiny.yaml"
TWO_BRANCH = SPECS / "models" / "two_branch.yaml"

# Repeats of a plain block, a define inside a define, a map → tokens conversion, a dead node,
# and a node whose id is 'output'.
ODD = """
archforge: 1
name: odd
input: {shape: [3, 8, 8]}
define:
  inner:
    nodes:
      - {id: c, block: conv, args: {channels: 8}}
  outer:
    nodes:
      - {id: first, block: inner}
      - {id: norm, block: batch_norm}
      - {id: sum, block: add, in: [input, norm]}
nodes:
  - {id: stem, block: conv, args: {channels: 8}}
  - {id: convs, block: conv, repeat: 3, args: {channels: 8}}
  - {id: deep, block: outer, repeat: 2}
  - {id: unused, block: conv, in: stem, args: {channels: 4}}
  - {id: output, block: layer_norm, in: deep}
  - {id: head, block: classifier, args: {classes: 5}}
"""


def compile_text(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", archforge.SpecWarning)
        return archforge.validate(archforge.parse_spec(text))


@pytest.fixture(scope="module", params=["resnet_tiny", "two_branch", "odd"])
def graph(request):
    if request.param == "odd":
        return compile_text(ODD)
    return archforge.validate(SPECS / "models" / f"{request.param}.yaml")


def expected_edges(graph):
    """(source path, target path, label) of every edge, from the graph's own data."""
    edges = Counter()
    for node in graph.live_nodes():
        for source, conversion in zip(node.inputs, node.conversions):
            label = str(graph.shape_of(source)) + (f" → {conversion}" if conversion else "")  # automatic map ↔ tokens
            edges[("input" if source == INPUT else graph.nodes[source].path, node.path, label)] += 1
    output = "input" if graph.output == INPUT else graph.nodes[graph.output].path
    edges[(output, "output", str(graph.output_shape))] += 1
    return edges


def full_path(label, clusters):
    """Undo the short label: the innermost enclosing cluster's prefix plus the label."""
    if not clusters:
        return label
    return clusters[-1] + label if label.startswith("[") else f"{clusters[-1]}.{label}"


def parse_dot(text):
    """Nodes (path → (block, colour, clusters)) and edges (source path, target path, label) of our DOT output."""
    nodes, ids, edges, stack = {}, {"<input>": "input", "<output>": "output"}, Counter(), []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("subgraph "):
            stack.append(None)
        elif stack and stack[-1] is None and line.startswith("label="):
            stack[-1] = re.match(r'label="([^"]*)"', line).group(1)
        elif line == "}" and stack:
            stack.pop()
        elif m := re.match(r'^"([^"]+)" \[label="([^"]*)", fillcolor="(#[0-9a-f]{6})"', line):
            name, label, colour = m.groups()
            if name.startswith("<"):
                continue
            short, block = label.split("\\n")
            path = full_path(short, stack)
            ids[name] = path
            nodes[path] = (block, colour, list(stack))
        elif m := re.match(r'^"([^"]+)" -> "([^"]+)" \[label=" ([^"]*)"\];$', line):
            edges[m.groups()] += 1
    return nodes, Counter({(ids[s], ids[t], label): n for (s, t, label), n in edges.items()})


def parse_mermaid(text):
    nodes, ids, edges, stack = {}, {"n_in": "input", "n_out": "output"}, Counter(), []
    classes = {}
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r'^subgraph \w+ \["([^"]*)"\]$', line):
            stack.append(m.group(1))
        elif line == "end":
            stack.pop()
        elif m := re.match(r"^classDef (\w+) fill:(#[0-9a-f]{6})", line):
            classes[m.group(1)] = m.group(2)
        elif m := re.match(r'^(n\d+)\["(.*)<br/><i>(.*)</i>"\]:::(\w+)$', line):
            node_id, short, block, family = m.groups()
            path = full_path(short, stack)
            ids[node_id] = path
            nodes[path] = (block, family, list(stack))
        elif m := re.match(r'^(\w+) -->\|"(.*)"\| (\w+)$', line):
            edges[(m.group(1), m.group(3), m.group(2))] += 1
    assert not stack, "every subgraph is closed"
    return nodes, classes, Counter({(ids[s], ids[t], label): n for (s, t, label), n in edges.items()})


def test_dot_has_every_live_node_edge_shape_colour_and_cluster(graph):
    nodes, edges = parse_dot(to_dot(graph))
    live = graph.live_nodes()
    assert set(nodes) == {n.path for n in live}
    for node in live:
        block, colour, clusters = nodes[node.path]
        assert block == node.block
        assert colour == FAMILY_COLOURS[node.entry.block.family]
        assert clusters == path_prefixes(node.path)
    assert edges == expected_edges(graph)
    assert to_dot(graph).startswith(f'digraph "{graph.name}" {{')


def test_mermaid_has_every_live_node_edge_shape_colour_and_subgraph(graph):
    nodes, classes, edges = parse_mermaid(to_mermaid(graph))
    live = graph.live_nodes()
    assert set(nodes) == {n.path for n in live}
    for node in live:
        block, family, clusters = nodes[node.path]
        assert block == node.block and family == node.entry.block.family
        assert classes[family] == FAMILY_COLOURS[family]
        assert clusters == path_prefixes(node.path)
    assert edges == expected_edges(graph)
    assert to_mermaid(graph).startswith("flowchart TB\n")


def test_clusters_follow_path_prefixes():
    assert path_prefixes("stem") == []
    assert path_prefixes("convs[2]") == ["convs"]
    assert path_prefixes("stage1[0].conv1") == ["stage1", "stage1[0]"]
    assert path_prefixes("deep[1].first.c") == ["deep", "deep[1]", "deep[1].first"]


def test_odd_graph_details():
    graph = compile_text(ODD)
    dot = to_dot(graph)
    assert '"unused"' not in dot  # dead nodes are not drawn
    assert '"output" [label="output\\nlayer_norm"' in dot and '"<output>"' in dot  # a node called output is not the end point
    assert "(B, 8, 8, 8) → tokens" in dot  # the map → tokens conversion is shown on its edge
    mermaid = to_mermaid(graph)
    assert mermaid.count("subgraph ") == 1 + 1 + 2 + 2  # convs, deep, deep[0], deep[1], deep[k].first
    assert "(B, 64, 8) tokens 8×8" in mermaid


def test_labels_are_escaped():
    graph = compile_text(ODD.replace("name: odd", 'name: odd\ndescription: a "quoted" <b>one</b>'))
    assert to_dot(graph).count("{") == to_dot(graph).count("}")


@pytest.mark.parametrize("suffix", [".dot", ".mmd", ".svg", ".png"])
def test_render_writes_each_format(suffix, tmp_path):
    graph = archforge.validate(RESNET_TINY)
    path = render(graph, tmp_path / f"arch{suffix}", engine="auto" if suffix in (".dot", ".mmd") else "matplotlib")
    data = path.read_bytes()
    if suffix == ".dot":
        assert data.decode() == to_dot(graph)
    elif suffix == ".mmd":
        assert data.decode() == to_mermaid(graph)
    elif suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[-8:-4] == b"IEND"
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 500 and image.shape[1] > 500
    else:
        root = ET.fromstring(data)
        assert root.tag.endswith("svg")
        text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
        for word in ("stage1[0]", "shortcut", "classifier", "(B, 32, 16, 16)", "merge"):
            assert word in text


@pytest.mark.parametrize("name", ["arch.jpg", "arch", "arch.svgz"])
def test_bad_suffix_is_a_clear_error(name, tmp_path):
    graph = archforge.validate(TWO_BRANCH)
    with pytest.raises(ValueError, match=r"unsupported format .*use one of \.dot, \.mmd, \.svg, \.png"):
        render(graph, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_graphviz_is_used_when_dot_is_on_path(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    record = tmp_path / "called.txt"
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen({str(record)!r}, 'w').write(' '.join(sys.argv[1:]) + '\\n' + sys.stdin.read())\n"
                    "open(sys.argv[sys.argv.index('-o') + 1], 'w').write('<svg xmlns=\"http://www.w3.org/2000/svg\"/>')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    graph = archforge.validate(TWO_BRANCH)
    render(graph, tmp_path / "arch.svg")
    args, dot_text = record.read_text().split("\n", 1)
    assert args.startswith("-Tsvg -o ") and dot_text == to_dot(graph)

    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write('syntax error in line 1')\nsys.exit(1)\n")
    with pytest.warns(RuntimeWarning, match="syntax error in line 1.*drawing with matplotlib"):
        render(graph, tmp_path / "fallback.png")
    assert (tmp_path / "fallback.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(RuntimeError, match="dot failed: syntax error in line 1"):
        render(graph, tmp_path / "strict.png", engine="graphviz")

    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="not on PATH"):
        render(graph, tmp_path / "again.svg", engine="graphviz")


def boxes_overlap(a, b, width=1.05, height=0.46):
    return abs(a[0] - b[0]) < width and abs(a[1] - b[1]) < height


@pytest.mark.parametrize("wrap", [1000, 6])
def test_layout_is_layered_and_boxes_do_not_overlap(wrap):
    graph = archforge.validate(RESNET_TINY)
    layout = layered_layout(graph, max_column_layers=wrap)
    real = {name: xy for name, xy in layout.position.items() if not name.startswith("\0")}
    assert len(real) == len(graph.live_nodes()) + 2
    names = sorted(real)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not boxes_overlap(real[a], real[b]), (a, b)
    for source, target, points in layout.routes:
        assert layout.layer[source] < layout.layer[target]
        if layout.column[source] == layout.column[target]:
            assert all(p[1] > q[1] for p, q in zip(points, points[1:])), "edges run downwards"
    assert (max(layout.column.values()) > 0) == (wrap == 6)  # 38 layers: wrapped into columns only when asked


def run_cli(*argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_cli_graph(tmp_path, capsys):
    assert run_cli("graph", TWO_BRANCH, "-o", tmp_path / "a.mmd") == 0
    assert (tmp_path / "a.mmd").read_text().startswith("flowchart TB")
    assert "wrote" in capsys.readouterr().out
    assert run_cli("graph", TWO_BRANCH, "-o", tmp_path / "a.png", "--engine", "matplotlib") == 0
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert run_cli("graph", TWO_BRANCH, "-o", tmp_path / "a.gif") == 2
    assert "unsupported format '.gif'" in capsys.readouterr().err
    with pytest.raises(archforge.SpecError):
        run_cli("graph", tmp_path / "missing.yaml", "-o", tmp_path / "b.dot")


def test_a_graph_over_the_diagram_bound_is_refused_before_any_layout(tmp_path, monkeypatch):
    import archforge.diagram as diagram

    graph = compile_text(open(TWO_BRANCH).read())
    live = len(graph.live_nodes())

    def no_layout(*args, **kwargs):
        raise AssertionError("laid out a graph over the bound")

    monkeypatch.setattr(diagram, "_picture", no_layout)
    for suffix in (".dot", ".mmd", ".svg", ".png"):
        with pytest.raises(diagram.DiagramTooLarge, match=rf"^'{graph.name}' has {live:,} nodes to draw, more than the {live - 1:,} a diagram may have "
                                                           r"\(archforge\.diagram\.MAX_DIAGRAM_NODES\); raise it with render\(\.\.\., max_nodes=N\)"):
            render(graph, tmp_path / f"a{suffix}", engine="matplotlib", max_nodes=live - 1)
    monkeypatch.setattr(diagram, "MAX_DIAGRAM_NODES", live - 1)
    with pytest.raises(diagram.DiagramTooLarge):
        diagram.draw_matplotlib(graph, tmp_path / "a.svg")
    with pytest.raises(diagram.DiagramTooLarge):
        layered_layout(graph)


def test_cli_graph_bound_is_one_line_and_can_be_raised(tmp_path, capsys, monkeypatch):
    import archforge.diagram as diagram

    monkeypatch.setattr(diagram, "MAX_DIAGRAM_NODES", 2)
    assert run_cli("graph", TWO_BRANCH, "-o", tmp_path / "a.svg", "--engine", "matplotlib") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot draw '{tmp_path / 'a.svg'}': 'two_branch' has ") and "'archforge graph --max-nodes N'" in err
    assert err.count("\n") == 1 and not (tmp_path / "a.svg").exists()
    assert run_cli("graph", TWO_BRANCH, "-o", tmp_path / "a.svg", "--engine", "matplotlib", "--max-nodes", "1000") == 0
