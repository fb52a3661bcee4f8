"""Reference initialisation (``init: reference``) against analytic per-tensor statistics, and ``init: pytorch``.

Every expected value is written down from the reference implementations (timm's ViT/DeiT,
ConViT, ResNet and byobnet inits; torch's layer defaults), never taken from the code under
test. The sample std ``s`` of ``n`` normal draws of std ``σ`` has a sampling error (standard
error) of about ``σ / √(2n)``; for uniform draws (torch's kaiming-uniform) it is smaller,
about ``σ / √(5n)``, so the normal figure is conservative there. A sample mean has one of
``σ / √n``. The checks allow 5 of them. Where a normal and a uniform of similar std must be
told apart, the largest |w| does it: a uniform never passes its bound ``1/√fan_in``, while
thousands of normal draws of a similar std always do.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import archforge
from archforge.errors import SettingError, SpecError
from archforge.graph import compile_graph
from archforge.plugin import Block, BlockArgs, Shape
from archforge.spec.load import load_spec
from archforge.testing import check_block, registry_with


def assert_std(tensor: torch.Tensor, sigma: float, what: str) -> None:
    n = tensor.numel()
    std, mean = tensor.double().std().item(), tensor.double().mean().item()
    assert abs(std - sigma) < 5 * sigma / math.sqrt(2 * n), f"{what}: std {std:.5g}, expected {sigma:.5g} (n={n})"
    assert abs(mean) < 5 * sigma / math.sqrt(n), f"{what}: mean {mean:.3g}, expected 0 (std {sigma:.5g}, n={n})"


def torch_default_std(layer: nn.Linear | nn.Conv2d) -> float:
    """kaiming_uniform_(a=√5): U(±1/√fan_in), std 1/√(3 fan_in)."""
    return 1 / math.sqrt(3 * layer.weight[0].numel())


def model(name: str, seed: int = 0, **changes) -> nn.Module:
    """A bundled model, its params (and input shape) changed to make it small."""
    data = load_spec(name).to_dict()
    data["params"] = {**data.get("params", {}), **changes.pop("params", {})}
    data.update(changes)
    torch.manual_seed(seed)
    return archforge.build(archforge.Spec.from_dict(data), init=None)


def linears(module: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


# ---------------------------------------------------------------- ConViT / DeiT (timm's transformer init)


@pytest.fixture(scope="module")
def convit() -> nn.Module:
    return model("convit_micro_28")  # 4 GPSA + 2 MHSA layers, dim 64, 4 heads: convit_tiny's structure


def test_convit_linears_are_trunc_normal_002_with_zero_bias(convit):
    layers = {name: m for name, m in linears(convit).items() if not name.endswith("pos_proj")}
    assert len(layers) == 4 * 5 + 2 * 4 + 1  # qk, v, proj, fc1, fc2 per GPSA layer; qkv, proj, fc1, fc2 per MHSA; head
    for name, layer in layers.items():
        if name.endswith(".v"):
            continue
        assert_std(layer.weight, 0.02, name)
        if layer.bias is not None:
            assert torch.count_nonzero(layer.bias) == 0, name
    for name, m in convit.named_modules():
        if isinstance(m, nn.LayerNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name


def test_convit_gpsa_local_init(convit):
    # timm's GPSA.local_init, for 4 heads: kernel 2, centre 0.5, head h1 + 2·h2 scores
    # (2(h2 − c), 2(h1 − c), −1) · (Δx, Δy, Δx² + Δy²), times locality_strength (1.0)
    expected = torch.tensor([[2 * (h2 - 0.5), 2 * (h1 - 0.5), -1.0] for h2 in range(2) for h1 in range(2)])
    for i in range(4):
        attn = convit.get_submodule(f"blocks.{i}.attn")
        torch.testing.assert_close(attn.v.weight, torch.eye(64))
        torch.testing.assert_close(attn.pos_proj.weight, expected)
        assert torch.count_nonzero(attn.pos_proj.bias) == 0
        assert torch.all(attn.gating_param == 1)


def test_convit_embeddings(convit):
    state = dict(convit.named_parameters())
    assert_std(state["pos_embed"], 0.02, "pos_embed")
    assert_std(state["cls_token"], 0.02, "cls_token")  # ConViT: trunc_normal_(cls_token, std=.02)
    conv = convit.get_submodule("patch_embed.proj")  # timm leaves the patch embedding at torch's default
    bound = 1 / math.sqrt(conv.weight[0].numel())
    assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
    assert_std(conv.weight, torch_default_std(conv), "patch_embed.proj.weight")


def test_deit_class_token_and_linears():
    deit = model("deit_tiny_patch16_224", params={"depth": 2})
    token = dict(deit.named_parameters())["cls_token"]
    assert 0.5e-6 < token.std().item() < 1.5e-6  # timm's ViT: normal_(cls_token, std=1e-6)
    for name, layer in linears(deit).items():
        assert_std(layer.weight, 0.02, name)
        assert torch.count_nonzero(layer.bias) == 0, name


# ---------------------------------------------------------------- ResNet, SAGAN, BoTNet (CNN init)


def fan_out_std(conv: nn.Conv2d) -> float:
    return math.sqrt(2 / (conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]))


def test_resnet18_convs_fan_out_and_zero_last_bn():
    # width 64 (resnet18's own): the 7×7 stem's fan-out std √(2/(49·64)) ≈ 0.025 is far from the
    # kaiming-uniform std 1/√(3·147) ≈ 0.048 (at width 16 they are 6 % apart, within the sampling error)
    net = model("resnet18", params={"width": 64, "classes": 10}, input={"shape": [3, 64, 64]})
    convs = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(convs) == 1 + 16 + 3
    for name, conv in convs.items():
        assert_std(conv.weight, fan_out_std(conv), name)
        assert conv.weight.abs().max() > 1 / math.sqrt(conv.weight[0].numel()), f"{name}: uniform, not normal"
    for name, bn in ((n, m) for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)):
        last = name.endswith(".bn2")  # timm's BasicBlock.zero_init_last
        assert torch.all(bn.weight == (0 if last else 1)), name
        assert torch.count_nonzero(bn.bias) == 0, name
    fc = net.get_submodule("fc")  # `init: pytorch` in the spec: torch's default, as timm and torchvision leave it
    assert_std(fc.weight, torch_default_std(fc), "fc.weight")
    bound = 1 / math.sqrt(fc.in_features)
    assert torch.all(fc.bias.abs() <= bound) and torch.count_nonzero(fc.bias) == fc.out_features


def test_sagan_gamma_zero_and_fan_out_projections():
    net = model("resnet18_sagan", params={"width": 64, "classes": 10}, input={"shape": [3, 64, 64]})
    for name in ("attn2", "attn3"):
        attn = net.get_submodule(name)
        assert attn.gamma.item() == 0  # SAGAN: the block starts as the identity
        for proj in (attn.f, attn.g, attn.h, attn.v):
            assert_std(proj.weight, fan_out_std(proj), f"{name} projection")


@pytest.fixture(scope="module")
def botnet() -> nn.Module:
    return model("botnet26t_256", input={"shape": [3, 64, 64]})  # 2×2 grid in stage 4: small attention tables


def test_botnet_convs_and_attention(botnet):
    attn = botnet.get_submodule("stage3_attn.self_attn")
    assert_std(attn.qkv.weight, 256 ** -0.5, "qkv")  # BottleneckAttn.reset_parameters: fan-in std (conv1_1x1: 256 ch)
    d_qk = attn.pos_embed.height_rel.shape[1]
    assert_std(torch.cat([attn.pos_embed.height_rel, attn.pos_embed.width_rel]), d_qk ** -0.5, "relative tables")
    for name, conv in ((n, m) for n, m in botnet.named_modules() if isinstance(m, nn.Conv2d) and "self_attn" not in n):
        assert_std(conv.weight, fan_out_std(conv), name)  # byobnet: N(0, 2/fan_out), one group everywhere
    for i in range(2):
        assert torch.all(botnet.get_submodule(f"stage1.{i}.bn3").weight == 0)
    # byobnet's SelfAttnBlock.init_weights (zero_init_last): conv3_1x1's BN γ = 0; the other BNs 1
    for block in ("stage3_attn", "stage4.0", "stage4.1"):
        assert torch.all(botnet.get_submodule(f"{block}.conv3_1x1.norm").weight == 0), block
        assert torch.all(botnet.get_submodule(f"{block}.conv1_1x1.norm").weight == 1), block
        assert torch.all(botnet.get_submodule(f"{block}.post_attn").weight == 1), block
    head = botnet.get_submodule("head.fc")
    assert_std(head.weight, 0.01, "head")  # byobnet's _init_weights: nn.Linear normal(0, 0.01), bias 0
    assert torch.count_nonzero(head.bias) == 0


@pytest.fixture(scope="module")
def sasa() -> nn.Module:
    return model("sasa_resnet26", input={"shape": [3, 64, 64]})


def test_local_attention_projections_and_zero_last_bn(sasa):
    attn = sasa.get_submodule("layer2.0.attn")
    assert_std(attn.qkv.weight, math.sqrt(2 / 128), "qkv")  # each of q, k, v as a 1×1 conv of 128 outputs
    for block in ("layer2.0", "layer2.1", "layer3.3", "layer4"):  # timm's zero_init_last on the bottleneck's bn3
        assert torch.all(sasa.get_submodule(f"{block}.conv3.norm").weight == 0), block
        assert torch.all(sasa.get_submodule(f"{block}.bn2").weight == 1), block
    assert torch.all(sasa.get_submodule("layer1.bn3").weight == 0)


def test_resnet_tiny_zeroes_the_last_bn_of_each_branch():
    net = model("resnet_tiny")
    for name, m in net.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            last = name.endswith("conv2.norm")  # the branch's last conv + BN; conv1, shortcut and stem keep γ = 1
            assert torch.all(m.weight == (0 if last else 1)), name
    assert sum(name.endswith("conv2.norm") for name, _ in net.named_modules()) == 6


#: Every bundled CNN and the node holding its classifier's linear: timm's and torchvision's
#: ResNets leave that linear at torch's default (timm's ResNet.init_weights touches only convs).
CNN_HEADS = {
    "resnet18": ("fc", {"params": {"width": 16, "classes": 10}, "input": {"shape": [3, 64, 64]}}),
    "resnet50": ("fc", {"params": {"width": 16, "classes": 10}, "input": {"shape": [3, 64, 64]}}),
    "resnet18_sagan": ("fc", {"params": {"width": 16, "classes": 10}, "input": {"shape": [3, 64, 64]}}),
    "resnet_micro_28": ("fc", {}),
    "resnet_micro_32": ("fc", {}),
    "resnet_tiny": ("head.fc", {}),
    "sasa_resnet26": ("head.fc", None),  # the module fixture
    "two_branch": ("head.fc", {}),
}
TRANSFORMERS = {"convit_base", "convit_micro_28", "convit_micro_32", "convit_small", "convit_tiny", "deit_micro_28",
                "deit_tiny_patch16_224", "vit_base_patch16_224"}


def test_every_bundled_model_is_checked_here():
    # a new bundled model must say which reference init its head follows (add it to one of the sets)
    assert set(archforge.list_models()) <= set(CNN_HEADS) | TRANSFORMERS | {"botnet26t_256"}


@pytest.mark.parametrize("name", sorted(CNN_HEADS))
def test_cnn_heads_keep_torch_defaults(name, request):
    node, changes = CNN_HEADS[name]
    net = request.getfixturevalue("sasa") if changes is None else model(name, **changes)
    fc = net.get_submodule(node)
    bound = 1 / math.sqrt(fc.in_features)  # kaiming_uniform_(a=√5): U(±1/√fan_in); bias U(±1/√fan_in)
    assert fc.weight.abs().max() <= bound and torch.all(fc.bias.abs() <= bound), name
    assert torch.count_nonzero(fc.bias) == fc.out_features, name  # the reference rules give a zero bias
    assert_std(fc.weight, torch_default_std(fc), f"{name} {node}.weight")


# ---------------------------------------------------------------- single blocks


def built(text: str, init: str | None = None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return archforge.build(archforge.parse_spec("archforge: 1\nname: t\n" + text), init=init)


def test_se_gate_convs_fan_out():
    net = built("input: {shape: [64, 8, 8]}\nnodes:\n  - {id: se, block: se, args: {ratio: 0.25}}\n")
    for conv, fan_out in ((net.se.fc1, 16), (net.se.fc2, 64)):  # 1×1 convolutions: N(0, 2 / C_out)
        assert_std(conv.weight, math.sqrt(2 / fan_out), "se conv")
        bound = 1 / math.sqrt(conv.in_channels)  # timm's ResNet leaves conv biases at torch's default
        assert torch.all(conv.bias.abs() <= bound) and torch.count_nonzero(conv.bias) == conv.out_channels


def test_patchify_stem_is_trunc_normal_002():
    net = built("input: {shape: [3, 32, 32]}\nnodes:\n  - {id: stem, block: stem, args: {variant: patchify, channels: 96}}\n")
    conv, norm = net.stem.conv1.conv, net.stem.conv1.norm  # ConvNeXt: trunc_normal_(std=.02), bias 0; LayerNorm 1/0
    assert_std(conv.weight, 0.02, "patchify conv")
    assert torch.count_nonzero(conv.bias) == 0
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


TOKEN_HEAD = """input: {shape: [3, 16, 16]}
nodes:
  - {id: patch_embed, block: patch_embed, args: {patch: 4, dim: 64}}
  - {id: cls_token, block: class_token}
  - {id: head, block: classifier, args: {pool: token, classes: 100%s}}
