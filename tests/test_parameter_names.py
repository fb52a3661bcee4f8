"""Parameter names a reference state_dict expects: tensors under the node's name, continued repeats, weights loading."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

import archforge
import archforge.testing
from archforge.errors import CheckpointError, SpecError
from archforge.registry.parameter_node import ParameterNode
from archforge.testing import registry_with


def spec(body: str, shape: str = "[4, 8, 8]") -> archforge.Spec:
    text = f"archforge: 1\nname: t\ninput: {{shape: {shape}}}\n" + textwrap.dedent(body)
    return archforge.parse_spec(text, "t.yaml")


# --------------------------------------------------------------------------- continues

CONTINUED = """
define:
  unit:
    nodes:
      - {id: fc, block: linear, args: {features: 4}}
      - {id: act, block: act}
nodes:
  - {id: flat, block: global_pool}
  - {id: blocks, block: unit, repeat: 3}
  - {id: extra, block: linear, args: {features: 4}}
  - {id: more, block: unit, repeat: 2, continues: blocks}
  - {id: last, block: unit, repeat: 1, continues: more}
  - {id: sum, block: add, in: [more, last]}
  - {id: head, block: linear, args: {features: 2}}
"""


def test_continued_copies_are_numbered_after_the_series_they_continue():
    model = archforge.build(spec(CONTINUED), device="meta")
    weights = [name for name in model.state_dict() if name.endswith("fc.weight")]
    assert weights == [f"blocks.{i}.fc.weight" for i in range(6)]
    graph = model.meta["archforge_graph"]
    assert [graph.path_of(name) for name in ("blocks.3.fc", "blocks.5.act")] == ["blocks[3].fc", "blocks[5].act"]


def test_a_continued_node_is_still_referred_to_by_its_own_id():
    """``in: [more, last]`` reads the output of the copies of ``more`` (blocks[4]), not the end of the whole series."""
    torch.manual_seed(0)
    model = archforge.build(spec(CONTINUED)).eval()
    x = torch.randn(2, 4, 8, 8)
    h = x.mean(dim=(2, 3))
    for i in range(3):
        h = torch.relu(getattr(model.blocks, str(i)).fc(h))
    h = model.extra(h)
    for i in (3, 4):
        h = torch.relu(getattr(model.blocks, str(i)).fc(h))
    expected = model.head(h + torch.relu(getattr(model.blocks, "5").fc(h)))
    torch.testing.assert_close(model(x), expected)


def test_index_counts_the_nodes_own_copies():
    body = """
    nodes:
      - {id: flat, block: global_pool}
      - {id: blocks, block: linear, repeat: 2, args: {features: "${4 + index}"}}
      - {id: more, block: linear, repeat: 2, continues: blocks, args: {features: "${4 + index}"}}
    """
    model = archforge.build(spec(body), device="meta")
    assert [model.get_parameter(f"blocks.{i}.weight").shape[0] for i in range(4)] == [4, 5, 4, 5]


@pytest.mark.parametrize("node, message", [
    ("{id: more, block: linear, args: {features: 4}, continues: blocks}",
     "node 'more' continues 'blocks' but has no 'repeat': only repeated copies can be numbered on"),
    ("{id: more, block: linear, args: {features: 4}, repeat: 2, continues: flat}", "node 'more' continues 'flat': 'flat' is not repeated"),
    ("{id: more, block: linear, args: {features: 4}, repeat: 2, continues: blokcs}",
     "node 'more' continues 'blokcs': no earlier repeated node of this list is called 'blokcs' (did you mean 'blocks'?)"),
])
def test_continues_mistakes_are_located(node, message):
    body = f"""
    nodes:
      - {{id: flat, block: global_pool}}
      - {{id: blocks, block: linear, repeat: 2, args: {{features: 4}}}}
      - {node}
    """
    with pytest.raises(SpecError) as info:
        archforge.validate(spec(body))
    assert info.value.message == message
    assert (info.value.location.line, info.value.node) == (8, "more")


def test_continuing_a_later_node_is_refused():
    body = """
    nodes:
      - {id: flat, block: global_pool}
      - {id: more, block: linear, args: {features: 4}, repeat: 2, continues: blocks}
      - {id: blocks, block: linear, repeat: 2, args: {features: 4}}
    """
    with pytest.raises(SpecError, match="no earlier repeated node of this list is called 'blocks'"):
        archforge.validate(spec(body))


# --------------------------------------------------------------------------- tensors under the node's name

class Bias(archforge.Block):
    """``x + b`` with ``b: (1, C, 1, 1)``: one tensor, named after the node."""

    name = "bias_node"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return ChannelBias(x.channels, device=device, dtype=dtype)


class ChannelBias(ParameterNode):
    def __init__(self, channels, *, device=None, dtype=None):
        super().__init__(torch.arange(channels, device=device, dtype=dtype or torch.float32).reshape(1, channels, 1, 1))

    @staticmethod
    def apply(x, bias):
        return x + bias


class NotStatic(ChannelBias):
    def apply(self, x, bias):  # noqa: D102 - a bound method: the generated forward could not call it
        return x + bias


class WithBuffer(ChannelBias):
    def __init__(self, channels, **factory):
        super().__init__(channels, **factory)
        self.register_buffer("scale", torch.ones(1))


def _block_building(module_class):
    return type(f"B{module_class.__name__}", (Bias,), {"name": "bias_node", "build": lambda self, x, args, device=None, dtype=None: module_class(x.channels, device=device, dtype=dtype)})


BIAS_SPEC = """
nodes:
  - {id: stem, block: conv, args: {channels: 3, norm: none, act: none}}
  - {id: bias, block: bias_node}
  - {id: stage, block: bias_node, repeat: 2}
