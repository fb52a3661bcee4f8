"""``local_attention`` (blocked halo windows + one SDPA) against a naive unfold-based SASA layer.

The reference is the straightforward implementation: unfold keys and values into
``k²`` copies per pixel, add the relative embeddings, mask padded neighbours, softmax
over the ``k²`` neighbours and sum. Both sides use the same weights and thread count;
the script first checks that they agree. Run: ``python benchmarks/bench_local_attention.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch.nn import functional as F

from archforge.blocks.local_attention import LocalSelfAttention2d


def naive_local_attention(module: LocalSelfAttention2d, x: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = x.shape
    c, heads, k, dh = module.channels, module.heads, module.kernel, module.head_dim
    p, n = k // 2, height * width
    q, key, value = F.conv2d(x, module.qkv.weight[:, :, None, None]).split(c, dim=1)  # (B, C, H, W) each
    key = F.unfold(key, k, padding=p).view(batch, heads, dh, k * k, n)  # (B, h, dh, k², N)
    value = F.unfold(value, k, padding=p).view(batch, heads, dh, k * k, n)
    rel = torch.cat([module.rel_rows[:, :, None, :].expand(-1, -1, k, -1),
                     module.rel_cols[:, None, :, :].expand(-1, k, -1, -1)], dim=-1)  # (h, k, k, dh): [r_row(a); r_col(b)]
    rel = rel.reshape(heads, k * k, dh).transpose(1, 2)  # (h, dh, k²)
    q = q.view(batch, heads, dh, 1, n) * module.scale
    logits = (q * (key + rel[None, :, :, :, None])).sum(2)  # (B, h, k², N)
    inside = F.unfold(torch.ones(1, 1, height, width, dtype=x.dtype), k, padding=p).view(1, 1, k * k, n) > 0
    attn = logits.masked_fill(~inside, float("-inf")).softmax(dim=2)
    out = (attn[:, :, None] * value).sum(3).reshape(batch, c, height, width)
    return F.avg_pool2d(out, module.stride) if module.stride > 1 else out


def median_ms(fns: list[Callable[[], object]], repeats: int, warmup: int) -> list[float]:
    """Median wall time of each function; calls are interleaved so that both sides see the same load."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(ts) for ts in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    rows = []
    for stride in (1, 2):
        module = LocalSelfAttention2d(args.channels, args.channels, (args.size, args.size), args.kernel, args.heads, stride)
        x = torch.randn(args.batch, args.channels, args.size, args.size)
        with torch.no_grad():
            torch.testing.assert_close(module(x), naive_local_attention(module, x), rtol=1e-4, atol=1e-5)
        xg = x.clone().requires_grad_(True)

        def forward(fn):
            def run():
                with torch.no_grad():
                    fn(xg)
            return run

        def train(fn):
            def run():
                fn(xg).square().mean().backward()
            return run

        ours = lambda t: module(t)  # noqa: E731
        ref = lambda t: naive_local_attention(module, t)  # noqa: E731
        for label, wrap in (("fwd", forward), ("fwd+bwd", train)):
            t_ref, t_ours = median_ms([wrap(ref), wrap(ours)], args.repeats, args.warmup)
            rows.append((f"stride {stride}", label, t_ref, t_ours))

    print(f"local_attention: B={args.batch}, C={args.channels}, {args.size}×{args.size}, k={args.kernel}, "
          f"heads={args.heads}, block={block_for(args)}, threads={args.threads}, float32, torch {torch.__version__}")
    print(f"{'case':<10} {'pass':<8} {'naive unfold (ms)':>18} {'ours (ms)':>10} {'speed-up':>9}")
    for case, label, t_ref, t_ours in rows:
        print(f"{case:<10} {label:<8} {t_ref:>18.2f} {t_ours:>10.2f} {t_ref / t_ours:>8.2f}×")


def block_for(args: argparse.Namespace) -> int:
    return LocalSelfAttention2d(1, args.heads * 2, (args.size, args.size), args.kernel, args.heads, device="meta").block


if __name__ == "__main__":
    main()
