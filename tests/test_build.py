"""The builder: wiring, parameter names, layouts, dtype/device, compile and export."""

import textwrap
import warnings

import pytest
import torch
from torch import nn

import archforge
from archforge import Block, BlockArgs, Shape, SpecError, SpecWarning
from archforge.testing import registry_with
from conftest import SPECS

RESNET_TINY = SPECS / "models" / "resnet_tiny.yaml"


class _ConvBN(nn.Module):
    def __init__(self, cin, cout, k=3, stride=1, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x):
        x = self.norm(self.conv(x))
        return torch.relu(x) if self.relu else x


class _Basic(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = _ConvBN(c, c), _ConvBN(c, c, relu=False)

    def forward(self, x):
        return torch.relu(x + self.conv2(self.conv1(x)))


class _Down(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.conv1, self.conv2 = _ConvBN(cin, c, stride=2), _ConvBN(c, c, relu=False)
        self.shortcut = _ConvBN(cin, c, k=1, stride=2, relu=False)

    def forward(self, x):
        return torch.relu(self.shortcut(x) + self.conv2(self.conv1(x)))


class _Head(nn.Module):
    def __init__(self, c, classes):
        super().__init__()
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class HandWrittenResNetTiny(nn.Module):
    """resnet_tiny.yaml written by hand, with the same module names."""

    def __init__(self, w=16, classes=10):
        super().__init__()
        self.stem = _ConvBN(3, w)
        self.stage1 = nn.ModuleList([_Basic(w), _Basic(w)])
        self.down2, self.stage2 = _Down(w, 2 * w), _Basic(2 * w)
        self.down3, self.stage3 = _Down(2 * w, 4 * w), _Basic(4 * w)
        self.head = _Head(4 * w, classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.stage1:
            x = block(x)
        x = self.stage2(self.down2(x))
        x = self.stage3(self.down3(x))
        return self.head(x)


def test_built_network_equals_hand_written_one():
    model = archforge.build(RESNET_TINY).eval()
    reference = HandWrittenResNetTiny().eval()
    # Randomise BN statistics so that a wrong wiring cannot hide behind identity norms.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    reference.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_parameter_names_follow_node_ids():
    names = set(archforge.build(RESNET_TINY).state_dict())
    assert "stem.conv.weight" in names
    assert "stage1.0.conv1.conv.weight" in names
    assert "stage1.1.conv2.norm.running_var" in names
    assert "down3.shortcut.conv.weight" in names
    assert "head.fc.bias" in names


def test_generated_forward_is_straight_line_code():
    model = archforge.build(RESNET_TINY)
    graph = model.meta["archforge_graph"]
    calls = [n for n in model.graph.nodes if n.op == "call_module"]
    assert [n.target for n in calls] == [node.name for node in graph.live_nodes()]
    assert all(n.op in ("placeholder", "call_module", "output") for n in model.graph.nodes)


LAYOUT_SPEC = """
archforge: 1
name: layouts
input: {shape: [4, 3, 5]}
nodes:
  - {id: mix, block: linear, args: {features: 6}}          # map -> tokens, inserted automatically
  - {id: conv, block: conv, args: {channels: 2, kernel: 1, norm: none, act: none}}   # tokens -> map
"""


def test_automatic_layout_conversions_compute_the_right_thing():
    model = archforge.build(archforge.parse_spec(LAYOUT_SPEC)).eval()
    x = torch.randn(2, 4, 3, 5)
    tokens = x.permute(0, 2, 3, 1).reshape(2, 15, 4)  # row-major grid positions
    mixed = tokens @ model.mix.weight.T + model.mix.bias  # (2, 15, 6)
    grid = mixed.reshape(2, 3, 5, 6).permute(0, 3, 1, 2)
    expected = torch.einsum("bchw,oc->bohw", grid, model.conv.weight[:, :, 0, 0]) + model.conv.bias[None, :, None, None]
    torch.testing.assert_close(model(x), expected)


def test_conversion_is_shared_between_consumers():
    spec = archforge.parse_spec("""
archforge: 1
name: shared
input: {shape: [4, 2, 2]}
nodes:
  - {id: a, block: linear, in: input, args: {features: 4}}
  - {id: b, block: linear, in: input, args: {features: 4}}
  - {id: s, block: add, in: [a, b]}
""")
    model = archforge.build(spec)
    assert sum(1 for n in model.graph.nodes if n.op == "call_method" and n.target == "flatten") == 1


def test_unreachable_nodes_warn_and_are_not_built():
    spec = archforge.parse_spec("""
archforge: 1
name: dead
input: {shape: [3, 8, 8]}
nodes:
  - {id: a, block: conv, args: {channels: 4}}
  - {id: unused, block: conv, args: {channels: 4}}
  - {id: head, block: classifier, in: a, args: {classes: 2}}
""", file="dead.yaml")
    with pytest.warns(SpecWarning, match=r"dead.yaml:7:5: warning: node 'unused' does not reach the output 'head'"):
        model = archforge.build(spec)
    assert not hasattr(model, "unused")


def test_dtype_and_device_reach_every_parameter():
    model = archforge.build(RESNET_TINY, dtype=torch.float64, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_compile_fullgraph_matches_eager():
    model = archforge.build(SPECS / "models" / "two_branch.yaml").eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=True, dynamic=False)(x)
        torch.testing.assert_close(compiled, model(x), rtol=1e-4, atol=1e-5)


def test_export_with_dynamic_batch():
    model = archforge.build(SPECS / "models" / "two_branch.yaml").eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 3, 28, 28),), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 3, 28, 28)
    torch.testing.assert_close(program.module()(x), model(x))