"""


def test_a_parameter_node_holds_its_tensor_under_the_node_name():
    model = archforge.build(spec(BIAS_SPEC), registry=registry_with(Bias))
    assert sorted(model.state_dict()) == ["bias", "stage.0", "stage.1", "stem.bias", "stem.weight"]
    assert [type(m).__name__ for m in model.modules()].count("ChannelBias") == 0  # no module is left holding it
    x = torch.randn(2, 4, 8, 8)
    expected = model.stem(x) + 3 * torch.arange(3.0).reshape(1, 3, 1, 1)
    torch.testing.assert_close(model(x), expected)
    with torch.no_grad():
        model.bias.fill_(1.0)  # the network's own attribute is what the forward reads
    torch.testing.assert_close(model(x), model.stem(x) + 1.0 + 2 * torch.arange(3.0).reshape(1, 3, 1, 1))


def test_a_parameter_node_survives_export_and_compile_friendly_tracing():
    model = archforge.build(spec(BIAS_SPEC), registry=registry_with(Bias)).eval()
    x = torch.randn(1, 4, 8, 8)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


@pytest.mark.parametrize("module_class, problem", [
    (NotStatic, "NotStatic.apply must be a @staticmethod"),
    (WithBuffer, "WithBuffer is a ParameterNode but also holds scale: it may hold only 'tensor'"),
])
def test_a_broken_parameter_node_is_a_located_error_naming_the_plugin(module_class, problem):
    with pytest.raises(SpecError) as info:
        archforge.build(spec(BIAS_SPEC), registry=registry_with(_block_building(module_class)))
    assert "breaks the ParameterNode contract" in info.value.message and problem in info.value.message
    assert info.value.node == "bias" and info.value.location.line == 7


def test_class_token_and_position_embedding_are_the_nodes_own_parameters():
    body = """
    nodes:
      - {id: patch_embed, block: patch_embed, args: {patch: 4, dim: 8}}
      - {id: cls_token, block: class_token}
      - {id: pos_embed, block: learned_pos_embed}
    """
    model = archforge.build(spec(body, "[3, 8, 8]"))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items() if "." not in k} == {"cls_token": (1, 1, 8), "pos_embed": (1, 5, 8)}
    x = torch.randn(2, 3, 8, 8)
    tokens = model.patch_embed(x)
    expected = torch.cat([model.cls_token.expand(2, -1, -1), tokens], dim=1) + model.pos_embed
    torch.testing.assert_close(model(x), expected)


# --------------------------------------------------------------------------- merges of maps and tokens

def test_a_merge_converts_tokens_to_the_first_inputs_layout():
    body = """
    nodes:
      - {id: conv, block: conv, args: {channels: 4, norm: none, act: none}}
      - {id: attn, block: mhsa, args: {heads: 2}, in: input}
      - {id: sum, block: add, in: [conv, attn]}
    """
    model = archforge.build(spec(body)).eval()
    x = torch.randn(2, 4, 8, 8)
    attn = model.attn(x.flatten(2).transpose(1, 2))                    # (B, 64, 4)
    expected = model.conv(x) + attn.transpose(1, 2).reshape(2, 4, 8, 8)  # back on the 8×8 grid
    torch.testing.assert_close(model(x), expected)
    assert model.meta["archforge_graph"].shape_of("sum").layout == "map"


def test_a_merge_of_a_map_and_class_tokens_says_why_it_cannot_convert():
    body = """
    nodes:
      - {id: tokens, block: to_tokens}
      - {id: cls, block: class_token}
      - {id: sum, block: add, in: [input, cls]}
    """
    with pytest.raises(SpecError, match=r"1 extra \(class\) token\(s\) cannot be laid out on a grid: merge before the 'class_token' node"):
        archforge.validate(spec(body))


# --------------------------------------------------------------------------- weights

SMALL = """
nodes:
  - {id: conv1, block: conv, args: {channels: 3, kernel: 3, norm: none, act: none}}
  - {id: bn1, block: batch_norm}
  - {id: pool, block: global_pool}
  - {id: fc, block: linear, args: {features: 2}}
