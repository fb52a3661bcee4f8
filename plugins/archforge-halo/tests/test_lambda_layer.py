"""``lambda_layer`` against a float64 reference of the paper's formula, written position by position."""

import pytest
import torch

from archforge import Shape, ShapeError
from archforge.testing import check_block
from archforge_halo.lambda_layer import LambdaLayer


def batch_norm_eval(t, norm):
    """Eval-mode batch norm, spelled out: (t − running mean) / √(running var + ε) · γ + β per channel."""
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma, beta = norm.weight.detach().double(), norm.bias.detach().double()
    return (t - mean[:, None, None]) / torch.sqrt(var[:, None, None] + norm.eps) * gamma[:, None, None] + beta[:, None, None]


def naive_lambda_layer(x, module, *, heads, key_dim, v_dim, kernel, norm=True, stride=1):
    """y_p^m = (λ^c + λ^p_p)ᵀ q_p^m with λ^c = softmax_n(K)ᵀ V and λ^p_p = Σ_δ e_δ v_{p+δ}ᵀ (zero beyond the border)."""
    x = x.double()
    batch, _, height, width = x.shape
    weight = module.qkv.weight.detach().double()[:, :, 0, 0]
    embeddings = module.rel_pos.detach().double()[:, 0]  # (k, r, r): e_δ at [:, δ_row + r//2, δ_col + r//2]
    out = torch.zeros(batch, heads * v_dim, height, width, dtype=torch.float64)
    for b in range(batch):
        proj = torch.einsum("oc,chw->ohw", weight, x[b])
        if module.qkv.bias is not None:
            proj = proj + module.qkv.bias.detach().double()[:, None, None]
        q, keys, values = proj[: heads * key_dim], proj[heads * key_dim: heads * key_dim + key_dim], proj[heads * key_dim + key_dim:]
        if norm:
            q, values = batch_norm_eval(q, module.norm_q), batch_norm_eval(values, module.norm_v)
        # Keys normalised over all positions, one softmax per key channel.
        flat = keys.reshape(key_dim, -1)
        normalised = (torch.exp(flat - flat.max(dim=1, keepdim=True).values)).reshape(key_dim, height, width)
        normalised = normalised / normalised.sum(dim=(1, 2), keepdim=True)
        content = torch.zeros(key_dim, v_dim, dtype=torch.float64)
        for r in range(height):
            for c in range(width):
                content += torch.outer(normalised[:, r, c], values[:, r, c])
        half = kernel // 2
        for r in range(height):
            for c in range(width):
                position = torch.zeros(key_dim, v_dim, dtype=torch.float64)
                for dr in range(-half, half + 1):
                    for dc in range(-half, half + 1):
                        if 0 <= r + dr < height and 0 <= c + dc < width:
                            position += torch.outer(embeddings[:, dr + half, dc + half], values[:, r + dr, c + dc])
                lam = content + position
                for m in range(heads):
                    out[b, m * v_dim: (m + 1) * v_dim, r, c] = lam.T @ q[m * key_dim: (m + 1) * key_dim, r, c]
    if stride > 1:
        out = torch.nn.functional.avg_pool2d(out, stride)
    return out


def _build(shape, **args):
    block = LambdaLayer()
    parsed = block.Args.model_validate(args)
    block.infer(shape, parsed)
    module = block.build(shape, parsed, dtype=torch.float64).eval()
    with torch.no_grad():  # non-trivial normalisation statistics and affine parameters
        for norm in (module.norm_q, module.norm_v):
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.running_mean.normal_(0, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.normal_(1, 0.3)
                norm.bias.normal_(0, 0.3)
        module.rel_pos.normal_(0, 1.0)
        if module.qkv.bias is not None:
            module.qkv.bias.normal_(0, 0.5)
    return module, parsed


CASES = [
    dict(shape=(6, 5, 7), args=dict(channels=8, heads=2, key_dim=4, kernel=3)),  # non-square grid
    dict(shape=(4, 6, 6), args=dict(channels=6, heads=3, key_dim=5, kernel=5, qkv_bias=True)),  # scope close to the grid
    dict(shape=(4, 4, 4), args=dict(channels=4, heads=1, key_dim=3, kernel=7, norm="none")),  # scope larger than the grid
    dict(shape=(4, 6, 6), args=dict(channels=8, heads=4, key_dim=2, kernel=3, stride=2)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c["args"].items()))
def test_matches_the_float64_reference_of_the_formula(case):
    torch.manual_seed(0)
    shape = Shape.map(*case["shape"])
    module, args = _build(shape, **case["args"])
    x = torch.randn(2, *case["shape"], dtype=torch.float64)
    expected = naive_lambda_layer(x, module, heads=args.heads, key_dim=args.key_dim, v_dim=args.channels // args.heads,
                                  kernel=args.kernel, norm=args.norm == "batch", stride=args.stride)
    torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-10)


def test_position_lambdas_matter():
    # Guards the reference: without the position term the output must differ.
    torch.manual_seed(0)
    module, _ = _build(Shape.map(4, 5, 5), channels=4, heads=2, key_dim=3, kernel=3)
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    with_position = module(x)
    with torch.no_grad():
        module.rel_pos.zero_()
    assert not torch.allclose(module(x), with_position)


def closed_form_params(in_channels, channels, heads, key_dim, kernel, norm="batch", qkv_bias=False):
    v = channels // heads
    projections = heads * key_dim + key_dim + v
    norms = 2 * heads * key_dim + 2 * v if norm == "batch" else 0
    return in_channels * projections + (projections if qkv_bias else 0) + norms + key_dim * kernel * kernel


@pytest.mark.parametrize("args", [
    dict(channels=16, heads=4, key_dim=8, kernel=5),
    dict(channels=12, heads=3, key_dim=4, kernel=3, norm="none", qkv_bias=True, stride=2),
])
def test_check_block_contract_and_parameter_count(args):
    expected = closed_form_params(8, **{k: v for k, v in args.items() if k != "stride"})
    check_block(LambdaLayer, Shape.map(8, 8, 8), args, expected_params=expected)


def test_compiles_fullgraph_to_the_eager_result():
    check_block(LambdaLayer, Shape.map(8, 8, 8), dict(channels=8, heads=2, key_dim=4, kernel=3), dtypes=(torch.float32,), compile=True)


def test_builds_on_meta_without_allocating():
    block = LambdaLayer()
    module = block.build(Shape.map(16, 64, 64), block.Args(channels=32), device="meta")
    assert all(p.is_meta for p in module.parameters())
    assert module(torch.empty(3, 16, 64, 64, device="meta")).shape == (3, 32, 64, 64)


def test_shape_and_arg_errors():
    block = LambdaLayer()
    with pytest.raises(ShapeError, match="heads=3 must divide channels=8"):
        block.infer(Shape.map(4, 8, 8), block.Args(channels=8, heads=3))
    with pytest.raises(ValueError, match="kernel must be odd"):
        block.Args(channels=8, kernel=4)
    with pytest.raises(ValueError, match="extra"):
        block.Args(channels=8, scope=3)