class _Exploding(Block):
    name = "exploding"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        raise RuntimeError("kaboom")


class _Liar(Block):
    """Claims to keep the shape but halves the channels."""

    name = "liar"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return nn.Conv2d(x.channels, x.channels // 2, 1, device=device, dtype=dtype)


def _one_node(block: str) -> archforge.Spec:
    return archforge.parse_spec(textwrap.dedent(f"""\
        archforge: 1
        name: one
        input: {{shape: [4, 4, 4]}}
        nodes:
          - {{id: n, block: {block}}}
        """), file="one.yaml")


def test_a_block_that_fails_to_build_is_reported_with_plugin_and_node():
    registry = registry_with(_Exploding, name="boom-plugin")
    with pytest.raises(SpecError, match=r"^one.yaml:5:5: block 'exploding' from plugin 'boom-plugin' failed to build node 'n': RuntimeError: kaboom"):
        archforge.build(_one_node("exploding"), registry=registry)


def test_a_block_whose_inference_lies_is_caught_by_summary():
    registry = registry_with(_Liar, name="liar-plugin")
    with pytest.raises(SpecError, match=r"block 'liar' from plugin 'liar-plugin' infers \[1, 4, 4, 4\] for node 'n' but its module returns \[1, 2, 4, 4\]"):
        archforge.summarize(_one_node("liar"), registry=registry)


def test_checkpoint_round_trip(tmp_path):
    from archforge.builder import load_checkpoint, save_checkpoint

    model = archforge.build(RESNET_TINY).eval()
    path = save_checkpoint(model, tmp_path / "model.pt")
    restored = load_checkpoint(path).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- the meta probe is shared by identical nodes

class _Counted(Block):
    """Counts its builds per device: a repeat of identical nodes should be probed on meta once."""

    name = "counted"
    layout = "map"
    builds: dict[str, int] = {}

    class Args(BlockArgs):
        width: int = 2

    def infer(self, x, args):
        return x.replace(channels=args.width)

    def build(self, x, args, *, device=None, dtype=None):
        key = str(device)
        type(self).builds[key] = type(self).builds.get(key, 0) + 1
        return nn.Conv2d(x.channels, args.width, 1, device=device, dtype=dtype)


class _Unhashable(_Counted):
    """Args with a list value do not hash: every node is probed on its own."""

    name = "unhashable"

    class Args(BlockArgs):
        width: int = 2
        taps: list[int] = [0]


def _repeated(block: str) -> archforge.Spec:
    # 1 + 5 copies: the first maps 4 → 2 channels, the other four 2 → 2 and are identical.
    return archforge.parse_spec(textwrap.dedent(f"""\
        archforge: 1
        name: rep
        input: {{shape: [4, 4, 4]}}
        nodes:
          - {{id: a, block: {block}, repeat: 5}}
        """), file="rep.yaml")


@pytest.mark.parametrize("block, meta_builds", [("counted", 2), ("unhashable", 5)])
def test_identical_nodes_are_probed_once_and_still_measured_per_node(block, meta_builds):
    registry = registry_with(_Counted, _Unhashable, name="p")
    _Counted.builds.clear()
    model = archforge.build(_repeated(block), registry=registry)
    assert _Counted.builds == {"meta": meta_builds, "None": 5}
    assert sum(p.numel() for p in model.parameters()) == (4 * 2 + 2) + 4 * (2 * 2 + 2)

    _Counted.builds.clear()
    summary = archforge.summarize(_repeated(block), registry=registry)
    assert _Counted.builds == {"meta": meta_builds}
    assert [(row.path, row.params, row.flops) for row in summary.nodes] == [
        ("a[0]", 10, 2 * 4 * 2 * 16), *((f"a[{i}]", 6, 2 * 2 * 2 * 16) for i in range(1, 5))]


def test_a_shared_probe_still_checks_every_node_against_its_infer():
    from archforge.builder.probe import ProbeCache

    graph = archforge.validate(_repeated("counted"), registry=registry_with(_Counted, name="p"))
    cache = ProbeCache()
    first, second, third = graph.live_nodes()[1:4]
    cache.probe(second)
    third.shape = third.shape.replace(channels=3)  # this node's infer disagrees with what the shared probe measured
    with pytest.raises(SpecError, match=r"infers \[1, 3, 4, 4\] for node 'a\[3\]' but its module returns \[1, 2, 4, 4\]"):
        cache.probe(third)
