"""The bundled reference models take timm's and torchvision's pretrained weights unchanged.

Each reference's state_dict is written below as a table, KEY → SHAPE in the reference's own
order, from its source and its published dimensions, not from archforge:

* timm ``convit_tiny`` / ``convit_small`` / ``convit_base`` (``timm/models/convit.py``): 48 channels
  per head (``embed_dim *= num_heads``) with 4 / 9 / 16 heads, ``local_up_to_layer=10`` GPSA
  blocks then 2 MHSA blocks, no qkv bias, MLP ratio 4, position embedding over the 196 patches
  only. GPSA's ``rel_indices`` is a plain tensor attribute, not a buffer: not in the state_dict.
* timm ``deit_tiny_patch16_224`` (192 wide, 3 heads) and ``vit_base_patch16_224`` (768 wide,
  12 heads) (``timm/models/vision_transformer.py``, ``deit.py``): 12 blocks, qkv bias, MLP ratio
  4, class token, position embedding over 196 + 1 tokens.
* torchvision ``resnet18`` (BasicBlock, 2-2-2-2) and ``resnet50`` (Bottleneck, 3-4-6-3)
  (``torchvision/models/resnet.py``): BatchNorm's ``num_batches_tracked`` is a persistent buffer.

All have 1000 classes, 3 input channels, patch 16 at 224×224. Module state_dicts list a
module's own parameters and buffers before its submodules', so ``cls_token`` and ``pos_embed``
(parameters of the network itself) come first, and GPSA's ``gating_param`` before ``qk``.

(``botnet26t_256`` follows timm's *function*; its names are its own spec's, not timm's
``stages.*`` ones, so it has no table here.)
"""

from __future__ import annotations

import re

import pytest
import torch

import archforge
from conftest import SPECS, load_plain_networks

