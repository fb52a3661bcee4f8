"""``mlp``, ``drop_path``, ``learned_pos_embed``, ``sincos_pos_embed`` and ``class_token``."""

from __future__ import annotations

import math

import pytest
import torch

import archforge
from archforge.blocks.class_token import ClassToken
from archforge.blocks.drop_path import DropPath
from archforge.blocks.mlp import MLP
from archforge.blocks.pos_embed import LearnedPosEmbed, SinCosPosEmbed
from archforge.registry import Shape, ShapeError, default_registry
from archforge.testing import check_block, registry_with

MY_BLOCKS = (MLP, DropPath, LearnedPosEmbed, SinCosPosEmbed, ClassToken)


def _registry() -> archforge.Registry:
    return registry_with(*(b for b in MY_BLOCKS if b.name not in default_registry().blocks))


TOKENS = Shape.tokens(12, (2, 3), extra_tokens=1)  # N = 7


# --- mlp --------------------------------------------------------------------------------------


def test_mlp_contract_compiled():
    check_block(MLP, TOKENS, {}, expected_params=12 * 48 + 48 + 48 * 12 + 12, compile=True)


@pytest.mark.parametrize("shape", [TOKENS, Shape.vector(12)])
@pytest.mark.parametrize("args,hidden,out", [
    ({"hidden": 20, "out": 5}, 20, 5),
    ({"ratio": 2.5}, 30, 12),
    ({"ratio": 0.3, "act": "relu", "dropout": 0.2}, 3, 12),  # int(3.6): truncated as in timm's ViT
])
def test_mlp_contract(shape, args, hidden, out):
    inferred = MLP().infer(shape, MLP.Args(**args))
    assert inferred.channels == out and inferred.layout == shape.layout
    check_block(MLP, shape, args, expected_params=12 * hidden + hidden + hidden * out + out)


def test_mlp_without_bias():
    check_block(MLP, TOKENS, {"hidden": 8, "bias": False}, expected_params=12 * 8 + 8 * 12, dtypes=(torch.float32,), autocast=False)


def test_mlp_matches_float64_reference():
    torch.manual_seed(0)
    module = MLP().build(TOKENS, MLP.Args(hidden=16, out=6), dtype=torch.float64).eval()
    x = TOKENS.example(3, dtype=torch.float64)
    W1, b1, W2, b2 = (t.detach() for t in (module.fc1.weight, module.fc1.bias, module.fc2.weight, module.fc2.bias))
    h = x @ W1.T + b1
    h = 0.5 * h * (1 + torch.special.erf(h / math.sqrt(2)))  # exact GELU
    torch.testing.assert_close(module(x), h @ W2.T + b2, rtol=1e-12, atol=1e-12)
    assert [n for n, _ in module.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


# --- drop_path --------------------------------------------------------------------------------


def test_drop_path_contract_compiled():
    check_block(DropPath, TOKENS, {"p": 0.5}, expected_params=0, compile=True)
    check_block(DropPath, Shape.map(3, 4, 4), {"p": 0.2}, expected_params=0)


def test_drop_path_is_identity_at_eval_and_for_p_zero():
    x = torch.randn(64, 5, 4)
    module = DropPath().build(Shape.tokens(4, (1, 5)), DropPath.Args(p=0.9)).eval()
    assert torch.equal(module(x), x)
    module = DropPath().build(Shape.tokens(4, (1, 5)), DropPath.Args(p=0.0)).train()
    assert torch.equal(module(x), x)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    p, batch = 0.3, 20_000
    module = DropPath().build(Shape.map(2, 3, 3), DropPath.Args(p=p)).train()
    x = torch.rand(batch, 2, 3, 3) + 0.5
    torch.manual_seed(0)
    y = module(x)
    dropped = (y == 0).flatten(1).all(1)
    kept = torch.isclose(y, x / (1 - p), rtol=1e-6, atol=0).flatten(1).all(1)
    assert torch.all(dropped ^ kept), "each sample is either dropped entirely or kept entirely"
    # The kept fraction is Binomial(batch, 1 − p)/batch: std √(p(1−p)/batch) ≈ 0.0032.
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / batch)
    # E[y] = x: the per-sample ratio y/x is 1/(1−p) with probability 1−p, else 0; mean 1, std √(p/(1−p)/batch).
    ratio = (y / x)[:, 0, 0, 0].double()
    assert abs(ratio.mean().item() - 1) < 5 * math.sqrt(p / (1 - p) / batch)