"""


class Plain(nn.Module):
    """The same network written by hand, with torchvision's names."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.bn1(self.conv1(x)).mean(dim=(2, 3)))


def _plain() -> Plain:
    torch.manual_seed(1)
    plain = Plain()
    with torch.no_grad():
        plain.bn1.running_mean.normal_()
        plain.bn1.running_var.uniform_(0.5, 2.0)
    return plain.eval()


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"model": sd, "epoch": 3}, lambda sd: {"state_dict": sd},
                                  lambda sd: {f"module.{k}": v for k, v in sd.items()}], ids=["plain", "model", "state_dict", "module."])
def test_weights_from_a_file_give_the_plain_networks_function(tmp_path, wrap):
    plain = _plain()
    path = tmp_path / "w.pth"
    torch.save(wrap(plain.state_dict()), path)
    model = archforge.build(spec(SMALL), weights=path).eval()
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(model(x), plain(x))


def test_weights_from_safetensors_and_from_a_mapping(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    plain = _plain()
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file(plain.state_dict(), str(path))
    x = torch.randn(2, 4, 8, 8)
    for source in (path, str(path), plain.state_dict()):
        torch.testing.assert_close(archforge.build(spec(SMALL), weights=source).eval()(x), plain(x))


def test_weights_load_onto_the_meta_device_and_in_another_dtype():
    plain = _plain()
    model = archforge.build(spec(SMALL), weights=plain.state_dict(), dtype=torch.float64).eval()
    assert model.conv1.weight.dtype == torch.float64
    torch.testing.assert_close(model.conv1.weight, plain.conv1.weight.double())
    meta = archforge.build(spec(SMALL), weights=plain.state_dict(), device="meta")
    assert meta.fc.weight.shape == (2, 3)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: {k: v for k, v in sd.items() if k != "fc.bias"}, "has weights that do not fit the network: missing key 'fc.bias'"),
    (lambda sd: {**sd, "fc.weight": torch.zeros(10, 3)}, "shape mismatch: 'fc.weight' is [10, 3] in the file, [2, 3] in the network"),
    (lambda sd: {**sd, "head.weight": torch.zeros(1)}, "unexpected key 'head.weight'"),
    (lambda sd: {"epoch": 1, "args": "x"}, "holds no state_dict: a dict of 2 entries ('epoch', 'args') with no tensors"),
    (lambda sd: [1, 2], "holds a list, not a state_dict"),
])
def test_weights_that_do_not_fit_are_one_error_naming_the_keys(tmp_path, edit, message):
    path = tmp_path / "w.pt"
    torch.save(edit(_plain().state_dict()), path)
    with pytest.raises(CheckpointError) as info:
        archforge.build(spec(SMALL), weights=path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_weights_file_that_is_not_one(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "w.pth").write_text("hello")
    import importlib.util

    unreadable = "is not a readable .safetensors file" if importlib.util.find_spec("safetensors") else "install the 'safetensors' package"
    with pytest.raises(CheckpointError, match=unreadable):
        archforge.build(spec(SMALL), weights=tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="is not a PyTorch file"):
        archforge.build(spec(SMALL), weights=tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        archforge.build(spec(SMALL), weights=tmp_path / "missing.pth")


def test_a_weights_file_with_code_is_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"fc.weight": torch.zeros(2, 3), "hook": Plain}, path)  # a class: only unpicklable by running code
    with pytest.raises(CheckpointError, match=r"is refused: it holds Python objects other than tensors"):
        archforge.build(spec(SMALL), weights=path)