"""


@pytest.mark.parametrize("std_arg, std", [("", 0.02), (", std: 0.01", 0.01)])
def test_classifier_on_tokens_is_trunc_normal(std_arg, std):
    net = built(TOKEN_HEAD % std_arg)
    assert_std(net.head.fc.weight, std, "head")  # timm's ViT head: trunc_normal_(std=.02), bias 0
    assert torch.count_nonzero(net.head.fc.bias) == 0
    token = dict(net.named_parameters())["cls_token"]
    assert 0.5e-6 < token.std().item() < 1.5e-6  # the default std: ViT's normal_(cls_token, std=1e-6)


def test_gpsa_locality_strength_scales_the_pattern():
    net = model("convit_micro_28", params={"locality": 2.5, "local_layers": 1, "global_layers": 0})
    expected = torch.tensor([[2 * (h2 - 0.5), 2 * (h1 - 0.5), -1.0] for h2 in range(2) for h1 in range(2)])
    torch.testing.assert_close(net.get_submodule("blocks.0.attn").pos_proj.weight, 2.5 * expected)


def test_conv_and_batch_norm_zero_init_apply_under_reference_only():
    text = """input: {shape: [8, 4, 4]}
nodes:
  - {id: conv, block: conv, args: {channels: 8, zero_init: true}}
  - {id: bn, block: batch_norm, args: {zero_init: true}}
  - {id: plain, block: batch_norm}