# --- learned_pos_embed ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [TOKENS, Shape.tokens(8, (4, 4))])
def test_learned_pos_embed_contract(shape):
    module = check_block(LearnedPosEmbed, shape, {}, expected_params=shape.num_tokens * shape.channels, compile=shape is TOKENS)
    assert module.tensor.shape == (1, shape.num_tokens, shape.channels)
    x = shape.example(2)
    assert torch.equal(module(x), x + module.tensor.detach())


def test_learned_pos_embed_init_std():
    torch.manual_seed(0)
    module = LearnedPosEmbed().build(Shape.tokens(64, (16, 16)), LearnedPosEmbed.Args())
    values = module.tensor.detach()  # 16384 samples: the std estimate is within ~1% of 0.02
    assert abs(values.std().item() - 0.02) < 0.001 and abs(values.mean().item()) < 0.001


# --- sincos_pos_embed -------------------------------------------------------------------------


def test_sincos_contract():
    check_block(SinCosPosEmbed, TOKENS, {}, expected_params=0, compile=True)


def test_sincos_values():
    height, width, dim, extra = 3, 2, 8, 2
    shape = Shape.tokens(dim, (height, width), extra_tokens=extra)
    module = SinCosPosEmbed().build(shape, SinCosPosEmbed.Args(), dtype=torch.float64)
    x = torch.zeros(1, *shape.dims(), dtype=torch.float64)
    table = module(x)[0]
    quarter = dim // 4
    for n in range(extra):
        assert table[n].abs().max() == 0
    for r in range(height):
        for c in range(width):
            expected = []
            for fn, pos in ((math.sin, c), (math.cos, c), (math.sin, r), (math.cos, r)):
                expected += [fn(pos / 10000 ** (k / quarter)) for k in range(quarter)]
            torch.testing.assert_close(table[extra + r * width + c], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert list(module.state_dict()) == [] and list(module.parameters()) == []


def test_sincos_needs_channels_divisible_by_four():
    with pytest.raises(ShapeError, match="divisible by 4"):
        SinCosPosEmbed().infer(Shape.tokens(6, (2, 2)), SinCosPosEmbed.Args())


# --- class_token ------------------------------------------------------------------------------


def test_class_token_contract_compiled():
    check_block(ClassToken, Shape.tokens(12, (2, 3)), {}, expected_params=12, compile=True)


def test_class_token_prepends():
    shape = Shape.tokens(12, (2, 3))
    out_shape = ClassToken().infer(shape, ClassToken.Args())
    assert out_shape == Shape.tokens(12, (2, 3), extra_tokens=1) and out_shape.num_tokens == 7
    assert ClassToken().infer(out_shape, ClassToken.Args()).extra_tokens == 2
    module = ClassToken().build(shape, ClassToken.Args())
    x = shape.example(3)
    y = module(x)
    assert y.shape == (3, 7, 12)
    assert torch.equal(y[:, 1:], x)
    assert torch.equal(y[:, 0], module.tensor.detach()[0].expand(3, -1))


def test_vit_stem_through_a_spec():
    """patch_embed → class_token → learned_pos_embed: the ViT stem, with the position table covering the class token."""
    spec = archforge.parse_spec("""
archforge: 1
name: stem
input: {shape: [3, 32, 32]}
nodes:
  - {id: patch, block: patch_embed, args: {patch: 8, dim: 24}}
  - {id: cls, block: class_token}
  - {id: pos, block: learned_pos_embed}
  - {id: mlp, block: mlp, args: {ratio: 2}}
  - {id: head, block: classifier, args: {classes: 5, pool: token}}
""")
    summary = archforge.summarize(spec, registry=_registry())
    rows = {r.path: r for r in summary.nodes}
    assert rows["cls"].shape == [17, 24] and rows["cls"].params == 24
    assert rows["pos"].params == 17 * 24
    assert rows["mlp"].params == 24 * 48 + 48 + 48 * 24 + 24
    assert rows["mlp"].flops == 17 * (2 * 24 * 48 + 2 * 48 * 24)
    assert archforge.build(spec, registry=_registry())(torch.randn(2, 3, 32, 32)).shape == (2, 5)
