"""Relative-position indexing shared by the attention blocks.

Two ways of turning a table indexed by a *relative* offset into logits between
*absolute* positions on an ``H × W`` grid (tokens numbered row-major, ``r·W + c``):

* :func:`relative_position_index` (Swin, Liu et al. 2021): one table row per 2-D
  offset ``(Δr, Δc) = (r_q − r_k, c_q − c_k)``, flattened as
  ``(Δr + H − 1)·(2W − 1) + (Δc + W − 1)``, so the ``(HW, HW)`` index selects a
  bias per (query, key) pair from a ``(2H − 1)(2W − 1)``-row table;
* :func:`relative_to_absolute` (Bello et al. 2019, "Attention Augmented Convolutional
  Networks"; used by BoTNet): logits computed against all ``2L − 1`` offsets of one
  axis, ``x[..., i, o]`` with offset ``o − (L − 1) = j − i`` (key minus query), are
  shifted to ``y[..., i, j]`` by padding and reshaping rather than by a gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relative_position_index(height: int, width: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``(H·W, H·W)`` long tensor: the table row of each (query, key) pair of grid positions."""
    rows = torch.arange(height, device=device).repeat_interleave(width)  # (HW,)
    cols = torch.arange(width, device=device).repeat(height)  # (HW,)
    d_row = rows[:, None] - rows[None, :] + height - 1  # (HW, HW) in [0, 2H-2]
    d_col = cols[:, None] - cols[None, :] + width - 1  # (HW, HW) in [0, 2W-2]
    return d_row * (2 * width - 1) + d_col


def relative_to_absolute(x: torch.Tensor) -> torch.Tensor:
    """``(..., L, 2L − 1)`` logits per relative offset → ``(..., L, L)`` with ``y[..., i, j] = x[..., i, j − i + L − 1]``.

    Padding one column makes each row ``2L`` long; reading the flat buffer with a row
    stride of ``2L − 1`` shifts row ``i`` left by ``i``, which lines the offsets up.
    """
    length = x.shape[-2]
    lead = x.shape[:-2]
    x = F.pad(x, (0, 1)).flatten(-2)  # (..., L * 2L)
    x = F.pad(x, (0, length - 1))  # (..., (L + 1) * (2L - 1))
    x = x.unflatten(-1, (length + 1, 2 * length - 1))
    return x[..., :length, length - 1:].reshape(*lead, length, length)