"""
    net = built(text)
    assert torch.all(net.conv.norm.weight == 0) and torch.all(net.bn.weight == 0) and torch.all(net.plain.weight == 1)
    net = built(text, init="pytorch")
    assert torch.all(net.conv.norm.weight == 1) and torch.all(net.bn.weight == 1)
    with pytest.raises(SpecError, match="zero_init starts the norm's γ at 0, but norm is 'none'"):
        built("input: {shape: [8, 4, 4]}\nnodes:\n  - {id: conv, block: conv, args: {channels: 8, norm: none, zero_init: true}}\n")


@pytest.mark.parametrize("zero_init, reference, pytorch", [(None, 0, 1), (False, 1, 1), (True, 0, 0)])
@pytest.mark.parametrize("block, last", [("basic_block", "bn2"), ("bottleneck", "bn3")])
def test_residual_zero_init_is_honoured(block, last, zero_init, reference, pytorch):
    arg = "" if zero_init is None else f", zero_init: {str(zero_init).lower()}"
    text = f"input: {{shape: [16, 4, 4]}}\nnodes:\n  - {{id: res, block: {block}, args: {{channels: 16{arg}}}}}\n"
    for init, gamma in (("reference", reference), ("pytorch", pytorch)):
        assert torch.all(built(text, init=init).get_submodule(f"res.{last}").weight == gamma), (init, zero_init)


# ---------------------------------------------------------------- init: pytorch, overrides, plugins


SPEC = """
archforge: 1
name: two_linears
input: {shape: [64]}
define:
  pair:
    nodes:
      - {id: a, block: linear, args: {features: 64}}
      - {id: b, block: linear, init: reference, args: {features: 64}}
