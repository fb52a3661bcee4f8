"""``gpsa``: gated positional self-attention, the attention layer of ConViT.

d'Ascoli, Touvron, Leavitt, Morcos, Biroli & Sagun 2021, "ConViT: Improving Vision
Transformers with Soft Convolutional Inductive Biases". For tokens ``x`` of shape
``(N, C)`` on an ``H × W`` grid, ``h`` heads of size ``d = C / h``, and per head::

    A_content = softmax(Q Kᵀ / √d)                      [Q | K] = x W_qk
    A_pos     = softmax_j(v_posᵀ r_ij + b_pos)          r_ij = (Δx, Δy, Δx² + Δy²)
    A         = (1 − σ(λ)) A_content + σ(λ) A_pos,      A_ij ← A_ij / Σ_j A_ij
    y         = concat_heads(A x W_v) W_proj + b_proj

where ``(Δx, Δy)`` is the position of key ``j`` minus that of query ``i`` (column and
row on the grid, any ``H × W``) and ``λ`` is a learnt per-head gate, initialised to 1.

Because every row of both softmaxes sums to 1, every row of the mix sums to
``(1 − σ) + σ = 1``: the renormalisation is the identity *as a function* (it changes
neither values nor derivatives), and, attention being linear in the values,

    y_head = (1 − σ(λ)) · SDPA(Q, K, V) + σ(λ) · (A_pos V)

exactly (the two orders of evaluation differ by round-off only). The module computes
it that way: the content path through ``scaled_dot_product_attention`` (never a
``B × h × N × N`` matrix), and the positional attention, which depends only on the
grid, once per call as ``(h, N, N)`` shared by the whole batch. Only attention dropout
during training breaks the identity (a single mask multiplies the mixed matrix), and
then the explicit formula is used.

The locality initialisation (ConViT §3) makes the value projection the identity and
centres the positional attention of head ``p = a + k·b`` on the offset
``(Δy, Δx) = (a − c, b − c)`` of a ``k × k`` grid of offsets (``k = ⌊√h⌋``, ``c`` its
centre): ``v_pos = α (2Δx_p, 2Δy_p, −1)``, whence ``v_posᵀ r = −α ‖Δ − Δ_p‖² + const``,
with ``α`` the ``locality_strength``. :func:`gpsa_from_conv` sharpens this to turn a
GPSA layer into a ``K × K`` convolution, up to a leak of order ``e^{−α}`` (Cordonnier,
Loukas & Jaggi 2020, Theorem 1). The parameters are those of timm's ``GPSA`` (same
names and shapes).
"""

from __future__ import annotations

import math

from pydantic import Field
import torch
from torch import nn
import torch.nn.functional as F

from archforge.blocks._init import transformer_linear_
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class GPSA(Block):
    """ConViT's gated positional self-attention over the tokens of a grid (no class token)."""

    name = "gpsa"
    layout = "tokens"
    family = "attention"

    class Args(BlockArgs):
        heads: int = Field(gt=0, description="Attention heads; must divide the channels. A square number gives a full k×k locality init.")
        qkv_bias: bool = Field(False, description="Biases on the query/key and value projections.")
        locality_strength: float = Field(1.0, ge=0, description="α of the locality init: how sharply each head starts focused on its offset.")
        use_local_init: bool = Field(True, description="Start local (identity values, heads on a √h×√h grid of offsets); else PyTorch's default init.")
        attn_drop: float = Field(0.0, ge=0, lt=1, description="Dropout on the mixed attention matrix.")
        proj_drop: float = Field(0.0, ge=0, lt=1, description="Dropout on the output.")

    def infer(self, x: Shape, args: Args) -> Shape:
        if x.extra_tokens:
            raise ShapeError(f"gpsa needs grid tokens only, but the input has {x.extra_tokens} extra (class) token(s); apply it before adding them")
        if x.channels % args.heads:
            raise ShapeError(f"heads={args.heads} must divide the {x.channels} channels")
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return GatedPositionalSelfAttention(
            x.channels, args.heads, (x.height, x.width), qkv_bias=args.qkv_bias, locality_strength=args.locality_strength,
            use_local_init=args.use_local_init, attn_drop=args.attn_drop, proj_drop=args.proj_drop, device=device, dtype=dtype,
        )

    def init_weights(self, module: "GatedPositionalSelfAttention", x: Shape, args: Args) -> None:
        # timm's ConViT: every linear truncated normal 0.02 with zero bias, then local_init() again on
        # top (identity values, the positional pattern × strength); the gates stay 1
        for linear in (module.qk, module.v, module.proj, module.pos_proj):
            transformer_linear_(linear)
        if args.use_local_init:
            module.local_init()