# --------------------------------------------------------------------------- unknown args

def test_an_unknown_arg_lists_the_blocks_valid_args():
    from archforge.blocks.mhsa import MHSA

    body = """
    nodes:
      - {id: attn, block: mhsa, args: {heads: 2, dim: 8}}
    """
    with pytest.raises(SpecError) as info:
        archforge.validate(spec(body))
    valid = ", ".join(MHSA.Args.model_fields)
    assert info.value.message == f"unknown key 'dim' in node 'attn'; valid args: {valid}"


def test_an_unknown_arg_of_a_block_without_args_says_so():
    with pytest.raises(SpecError) as info:
        archforge.validate(spec("nodes:\n  - {id: sum, block: add, args: {x: 1}, in: [input, input]}\n"))
    assert info.value.message == "unknown key 'x' in node 'sum'; this block takes no args"


class OwnForward(ChannelBias):
    def forward(self, x):  # the network would not call this: it calls apply
        return 2 * self.apply(x, self.tensor)


def test_a_parameter_node_overriding_forward_is_refused_everywhere_it_is_built():
    registry = registry_with(_block_building(OwnForward))
    with pytest.raises(SpecError, match="OwnForward overrides forward\\(\\)"):
        archforge.summarize(spec(BIAS_SPEC), registry=registry)
    with pytest.raises(AssertionError, match="the builder would refuse its module: OwnForward overrides forward"):
        archforge.testing.check_block(_block_building(OwnForward), archforge.Shape.map(3, 4, 4))


def test_a_network_with_parameter_nodes_pickles_and_unpickles_in_a_fresh_process(tmp_path):
    import pickle
    import subprocess
    import sys

    model = archforge.build("convit_micro_28").eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), model(x))
    torch.save({"model": model, "x": x, "y": model(x).detach()}, tmp_path / "m.pt")
    code = ("import torch, sys; d = torch.load(sys.argv[1], weights_only=False); "
            "torch.testing.assert_close(d['model'](d['x']), d['y']); print('same')")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt")], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "same", out.stderr


