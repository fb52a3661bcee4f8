"""``sagan_attention`` (Zhang et al. 2019): identity at initialisation, a float64 reference of the formula otherwise."""

from __future__ import annotations

import pytest
import torch

import archforge
from archforge.blocks.sagan import SaganAttention, SelfAttention2d
from archforge.registry import Shape, ShapeError
from archforge.testing import check_block, registry_with


def reference(module: SelfAttention2d, x: torch.Tensor) -> torch.Tensor:
    """s_ij = f(x_i)ᵀ g(x_j); β_ji = softmax over i; o_j = v(Σ_i β_ji h(x_i)); y = γ o + x."""
    batch, c, height, width = x.shape

    def conv1x1(conv, t):
        return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], t)

    f, g, h = conv1x1(module.f, x), conv1x1(module.g, x), conv1x1(module.h, x)
    if module.pool:  # 2×2 max over non-overlapping windows, written out
        f = torch.stack([f[:, :, a::2, b::2] for a in (0, 1) for b in (0, 1)]).amax(0)
        h = torch.stack([h[:, :, a::2, b::2] for a in (0, 1) for b in (0, 1)]).amax(0)
    f, g, h = f.flatten(2), g.flatten(2), h.flatten(2)  # (B, C̄, M), (B, C̄, N), (B, C_h, M)
    out = torch.zeros(batch, h.shape[1], height * width, dtype=x.dtype)
    for n in range(batch):
        s = f[n].T @ g[n]  # (M, N): s[i, j] = f(x_i)·g(x_j)
        beta = torch.exp(s - s.max(0).values) / torch.exp(s - s.max(0).values).sum(0)  # softmax over i
        out[n] = h[n] @ beta  # column j: Σ_i β_ji h(x_i)
    o = conv1x1(module.v, out.view(batch, -1, height, width))
    return module.gamma * o + x


def test_identity_at_initialisation():
    module = SaganAttention().build(Shape.map(16, 6, 5), SaganAttention.Args())
    x = torch.randn(3, 16, 6, 5)
    assert module.gamma.item() == 0.0
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("args", [{}, {"value_reduction": 8}, {"pool": True}, {"reduction": 4, "value_reduction": 1}])
def test_matches_float64_reference(args):
    torch.manual_seed(0)
    module = SaganAttention().build(Shape.map(16, 6, 4), SaganAttention.Args(**args), dtype=torch.float64)
    with torch.no_grad():
        module.gamma.fill_(0.7)
    x = torch.randn(2, 16, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(module(x), reference(module, x), rtol=1e-10, atol=1e-12)


def test_gradient_reaches_gamma_at_initialisation():
    module = SaganAttention().build(Shape.map(8, 4, 4), SaganAttention.Args())
    module(torch.randn(2, 8, 4, 4)).square().sum().backward()
    assert module.gamma.grad is not None and module.gamma.grad.abs() > 0


def test_check_block_and_params():
    c = 16  # f, g: C → C/8; h: C → C/2; v: C/2 → C; γ
    check_block(SaganAttention, Shape.map(c, 5, 6), {}, expected_params=2 * c * (c // 8) + 2 * c * (c // 2) + 1, compile=True)
    check_block(SaganAttention, Shape.map(c, 4, 6), {"value_reduction": 8, "pool": True},
                expected_params=2 * c * (c // 8) + 2 * c * (c // 8) + 1)


def test_shape_errors():
    with pytest.raises(ShapeError, match="reduction 8"):
        SaganAttention().infer(Shape.map(12, 4, 4), SaganAttention.Args())
    with pytest.raises(ShapeError, match="even grid"):
        SaganAttention().infer(Shape.map(16, 5, 4), SaganAttention.Args(pool=True))


def test_through_a_spec():
    registry = registry_with(SaganAttention)
    spec = archforge.parse_spec("""
archforge: 1
name: sagan
input: {shape: [32, 8, 8]}
nodes:
  - {id: attn, block: sagan_attention}
  - {id: head, block: classifier, args: {classes: 10}}
""")
    assert archforge.summarize(spec, registry=registry).params == 2 * 32 * 4 + 2 * 32 * 16 + 1 + 32 * 10 + 10
    model = archforge.build(spec, registry=registry)
    assert model(torch.randn(2, 32, 8, 8)).shape == (2, 10)
