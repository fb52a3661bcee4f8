"""``local_attention`` against a plain float64 loop over pixels and neighbours (Ramachandran et al. 2019)."""

from __future__ import annotations

import pydantic
import pytest
import torch

import archforge
from archforge.blocks.local_attention import LocalAttention, LocalSelfAttention2d, block_size
from archforge.registry import Shape, ShapeError
from archforge.testing import check_block, registry_with


def reference(module: LocalSelfAttention2d, x: torch.Tensor, scaled: bool = True) -> torch.Tensor:
    """Eq. (3) of the paper, pixel by pixel: softmax over the in-image neighbours of qᵀ(k + [r_row; r_col])."""
    batch, _, height, width = x.shape
    c, heads, k = module.channels, module.heads, module.kernel
    dh, p = c // heads, k // 2
    scale = dh ** -0.5 if scaled else 1.0
    weight = module.qkv.weight  # (3C, C_in)
    qkv = torch.einsum("oc,bchw->bohw", weight, x)
    q, key, value = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
    out = torch.zeros(batch, c, height, width, dtype=x.dtype)
    for n in range(batch):
        for h in range(heads):
            ch = slice(h * dh, (h + 1) * dh)
            for i in range(height):
                for j in range(width):
                    logits, values = [], []
                    for a in range(i - p, i + p + 1):
                        for b in range(j - p, j + p + 1):
                            if 0 <= a < height and 0 <= b < width:  # padded neighbours get no weight
                                r = torch.cat([module.rel_rows[h, a - i + p], module.rel_cols[h, b - j + p]])
                                logits.append(scale * q[n, ch, i, j] @ (key[n, ch, a, b] + r))
                                values.append(value[n, ch, a, b])
                    weights = torch.softmax(torch.stack(logits), dim=0)
                    out[n, ch, i, j] = (weights[:, None] * torch.stack(values)).sum(0)
    s = module.stride
    if s > 1:  # s×s average pool, written out
        ho, wo = height // s, width // s
        pooled = torch.zeros(batch, c, ho, wo, dtype=x.dtype)
        for i in range(ho):
            for j in range(wo):
                pooled[:, :, i, j] = out[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s].mean(dim=(2, 3))
        out = pooled
    return out


CASES = [
    # (in_channels, channels, grid, kernel, heads, stride, block)
    (6, 8, (5, 6), 3, 2, 1, None),
    (6, 8, (5, 6), 3, 2, 2, None),
    (4, 8, (6, 5), 5, 1, 2, 4),   # block does not divide the grid: padded queries
    (4, 4, (4, 3), 7, 2, 1, 2),   # kernel larger than the grid: every pixel sees all others
    (4, 8, (7, 7), 3, 4, 1, 1),   # one query per block
    (4, 8, (5, 5), 5, 2, 1, 5),   # one block covers the grid
]


@pytest.mark.parametrize("in_channels, channels, grid, kernel, heads, stride, block", CASES)
def test_matches_loop_reference(in_channels, channels, grid, kernel, heads, stride, block):
    torch.manual_seed(0)
    module = LocalSelfAttention2d(in_channels, channels, grid, kernel, heads, stride, block=block, dtype=torch.float64)
    x = torch.randn(2, in_channels, *grid, dtype=torch.float64)
    torch.testing.assert_close(module(x), reference(module, x), rtol=1e-10, atol=1e-12)


def test_gradients_match_reference():
    torch.manual_seed(1)
    module = LocalSelfAttention2d(4, 8, (5, 4), 3, 2, 2, dtype=torch.float64)
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(1, 8, 2, 2, dtype=torch.float64)
    params = [x, module.qkv.weight, module.rel_rows, module.rel_cols]
    ours = torch.autograd.grad((module(x) * cotangent).sum(), params)
    theirs = torch.autograd.grad((reference(module, x) * cotangent).sum(), params)
    for a, b in zip(ours, theirs):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_unscaled_logits_follow_the_paper():
    torch.manual_seed(2)
    module = LocalSelfAttention2d(4, 4, (4, 4), 3, 1, 1, scaled=False, dtype=torch.float64)
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(module(x), reference(module, x, scaled=False), rtol=1e-10, atol=1e-12)


def test_block_size_does_not_change_the_result():
    torch.manual_seed(3)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    outputs = []
    for block in (1, 3, 4, 9):
        torch.manual_seed(4)
        module = LocalSelfAttention2d(8, 8, (9, 7), 5, 2, 1, block=block, dtype=torch.float64)
        outputs.append(module(x))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=1e-10, atol=1e-12)


def test_block_size_choice_is_sane():
    assert 1 <= block_size(28, 28, 7) <= 28
    assert block_size(1, 1, 7) == 1


def test_check_block_contract_and_params():
    # qkv: 3·C_in·C, relative tables: 2 · heads · k · (C/heads)/2 = k·C
    check_block(LocalAttention, Shape.map(6, 6, 6), {"channels": 8, "kernel": 3, "heads": 2},
                expected_params=3 * 6 * 8 + 3 * 8, compile=True)
    check_block(LocalAttention, Shape.map(8, 7, 5), {"channels": 16, "kernel": 5, "heads": 4, "stride": 2},
                expected_params=3 * 8 * 16 + 5 * 16)


def test_shape_errors():
    block = LocalAttention()
    args = LocalAttention.Args
    with pytest.raises(ShapeError, match="divide"):
        block.infer(Shape.map(8, 8, 8), args(channels=12, heads=8))
    with pytest.raises(ShapeError, match="even"):
        block.infer(Shape.map(8, 8, 8), args(channels=24, heads=8))
    with pytest.raises(ShapeError, match="stride"):
        block.infer(Shape.map(8, 3, 8), args(channels=16, heads=2, stride=4))
    with pytest.raises(pydantic.ValidationError, match="odd"):
        args(channels=16, kernel=4)
    assert block.infer(Shape.map(8, 7, 9), args(channels=16, heads=2, stride=2)) == Shape.map(16, 3, 4)


def test_through_a_spec():
    spec = archforge.parse_spec("""
archforge: 1
name: sasa
input: {shape: [16, 14, 14]}
nodes:
  - {id: attn, block: local_attention, args: {channels: 32, kernel: 7, heads: 8, stride: 2}}
  - {id: head, block: classifier, args: {classes: 10}}
""")
    registry = registry_with(LocalAttention)
    archforge.validate(spec, registry=registry)
    assert archforge.summarize(spec, registry=registry).params == 3 * 16 * 32 + 7 * 32 + 32 * 10 + 10
    model = archforge.build(spec, registry=registry)
    assert model(torch.randn(2, 16, 14, 14)).shape == (2, 10)
