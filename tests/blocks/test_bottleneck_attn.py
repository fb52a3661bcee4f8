"""``bottleneck_attn``: contract, timm parameter layout, and an explicit float64 reference of BoTNet's logits."""

from __future__ import annotations

import math

import pytest
import torch

import archforge
from archforge.blocks.bottleneck_attn import BottleneckAttn
from archforge.registry import Shape, ShapeError, default_registry
from archforge.testing import check_block, registry_with


def _registry() -> archforge.Registry:
    return registry_with(*(b for b in (BottleneckAttn,) if b.name not in default_registry().blocks))


def _params(dim: int, height: int, width: int, heads: int, dim_head_qk: int, dim_out: int, qkv_bias: bool = False) -> int:
    qkv_out = heads * 2 * dim_head_qk + dim_out
    return dim * qkv_out + (qkv_out if qkv_bias else 0) + (2 * height - 1) * dim_head_qk + (2 * width - 1) * dim_head_qk


# --- contract ---------------------------------------------------------------------------------


def test_contract_compiled():
    check_block(BottleneckAttn, Shape.map(16, 4, 5), {"heads": 2}, expected_params=_params(16, 4, 5, 2, 8, 16), compile=True)


@pytest.mark.parametrize("args,dim_head_qk,dim_out", [
    ({"heads": 2, "stride": 2}, 8, 16),
    ({"heads": 4, "dim_out": 32}, 8, 32),
    ({"heads": 2, "dim_head": 3, "qkv_bias": True}, 3, 16),
    ({"heads": 2, "qk_ratio": 0.5, "scale_pos_embed": True}, 4, 16),  # make_divisible(8, 8) / 2
    ({"heads": 1, "qk_ratio": 0.25}, 8, 16),  # make_divisible(4, 8) = 8: never below the divisor
    ({"heads": 2, "dim_out": 44}, 24, 44),  # make_divisible(44, 8) = 48: rounds to the nearest multiple
    ({"heads": 2, "qk_ratio": 1.6875}, 16, 16),  # make_divisible(27, 8) = 32: 24 would lose over 10%
])
def test_contract(args, dim_head_qk, dim_out):
    module = check_block(BottleneckAttn, Shape.map(16, 4, 6), args,
                         expected_params=_params(16, 4, 6, args["heads"], dim_head_qk, dim_out, args.get("qkv_bias", False)))
    assert module.pos_embed.height_rel.shape == (2 * 4 - 1, dim_head_qk)
    assert module.pos_embed.width_rel.shape == (2 * 6 - 1, dim_head_qk)


def test_stride_two_halves_the_map():
    assert BottleneckAttn().infer(Shape.map(16, 7, 8), BottleneckAttn.Args(heads=2, stride=2, dim_out=32)) == Shape.map(32, 3, 4)


def test_botnet_stage_parameters():
    """The first self-attention layer of timm's botnet26t_256 (256 channels on a 16×16 map, 4 heads)."""
    module = BottleneckAttn().build(Shape.map(256, 16, 16), BottleneckAttn.Args(stride=2), device="meta")
    assert {n: tuple(p.shape) for n, p in module.named_parameters()} == {
        "qkv.weight": (3 * 256, 256, 1, 1), "pos_embed.height_rel": (31, 64), "pos_embed.width_rel": (31, 64)}
    assert sum(p.numel() for p in module.parameters()) == 256 * 768 + 2 * 31 * 64


@pytest.mark.parametrize("args", [{"heads": 3}, {"heads": 4, "dim_out": 10}])
def test_heads_must_divide_dim_out(args):
    with pytest.raises(ShapeError, match="must divide dim_out"):
        BottleneckAttn().infer(Shape.map(16, 4, 4), BottleneckAttn.Args(**args))


def test_stride_needs_room():
    with pytest.raises(ShapeError, match="stride 2"):
        BottleneckAttn().infer(Shape.map(16, 1, 4), BottleneckAttn.Args(heads=2, stride=2))


# --- float64 reference ------------------------------------------------------------------------


def _reference(module: torch.nn.Module, x: torch.Tensor, heads: int, dqk: int, dv: int, scale_pos: bool, stride: int) -> torch.Tensor:
    """Every logit q·k·s + q·R_h[Δr] + q·R_w[Δc] written out per (query, key) pair."""
    B, C, H, W = x.shape
    weight = module.qkv.weight.detach().double()[:, :, 0, 0]  # (3-part out, C)
    R_h = module.pos_embed.height_rel.detach().double()
    R_w = module.pos_embed.width_rel.detach().double()
    feats = torch.einsum("oc,bchw->bohw", weight, x.double())
    s = 1 / math.sqrt(dqk)
    out = torch.zeros(B, heads * dv, H, W, dtype=torch.float64)
    for h in range(heads):
        q = feats[:, h * dqk:(h + 1) * dqk]  # (B, dqk, H, W)
        k = feats[:, heads * dqk + h * dqk:heads * dqk + (h + 1) * dqk]
        v = feats[:, 2 * heads * dqk + h * dv:2 * heads * dqk + (h + 1) * dv]
        for r in range(H):
            for c in range(W):
                logits = torch.zeros(B, H, W, dtype=torch.float64)
                for r2 in range(H):
                    for c2 in range(W):
                        qp = q[:, :, r, c]
                        content = (qp * k[:, :, r2, c2]).sum(1)
                        position = (qp * R_h[r2 - r + H - 1]).sum(1) + (qp * R_w[c2 - c + W - 1]).sum(1)
                        logits[:, r2, c2] = (content + position) * s if scale_pos else content * s + position
                weights = torch.softmax(logits.flatten(1), dim=1).view(B, 1, H, W)
                out[:, h * dv:(h + 1) * dv, r, c] = (weights * v).sum((2, 3))
    if stride == 2:
        out = out[:, :, :H // 2 * 2, :W // 2 * 2].unflatten(3, (W // 2, 2)).unflatten(2, (H // 2, 2)).mean((3, 5))
    return out


@pytest.mark.parametrize("args", [
    {"heads": 2},
    {"heads": 2, "scale_pos_embed": True},
    {"heads": 1, "dim_out": 12, "dim_head": 5, "stride": 2},
])
def test_matches_float64_reference(args):
    torch.manual_seed(0)
    shape = Shape.map(8, 3, 4)
    block = BottleneckAttn()
    parsed = BottleneckAttn.Args(**args)
    _, dqk, dv = block.dims(shape, parsed)
    module = block.build(shape, parsed, dtype=torch.float64).eval()
    with torch.no_grad():  # position terms as large as the content ones, so that errors in them show
        module.pos_embed.height_rel.normal_(0, 1)
        module.pos_embed.width_rel.normal_(0, 1)
    x = shape.example(2, dtype=torch.float64)
    expected = _reference(module, x, parsed.heads, dqk, dv, parsed.scale_pos_embed, parsed.stride)
    torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(module.float()(x.float()).double(), expected, rtol=1e-4, atol=1e-5)


def test_through_a_spec():
    spec = archforge.parse_spec("""
archforge: 1
name: bot
input: {shape: [16, 8, 8]}
nodes:
  - {id: attn, block: bottleneck_attn, args: {heads: 4, dim_out: 32, stride: 2}}
""")
    summary = archforge.summarize(spec, registry=_registry())
    assert summary.output == [32, 4, 4]
    assert summary.params == _params(16, 8, 8, 4, 8, 32)
    model = archforge.build(spec, registry=_registry())
    assert model(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
