"""Tests of the ``gpsa`` block: ConViT's gated positional self-attention (d'Ascoli et al. 2021)."""

from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import archforge
from archforge.blocks.gpsa import GPSA, GatedPositionalSelfAttention, gpsa_from_conv
from archforge.registry import Shape, ShapeError
from archforge.testing import check_block, registry_with


def rel_encodings(height: int, width: int) -> torch.Tensor:
    """r_ij = (Δx, Δy, Δx² + Δy²), Δ = position of key j − position of query i, row-major tokens."""
    positions = [(row, col) for row in range(height) for col in range(width)]
    rows = []
    for qi, qj in positions:
        rows.append([[kj - qj, ki - qi, (kj - qj) ** 2 + (ki - qi) ** 2] for ki, kj in positions])
    return torch.tensor(rows, dtype=torch.float64)  # (N, N, 3)


def reference_gpsa(m: GatedPositionalSelfAttention, x: torch.Tensor, grid: tuple[int, int], attn_drop: float = 0.0) -> torch.Tensor:
    """The formula written out: explicit (B, h, N, N) attentions, gate mix, row renormalisation."""
    B, N, C = x.shape
    h = m.heads
    d = C // h
    qk = x @ m.qk.weight.T + (m.qk.bias if m.qk.bias is not None else 0)
    v = x @ m.v.weight.T + (m.v.bias if m.v.bias is not None else 0)
    q = qk[..., :C].reshape(B, N, h, d).transpose(1, 2)  # (B, h, N, d)
    k = qk[..., C:].reshape(B, N, h, d).transpose(1, 2)
    v = v.reshape(B, N, h, d).transpose(1, 2)
    content = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # (B, h, N, N)
    r = rel_encodings(*grid).to(x)
    pos_logits = torch.einsum("ijc,hc->hij", r, m.pos_proj.weight) + m.pos_proj.bias[:, None, None]
    positional = torch.softmax(pos_logits, dim=-1)  # (h, N, N)
    g = torch.sigmoid(m.gating_param)[:, None, None]
    attn = (1 - g) * content + g * positional
    attn = attn / attn.sum(dim=-1, keepdim=True)
    if attn_drop:
        attn = F.dropout(attn, attn_drop, training=True)
    y = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return y @ m.proj.weight.T + m.proj.bias


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def make(dim: int, heads: int, grid: tuple[int, int], dtype=torch.float64, **args) -> GatedPositionalSelfAttention:
    block = GPSA()
    return block.build(Shape.tokens(dim, grid), block.Args(heads=heads, **args), dtype=dtype)


def randomise(m: GatedPositionalSelfAttention) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
        m.gating_param.normal_(0, 2)


