"""``local_attention``: stand-alone self-attention over ``k × k`` neighbourhoods (Ramachandran et al. 2019).

"Stand-Alone Self-Attention in Vision Models" replaces a spatial convolution by
attention restricted to the ``k × k`` neighbourhood ``N(i, j)`` of each pixel. Per head,
with ``q = W_Q x``, ``k = W_K x``, ``v = W_V x`` (bias-free 1×1 projections)::

    y_ij = Σ_{(a,b) ∈ N(i,j)} softmax_ab( s · q_ijᵀ k_ab + s · q_ijᵀ r_{a−i, b−j} ) v_ab

with the relative embedding ``r_{a−i, b−j} = [r^row_{a−i} ; r^col_{b−j}]``: a row-offset
embedding and a column-offset embedding, each of half the head's width, concatenated
(the paper's factorisation; each head has its own tables of ``k`` offsets, so there
are ``k · channels`` embedding parameters in all). ``s = (channels / heads)^−½``
(``scaled: true``, as in Transformer attention) or ``s = 1`` (``scaled: false``, the
paper's equation as written). At the borders the neighbourhood is zero-padded and
the padded positions are masked out of the softmax, so a corner pixel attends over
its ``(p+1)²`` real neighbours only (``p = (k−1)/2``). ``stride: s`` follows the
attention with an ``s × s`` average pool, the paper's spatial downsampling;
the output grid is ``⌊H/s⌋ × ⌊W/s⌋``.

Implementation (no ``k²``-fold unfold of the keys): the grid is cut into ``b × b``
query blocks; each block attends to its ``(b+2p) × (b+2p)`` halo window (HaloNet's
blocking, Vaswani et al. 2021) through two batched matrix products, with a mask that
keeps exactly each query's own ``k × k`` neighbourhood inside the image. Queries and
windows are gathered with precomputed index buffers. The relative term is separable,
``q·r = q_row·r^row_{a−i} + q_col·r^col_{b−j}``, so it costs ``2k`` dot products per
query; a second gather places them on the window, with masked positions reading a
``−∞`` slot, and they enter the logits as the additive term of one ``baddbmm``. ``b``
is chosen by a cost model (4 for ``k = 7``); the result does not depend on it.
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator
import torch
from torch import nn
from torch.nn import functional as F

from archforge.blocks._init import projection_fan_out_
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class LocalAttention(Block):
    """Multi-head attention over each pixel's ``k × k`` neighbourhood with factorised relative embeddings."""

    name = "local_attention"
    layout = "map"
    family = "attention"

    class Args(BlockArgs):
        channels: int = Field(gt=0, description="Output channels (= width of queries, keys and values).")
        kernel: int = Field(7, gt=0, description="Neighbourhood size k (odd).")
        heads: int = Field(8, gt=0)
        stride: int = Field(1, gt=0, description="Average-pool stride applied after the attention.")
        scaled: bool = Field(True, description="Scale logits by (channels/heads)^-1/2; false: the paper's unscaled logits.")

        @field_validator("kernel")
        @classmethod
        def _odd(cls, kernel: int) -> int:
            if kernel % 2 == 0:
                raise ValueError("kernel must be odd, so that each pixel is the centre of its neighbourhood")
            return kernel

    def infer(self, x: Shape, args: Args) -> Shape:
        if args.channels % args.heads:
            raise ShapeError(f"heads={args.heads} must divide channels={args.channels}")
        if (args.channels // args.heads) % 2:
            raise ShapeError(f"the head width channels/heads = {args.channels // args.heads} must be even "
                             "(it is split into row and column halves)")
        if args.stride > min(x.height, x.width):
            raise ShapeError(f"stride {args.stride} does not fit a {x.height}×{x.width} input")
        return Shape.map(args.channels, x.height // args.stride, x.width // args.stride)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return LocalSelfAttention2d(x.channels, args.channels, (x.height, x.width), args.kernel, args.heads, args.stride,
                                    args.scaled, device=device, dtype=dtype)

    def init_weights(self, module: "LocalSelfAttention2d", x: Shape, args: Args) -> None:
        # No released author code: the q, k, v projections (1×1 convolutions in the paper) are drawn as
        # the ResNet around them draws its convolutions, kaiming-normal fan-out, each of `channels`
        # outputs; the relative embeddings keep build's N(0, 1/d) (q·r on the scale of q·k).
        projection_fan_out_(module.qkv, args.channels)


def block_size(height: int, width: int, kernel: int) -> int:
    """The query-block side ``b`` minimising a cost model of the blocked attention.

    Per query, the logits cost ``(b + 2p)²`` (the halo window) and each block copies
    its window of keys and values once; padding the grid up to multiples of ``b``
    wastes the extra positions.
    """
    pad = kernel // 2

    def cost(b: int) -> float:
        padded = math.ceil(height / b) * b * math.ceil(width / b) * b
        return padded * (b + 2 * pad) ** 2 * (1 + 8 / (b * b))

    return min(range(1, max(height, width) + 1), key=cost)


class LocalSelfAttention2d(nn.Module):
    """SASA attention on a fixed ``H × W`` grid; parameters ``qkv.weight``, ``rel_rows``, ``rel_cols``."""

    def __init__(self, in_channels: int, channels: int, grid: tuple[int, int], kernel: int = 7, heads: int = 8,
                 stride: int = 1, scaled: bool = True, *, block: int | None = None, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.channels, self.heads, self.kernel, self.stride = channels, heads, kernel, stride
        self.head_dim = channels // heads
        self.scale = self.head_dim ** -0.5 if scaled else 1.0
        self.grid = tuple(grid)
        self.qkv = nn.Linear(in_channels, 3 * channels, bias=False, **factory)
        half = self.head_dim // 2
        # one embedding per offset −p … p, per head; std as for the keys' scale
        self.rel_rows = nn.Parameter(torch.randn(heads, kernel, half, **factory) * self.head_dim ** -0.5)
        self.rel_cols = nn.Parameter(torch.randn(heads, kernel, half, **factory) * self.head_dim ** -0.5)

        height, width = self.grid
        self.block = block or block_size(height, width, kernel)
        for name, table in _window_tables(height, width, self.block, kernel, device).items():
            self.register_buffer(name, table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        height, width = self.grid
        b, pad, heads, dh, k = self.block, self.kernel // 2, self.heads, self.head_dim, self.kernel
        nh, nw = self.row_index.shape[0], self.col_index.shape[0]
        window = b + 2 * pad

        qkv = self.qkv(x.permute(0, 2, 3, 1))  # (B, H, W, 3C)
        qkv = qkv.view(batch, height, width, 3, heads, dh).permute(0, 3, 4, 1, 2, 5)  # (B, 3, h, H, W, dh)
        extra_h, extra_w = nh * b - height, nw * b - width
        qkv = F.pad(qkv, (0, 0, pad, pad + extra_w, pad, pad + extra_h)).flatten(3, 4)  # (B, 3, h, S, dh) zero-padded grid
        # gathering rows of dh contiguous values puts queries in block order and keys/values in halo-window order
        q = qkv[:, 0].index_select(2, self.query_index) * self.scale  # (B, h, nblk·b², dh)
        key = qkv[:, 1].index_select(2, self.window_index)  # (B, h, nblk·U², dh)
        value = qkv[:, 2].index_select(2, self.window_index)  # (B, h, nblk·U², dh)

        # q·[r_row; r_col] for every row and column offset at once, then a −∞ slot for masked positions
        half = dh // 2
        zeros = self.rel_rows.new_zeros(heads, half, k)
        table = torch.cat([torch.cat([self.rel_rows.transpose(1, 2), zeros], 1),
                           torch.cat([zeros, self.rel_cols.transpose(1, 2)], 1)], 2)  # (h, dh, 2k)
        rel = F.pad(q @ table, (0, 1), value=float("-inf"))  # (B, h, nblk·b², 2k + 1)
        rel = rel.view(batch, heads, nh, nw, b, b, 2 * k + 1)
        shape = (batch, heads, nh, nw, b, b, window)
        rows = rel.gather(-1, self.row_index[None, None, :, None, :, None, :].expand(shape))  # (B, h, nh, nw, b, b, U)
        cols = rel.gather(-1, self.col_index[None, None, None, :, None, :, :].expand(shape))  # (B, h, nh, nw, b, b, U)
        bias = (rows[..., :, None] + cols[..., None, :]).view(-1, b * b, window * window)  # (B·h·nblk, b², U²)

        logits = torch.baddbmm(bias, q.view(-1, b * b, dh), key.view(-1, window * window, dh).transpose(1, 2))
        out = torch.bmm(logits.softmax(dim=-1), value.view(-1, window * window, dh))  # (B·h·nblk, b², dh)
        out = out.view(batch, heads, nh, nw, b, b, dh).permute(0, 1, 6, 2, 4, 3, 5)  # (B, h, dh, nh, b, nw, b)
        out = out.reshape(batch, self.channels, nh * b, nw * b)[:, :, :height, :width]  # (B, C, H, W)
        if self.stride > 1:
            out = F.avg_pool2d(out, self.stride)  # (B, C, H/s, W/s)
        return out

    def extra_repr(self) -> str:
        return f"grid={self.grid}, kernel={self.kernel}, heads={self.heads}, stride={self.stride}, block={self.block}"


def _window_tables(height: int, width: int, block: int, kernel: int, device=None) -> dict[str, torch.Tensor]:
    """Index tables of the blocked attention on the zero-padded grid (``(H', W')`` = the grid padded by ``p``
    on each side and up to multiples of ``b``), flattened row-major:

    * ``query_index`` ``(nblk·b²)``: the queries of each block, blocks and pixels in row-major order;
    * ``window_index`` ``(nblk·U²)``: the ``U × U`` halo window of each block, ``U = b + 2p``;
    * ``row_index`` ``(n_h, b, U)`` / ``col_index`` ``(n_w, b, U)``: for a query at block row ``i`` and a
      window row ``u``, the slot of ``q·r`` to add: ``u − i`` (the row offset + p), ``k + v − j`` for columns,
      or ``2k`` (−∞) when that key is outside the query's neighbourhood or outside the image. Queries in
      the padding past the image (cropped from the output) may also attend padding, so that no softmax row
      is empty.
    """
    pad = kernel // 2
    window = block + 2 * pad
    blocks_h, blocks_w = -(-height // block), -(-width // block)
    padded_w = blocks_w * block + 2 * pad
    arange = lambda n: torch.arange(n, device=device)  # noqa: E731

    def grid_index(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        # rows (n_h, r), cols (n_w, r) -> (n_h, n_w, r, r) flat positions, flattened
        return (rows[:, None, :, None] * padded_w + cols[None, :, None, :]).reshape(-1)

    starts_h, starts_w = arange(blocks_h)[:, None] * block, arange(blocks_w)[:, None] * block
    query_index = grid_index(starts_h + pad + arange(block), starts_w + pad + arange(block))
    window_index = grid_index(starts_h + arange(window), starts_w + arange(window))

    i = arange(block)[:, None]  # (b, 1) query position in its block
    u = arange(window)[None, :]  # (1, U) window position
    offset = u - i  # the neighbour's offset + p

    def slots(size: int, blocks: int, first: int) -> torch.Tensor:
        start = arange(blocks)[:, None, None] * block
        query, key = start + i, start - pad + u  # image coordinates, (n, b, 1) and (n, 1, U)
        near = (offset >= 0) & (offset < kernel)
        allowed = near & (((key >= 0) & (key < size)) | (query >= size))
        return torch.where(allowed, offset.clamp(0, kernel - 1) + first, 2 * kernel)

    return {"query_index": query_index, "window_index": window_index,
            "row_index": slots(height, blocks_h, 0), "col_index": slots(width, blocks_w, kernel)}