def relative_indices(height: int, width: int, *, device=None, dtype=None) -> torch.Tensor:
    """``r_ij = (Δx, Δy, Δx² + Δy²)`` for row-major tokens of an ``height × width`` grid: ``(N, N, 3)``, Δ = key − query."""
    rows = torch.arange(height, device=device).repeat_interleave(width)  # (N,)
    cols = torch.arange(width, device=device).repeat(height)  # (N,)
    dy = rows[None, :] - rows[:, None]  # (N, N)
    dx = cols[None, :] - cols[:, None]  # (N, N)
    return torch.stack((dx, dy, dx * dx + dy * dy), dim=-1).to(dtype or torch.get_default_dtype())


def head_offsets(kernel: int) -> torch.Tensor:
    """The ``(Δy, Δx)`` offset of each of ``kernel²`` heads, in ConViT's order ``p = a + kernel·b`` → ``(a − c, b − c)``.

    ``c`` is the centre of the kernel: an integer for odd kernels, a half-integer for even
    ones (a head of a 2×2 grid is then centred between four positions).
    """
    center = (kernel - 1) / 2
    p = torch.arange(kernel * kernel)
    return torch.stack(((p % kernel) - center, (p // kernel) - center), dim=-1).to(torch.float64)  # (k², 2)


def _local_pos_weights(kernel: int) -> torch.Tensor:
    """``pos_proj`` rows ``(2Δx_p, 2Δy_p, −1)``: logits ``−‖Δ − Δ_p‖² + ‖Δ_p‖²``, peaked at each head's offset. ``(k², 3)``."""
    offsets = head_offsets(kernel)  # (k², 2): (Δy, Δx)
    return torch.cat((2 * offsets[:, 1:], 2 * offsets[:, :1], -torch.ones(kernel * kernel, 1, dtype=torch.float64)), dim=-1)


class GatedPositionalSelfAttention(nn.Module):
    """GPSA on ``(B, N, C)`` tokens of a fixed ``grid``; parameters named as in timm's ``GPSA``."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], *, qkv_bias: bool = False, locality_strength: float = 1.0,
                 use_local_init: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        factory = {"device": device, "dtype": dtype}
        self.dim, self.heads, self.grid = dim, heads, tuple(grid)
        self.locality_strength = locality_strength
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias, **factory)
        self.v = nn.Linear(dim, dim, bias=qkv_bias, **factory)
        self.proj = nn.Linear(dim, dim, **factory)
        self.pos_proj = nn.Linear(3, heads, **factory)
        self.gating_param = nn.Parameter(torch.ones(heads, **factory))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("rel_indices", relative_indices(*grid, **factory), persistent=False)  # (N, N, 3)
        if use_local_init:
            self.local_init()

    @torch.no_grad()
    def local_init(self) -> None:
        """ConViT's locality init (as timm's ``GPSA.local_init``): identity values, heads on a ⌊√h⌋² grid of offsets.

        Heads beyond the first ``⌊√h⌋²`` keep their positional weights (scaled by the
        strength, as in timm). The value bias, if any, is zeroed so the value map is the identity.
        """
        self.v.weight.copy_(torch.eye(self.dim, device=self.v.weight.device, dtype=self.v.weight.dtype))
        if self.v.bias is not None:
            self.v.bias.zero_()
        kernel = math.isqrt(self.heads)
        self.pos_proj.weight[: kernel * kernel] = _local_pos_weights(kernel).to(self.pos_proj.weight)
        self.pos_proj.weight.mul_(self.locality_strength)

    def positional_attention(self) -> torch.Tensor:
        """``softmax_j(v_posᵀ r_ij + b_pos)`` for every head: ``(h, N, N)``, the same for every sample."""
        return self.pos_proj(self.rel_indices).permute(2, 0, 1).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        nh, hs = self.heads, C // self.heads
        q, k = self.qk(x).view(B, N, 2, nh, hs).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, N, hs) each
        v = self.v(x).view(B, N, nh, hs)
        a_pos = self.positional_attention()  # (nh, N, N)
        gate = torch.sigmoid(self.gating_param).view(nh, 1, 1)
        if self.training and self.attn_drop.p > 0:
            y = self._explicit(q, k, v.transpose(1, 2), a_pos, gate)  # (B, nh, N, hs)
        else:
            content = F.scaled_dot_product_attention(q, k, v.transpose(1, 2))  # (B, nh, N, hs)
            # one (nh, N, N) @ (nh, N, B·hs) product instead of broadcasting A_pos over the batch
            positional = torch.bmm(a_pos, v.permute(2, 1, 0, 3).reshape(nh, N, B * hs))  # (nh, N, B·hs)
            positional = positional.view(nh, N, B, hs).permute(2, 0, 1, 3)  # (B, nh, N, hs)
            y = (1 - gate) * content + gate * positional
        y = y.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(y))

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a_pos: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        # dropout masks the mixed matrix as a whole, which the factored form cannot reproduce
        a_content = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)  # (B, nh, N, N)
        attn = (1 - gate) * a_content + gate * a_pos
        attn = attn / attn.sum(dim=-1, keepdim=True)
        return self.attn_drop(attn) @ v  # (B, nh, N, hs)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, grid={self.grid[0]}x{self.grid[1]}"


@torch.no_grad()
def gpsa_from_conv(module: GatedPositionalSelfAttention, conv_weight: torch.Tensor, conv_bias: torch.Tensor | None = None, *,
                   locality_strength: float = 30.0, gate_logit: float = 30.0) -> GatedPositionalSelfAttention:
    """Set ``module``'s parameters so that it computes a ``K × K`` convolution (Cordonnier et al. 2020, Theorem 1).

    ``conv_weight`` is ``(C_out, C_in, K, K)`` with odd ``K``, as for
    ``F.conv2d(x, conv_weight, conv_bias, padding=K // 2)`` on the token map. The module
    needs ``K²`` heads, ``C_in ≤ dim`` (input channels beyond ``C_in`` are ignored) and
    ``C_out ≤ dim / heads`` (each head's value is one kernel tap ``W[:, :, a, b] x``, so a
    head can carry at most its head size of output channels); output channels beyond
    ``C_out`` are zero. The construction:

    * gate fully positional: ``λ = gate_logit`` (``1 − σ(30) ≈ 1e-13``); query/key zeroed;
    * head ``p`` (offset ``(Δy, Δx)`` of :func:`head_offsets`) scores keys by
      ``−α ‖Δ − Δ_p‖²`` with ``α = locality_strength``: attention ``≈ 1`` on the key at
      its offset, ``≲ 4e^{−α}`` elsewhere;
    * value rows of head ``p`` = the conv tap ``W[:, :, c + Δy_p, c + Δx_p]``; the output
      projection sums the heads' first ``C_out`` channels and adds ``conv_bias``.

    Queries whose offset falls outside the grid attend to the nearest positions instead
    of zero padding; pad the map with ``K // 2`` zeros (and crop) to match ``padding=K // 2``
    everywhere. Returns ``module``.
    """
    c_out, c_in, kernel, kernel_w = conv_weight.shape
    nh, dim = module.heads, module.dim
    hs = dim // nh
    if kernel != kernel_w or kernel % 2 == 0:
        raise ValueError(f"gpsa_from_conv needs a square kernel of odd size, got {kernel}×{kernel_w}")
    if nh != kernel * kernel:
        raise ValueError(f"a {kernel}×{kernel} convolution needs {kernel * kernel} heads, the module has {nh}")
    if c_in > dim or c_out > hs:
        raise ValueError(f"the module (dim {dim}, head size {hs}) holds at most {dim} input and {hs} output channels, "
                         f"the convolution has {c_in} and {c_out}")
    factory = {"device": module.v.weight.device, "dtype": module.v.weight.dtype}
    for linear in (module.qk, module.v, module.proj, module.pos_proj):
        linear.weight.zero_()
        if linear.bias is not None:
            linear.bias.zero_()
    # head p = a + K·b is the tap W[:, :, a, b], i.e. offset (Δy, Δx) = (a − c, b − c)
    taps = conv_weight.permute(3, 2, 0, 1).reshape(nh, c_out, c_in)  # (nh, C_out, C_in)
    module.v.weight.view(nh, hs, dim)[:, :c_out, :c_in] = taps.to(**factory)
    module.proj.weight.view(dim, nh, hs)[:c_out, :, :c_out] = torch.eye(c_out, **factory)[:, None, :]
    if conv_bias is not None:
        module.proj.bias[:c_out] = conv_bias.to(**factory)
    module.pos_proj.weight.copy_((locality_strength * _local_pos_weights(kernel)).to(**factory))
    module.gating_param.fill_(gate_logit)
    return module