nodes:
  - {id: first, block: linear, args: {features: 64}}
  - {id: second, block: linear, init: pytorch, args: {features: 64}}
  - {id: third, block: pair, init: pytorch, repeat: 2}
"""


def is_reference(layer: nn.Linear) -> bool:
    # a zero bias never comes out of torch's U(±1/8) default; the std tells trunc-normal 0.02 from 1/√192 ≈ 0.072
    return torch.count_nonzero(layer.bias) == 0 and layer.weight.std().item() < 0.03


def test_pytorch_init_is_what_each_build_makes():
    spec = load_spec("convit_micro_28")
    graph = compile_graph(spec)
    torch.manual_seed(0)
    expected = {}
    for node in graph.live_nodes():  # the builder's order: each block's build, nothing else drawing
        module = node.entry.block.build(node.block_input, node.args)
        tensors = {node.name: module.tensor} if hasattr(module, "tensor") else {
            f"{node.name}.{n}": t for n, t in [*module.named_parameters(), *module.named_buffers()]}
        expected.update(tensors)
    torch.manual_seed(0)
    built = archforge.build(spec, init="pytorch")
    got = {**dict(built.named_parameters()), **dict(built.named_buffers())}
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    head = built.get_submodule("head")
    assert_std(head.weight, torch_default_std(head), "head.weight")  # kaiming-uniform: 1/√(3·fan_in)
    assert 0.5e-6 < dict(built.named_parameters())["cls_token"].std().item() < 1.5e-6  # as before `std: 0.02`


def test_pytorch_init_draws_what_archforge_drew_before_the_choice():
    # Before `init` existed, build drew, in node order and nothing else: nn.Linear's own init,
    # the class token N(0, 1e-6²) (whatever `std:` now says), nn.Linear's init again. Hand-written here.
    torch.manual_seed(0)
    first = nn.Linear(8, 8)
    token = nn.init.normal_(torch.empty(1, 1, 8), std=1e-6)
    head = nn.Linear(8, 3)
    net = built("""input: {shape: [4, 8]}