MODELS = SPECS / "models"
CLASSES, IMAGE, PATCH, CHANNELS = 1000, 224, 16, 3
PATCHES = (IMAGE // PATCH) ** 2  # 196

Table = list[tuple[str, tuple[int, ...]]]


plain_networks = load_plain_networks()


# --------------------------------------------------------------------------------------------
# The references' state_dicts, layer by layer
# --------------------------------------------------------------------------------------------

def _linear(name: str, out: int, inp: int, bias: bool = True) -> Table:
    return [(f"{name}.weight", (out, inp))] + ([(f"{name}.bias", (out,))] if bias else [])


def _layer_norm(name: str, dim: int) -> Table:
    return [(f"{name}.weight", (dim,)), (f"{name}.bias", (dim,))]


def _conv(name: str, out: int, inp: int, kernel: int) -> Table:
    return [(f"{name}.weight", (out, inp, kernel, kernel))]


def _batch_norm(name: str, channels: int) -> Table:
    return [(f"{name}.{k}", (channels,)) for k in ("weight", "bias", "running_mean", "running_var")] + \
           [(f"{name}.num_batches_tracked", ())]


def _mlp(name: str, dim: int, ratio: int = 4) -> Table:
    return _linear(f"{name}.fc1", ratio * dim, dim) + _linear(f"{name}.fc2", dim, ratio * dim)


def _patch_embed(dim: int) -> Table:
    return [("patch_embed.proj.weight", (dim, CHANNELS, PATCH, PATCH)), ("patch_embed.proj.bias", (dim,))]


def timm_vit(dim: int, depth: int = 12) -> Table:
    """timm ``VisionTransformer`` (class token, learned position embedding over 1 + 196 tokens, qkv bias)."""
    table = [("cls_token", (1, 1, dim)), ("pos_embed", (1, PATCHES + 1, dim)), *_patch_embed(dim)]
    for i in range(depth):
        p = f"blocks.{i}"
        table += [*_layer_norm(f"{p}.norm1", dim), *_linear(f"{p}.attn.qkv", 3 * dim, dim), *_linear(f"{p}.attn.proj", dim, dim),
                  *_layer_norm(f"{p}.norm2", dim), *_mlp(f"{p}.mlp", dim)]
    return table + _layer_norm("norm", dim) + _linear("head", CLASSES, dim)


def timm_convit(heads: int, head_dim: int = 48, local_up_to_layer: int = 10, depth: int = 12) -> Table:
    """timm ``ConViT``: GPSA blocks, then MHSA blocks, no qkv bias; position embedding over the patches only."""
    dim = heads * head_dim
    table = [("cls_token", (1, 1, dim)), ("pos_embed", (1, PATCHES, dim)), *_patch_embed(dim)]
    for i in range(depth):
        p = f"blocks.{i}"
        if i < local_up_to_layer:
            attn = [(f"{p}.attn.gating_param", (heads,)), *_linear(f"{p}.attn.qk", 2 * dim, dim, bias=False),
                    *_linear(f"{p}.attn.v", dim, dim, bias=False), *_linear(f"{p}.attn.proj", dim, dim),
                    *_linear(f"{p}.attn.pos_proj", heads, 3)]
        else:
            attn = [*_linear(f"{p}.attn.qkv", 3 * dim, dim, bias=False), *_linear(f"{p}.attn.proj", dim, dim)]
        table += [*_layer_norm(f"{p}.norm1", dim), *attn, *_layer_norm(f"{p}.norm2", dim), *_mlp(f"{p}.mlp", dim)]
    return table + _layer_norm("norm", dim) + _linear("head", CLASSES, dim)


def torchvision_resnet(layers: list[int], bottleneck: bool) -> Table:
    """torchvision ``ResNet`` (v1.5): a projection shortcut where the stride or the width changes."""
    expansion = 4 if bottleneck else 1
    table = [*_conv("conv1", 64, CHANNELS, 7), *_batch_norm("bn1", 64)]
    inplanes = 64
    for stage, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for i in range(depth):
            p, stride = f"layer{stage}.{i}", (2 if stage > 1 and i == 0 else 1)
            if bottleneck:
                table += [*_conv(f"{p}.conv1", planes, inplanes, 1), *_batch_norm(f"{p}.bn1", planes),
                          *_conv(f"{p}.conv2", planes, planes, 3), *_batch_norm(f"{p}.bn2", planes),
                          *_conv(f"{p}.conv3", planes * 4, planes, 1), *_batch_norm(f"{p}.bn3", planes * 4)]
            else:
                table += [*_conv(f"{p}.conv1", planes, inplanes, 3), *_batch_norm(f"{p}.bn1", planes),
                          *_conv(f"{p}.conv2", planes, planes, 3), *_batch_norm(f"{p}.bn2", planes)]
            if stride != 1 or inplanes != planes * expansion:
                table += [*_conv(f"{p}.downsample.0", planes * expansion, inplanes, 1),
                          *_batch_norm(f"{p}.downsample.1", planes * expansion)]
            inplanes = planes * expansion
    return table + _linear("fc", CLASSES, 512 * expansion)


REFERENCES: dict[str, Table] = {
    "convit_tiny": timm_convit(heads=4),
    "convit_small": timm_convit(heads=9),
    "convit_base": timm_convit(heads=16),
    "deit_tiny_patch16_224": timm_vit(dim=192),
    "vit_base_patch16_224": timm_vit(dim=768),
    "resnet18": torchvision_resnet([2, 2, 2, 2], bottleneck=False),
    "resnet50": torchvision_resnet([3, 4, 6, 3], bottleneck=True),
}
#: Parameters of each published model (timm / torchvision model cards): the tables add up to them.
PUBLISHED_PARAMS = {
    "convit_tiny": 5_710_512, "convit_small": 27_777_322, "convit_base": 86_540_040, "deit_tiny_patch16_224": 5_717_416,
    "vit_base_patch16_224": 86_567_656, "resnet18": 11_689_512, "resnet50": 25_557_032,
}


def table_state_dict(table: Table) -> dict[str, torch.Tensor]:
    """Empty tensors on ``meta`` of the table's shapes (``num_batches_tracked`` is an integer count, as in torch)."""
    return {key: torch.empty(shape, device="meta", dtype=torch.long if key.endswith("num_batches_tracked") else torch.float32)
            for key, shape in table}


def shapes(state: dict[str, torch.Tensor]) -> Table:
    return [(key, tuple(value.shape)) for key, value in state.items()]


# --------------------------------------------------------------------------------------------
# Names and shapes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_tables_add_up_to_the_published_parameter_counts(name):
    """Checks the tables themselves: their parameters (every entry but BatchNorm's running statistics) are the models'."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    total = sum(torch.Size(shape).numel() for key, shape in REFERENCES[name] if not key.endswith(buffers))
    assert total == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_spec_state_dict_has_the_references_keys_and_shapes(name):
    """Same set of keys, same shapes: a renamed, missing or extra key fails here with its name."""
    model = archforge.build(MODELS / f"{name}.yaml", device="meta")
    ours, theirs = dict(shapes(model.state_dict())), dict(REFERENCES[name])
    assert sorted(set(ours) - set(theirs)) == [], "keys the reference does not have"
    assert sorted(set(theirs) - set(ours)) == [], "keys of the reference the spec model lacks"
    assert {k: v for k, v in ours.items() if v != theirs[k]} == {}, "keys whose shape differs from the reference's"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_spec_state_dict_lists_the_keys_in_the_references_order(name):
    """The order matters to what is indexed by position, such as an optimizer's saved state.

    One known difference: the network's own tensors come in the order its forward uses them, so
    ConViT has ``pos_embed`` (added to the patches) before ``cls_token`` (prepended after the GPSA
    layers), where timm declares ``cls_token`` first. Loading matches by name and is unaffected.
    """
    model = archforge.build(MODELS / f"{name}.yaml", device="meta")
    expected = [key for key, _ in REFERENCES[name]]
    if name.startswith("convit"):
        assert expected[:2] == ["cls_token", "pos_embed"]
        expected[:2] = ["pos_embed", "cls_token"]
    assert list(model.state_dict()) == expected


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_state_dict_loads_strictly(name):
    model = archforge.build(MODELS / f"{name}.yaml", device="meta")
    model.load_state_dict(table_state_dict(REFERENCES[name]), strict=True, assign=True)  # assign: meta tensors have no data
    assert dict(shapes(model.state_dict())) == dict(REFERENCES[name])


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_plain_networks_of_the_benchmark_have_the_references_state_dict(name):
    """The hand-written networks that tests/test_reference_models.py compares against are the references too."""
    with torch.device("meta"):
        plain = plain_networks.PLAIN[name][0]()
    assert shapes(plain.state_dict()) == REFERENCES[name]


# --------------------------------------------------------------------------------------------
# Real weights
# --------------------------------------------------------------------------------------------

def _plain_with_random_weights(name: str) -> torch.nn.Module:
    """The plain network with every tensor off its init: BN statistics, GPSA gates and positional weights matter."""
    plain = plain_networks.PLAIN[name][0]()
    with torch.no_grad():
        for key, value in plain.state_dict().items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 2.0)
            elif key.endswith("running_mean"):
                value.normal_(0.0, 0.1)
            elif key.endswith(("gating_param", "pos_proj.weight")):
                value.uniform_(-2.0, 2.0)
            elif key.endswith("num_batches_tracked"):
                value.fill_(12345)
    return plain.eval()


def _assert_same_logits(spec_model: torch.nn.Module, plain: torch.nn.Module, size: int) -> None:
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = plain(x)
        torch.testing.assert_close(spec_model.eval()(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("convit_tiny", 224)])
def test_reference_weights_load_into_the_spec_model_and_give_the_same_logits(name, size):
    """timm/torchvision-named weights go in as they are (strict); the ResNet at 64×64 to keep this cheap."""
    plain = _plain_with_random_weights(name)
    spec_model = archforge.build(MODELS / f"{name}.yaml")
    spec_model.load_state_dict(plain.state_dict(), strict=True)
    assert all(torch.equal(spec_model.state_dict()[k], v) for k, v in plain.state_dict().items())
    _assert_same_logits(spec_model, plain, size)


@pytest.fixture(scope="module")
def resnet18_weights():
    """A random torchvision-named ResNet-18 state_dict and the plain network holding it."""
    torch.manual_seed(1)
    plain = _plain_with_random_weights("resnet18")
    return plain, plain.state_dict()


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"], ids=["bare", "model", "state_dict"])
def test_build_loads_a_weights_file(tmp_path, resnet18_weights, wrap):
    """``torch.save(model.state_dict())`` as torchvision's files are, or wrapped as DeiT/timm training checkpoints are."""
    plain, state = resnet18_weights
    path = tmp_path / "w.pth"
    torch.save(state if wrap is None else {wrap: state, "epoch": 300}, path)
    spec_model = archforge.build(MODELS / "resnet18.yaml", weights=path)
    assert all(torch.equal(spec_model.state_dict()[k], v) for k, v in state.items())
    _assert_same_logits(spec_model, plain, 64)


def test_build_loads_a_safetensors_file(tmp_path, resnet18_weights):
    """timm's hub files are ``model.safetensors``."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    plain, state = resnet18_weights
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
    spec_model = archforge.build(MODELS / "resnet18.yaml", weights=path)
    _assert_same_logits(spec_model, plain, 64)


def test_build_on_meta_takes_a_reference_state_dict():
    """``weights`` as a mapping, on ``meta`` (no data copied): the whole ConViT-B table fits."""
    model = archforge.build(MODELS / "convit_base.yaml", device="meta", weights=table_state_dict(REFERENCES["convit_base"]))
    assert dict(shapes(model.state_dict())) == dict(REFERENCES["convit_base"])


def test_a_missing_key_is_a_checkpoint_error_naming_it(tmp_path, resnet18_weights):
    _, state = resnet18_weights
    path = tmp_path / "w.pth"
    torch.save({k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}, path)
    with pytest.raises(archforge.CheckpointError) as info:
        archforge.build(MODELS / "resnet18.yaml", weights=path)
    message = str(info.value)
    assert "layer3.1.bn2.running_var" in message and "missing" in message and str(path) in message
    assert "\n" not in message


def test_a_wrong_shape_is_a_checkpoint_error_naming_the_key_and_both_shapes(tmp_path, resnet18_weights):
    """A head for 10 classes where the spec has 1000: the usual mistake with fine-tuned weights."""
    _, state = resnet18_weights
    path = tmp_path / "w.pth"
    torch.save({**state, "fc.weight": torch.zeros(10, 512)}, path)
    with pytest.raises(archforge.CheckpointError) as info:
        archforge.build(MODELS / "resnet18.yaml", weights=path)
    message = str(info.value)
    assert "fc.weight" in message
    assert re.search(r"\b10, 512\b", message) and re.search(r"\b1000, 512\b", message), message
    assert "\n" not in message


def test_an_extra_key_is_a_checkpoint_error_naming_it(tmp_path, resnet18_weights):
    """timm's DeiT checkpoints with distillation carry ``dist_token`` and ``head_dist``: not silently dropped."""
    _, state = resnet18_weights
    with pytest.raises(archforge.CheckpointError, match=r"unexpected.*head_dist\.weight"):
        archforge.build(MODELS / "resnet18.yaml", weights={**state, "head_dist.weight": torch.zeros(1000, 512)})