def assert_matches_reference(m: GatedPositionalSelfAttention, grid: tuple[int, int], batch: int = 2, tol: float = 1e-9) -> None:
    N = grid[0] * grid[1]
    x = torch.randn(batch, N, m.dim, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(batch, N, m.dim, dtype=torch.float64)
    leaves = [x, *m.parameters()]
    ours = m(x)
    ref = reference_gpsa(m, x, grid)
    assert rel_err(ours, ref) < tol
    grads = torch.autograd.grad(ours, leaves, cotangent)
    ref_grads = torch.autograd.grad(ref, leaves, cotangent)
    names = ["x", *(n for n, _ in m.named_parameters())]
    for name, g, rg in zip(names, grads, ref_grads):
        # the pos_proj bias shifts whole softmax rows: its gradient is exactly 0, only round-off remains
        assert (g - rg).norm() <= tol * rg.norm() + 1e-12, name
    assert grads[names.index("pos_proj.bias")].abs().max() < 1e-12


# 1. The block computes the formula -----------------------------------------------------------------------

@pytest.mark.parametrize("grid", [(3, 5), (4, 4)])
@pytest.mark.parametrize("init", ["random", "local"])
def test_matches_explicit_formula_float64(grid, init):
    torch.manual_seed(0)
    if init == "random":
        m = make(12, 3, grid, qkv_bias=True, use_local_init=False)
        randomise(m)
    else:
        m = make(16, 4, grid, locality_strength=2.0)
    assert_matches_reference(m, grid)


@settings(max_examples=12, deadline=None)
@given(height=st.integers(1, 4), width=st.integers(1, 5), heads=st.integers(1, 3), head_size=st.sampled_from([1, 2, 4]),
       batch=st.integers(1, 3), qkv_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_explicit_formula_property(height, width, heads, head_size, batch, qkv_bias, seed):
    torch.manual_seed(seed)
    m = make(heads * head_size, heads, (height, width), qkv_bias=qkv_bias, use_local_init=False)
    randomise(m)
    assert_matches_reference(m, (height, width), batch=batch)


def test_matches_explicit_formula_float32():
    torch.manual_seed(1)
    m = make(16, 4, (3, 5), dtype=torch.float32)
    x = torch.randn(3, 15, 16)
    m64 = make(16, 4, (3, 5))
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    assert rel_err(m(x).double(), reference_gpsa(m64, x.double(), (3, 5))) < 1e-5


def test_attention_dropout_uses_the_mixed_matrix():
    torch.manual_seed(0)
    m = make(8, 2, (3, 4), attn_drop=0.3)
    randomise(m)
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    m.train()
    torch.manual_seed(5)
    ours = m(x)
    torch.manual_seed(5)
    ref = reference_gpsa(m, x, (3, 4), attn_drop=0.3)
    assert rel_err(ours, ref) < 1e-9
    assert rel_err(ours, reference_gpsa(m, x, (3, 4))) > 1e-3  # the dropout did act
    m.eval()
    assert rel_err(m(x), reference_gpsa(m, x, (3, 4))) < 1e-9


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_batch_by_heads_attention_matrix(dtype):
    B, h, grid, C = 8, 4, (6, 6), 32
    N = grid[0] * grid[1]
    m = make(C, h, grid, dtype=dtype, attn_drop=0.1)
    x = torch.randn(B, N, C, dtype=dtype, requires_grad=True)
    for training in (False, True):
        m.train(training)
        with _LargestTensor() as seen:
            m(x).sum().backward()
        # the dropout fallback does build it, which shows the probe sees such tensors
        assert (seen.largest >= B * h * N * N) == training


# 2. Locality initialisation ------------------------------------------------------------------------------

def positional_logits(m: GatedPositionalSelfAttention, grid: tuple[int, int], query: int) -> torch.Tensor:
    r = rel_encodings(*grid)[query]  # (N, 3)
    return (r @ m.pos_proj.weight.detach().double().T + m.pos_proj.bias.detach().double()).T  # (h, N)


@pytest.mark.parametrize("heads, strength", [(9, 1.0), (9, 3.0), (4, 1.0), (16, 0.5)])
def test_local_init_centres_heads_on_offsets(heads, strength):
    torch.manual_seed(0)
    grid = (7, 9)
    m = make(2 * heads, heads, grid, locality_strength=strength, qkv_bias=True)
    x = torch.randn(2, 63, 2 * heads, dtype=torch.float64)
    assert torch.equal(m.v(x), x)  # the value projection is the identity
    assert torch.equal(m.gating_param, torch.ones(heads, dtype=torch.float64))
    k = math.isqrt(heads)
    c = (k - 1) / 2
    query = 3 * 9 + 4  # (row 3, col 4), in the middle
    logits = positional_logits(m, grid, query)
    keys = torch.tensor([(row - 3, col - 4) for row in range(7) for col in range(9)], dtype=torch.float64)  # (N, 2): (Δy, Δx)
    for p in range(heads):
        dy, dx = p % k - c, p // k - c  # ConViT's order: head a + k·b at offset (a − c, b − c)
        sq_dist = (keys[:, 0] - dy) ** 2 + (keys[:, 1] - dx) ** 2
        # logits are −α‖Δ − Δ_p‖² up to a per-head constant: peak at Δ_p, decaying with α
        centred = logits[p] + strength * sq_dist
        torch.testing.assert_close(centred, centred[0].expand_as(centred), rtol=0, atol=1e-12)
        if k % 2:
            assert keys[logits[p].argmax()].tolist() == [dy, dx]


def test_local_init_off_gives_default_init():
    torch.manual_seed(0)
    m = make(8, 4, (3, 3), use_local_init=False)
    assert not torch.equal(m.v.weight, torch.eye(8, dtype=torch.float64))


# 3. A GPSA layer expresses a convolution (Cordonnier et al. 2020) ----------------------------------------

def tokens(x_map: torch.Tensor) -> torch.Tensor:
    return x_map.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)


def to_map(x_tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return x_tokens.transpose(1, 2).reshape(x_tokens.shape[0], -1, height, width)


def test_gpsa_from_conv_reproduces_conv_in_the_interior():
    torch.manual_seed(0)
    dim, heads, H, W = 18, 9, 6, 7  # head size 2: up to 2 output channels
    weight, bias = torch.randn(2, dim, 3, 3), torch.randn(2)
    m = gpsa_from_conv(make(dim, heads, (H, W), dtype=torch.float32), weight, bias)
    x = torch.randn(2, dim, H, W)
    y = to_map(m(tokens(x)), H, W)
    expected = F.conv2d(x, weight, bias, padding=1)
    assert rel_err(y[:, :2, 1:-1, 1:-1], expected[:, :, 1:-1, 1:-1]) < 1e-4
    assert torch.all(y[:, 2:] == 0)


def test_gpsa_from_conv_on_a_zero_padded_grid_is_conv_with_padding():
    torch.manual_seed(1)
    dim, heads, H, W, c = 27, 9, 5, 4, 3  # head size 3: a 3 → 3 convolution
    weight, bias = torch.randn(c, c, 3, 3), torch.randn(c)
    m = gpsa_from_conv(make(dim, heads, (H + 2, W + 2), dtype=torch.float32), weight, bias)
    x = torch.randn(2, c, H, W)
    # channels beyond the convolution's input are ignored, so they can hold anything
    padded = F.pad(torch.cat([x, torch.randn(2, dim - c, H, W)], dim=1), (1, 1, 1, 1))
    padded[:, c:] = torch.randn_like(padded[:, c:])  # non-zero border too in those channels
    y = to_map(m(tokens(padded)), H + 2, W + 2)[:, :c, 1:-1, 1:-1]
    assert rel_err(y, F.conv2d(x, weight, bias, padding=1)) < 1e-4


def test_gpsa_from_conv_rejects_what_it_cannot_express():
    m = make(18, 9, (4, 4))
    with pytest.raises(ValueError, match="output channels"):
        gpsa_from_conv(m, torch.randn(3, 18, 3, 3))  # head size 2 < 3
    with pytest.raises(ValueError, match="heads"):
        gpsa_from_conv(make(16, 4, (4, 4)), torch.randn(2, 16, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        gpsa_from_conv(make(16, 4, (4, 4)), torch.randn(2, 16, 2, 2))


# 4. Block contract ---------------------------------------------------------------------------------------

def test_check_block_default_compiled():
    d, h = 16, 4
    expected = 2 * d * d + d * d + (d * d + d) + (3 * h + h) + h  # qk, v, proj, pos_proj, gate
    check_block(GPSA, Shape.tokens(d, (3, 5)), {"heads": h}, expected_params=expected, compile=True)


def test_check_block_with_biases_and_dropout():
    d, h = 12, 3
    expected = (2 * d * d + 2 * d) + (d * d + d) + (d * d + d) + (3 * h + h) + h
    check_block(GPSA, Shape.tokens(d, (4, 4)), {"heads": h, "qkv_bias": True, "attn_drop": 0.1, "proj_drop": 0.1,
                                                "use_local_init": False}, expected_params=expected)


def test_state_dict_has_timm_names():
    m = make(16, 4, (4, 4))
    assert set(m.state_dict()) == {"qk.weight", "v.weight", "proj.weight", "proj.bias", "pos_proj.weight", "pos_proj.bias",
                                   "gating_param"}


def test_shape_errors():
    block = GPSA()
    with pytest.raises(ShapeError, match="class"):
        block.infer(Shape.tokens(16, (4, 4), extra_tokens=1), block.Args(heads=4))
    with pytest.raises(ShapeError, match="divide"):
        block.infer(Shape.tokens(10, (4, 4)), block.Args(heads=4))


# 5. Through a spec ---------------------------------------------------------------------------------------

SPEC = """
archforge: 1
name: gpsa_tiny
input: {shape: [3, 24, 40]}
nodes:
  - {id: embed, block: patch_embed, args: {patch: 8, dim: 32}}
  - {id: attn, block: gpsa, args: {heads: 4, locality_strength: 2.0}}
  - {id: head, block: classifier, args: {classes: 10}}
"""


def test_spec_validates_builds_and_counts():
    registry = registry_with(GPSA)
    spec = archforge.parse_spec(SPEC)
    archforge.validate(spec, registry=registry)
    model = archforge.build(spec, registry=registry)
    assert model(torch.randn(2, 3, 24, 40)).shape == (2, 10)

    summary = archforge.summarize(spec, registry=registry)
    (row,) = [r for r in summary.nodes if r.block == "gpsa"]
    N, C, h = 3 * 5, 32, 4  # 24×40 image, 8×8 patches
    d = C // h
    flops = (
        2 * N * C * (2 * C)      # qk projection
        + 2 * N * C * C          # v projection
        + 2 * h * N * N * d      # content Q Kᵀ
        + 2 * h * N * N * d      # content A V
        + 2 * N * N * 3 * h      # positional logits, once for the batch
        + 2 * h * N * N * d      # positional A_pos V
        + 2 * N * C * C          # output projection
    )
    assert row.flops == flops
    assert row.params == 2 * C * C + C * C + (C * C + C) + (3 * h + h) + h
    assert row.shape == [N, C]
