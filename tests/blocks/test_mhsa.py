"""``mhsa``: contract, float64 reference of the formula, permutation equivariance, FLOPs, timm parity."""

from __future__ import annotations

import math

from hypothesis import assume, given, settings, strategies as st
import pytest
import torch

import archforge
from archforge.blocks.class_token import ClassToken
from archforge.blocks.drop_path import DropPath
from archforge.blocks.mhsa import MHSA
from archforge.blocks.mlp import MLP
from archforge.blocks.pos_embed import LearnedPosEmbed, SinCosPosEmbed
from archforge.registry import Shape, ShapeError, default_registry
from archforge.testing import check_block, registry_with

MY_BLOCKS = (MHSA, MLP, DropPath, LearnedPosEmbed, SinCosPosEmbed, ClassToken)


def _registry() -> archforge.Registry:
    """Built-ins plus this file's blocks, whether or not they are registered as built-ins yet."""
    return registry_with(*(b for b in MY_BLOCKS if b.name not in default_registry().blocks))


def _attention_params(dim: int, qkv_bias: bool = True) -> int:
    return dim * 3 * dim + (3 * dim if qkv_bias else 0) + dim * dim + dim


# --- contract ---------------------------------------------------------------------------------


def test_contract_compiled():
    check_block(MHSA, Shape.tokens(24, (3, 4), extra_tokens=1), {"heads": 3}, expected_params=_attention_params(24), compile=True)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_contract_without_bias_options(qkv_bias):
    check_block(MHSA, Shape.tokens(16, (1, 5)), {"heads": 2, "qkv_bias": qkv_bias, "attn_drop": 0.1, "proj_drop": 0.1},
                expected_params=_attention_params(16, qkv_bias), autocast=False)


def test_contract_relative_bias_compiled():
    height, width, heads = 3, 4, 2
    table = (2 * height - 1) * (2 * width - 1) * heads
    check_block(MHSA, Shape.tokens(16, (height, width), extra_tokens=1), {"heads": heads, "rel_pos": "bias"},
                expected_params=_attention_params(16) + table, compile=True)


def test_heads_must_divide_channels():
    with pytest.raises(ShapeError, match="heads=5"):
        MHSA().infer(Shape.tokens(16, (2, 2)), MHSA.Args(heads=5))


def test_timm_parameter_names():
    module = MHSA().build(Shape.tokens(16, (2, 2)), MHSA.Args(heads=2, rel_pos="bias"), device="meta")
    assert sorted(name for name, _ in module.named_parameters()) == [
        "proj.bias", "proj.weight", "qkv.bias", "qkv.weight", "relative_position_bias_table"]
    assert "relative_position_index" not in module.state_dict()


# --- float64 reference ------------------------------------------------------------------------


def _reference(module: torch.nn.Module, x: torch.Tensor, heads: int, grid: tuple[int, int], extra: int, rel: bool) -> torch.Tensor:
    """softmax(Q Kᵀ / √d + bias) V per head, the bias looked up position by position."""
    B, N, C = x.shape
    d = C // heads
    W_qkv, b_qkv = module.qkv.weight.detach().double(), module.qkv.bias.detach().double()
    W_o, b_o = module.proj.weight.detach().double(), module.proj.bias.detach().double()
    x = x.double()
    qkv = x @ W_qkv.T + b_qkv  # (B, N, 3C): [q | k | v], each head-major
    height, width = grid
    bias = torch.zeros(heads, N, N, dtype=torch.float64)
    if rel:
        table = module.relative_position_bias_table.detach().double()
        for i in range(height * width):
            for j in range(height * width):
                (ri, ci), (rj, cj) = divmod(i, width), divmod(j, width)
                row = (ri - rj + height - 1) * (2 * width - 1) + (ci - cj + width - 1)
                bias[:, extra + i, extra + j] = table[row]
    out = torch.empty(B, N, C, dtype=torch.float64)
    for h in range(heads):
        q = qkv[:, :, h * d:(h + 1) * d]
        k = qkv[:, :, C + h * d:C + (h + 1) * d]
        v = qkv[:, :, 2 * C + h * d:2 * C + (h + 1) * d]
        logits = q @ k.transpose(1, 2) / math.sqrt(d) + bias[h]
        weights = logits.exp() / logits.exp().sum(-1, keepdim=True)
        out[:, :, h * d:(h + 1) * d] = weights @ v
    return out @ W_o.T + b_o