nodes:
  - {id: first, block: linear, args: {features: 8, std: 0.5}}
  - {id: cls_token, block: class_token, args: {std: 0.02}}
  - {id: head, block: classifier, args: {pool: token, classes: 3, std: 0.01}}
""", init="pytorch")
    got = dict(net.named_parameters())
    for name, tensor in (("first.weight", first.weight), ("first.bias", first.bias), ("cls_token", token),
                         ("head.fc.weight", head.weight), ("head.fc.bias", head.bias)):
        assert torch.equal(got[name], tensor), name


NESTED = """
archforge: 1
name: nested
input: {shape: [64]}
define:
  inner:
    nodes:
      - {id: a, block: linear, args: {features: 64}}
      - {id: b, block: linear, init: reference, args: {features: 64}}
  outer:
    nodes:
      - {id: c, block: inner}
      - {id: d, block: inner, init: reference}
      - {id: e, block: linear, args: {features: 64}}
nodes:
  - {id: x, block: outer, init: pytorch}
  - {id: y, block: outer}
"""


@pytest.mark.parametrize("init", [None, "pytorch"])
def test_nested_defines_take_the_nearest_init(init):
    torch.manual_seed(0)
    net = archforge.build(archforge.parse_spec(NESTED), init=init)
    default = init != "pytorch"  # the spec's own (reference), or build's replacement
    expected = {"x.c.a": False, "x.c.b": True, "x.d.a": True, "x.d.b": True, "x.e": False,
                "y.c.a": default, "y.c.b": True, "y.d.a": True, "y.d.b": True, "y.e": default}
    assert {path: is_reference(net.get_submodule(path)) for path in expected} == expected


def test_node_define_and_repeat_overrides():
    torch.manual_seed(0)
    net = archforge.build(archforge.parse_spec(SPEC))
    assert is_reference(net.first) and not is_reference(net.second)
    for i in range(2):  # the define call's `pytorch` reaches `a` in every copy; `b` keeps its own `reference`
        assert not is_reference(net.get_submodule(f"third.{i}.a")) and is_reference(net.get_submodule(f"third.{i}.b"))


def test_build_init_replaces_the_spec_default_only():
    spec = archforge.parse_spec(SPEC.replace("input:", "init: pytorch\ninput:"))
    assert spec.to_dict()["init"] == "pytorch" and "init" not in archforge.parse_spec(SPEC).to_dict()
    net = archforge.build(spec)
    assert not is_reference(net.first)
    net = archforge.build(spec, init="reference")
    assert is_reference(net.first) and not is_reference(net.second)  # the node's own key still applies
    net = archforge.build(archforge.parse_spec(SPEC), init="pytorch")
    assert not is_reference(net.first) and is_reference(net.get_submodule("third.0.b"))
    with pytest.raises(SettingError, match="init must be one of"):
        archforge.build(spec, init="timm")


@pytest.mark.parametrize("where, text", [("top", "init: refrence\ninput:"), ("node", "init: pytorh, args: {features: 64}}\n  - {id: second")])
def test_unknown_init_value_is_located(where, text):
    source = SPEC.replace("input:", text, 1) if where == "top" else SPEC.replace("args: {features: 64}}\n  - {id: second", text, 1)
    with pytest.raises(SpecError, match="did you mean '(reference|pytorch)'") as error:
        archforge.parse_spec(source)
    assert error.value.location.line == (4 if where == "top" else 11)


class Filled(Block):
    """A linear whose reference init fills its weight with 7."""

    name = "filled"
    layout = ("vector",)
    fault = None

    def infer(self, x: Shape, args: BlockArgs) -> Shape:
        return x

    def build(self, x: Shape, args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return nn.Linear(x.channels, x.channels, device=device, dtype=dtype)

    def init_weights(self, module: nn.Linear, x: Shape, args: BlockArgs) -> None:
        if self.fault == "raise":
            raise RuntimeError("boom")
        if self.fault == "replace":
            module.weight = nn.Parameter(torch.zeros_like(module.weight))
        elif self.fault == "reshape":
            module.weight.data = torch.zeros(1)
        elif self.fault == "add":
            module.register_buffer("extra", torch.zeros(1))
        elif self.fault == "remove":
            del module.bias
        elif self.fault == "dtype":
            module.weight.data = module.weight.data.double()
        elif self.fault == "device":  # the same Parameter object, moved
            torch.utils.swap_tensors(module.weight, nn.Parameter(torch.empty_like(module.weight, device="meta")))
        else:
            module.weight.fill_(7.0)


PLUGIN_SPEC = "archforge: 1\nname: p\ninput: {shape: [8]}\nnodes:\n  - {id: mine, block: filled}\n"


@pytest.fixture
def filled_registry():
    yield registry_with(Filled, name="my-plugin")
    Filled.fault = None


def test_plugin_init_weights_called_under_reference_only(filled_registry):
    spec = archforge.parse_spec(PLUGIN_SPEC)
    assert torch.all(archforge.build(spec, registry=filled_registry).mine.weight == 7)
    assert not torch.any(archforge.build(spec, registry=filled_registry, init="pytorch").mine.weight == 7)
    Filled.fault = "raise"  # never called on meta, which allocates nothing
    assert archforge.build(spec, registry=filled_registry, device="meta").mine.weight.is_meta


@pytest.mark.parametrize("fault, message", [("raise", "failed to initialise node 'mine': RuntimeError: boom"),
                                            ("replace", "init_weights replaced the parameter 'weight' of node 'mine'"),
                                            ("reshape", "init_weights changed the shape of the parameter 'weight'"),
                                            ("add", "init_weights added a buffer 'extra' of node 'mine'"),
                                            ("remove", "init_weights removed the parameter 'bias' of node 'mine'"),
                                            ("dtype", "init_weights changed the dtype of the parameter 'weight' from "
                                                      "torch.float32 to torch.float64"),
                                            ("device", "init_weights changed the device of the parameter 'weight' from "
                                                       "cpu to meta")])
def test_faulty_init_weights_is_a_located_plugin_fault(filled_registry, fault, message):
    Filled.fault = fault
    with pytest.raises(SpecError, match=message) as error:
        archforge.build(archforge.parse_spec(PLUGIN_SPEC), registry=filled_registry)
    assert "block 'filled' from plugin 'my-plugin'" in str(error.value) and error.value.location.line == 5


def test_check_block_asserts_the_init_contract():
    check_block(Filled, Shape.vector(4))
    Filled.fault = "reshape"
    try:
        with pytest.raises(AssertionError, match="init_weights changed the shape"):
            check_block(Filled, Shape.vector(4))
    finally:
        Filled.fault = None

    class Restless(Filled):
        name = "restless"
        calls = 0

        def init_weights(self, module, x, args):  # depends on state outside torch's seeded generator
            Restless.calls += 1
            module.weight.fill_(Restless.calls)

    with pytest.raises(AssertionError, match="not deterministic"):
        check_block(Restless, Shape.vector(4))
