"""Benchmark: the ``gpsa`` block against the explicit attention-matrix formulation of ConViT.

Both sides compute the same function from the same parameters. The reference is the
formula as written in the paper and in timm: ``B × h × N × N`` content and positional
attention matrices, mixed by the gate, renormalised, multiplied by the values. The
block computes ``(1 − σ) · SDPA(q, k, v) + σ · (A_pos v)`` with one ``(h, N, N)``
positional attention for the whole batch.

Measured: forward + backward time (median over interleaved repeats, after warm-up,
same thread count for both sides) and peak memory of one forward + backward above what
was live before it (inputs and parameters excluded). On CPU the peak comes from the
allocator events that ``torch.profiler`` records with ``profile_memory=True``: every
CPU tensor allocation and free, including the kernels' internal workspaces, summed in
time order; on CUDA from ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_gpsa.py                                  # CPU, float32
    python benchmarks/bench_gpsa.py --device cuda --dtype bf16       # GPU, bf16 autocast
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from archforge.blocks.gpsa import GatedPositionalSelfAttention


def explicit_gpsa(m: GatedPositionalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """ConViT's GPSA written out with full attention matrices (as timm's ``GPSA.forward``)."""
    B, N, C = x.shape
    nh, hs = m.heads, C // m.heads
    qk = m.qk(x).reshape(B, N, 2, nh, hs).permute(2, 0, 3, 1, 4)
    q, k = qk[0], qk[1]  # (B, nh, N, hs)
    pos_score = m.pos_proj(m.rel_indices.expand(B, -1, -1, -1)).permute(0, 3, 1, 2)  # (B, nh, N, N)
    patch_score = ((q @ k.transpose(-2, -1)) * hs ** -0.5).softmax(dim=-1)  # (B, nh, N, N)
    pos_score = pos_score.softmax(dim=-1)
    gating = torch.sigmoid(m.gating_param).view(1, -1, 1, 1)
    attn = (1.0 - gating) * patch_score + gating * pos_score
    attn = attn / attn.sum(dim=-1, keepdim=True)
    v = m.v(x).reshape(B, N, nh, hs).permute(0, 2, 1, 3)  # (B, nh, N, hs)
    y = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return m.proj(y)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _step(fn: Callable[[], torch.Tensor], params: list[nn.Parameter], x: torch.Tensor, grad: torch.Tensor) -> None:
    for p in [*params, x]:
        p.grad = None
    fn().backward(grad)


def peak_bytes(fn: Callable[[], torch.Tensor], params: list[nn.Parameter], x: torch.Tensor, grad: torch.Tensor) -> int:
    """Peak memory of one forward + backward above the memory live before it."""
    for p in [*params, x]:
        p.grad = None
    device = x.device
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn().backward(grad)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn().backward(grad)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp64"), default="fp32", help="bf16 runs float32 weights under autocast")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--grid", type=int, nargs=2, default=(14, 14), metavar=("H", "W"))
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = torch.float64 if args.dtype == "fp64" else torch.float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()

    m = GatedPositionalSelfAttention(args.dim, args.heads, tuple(args.grid), device=device, dtype=dtype)
    with torch.no_grad():  # move the gates off 1 so both paths matter differently per head
        m.gating_param.uniform_(-2.0, 2.0)
    params = list(m.parameters())
    n = args.grid[0] * args.grid[1]
    x = torch.randn(args.batch, n, args.dim, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(args.batch, n, args.dim, device=device, dtype=dtype)

    def block() -> torch.Tensor:
        with autocast:
            return m(x)

    def reference() -> torch.Tensor:
        with autocast:
            return explicit_gpsa(m, x)

    with torch.no_grad():
        ours, ref = block().double(), reference().double()
    max_abs = (ours - ref).abs().max().item()
    rel = ((ours - ref).norm() / ref.norm()).item()
    tolerance = 1e-5 if args.dtype != "bf16" else 5e-2
    assert max_abs <= tolerance, f"outputs differ by {max_abs:.3g} (> {tolerance:g})"

    sides = {"explicit (reference)": reference, "gpsa block": block}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.warmup):
        for fn in sides.values():
            _step(fn, params, x, grad)
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits both sides alike
        for name, fn in sides.items():
            _sync(device)
            start = time.perf_counter()
            _step(fn, params, x, grad)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    peaks = {name: peak_bytes(fn, params, x, grad) / 2**20 for name, fn in sides.items()}

    ref_name, our_name = sides
    print(f"gpsa fwd+bwd: B={args.batch}, N={n} ({args.grid[0]}×{args.grid[1]}), dim={args.dim}, heads={args.heads}, "
          f"{args.device} {args.dtype}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'':24}{'time (ms)':>12}{'peak mem (MiB)':>16}")
    for name in sides:
        print(f"{name:24}{medians[name]:>12.2f}{peaks[name]:>16.1f}")
    print(f"{'ratio block/reference':24}{medians[our_name] / medians[ref_name]:>12.3f}{peaks[our_name] / peaks[ref_name]:>16.3f}")
    print(f"speed-up {medians[ref_name] / medians[our_name]:.2f}×; outputs: max |Δ| = {max_abs:.2e}, relative {rel:.2e}")


if __name__ == "__main__":
    main()
