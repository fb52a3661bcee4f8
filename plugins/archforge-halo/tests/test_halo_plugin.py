"""The plugin as archforge sees it: found through the installed entry point, versioned, usable from a spec."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archforge
import archforge_halo
from archforge.registry import PLUGIN_API_VERSION, load_registry
from archforge_halo import blocks as plugin_module

HALONET_TINY = Path(__file__).resolve().parents[1] / "specs" / "halonet_tiny.yaml"

SPEC = """
archforge: 1
name: halo_and_lambda
input: {shape: [3, 16, 16]}
params: {width: 16}
nodes:
  - {id: stem, block: conv, args: {channels: $width}}
  - {id: halo, block: halo_attention, args: {channels: $width, heads: 2, block: 4, halo: 1}}
  - {id: lam, block: lambda_layer, args: {channels: "${width * 2}", heads: 4, key_dim: 8, kernel: 5, stride: 2}}
  - {id: head, block: classifier, args: {classes: 10}}
"""


@pytest.fixture(scope="module")
def registry():
    registry = load_registry()
    if "halo_attention" not in registry.blocks:
        pytest.fail("archforge-halo is not installed: run 'pip install -e plugins/archforge-halo'")
    return registry


def test_blocks_come_from_the_installed_distribution(registry):
    for name in ("halo_attention", "lambda_layer"):
        entry = registry.blocks[name]
        assert entry.plugin.distribution == "archforge-halo"
        assert entry.plugin.version == archforge_halo.__version__ == "0.1.0"
        assert entry.plugin.name == "halo"
        assert entry.block.family == "attention"
    assert not [p for p in registry.problems if "archforge-halo" in p]


def test_blocks_are_also_reachable_by_their_qualified_names(registry):
    # <entry point>:<name>, the spelling that stays unambiguous whatever else is installed.
    for name in ("halo_attention", "lambda_layer"):
        assert registry.block(f"halo:{name}") is registry.block(name)
        assert registry.block(name).qualified_name == f"halo:{name}"


def test_declares_the_plugin_api_it_targets():
    assert plugin_module.ARCHFORGE_PLUGIN_API == PLUGIN_API_VERSION == 1


def test_a_spec_using_the_blocks_validates_builds_and_trains(registry):
    spec = archforge.parse_spec(SPEC)
    graph = archforge.validate(spec, registry=registry)
    assert str(graph.nodes["halo"].shape) == "(B, 16, 16, 16)"
    assert str(graph.nodes["lam"].shape) == "(B, 32, 8, 8)"
    model = archforge.build(spec, registry=registry)
    assert {"halo.rel_height", "halo.rel_width", "lam.rel_pos"} <= {name for name, _ in model.named_parameters()}
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_shape_errors_are_located_spec_errors(registry):
    bad = SPEC.replace("block: 4, halo: 1", "block: 5, halo: 1")
    with pytest.raises(archforge.SpecError) as info:
        archforge.validate(archforge.parse_spec(bad, file="bad.yaml"), registry=registry)
    message = str(info.value)
    assert message.startswith("bad.yaml:8:")
    assert "node 'halo' (halo_attention): block size 5 must divide the input height and width (16×16)" in message


@pytest.mark.skipif(not HALONET_TINY.exists(), reason="runs from an archforge checkout only")
def test_shipped_halonet_tiny_spec_builds_and_runs(registry):
    graph = archforge.validate(HALONET_TINY, registry=registry)
    assert [n.block for n in graph.nodes.values()].count("halo_attention") == 4
    model = archforge.build(graph).eval()
    with torch.no_grad():
        assert model(graph.input.example(2)).shape == (2, 10)


def test_archforge_plugins_lists_the_blocks_with_the_plugin_version():
    result = subprocess.run([sys.executable, "-m", "archforge", "plugins", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"name": "halo", "distribution": "archforge-halo", "version": "0.1.0"} in data["plugins"]
    rows = {row["name"]: row for row in data["blocks"]}
    assert rows["halo_attention"]["distribution"] == "archforge-halo" and rows["halo_attention"]["version"] == "0.1.0"
    assert {a["name"] for a in rows["lambda_layer"]["args"]} >= {"channels", "heads", "key_dim", "kernel"}
