"""``halo_attention``: blocked local self-attention with halos (HaloNet; Vaswani et al. 2021).

"Scaling Local Self-Attention for Parameter Efficient Visual Backbones" (Vaswani,
Ramachandran, Srinivas, Parmar, Hechtman, Shlens, CVPR 2021) makes local self-attention
fast by sharing neighbourhoods: the ``H × W`` map is cut into non-overlapping ``b × b``
*query blocks*, and every query of a block attends to the same ``(b + 2h) × (b + 2h)``
*window*, the block grown by a *halo* of ``h`` pixels on each side. With bias-free 1×1
projections ``q = W_Q x``, ``k = W_K x``, ``v = W_V x`` split into ``M`` heads, the output
of head ``m`` at a pixel ``p`` of block ``β`` is::

    y_p = Σ_{a ∈ window(β)} softmax_a( s · q_pᵀ (k_a + r^H_{a_row − p_row} + r^W_{a_col − p_col}) ) v_a

* ``s = d_qk^−½`` scales content and position logits alike (it is applied to ``q``);
* the relative embedding is factorised into a height part and a width part (the
  "split into height and width" of Bello et al. 2019's attention-augmented convolution,
  which HaloNet uses); both tables have one ``d_qk``-vector per reachable offset,
  ``−(b − 1 + h) … b − 1 + h``, i.e. ``2(b + h) − 1`` rows each, shared by the heads;
* windows reaching past the border of the image are zero-padded; with
  ``mask_padding: true`` (the default) padded positions are removed from the softmax,
  with ``false`` they take part as zero keys and values (timm's behaviour);
* ``stride: s`` follows the attention with an ``s × s`` average pool, the output grid
  being ``⌊H/s⌋ × ⌊W/s⌋`` (timm's ``avg_down``).

``b`` must divide ``H`` and ``W``. Queries and keys have ``qk_dim`` channels per head
(default ``channels / heads``), values ``channels / heads``; the output has ``channels``.

Parameters: ``qkv.weight`` ``(2·M·d_qk + channels, C_in, 1, 1)`` (``qkv.bias`` with
``qkv_bias``), ``rel_height`` and ``rel_width`` ``(2(b + h) − 1, d_qk)``.

Implementation: the keys and values of all windows come from one ``unfold`` of the
padded map; the relative logits are gathered per (query row, window row) and (query
column, window column) and added, with the padding mask as ``−∞``, into one additive
bias for :func:`torch.nn.functional.scaled_dot_product_attention` over
``(batch · heads · blocks)`` independent problems of ``b²`` queries and ``(b + 2h)²`` keys.
No Python loop runs over positions, blocks or heads.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class HaloAttention(Block):
    """Multi-head self-attention of ``b × b`` query blocks over their ``(b + 2h)²`` halo windows (HaloNet)."""

    name = "halo_attention"
    layout = "map"
    family = "attention"

    class Args(BlockArgs):
        channels: int = Field(gt=0, description="Output channels (heads × value width).")
        heads: int = Field(8, gt=0, description="Attention heads; must divide channels.")
        block: int = Field(8, gt=0, description="Query block side b; must divide the input height and width.")
        halo: int = Field(3, ge=0, description="Halo h: the window is the block grown by h on each side.")
        qk_dim: int | None = Field(None, gt=0, description="Width of each head's queries and keys; default channels/heads.")
        stride: int = Field(1, gt=0, description="Average-pool stride applied after the attention.")
        qkv_bias: bool = Field(False, description="Add a bias to the q, k, v projections.")
        mask_padding: bool = Field(True, description="Keep zero-padded positions beyond the border out of the softmax.")

    def infer(self, x: Shape, args: Args) -> Shape:
        if args.channels % args.heads:
            raise ShapeError(f"heads={args.heads} must divide channels={args.channels}")
        if x.height % args.block or x.width % args.block:
            raise ShapeError(f"block size {args.block} must divide the input height and width ({x.height}×{x.width})")
        if args.stride > min(x.height, x.width):
            raise ShapeError(f"stride {args.stride} does not fit a {x.height}×{x.width} input")
        return Shape.map(args.channels, x.height // args.stride, x.width // args.stride)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return HaloSelfAttention2d(
            x.channels, args.channels, (x.height, x.width), heads=args.heads, block=args.block, halo=args.halo,
            qk_dim=args.qk_dim, stride=args.stride, qkv_bias=args.qkv_bias, mask_padding=args.mask_padding,
            device=device, dtype=dtype,
        )


class HaloSelfAttention2d(nn.Module):
    """HaloNet attention on a fixed ``H × W`` grid; parameters ``qkv.*``, ``rel_height``, ``rel_width``."""

    def __init__(self, in_channels: int, channels: int, grid: tuple[int, int], *, heads: int = 8, block: int = 8,
                 halo: int = 3, qk_dim: int | None = None, stride: int = 1, qkv_bias: bool = False,
                 mask_padding: bool = True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.grid = (int(grid[0]), int(grid[1]))
        self.channels, self.heads, self.block, self.halo, self.stride = channels, heads, block, halo, stride
        self.v_dim = channels // heads
        self.qk_dim = qk_dim or self.v_dim
        self.mask_padding = mask_padding
        self.scale = self.qk_dim ** -0.5
        self.qkv = nn.Conv2d(in_channels, 2 * heads * self.qk_dim + channels, 1, bias=qkv_bias, **factory)
        offsets = 2 * (block + halo) - 1  # row offsets a_row − p_row from −(b−1+h) to b−1+h
        self.rel_height = nn.Parameter(torch.empty(offsets, self.qk_dim, **factory))
        self.rel_width = nn.Parameter(torch.empty(offsets, self.qk_dim, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.qkv.weight, std=self.qkv.weight.shape[1] ** -0.5)  # fan-in
        if self.qkv.bias is not None:
            nn.init.zeros_(self.qkv.bias)
        nn.init.trunc_normal_(self.rel_height, std=self.scale)
        nn.init.trunc_normal_(self.rel_width, std=self.scale)

    def _relative_index(self, device: torch.device) -> torch.Tensor:
        """``(b, b + 2h)``: the table row of the offset between query row ``i`` and window row ``u`` of a block.

        Query ``i`` sits at ``βb + i``, window position ``u`` at ``βb − h + u``: the offset is
        ``u − h − i``, stored at row ``offset + b − 1 + h = u − i + b − 1``.
        """
        b, window = self.block, self.block + 2 * self.halo
        return torch.arange(window, device=device)[None, :] - torch.arange(b, device=device)[:, None] + (b - 1)

    def _inside(self, size: int, device: torch.device) -> torch.Tensor:
        """``(size / b, b + 2h)``: whether window position ``u`` of block ``β`` lies inside ``0 … size − 1``."""
        b, window = self.block, self.block + 2 * self.halo
        position = torch.arange(size // b, device=device)[:, None] * b - self.halo + torch.arange(window, device=device)[None, :]
        return (position >= 0) & (position < size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        height, width = self.grid
        b, h, heads, dk, dv = self.block, self.halo, self.heads, self.qk_dim, self.v_dim
        nh, nw, window = height // b, width // b, b + 2 * h

        q, kv = self.qkv(x).split([heads * dk, heads * (dk + dv)], dim=1)  # (B, M·dk, H, W), (B, M·(dk+dv), H, W)
        q = q.reshape(batch, heads, dk, nh, b, nw, b).permute(0, 1, 3, 5, 4, 6, 2) * self.scale  # (B, M, nh, nw, b, b, dk)

        # Relative logits: for query (i, j) and window position (u, v), q·r^H[u − i] + q·r^W[v − j].
        index = self._relative_index(x.device)  # (b, U)
        rows = torch.einsum("bmxyijd,iud->bmxyiju", q, self.rel_height[index].to(q.dtype))  # (B, M, nh, nw, b, b, U)
        cols = torch.einsum("bmxyijd,jvd->bmxyijv", q, self.rel_width[index].to(q.dtype))  # (B, M, nh, nw, b, b, U)
        if self.mask_padding and h > 0:
            rows = rows.masked_fill(~self._inside(height, x.device)[:, None, None, None, :], float("-inf"))
            cols = cols.masked_fill(~self._inside(width, x.device)[None, :, None, None, :], float("-inf"))
        bias = (rows[..., :, None] + cols[..., None, :]).reshape(batch, heads * nh * nw, b * b, window * window)

        # Keys and values of every window: one unfold of the zero-padded map.
        kv = F.pad(kv, (h, h, h, h)).unfold(2, window, b).unfold(3, window, b)  # (B, M·(dk+dv), nh, nw, U, U)
        k, v = kv.split([heads * dk, heads * dv], dim=1)
        k = k.reshape(batch, heads, dk, nh, nw, window * window).permute(0, 1, 3, 4, 5, 2).reshape(batch, heads * nh * nw, window * window, dk)
        v = v.reshape(batch, heads, dv, nh, nw, window * window).permute(0, 1, 3, 4, 5, 2).reshape(batch, heads * nh * nw, window * window, dv)

        q = q.reshape(batch, heads * nh * nw, b * b, dk)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)  # (B, M·nh·nw, b², dv)
        out = out.reshape(batch, heads, nh, nw, b, b, dv).permute(0, 1, 6, 2, 4, 3, 5)  # (B, M, dv, nh, b, nw, b)
        out = out.reshape(batch, self.channels, height, width)
        if self.stride > 1:
            out = F.avg_pool2d(out, self.stride)
        return out

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, heads={self.heads}, block={self.block}, halo={self.halo}, "
                f"qk_dim={self.qk_dim}, grid={self.grid[0]}x{self.grid[1]}, stride={self.stride}")


__all__ = ["HaloAttention", "HaloSelfAttention2d"]