def test_checkpoints_written_with_the_former_names_still_load(tmp_path):
    """Before tensors took their node's name: ``cls_token.cls_token``, ``pos_embed.pos_embed``, a bare conv's ``conv1.conv.weight``."""
    body = """
    nodes:
      - {id: conv1, block: conv, args: {channels: 8, kernel: 4, stride: 4, norm: none, act: none}}
      - {id: tokens, block: to_tokens}
      - {id: cls_token, block: class_token}
      - {id: pos, block: learned_pos_embed}
    """
    model = archforge.build(spec(body, "[3, 8, 8]"))
    former = {"conv1.weight": "conv1.conv.weight", "conv1.bias": "conv1.conv.bias", "cls_token": "cls_token.cls_token", "pos": "pos.pos_embed"}
    state = {former.get(k, k): v for k, v in model.state_dict().items()}
    assert set(state) == set(former.values())
    torch.save({"spec": model.meta["archforge_graph"].spec.to_yaml(), "state_dict": state}, tmp_path / "old.pt")
    loaded = archforge.load_checkpoint(tmp_path / "old.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_legacy_torch_save_files_and_safetensors_under_any_suffix_load(tmp_path):
    plain = _plain()
    x = torch.randn(2, 4, 8, 8)
    torch.save(plain.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.testing.assert_close(archforge.build(spec(SMALL), weights=tmp_path / "legacy.pth").eval()(x), plain(x))
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file(plain.state_dict(), str(tmp_path / "model.bin"))
    torch.testing.assert_close(archforge.build(spec(SMALL), weights=tmp_path / "model.bin").eval()(x), plain(x))


#: A network with a node called ``module``, as DataParallel prefixes keys.
MODULE_NODE = """
define:
  unit:
    nodes: [{id: fc, block: linear, args: {features: 2}}]
nodes:
  - {id: pool, block: global_pool}
  - {id: module, block: unit}
"""


def test_a_network_whose_own_keys_start_with_module_keeps_them():
    body = MODULE_NODE
    model = archforge.build(spec(body))
    assert list(model.state_dict()) == ["module.fc.weight", "module.fc.bias"]
    archforge.build(spec(body), weights=model.state_dict())  # loads as it is


@pytest.mark.parametrize("weights, message", [
    (b"w.pt", "weights must be a file path or a state_dict (a mapping of tensors), got a bytes: b'w.pt'"),
    (["w.pt"], "weights must be a file path or a state_dict (a mapping of tensors), got a list: ['w.pt']"),
    ("", "weights file name is empty: give the path of a weights file"),
    ("missing.pth", "weights file 'missing.pth' does not exist"),
])
def test_a_weights_argument_that_cannot_be_one_is_refused_before_building(weights, message, monkeypatch):
    import archforge.builder.network as network

    monkeypatch.setattr(network, "probe_graph", lambda *a, **k: pytest.fail("the network was built first"))
    with pytest.raises(CheckpointError) as info:
        archforge.build(spec(SMALL), weights=weights)
    assert str(info.value) == message


def test_dataparallel_weights_of_a_network_with_its_own_module_node():
    body = MODULE_NODE
    model = archforge.build(spec(body))
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}  # module.module.fc.weight
    loaded = archforge.build(spec(body), weights=wrapped)
    assert torch.equal(loaded.get_parameter("module.fc.weight"), model.get_parameter("module.fc.weight"))


def test_weights_saved_with_the_former_names_load_through_build(tmp_path):
    model = archforge.build(spec(SMALL))
    former = {("conv1.conv." + k.split(".")[1] if k.startswith("conv1.") else k): v for k, v in model.state_dict().items()}
    assert "conv1.conv.weight" in former and "conv1.weight" not in former
    torch.save(former, tmp_path / "old.pth")
    loaded = archforge.build(spec(SMALL), weights=tmp_path / "old.pth")
    assert torch.equal(loaded.conv1.weight, model.conv1.weight)


class CheckedBias(ChannelBias):
    @staticmethod
    def apply(x, bias):
        if x.shape[1] != bias.shape[1]:  # control flow on shapes: fine at run time, and the traced call stays one node
            raise ValueError("channels differ")
        return x + bias


class CheckedBiasBlock(Bias):
    """``bias_node`` building :class:`CheckedBias` (a top-level class: the pickled network names its block)."""

    def build(self, x, args, *, device=None, dtype=None):
        return CheckedBias(x.channels, device=device, dtype=dtype)


def test_a_parameter_node_with_control_flow_survives_pickling_and_tracing():
    import pickle

    model = archforge.build(spec(BIAS_SPEC), registry=registry_with(CheckedBiasBlock)).eval()
    x = torch.randn(2, 4, 8, 8)
    again = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(again(x), model(x))
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x))
    assert [n.target.__name__ for n in traced.graph.nodes if n.op == "call_function"] == ["apply_parameter_node"] * 3


def test_a_class_defined_again_under_the_same_name_leaves_built_networks_alone():
    first = archforge.build(spec(BIAS_SPEC), registry=registry_with(_block_building(ChannelBias))).eval()
    x = torch.randn(1, 4, 8, 8)
    before = first(x)

    class ChannelBias2(ChannelBias):
        @staticmethod
        def apply(x, bias):
            return x * 0 + 100

    ChannelBias2.__qualname__, ChannelBias2.__module__ = ChannelBias.__qualname__, ChannelBias.__module__  # as a re-run cell would
    ChannelBias2.__name__ = "ChannelBias"
    import sys

    module = sys.modules[ChannelBias.__module__]
    original = module.ChannelBias
    module.ChannelBias = ChannelBias2
    try:
        second = archforge.build(spec(BIAS_SPEC), registry=registry_with(_block_building(ChannelBias2))).eval()
        assert torch.equal(second(x), torch.full_like(x[:, :3], 100.0))
    finally:
        module.ChannelBias = original
    torch.testing.assert_close(first(x), before)


def test_a_parameter_node_class_that_cannot_be_imported_by_its_name_is_refused():
    made = type("Made", (ChannelBias,), {"apply": staticmethod(lambda x, t: x + t), "__module__": __name__})
    with pytest.raises(SpecError, match=r"Made cannot be imported as test_parameter_names\.Made: define it at the top level"):
        archforge.build(spec(BIAS_SPEC), registry=registry_with(_block_building(made)))
