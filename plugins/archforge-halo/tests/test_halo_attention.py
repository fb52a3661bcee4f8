"""``halo_attention`` against a plain float64 reference written from the paper's definition."""

import pytest
import torch

from archforge import Shape, ShapeError
from archforge.testing import check_block
from archforge_halo.halo_attention import HaloAttention


def naive_halo_attention(x, module, *, block, halo, heads, qk_dim, v_dim, mask_padding=True, stride=1):
    """HaloNet attention with explicit zero padding and explicit loops over blocks, queries and window positions."""
    x = x.double()
    batch, _, height, width = x.shape
    weight = module.qkv.weight.detach().double()[:, :, 0, 0]
    proj = torch.einsum("oc,bchw->bohw", weight, x)
    if module.qkv.bias is not None:
        proj = proj + module.qkv.bias.detach().double()[None, :, None, None]
    q = proj[:, : heads * qk_dim]
    k = proj[:, heads * qk_dim: 2 * heads * qk_dim]
    v = proj[:, 2 * heads * qk_dim:]
    rel_h = module.rel_height.detach().double()
    rel_w = module.rel_width.detach().double()
    scale = qk_dim ** -0.5

    # Explicit zero padding by the halo; `inside` marks the real pixels of the padded map.
    padded_k = torch.zeros(batch, k.shape[1], height + 2 * halo, width + 2 * halo, dtype=torch.float64)
    padded_v = torch.zeros(batch, v.shape[1], height + 2 * halo, width + 2 * halo, dtype=torch.float64)
    padded_k[:, :, halo: halo + height, halo: halo + width] = k
    padded_v[:, :, halo: halo + height, halo: halo + width] = v
    inside = torch.zeros(height + 2 * halo, width + 2 * halo, dtype=torch.bool)
    inside[halo: halo + height, halo: halo + width] = True

    out = torch.zeros(batch, heads * v_dim, height, width, dtype=torch.float64)
    window = block + 2 * halo
    for block_row in range(height // block):
        for block_col in range(width // block):
            for i in range(block):
                for j in range(block):
                    row, col = block_row * block + i, block_col * block + j  # the query pixel
                    for m in range(heads):
                        query = q[:, m * qk_dim: (m + 1) * qk_dim, row, col]  # (B, dk)
                        logits, values = [], []
                        for u in range(window):
                            for w in range(window):
                                prow, pcol = block_row * block + u, block_col * block + w  # padded coordinates
                                if mask_padding and not inside[prow, pcol]:
                                    continue
                                key_row, key_col = prow - halo, pcol - halo  # image coordinates (may be outside)
                                key = padded_k[:, m * qk_dim: (m + 1) * qk_dim, prow, pcol]
                                r_h = rel_h[(key_row - row) + block - 1 + halo]
                                r_w = rel_w[(key_col - col) + block - 1 + halo]
                                logits.append(scale * (query * (key + r_h + r_w)).sum(-1))
                                values.append(padded_v[:, m * v_dim: (m + 1) * v_dim, prow, pcol])
                        weights = torch.softmax(torch.stack(logits, dim=-1), dim=-1)  # (B, L)
                        out[:, m * v_dim: (m + 1) * v_dim, row, col] = torch.einsum("bl,lbd->bd", weights, torch.stack(values))
    if stride > 1:
        pooled = torch.zeros(batch, out.shape[1], height // stride, width // stride, dtype=torch.float64)
        for r in range(height // stride):
            for c in range(width // stride):
                pooled[:, :, r, c] = out[:, :, r * stride: (r + 1) * stride, c * stride: (c + 1) * stride].mean(dim=(2, 3))
        out = pooled
    return out


def _build(shape, **args):
    block = HaloAttention()
    parsed = block.Args.model_validate(args)
    block.infer(shape, parsed)
    module = block.build(shape, parsed, dtype=torch.float64)
    with torch.no_grad():  # large relative embeddings, so that a misplaced offset cannot hide
        module.rel_height.normal_(0, 1.0)
        module.rel_width.normal_(0, 1.0)
        if module.qkv.bias is not None:
            module.qkv.bias.normal_(0, 0.5)
    return module, parsed


CASES = [
    dict(shape=(6, 8, 12), args=dict(channels=8, heads=2, block=4, halo=1)),  # non-square: rows ≠ cols
    dict(shape=(4, 6, 6), args=dict(channels=6, heads=3, block=2, halo=2, qk_dim=4, qkv_bias=True)),  # halo > block/2, dk ≠ dv
    dict(shape=(4, 8, 8), args=dict(channels=8, heads=2, block=4, halo=1, mask_padding=False)),  # timm's unmasked padding
    dict(shape=(4, 8, 8), args=dict(channels=8, heads=1, block=8, halo=0, stride=2)),  # one block, no halo, pooled
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c["args"].items()))
def test_matches_the_naive_float64_reference(case):
    torch.manual_seed(0)
    shape = Shape.map(*case["shape"])
    module, args = _build(shape, **case["args"])
    x = torch.randn(2, *case["shape"], dtype=torch.float64)
    expected = naive_halo_attention(
        x, module, block=args.block, halo=args.halo, heads=args.heads, qk_dim=module.qk_dim, v_dim=args.channels // args.heads,
        mask_padding=args.mask_padding, stride=args.stride,
    )
    torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-10)


def test_the_reference_sees_the_difference_masking_makes():
    # Guards the reference itself: masked and unmasked padding must give different outputs.
    torch.manual_seed(0)
    shape = Shape.map(4, 8, 8)
    module, args = _build(shape, channels=8, heads=2, block=4, halo=1)
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    masked = naive_halo_attention(x, module, block=4, halo=1, heads=2, qk_dim=4, v_dim=4, mask_padding=True)
    unmasked = naive_halo_attention(x, module, block=4, halo=1, heads=2, qk_dim=4, v_dim=4, mask_padding=False)
    assert not torch.allclose(masked, unmasked)
    assert torch.allclose(module(x), masked) and not torch.allclose(module(x), unmasked)


def closed_form_params(in_channels, channels, heads, block, halo, qk_dim=None, qkv_bias=False):
    dk = qk_dim or channels // heads
    projections = heads * dk + heads * dk + channels  # q, k, v
    return in_channels * projections + (projections if qkv_bias else 0) + 2 * (2 * (block + halo) - 1) * dk


@pytest.mark.parametrize("args", [
    dict(channels=16, heads=4, block=4, halo=1),
    dict(channels=12, heads=3, block=2, halo=2, qk_dim=8, qkv_bias=True, stride=2),
])
def test_check_block_contract_and_parameter_count(args):
    expected = closed_form_params(8, **{k: v for k, v in args.items() if k != "stride"})
    check_block(HaloAttention, Shape.map(8, 8, 8), args, expected_params=expected)


def test_compiles_fullgraph_to_the_eager_result():
    check_block(HaloAttention, Shape.map(8, 8, 8), dict(channels=8, heads=2, block=4, halo=1), dtypes=(torch.float32,), compile=True)


def test_builds_on_meta_without_allocating():
    block = HaloAttention()
    args = block.Args(channels=32, heads=4, block=8, halo=3)
    module = block.build(Shape.map(16, 64, 64), args, device="meta")
    assert all(p.is_meta for p in module.parameters())
    assert module(torch.empty(3, 16, 64, 64, device="meta")).shape == (3, 32, 64, 64)


@pytest.mark.parametrize("shape, args, message", [
    ((8, 10, 8), dict(channels=8, heads=2, block=4), "block size 4 must divide the input height and width (10×8)"),
    ((8, 8, 8), dict(channels=10, heads=4, block=4), "heads=4 must divide channels=10"),
    ((8, 8, 8), dict(channels=8, heads=2, block=4, stride=9), "stride 9 does not fit"),
])
def test_shape_errors(shape, args, message):
    block = HaloAttention()
    with pytest.raises(ShapeError) as info:
        block.infer(Shape.map(*shape), block.Args(**args))
    assert message in str(info.value)


def test_unknown_args_are_refused():
    with pytest.raises(ValueError, match="extra"):
        HaloAttention.Args(channels=8, window=3)
