"""Benchmark: the spec-built ``mhsa`` block against a plain attention module written here.

The reference is the shortest correct ViT attention: ``Linear`` qkv → reshape →
``F.scaled_dot_product_attention`` → ``Linear`` proj, with the same weights as the
block. The block goes through the whole pipeline (YAML spec → validate → fx-built
model), so any overhead of the builder or of the block shows as a ratio above 1.

Measured: forward (no grad) and forward + backward, median over interleaved repeats
after warm-up, the same thread count for both sides. Target: ratio within 1.05.

    python benchmarks/bench_mhsa.py
    python benchmarks/bench_mhsa.py --threads 1 --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

import archforge
from archforge.blocks.mhsa import MHSA, MultiHeadSelfAttention
from archforge.registry import default_registry
from archforge.testing import registry_with

SIZES = [  # (batch, tokens, dim, heads): ViT-Ti and ViT-S at 224² with a class token
    (32, 197, 192, 3),
    (16, 197, 384, 6),
]


class PlainAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, nh, N, hs) each
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


def spec_model(tokens: int, dim: int, heads: int) -> nn.Module:
    spec = archforge.parse_spec(f"""
archforge: 1
name: bench_mhsa
input: {{shape: [{tokens}, {dim}]}}
nodes:
  - {{id: attn, block: mhsa, args: {{heads: {heads}}}}}
""")
    registry = default_registry() if "mhsa" in default_registry().blocks else registry_with(MHSA)
    return archforge.build(spec, registry=registry)


def timings(fns: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call; the sides alternate so that load on the shared machine hits both alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"mhsa (spec-built) vs plain Linear→SDPA→Linear, CPU float32, {args.threads} thread(s), "
          f"median of {args.repeats} after {args.warmup} warm-up")
    header = f"{'B':>3} {'N':>4} {'dim':>4} {'heads':>5} | {'pass':<8} | {'plain ms':>9} {'mhsa ms':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for batch, tokens, dim, heads in SIZES:
        block = spec_model(tokens, dim, heads)
        plain = PlainAttention(dim, heads)
        attn = next(m for m in block.modules() if isinstance(m, MultiHeadSelfAttention))
        plain.load_state_dict(attn.state_dict())
        x = torch.randn(batch, tokens, dim)
        xg = x.clone().requires_grad_(True)
        grad = torch.randn_like(x)
        with torch.no_grad():
            torch.testing.assert_close(block(x), plain(x), rtol=1e-4, atol=1e-5)

        def forward(model: nn.Module) -> Callable[[], None]:
            def run() -> None:
                with torch.no_grad():
                    model(x)
            return run

        def train_step(model: nn.Module) -> Callable[[], None]:
            params = list(model.parameters())

            def run() -> None:
                for p in [*params, xg]:
                    p.grad = None
                model(xg).backward(grad)
            return run

        for label, make in (("forward", forward), ("fwd+bwd", train_step)):
            t = timings({"plain": make(plain), "mhsa": make(block)}, args.warmup, args.repeats)
            print(f"{batch:>3} {tokens:>4} {dim:>4} {heads:>5} | {label:<8} | {t['plain'] * 1e3:>9.2f} {t['mhsa'] * 1e3:>9.2f} "
                  f"{t['mhsa'] / t['plain']:>6.3f}")


if __name__ == "__main__":
    main()
