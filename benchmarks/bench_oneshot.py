"""One-shot search against the stand-alone grid: what weight sharing costs per step, and what the whole search costs.

    python benchmarks/bench_oneshot.py                     # placement_mnist on mnist, the space's budget, 1 grid seed
    python benchmarks/bench_oneshot.py --seeds 3 --limit 2000

Two tables, one torch thread throughout:

1. **Step overhead.** One training step (forward, backward, AdamW) of each path of the space run
   through the supernet (``torch.func.functional_call`` with slices of the shared tensors) against
   the same network built stand-alone (reference). Ratio > 1: the supernet's step is slower.
2. **Search.** The grid (every placement trained ``--seeds`` times, ``strategy: grid``) is the
   reference; ``strategy: oneshot`` (fair sampling, the space's epochs, no retraining) ranks the
   same placements. Per method: trainings, training images, wall seconds, the ratio of both to the
   grid's, and Kendall's τ_b of its ranking against the grid's. With one grid seed the reference
   ranking is itself noisy: experiments/oneshot.py measures τ against 3 seeds.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path


def step_times(space_name: str, batch: int, repeats: int) -> list[tuple[str, float, float]]:
    """(path, stand-alone ms, supernet ms) per path: the median of ``repeats`` timed training steps each."""
    import torch
    import torch.nn.functional as F

    import archforge
    from archforge.search.space import load_space
    from archforge.search.supernet import Supernet

    space = load_space(space_name)
    candidates = space.distinct_candidates()
    shape = space.template["input"]["shape"]
    torch.manual_seed(0)
    modules = [archforge.build(c.spec) for c in candidates]
    plain = [copy.deepcopy(m) for m in modules]
    supernet = Supernet(modules, [c.values for c in candidates])
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))

    def timed(model: torch.nn.Module, params) -> float:
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        samples = []
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i >= 2:  # two warm-up steps
                samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1e3

    rows = []
    for i, candidate in enumerate(candidates):
        supernet.active = i
        used = [supernet.shared[k] for k in {k for k, _ in supernet.paths[i].slots.values()}]
        rows.append((_placement(candidate.values), timed(plain[i].train(), plain[i].parameters()),
                     timed(supernet.train(), used)))
    return rows


def search_times(space_name: str, seeds: int, limit: int | None, root: Path) -> list[tuple[str, int, int, float, float | None]]:
    """(method, trainings, training images, wall s, τ_b vs the grid) for the grid and the one-shot search."""
    import archforge
    from archforge.search.fidelity import kendall_tau_b

    common = {"limit": limit, "workers": 1, "train": {"threads": 1, "latency_repeats": 0}, "progress": False, "runs_dir": root}
    t0 = time.perf_counter()
    grid = archforge.search(space_name, strategy="grid", seeds=seeds, name="grid", storage=root / "grid.db", **common)
    grid_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shot = archforge.search(space_name, strategy="oneshot", seeds=seeds, name="oneshot", storage=root / "oneshot.db", **common)
    shot_s = time.perf_counter() - t0
    mean = {row["hash"]: row["accuracy"] for row in grid.table if row.get("rank") is not None}
    phase = shot.oneshot
    inherited = {p.hash: p.accuracy for p in phase.ranking}
    common_hashes = sorted(set(mean) & set(inherited))
    tau, _ = kendall_tau_b([mean[h] for h in common_hashes], [inherited[h] for h in common_hashes])
    trainings = sum(len(r.seeds) for r in grid.trials if r.status == "complete")
    grid_images = trainings * grid.run.settings.epochs * phase.candidate_images // max(1, phase.epochs)
    return [("grid", trainings, grid_images, grid_s, None),
            (f"oneshot ({phase.sampling}, {phase.epochs} epochs)", 1, phase.train_images, shot_s, tau)]


def _placement(values: dict) -> str:
    short = {"conv_unit": "conv", "attention_unit": "attn"}
    return "/".join(short.get(str(values[k]), str(values[k])) for k in sorted(values))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="placement_mnist")
    p.add_argument("--seeds", type=int, default=1, help="grid seeds per placement (default 1)")
    p.add_argument("--limit", type=int, default=None, help="images, train + validation (default: the space's)")
    p.add_argument("--batch", type=int, default=64, help="batch of the step-overhead table (default 64)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per path (default 10)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"## Step overhead: {args.space}, batch {args.batch}, one thread, median of {args.repeats} steps\n")
    print("| path | stand-alone ms | supernet ms | ratio |\n|---|---:|---:|---:|")
    rows = step_times(args.space, args.batch, args.repeats)
    for name, plain, shared in rows:
        print(f"| {name} | {plain:.2f} | {shared:.2f} | {shared / plain:.2f} |")
    ratios = [shared / plain for _, plain, shared in rows]
    print(f"| geometric mean | | | {statistics.geometric_mean(ratios):.2f} |\n")
    with tempfile.TemporaryDirectory() as folder:
        print(f"## Search: {args.space}, grid with {args.seeds} seed(s) vs one-shot\n")
        print("| method | trainings | training images | images vs grid | wall s | wall vs grid | τ_b vs grid |\n"
              "|---|---:|---:|---:|---:|---:|---:|")
        found = search_times(args.space, args.seeds, args.limit, Path(folder))
        _, _, grid_images, grid_s, _ = found[0]
        for method, trainings, images, wall, tau in found:
            print(f"| {method} | {trainings} | {images:,} | {images / grid_images:.3f} | {wall:.1f} | {wall / grid_s:.3f} | "
                  f"{'—' if tau is None else f'{tau:+.2f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