@pytest.mark.parametrize("rel", [False, True])
@pytest.mark.parametrize("grid,extra", [((3, 4), 0), ((2, 3), 1), ((1, 5), 2)])
def test_matches_float64_reference(rel, grid, extra):
    heads, dim = 2, 8
    torch.manual_seed(0)
    shape = Shape.tokens(dim, grid, extra_tokens=extra)
    module = MHSA().build(shape, MHSA.Args(heads=heads, rel_pos="bias" if rel else "none")).eval()
    if rel:
        with torch.no_grad():  # large enough to matter against the content logits
            module.relative_position_bias_table.normal_(0, 1)
    x = shape.example(3)
    expected = _reference(module, x, heads, grid, extra, rel)
    torch.testing.assert_close(module(x).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(module.double()(x.double()), expected, rtol=1e-10, atol=1e-10)


def test_relative_bias_is_not_symmetric_in_offsets():
    """Offsets (+1, 0) and (−1, 0) must read different table rows (a sign error would make them equal)."""
    module = MHSA().build(Shape.tokens(4, (2, 1)), MHSA.Args(heads=1, rel_pos="bias"))
    with torch.no_grad():
        module.relative_position_bias_table.copy_(torch.tensor([[10.0], [20.0], [30.0]]))
    bias = module.relative_position_bias()[0]
    assert bias.tolist() == [[20.0, 10.0], [30.0, 20.0]]  # row r_q − r_k + 1


# --- permutation equivariance -----------------------------------------------------------------


@st.composite
def _attention_case(draw):
    heads = draw(st.integers(1, 3))
    head_dim = draw(st.integers(1, 4))
    grid = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    perm = draw(st.permutations(range(grid[0] * grid[1])))
    return heads, head_dim, grid, list(perm)


@settings(max_examples=25, deadline=None)
@given(_attention_case())
def test_permutation_equivariant_without_positions(case):
    heads, head_dim, grid, perm = case
    torch.manual_seed(0)
    shape = Shape.tokens(heads * head_dim, grid)
    attn = MHSA().build(shape, MHSA.Args(heads=heads), dtype=torch.float64).eval()
    x = shape.example(2, dtype=torch.float64)
    perm_t = torch.tensor(perm)
    torch.testing.assert_close(attn(x[:, perm_t]), attn(x)[:, perm_t], rtol=1e-9, atol=1e-10)

    # An absolute position embedding ties each token to its slot, which breaks the symmetry.
    assume(perm != sorted(perm))
    pos = LearnedPosEmbed().build(shape, LearnedPosEmbed.Args(), dtype=torch.float64)
    with torch.no_grad():
        pos.tensor.normal_(0, 1)
    model = torch.nn.Sequential(pos, attn)
    assert (model(x[:, perm_t]) - model(x)[:, perm_t]).abs().max() > 1e-6


def test_sincos_breaks_permutation_equivariance():
    torch.manual_seed(0)
    shape = Shape.tokens(8, (3, 3))
    attn = MHSA().build(shape, MHSA.Args(heads=2), dtype=torch.float64).eval()
    pos = SinCosPosEmbed().build(shape, SinCosPosEmbed.Args(), dtype=torch.float64)
    x = shape.example(2, dtype=torch.float64)
    perm = torch.roll(torch.arange(9), 1)
    torch.testing.assert_close(attn(x[:, perm]), attn(x)[:, perm])
    model = torch.nn.Sequential(pos, attn)
    assert (model(x[:, perm]) - model(x)[:, perm]).abs().max() > 1e-3


# --- through a spec: FLOPs and timm parameter counts -------------------------------------------


@pytest.mark.parametrize("tokens,dim,heads,rel_pos", [(197, 192, 3, "none"), (50, 64, 4, "bias")])
def test_summary_counts_attention_flops(tokens, dim, heads, rel_pos):
    spec = archforge.parse_spec(f"""
archforge: 1
name: attn_only
input: {{shape: [{tokens}, {dim}]}}
nodes:
  - {{id: attn, block: mhsa, args: {{heads: {heads}, rel_pos: {rel_pos}}}}}
""")
    summary = archforge.summarize(spec, registry=_registry())
    (row,) = [r for r in summary.nodes if r.block == "mhsa"]
    N, C = tokens, dim
    assert row.flops == 2 * N * C * 3 * C + 2 * 2 * N * N * C + 2 * N * C * C
    assert row.params == _attention_params(C) + (0 if rel_pos == "none" else 1 * (2 * N - 1) * heads)
    assert row.shape == [N, C]


def _vit(dim: int, depth: int, heads: int) -> str:
    return f"""
archforge: 1
name: vit
input: {{shape: [3, 224, 224]}}
define:
  encoder:
    params: {{heads: 3}}
    nodes:
      - {{id: norm1, block: layer_norm}}
      - {{id: attn, block: mhsa, args: {{heads: $heads}}}}
      - {{id: dp1, block: drop_path, args: {{p: 0.1}}}}
      - {{id: res1, block: add, in: [input, dp1]}}
      - {{id: norm2, block: layer_norm}}
      - {{id: mlp, block: mlp}}
      - {{id: dp2, block: drop_path, args: {{p: 0.1}}}}
      - {{id: res2, block: add, in: [res1, dp2]}}
nodes:
  - {{id: patch, block: patch_embed, args: {{patch: 16, dim: {dim}}}}}
  - {{id: cls, block: class_token}}
  - {{id: pos, block: learned_pos_embed}}
  - {{id: blocks, block: encoder, repeat: {depth}, args: {{heads: {heads}}}}}
  - {{id: norm, block: layer_norm}}
  - {{id: head, block: classifier, args: {{classes: 1000, pool: token}}}}
"""


@pytest.mark.parametrize("dim,heads,expected", [(192, 3, 5_717_416), (768, 12, 86_567_656)])
def test_vit_parameter_counts_match_timm(dim, heads, expected):
    """deit_tiny_patch16_224 and vit_base_patch16_224 as published by timm."""
    summary = archforge.summarize(archforge.parse_spec(_vit(dim, 12, heads)), registry=_registry())
    assert summary.params == expected
    tokens = 14 * 14 + 1
    attn = [r for r in summary.nodes if r.block == "mhsa"]
    assert len(attn) == 12
    assert all(r.flops == 2 * tokens * dim * 3 * dim + 4 * tokens * tokens * dim + 2 * tokens * dim * dim for r in attn)
