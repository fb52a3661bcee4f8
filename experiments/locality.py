"""Locality: do the early layers of a ConViT stay local? Gates σ(λ) and mean attention distances, at init and trained.

d'Ascoli et al. 2021 (ConViT, §4, Figs. 5–6) follow each GPSA head's gate σ(λ) — the
weight of its positional attention against its content attention — and its nonlocality
through training, and find that the early layers keep attending locally while later ones
drift away from it. Here the micro ConViT (``convit_micro_28``: 4 GPSA layers on 7×7
patch tokens of 4×4 pixels, then the class token and 2 MHSA layers) trains on MNIST, and
for every attention layer and head, at initialisation and after training:

* ``σ(λ)``, the gate of ``archforge/blocks/gpsa.py`` (GPSA layers only);
* the mean attention distance, in pixels: for each patch query ``i``,
  ``Σ_j A_ij ‖c_i − c_j‖ / Σ_j A_ij`` over the patch keys ``j`` (``c``: patch centres),
  averaged over queries and validation images. ``A`` is the attention the block computes:
  for GPSA ``(1 − σ(λ)) softmax(QKᵀ/√d) + σ(λ) softmax(v_posᵀ r)``, for MHSA
  ``softmax(QKᵀ/√d)``; the class token has no position, so its column is left out and
  the mass a patch query puts on it is reported separately (MHSA layers).

Layers are compared per seed (the same network measured twice): the first GPSA layer's mean
distance (over heads) minus the last one's, and the GPSA layers' mean minus the MHSA layers',
each with its paired 95% t interval over seeds.

The attention is recomputed from each module's own parameters and its input (captured by
a forward pre-hook), and checked: ``proj(A V)`` must reproduce the module's output
(:func:`attention_maps` returns the largest deviation; the section reports it). A uniform
attention over the 7×7 grid has mean distance :func:`uniform_distance` (the reference line
of the plot): distances near it are global, small ones local.

    python experiments/locality.py                 # 3 seeds × 10 epochs
    python experiments/locality.py --scale 3       # 30 epochs
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable for `experiments._common`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

from experiments import _common

NAME = "locality"
SPEC = "convit_micro_28"
EPOCHS = 10  # × --scale
QUICK_LIMIT = 300


# --------------------------------------------------------------------------- attention from the modules' tensors


def _is_gpsa(module: nn.Module) -> bool:
    from archforge.blocks.gpsa import GatedPositionalSelfAttention

    return isinstance(module, GatedPositionalSelfAttention)


def _is_mhsa(module: nn.Module) -> bool:
    from archforge.blocks.mhsa import MultiHeadSelfAttention

    return isinstance(module, MultiHeadSelfAttention)


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The GPSA and MHSA modules of ``model``, in order, by their module names (``blocks.0.attn`` …)."""
    return [(name, m) for name, m in model.named_modules() if _is_gpsa(m) or _is_mhsa(m)]


def gpsa_attention(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GPSA's attention ``(B, nh, N, N)`` and values ``(B, nh, N, hs)`` for tokens ``x`` ``(B, N, C)``, from its parameters.

    ``A = (1 − σ(λ)) softmax(Q Kᵀ / √d) + σ(λ) softmax_j(v_posᵀ r_ij + b_pos)``, rows renormalised
    (d'Ascoli et al. 2021, eq. 5); ``r_ij = (Δx, Δy, Δx² + Δy²)`` on the module's grid, rebuilt here.
    """
    B, N, C = x.shape
    nh = module.heads
    hs = C // nh
    q, k = (x @ module.qk.weight.T + (module.qk.bias if module.qk.bias is not None else 0)).view(B, N, 2, nh, hs).permute(2, 0, 3, 1, 4)
    v = (x @ module.v.weight.T + (module.v.bias if module.v.bias is not None else 0)).view(B, N, nh, hs).transpose(1, 2)  # (B, nh, N, hs)
    content = (q @ k.transpose(-2, -1) / math.sqrt(hs)).softmax(dim=-1)  # (B, nh, N, N)
    gate = torch.sigmoid(module.gating_param).view(1, nh, 1, 1)
    attn = (1 - gate) * content + gate * positional_attention(module).to(x)
    return attn / attn.sum(dim=-1, keepdim=True), v


def positional_attention(module: nn.Module) -> torch.Tensor:
    """GPSA's positional attention ``softmax_j(v_posᵀ r_ij + b_pos)`` ``(nh, N, N)``, the grid's ``r_ij`` rebuilt here."""
    height, width = module.grid
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    dx = (cols[None, :] - cols[:, None]).to(module.pos_proj.weight)  # key − query, as the block defines it
    dy = (rows[None, :] - rows[:, None]).to(module.pos_proj.weight)
    r = torch.stack((dx, dy, dx * dx + dy * dy), dim=-1)  # (N, N, 3)
    return (r @ module.pos_proj.weight.T + module.pos_proj.bias).permute(2, 0, 1).softmax(dim=-1)  # (nh, N, N)


def mhsa_attention(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MHSA's attention ``softmax(Q Kᵀ / √d [+ relative bias])`` ``(B, nh, N, N)`` and values, from its parameters."""
    B, N, C = x.shape
    nh, hs = module.heads, module.head_dim
    qkv = x @ module.qkv.weight.T + (module.qkv.bias if module.qkv.bias is not None else 0)
    q, k, v = qkv.view(B, N, 3, nh, hs).permute(2, 0, 3, 1, 4)  # (B, nh, N, hs) each
    logits = q @ k.transpose(-2, -1) / math.sqrt(hs)
    if module.relative_position_bias_table is not None:
        logits = logits + module.relative_position_bias()
    return logits.softmax(dim=-1), v


@dataclass
class Maps:
    """One forward pass: per attention layer, its name, attention ``(B, nh, N, N)``, and the reconstruction error."""

    names: list[str]
    attention: list[torch.Tensor]
    max_error: float  # largest |proj(A V) − module output| over layers


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor) -> Maps:
    """Every attention layer's attention on ``images`` (model in eval mode), checked against the module's output."""
    layers = attention_layers(model)
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:  # returns None: the output is unchanged
            inputs[name], outputs[name] = args[0], output
        return hook

    hooks = [module.register_forward_hook(keep(name)) for name, module in layers]
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    attention, error = [], 0.0
    for name, module in layers:
        x = inputs[name]
        attn, v = (gpsa_attention if _is_gpsa(module) else mhsa_attention)(module, x)
        B, N, C = x.shape
        y = module.proj((attn @ v).transpose(1, 2).reshape(B, N, C))  # (B, N, C)
        error = max(error, float((y - outputs[name]).abs().max()))
        attention.append(attn)
    return Maps([n for n, _ in layers], attention, error)


def patch_distances(grid: tuple[int, int], pixels_per_token: float) -> torch.Tensor:
    """``(N, N)`` distances in pixels between the centres of the patches of a row-major ``grid``."""
    height, width = grid
    rows = torch.arange(height).repeat_interleave(width).double()
    cols = torch.arange(width).repeat(height).double()
    return torch.sqrt((rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2) * pixels_per_token


def uniform_distance(grid: tuple[int, int], pixels_per_token: float) -> float:
    """The mean attention distance of a uniform attention over the grid: the mean of all patch-pair distances."""
    return float(patch_distances(grid, pixels_per_token).mean())


def distance_and_cls_mass(attn: torch.Tensor, grid: tuple[int, int], pixels_per_token: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head: the mean attention distance of the patch queries over patch keys, and their mass on extra tokens.

    ``attn`` is ``(B, nh, N, N)`` with ``N − H·W`` extra (class) tokens in front. Returns two ``(nh,)`` tensors.
    """
    patches = grid[0] * grid[1]
    extra = attn.shape[-1] - patches
    on_patches = attn[:, :, extra:, extra:].double()  # (B, nh, P, P): patch queries, patch keys
    mass = on_patches.sum(dim=-1)  # (B, nh, P)
    dist = (on_patches * patch_distances(grid, pixels_per_token)).sum(dim=-1) / mass  # (B, nh, P)
    cls = attn[:, :, extra:, :extra].double().sum(dim=-1) if extra else torch.zeros_like(mass)  # (B, nh, P)
    return dist.mean(dim=(0, 2)), cls.mean(dim=(0, 2))


@torch.no_grad()
def measure(model: nn.Module, images: torch.Tensor, *, batch: int = 250) -> dict:
    """Per attention layer: kind, gate σ(λ) per head (GPSA), mean distance per head, class-token mass, positional distance."""
    layers = attention_layers(model)
    grid = next((m.grid for _, m in layers if _is_gpsa(m)), None)
    side = images.shape[-1]
    sums: dict[str, list] = {}
    error = 0.0
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        maps = attention_maps(model, chunk)
        error = max(error, maps.max_error)
        for (name, module), attn in zip(layers, maps.attention):
            g = grid or (math.isqrt(attn.shape[-1] - module.extra_tokens),) * 2
            dist, cls = distance_and_cls_mass(attn, g, side / g[1])
            weight = len(chunk)
            old = sums.get(name)
            sums[name] = [dist * weight, cls * weight, weight] if old is None else [old[0] + dist * weight, old[1] + cls * weight, old[2] + weight]
    out = {"layers": [], "max_error": error}
    for name, module in layers:
        dist, cls, n = sums[name]
        g = grid or (0, 0)
        row = {"name": name, "kind": "gpsa" if _is_gpsa(module) else "mhsa", "distance": (dist / n).tolist(),
               "cls_mass": (cls / n).tolist()}
        if _is_gpsa(module):
            row["gate"] = torch.sigmoid(module.gating_param).tolist()
            pos = positional_attention(module)[None]  # (1, nh, N, N)
            row["pos_distance"] = distance_and_cls_mass(pos, module.grid, side / module.grid[1])[0].tolist()
        out["layers"].append(row)
    out["uniform_distance"] = uniform_distance(grid, side / grid[1]) if grid else math.nan
    return out


# --------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class Job:
    """One seed: train the micro ConViT and measure it before and after (every field is part of the cache key)."""

    seed: int
    epochs: int
    limit: int | None  # images of the dataset used (quick mode), None for all
    images: int  # validation images the attention is averaged over
    init: str | None
    lr: float | str | None = None  # None: TrainConfig's default; "auto": a range test per seed


def run_seed(job: Job) -> dict:
    """Initialise (as train_model does for the seed), measure; train; measure again."""
    import archforge
    from archforge.data import load_dataset
    from archforge.search.evaluate import seed_everything, train_model
    from archforge.search.training import TrainConfig

    data = load_dataset("mnist", val_fraction=0.2, seed=0, limit=job.limit)
    images = data.val_x[:job.images]
    spec = archforge.load_spec(SPEC)
    seed_everything(job.seed)  # the weights train_model starts from for this seed
    initial = archforge.build(spec, **({"init": job.init} if job.init else {}))
    before = measure(initial, images)
    cpu = time.process_time()
    config = TrainConfig(epochs=job.epochs, seed=job.seed, latency_repeats=0, **({"init": job.init} if job.init else {}),
                         **({"lr": job.lr} if job.lr is not None else {}))
    model, result = train_model(spec, data, config)
    cpu = time.process_time() - cpu
    after = measure(model, images)
    return {"seed": job.seed, "init": before, "trained": after, "accuracy": result.accuracy, "history": result.history, "lr": result.lr,
            "cpu_s": cpu, "train_images": len(data.train_y), "val_images": len(images), "all_val_images": len(data.val_y),
            "config": config.model_dump(mode="json")}


def report(outcome: _common.Outcome, args, wall_s: float, out: Path) -> str:
    """The section: settings, the gate at init, the per-head GPSA table, the per-layer table, the layer comparisons, the plots."""
    results = sorted(outcome.done, key=lambda r: r["seed"])
    first = results[0]
    layers = [row["name"] for row in first["trained"]["layers"]]
    kinds = [row["kind"] for row in first["trained"]["layers"]]
    heads = len(first["trained"]["layers"][0]["distance"])
    uniform = first["trained"]["uniform_distance"]

    def values(phase: str, layer: int, key: str, head: int | None = None) -> list[float]:
        rows = [r[phase]["layers"][layer][key] for r in results]
        return [row[head] for row in rows] if head is not None else [sum(row) / len(row) for row in rows]

    settings = {
        "model": f"{SPEC} ({len(layers)} attention layers: {kinds.count('gpsa')} GPSA, then the class token and "
                 f"{kinds.count('mhsa')} MHSA; {heads} heads; 7×7 tokens of 4×4 pixels)",
        "data": (f"mnist{' (quick: first ' + str(QUICK_LIMIT) + ' images)' if args.quick else ''}, {first['train_images']:,} "
                 f"training / {first['all_val_images']:,} validation images (80/20 stratified, seed 0); attention averaged "
                 f"over the first {first['val_images']:,} validation images"),
        "training (TrainConfig as used)": _common.config_text([r["config"] for r in results], skip=("seed",)),
        "seeds": ", ".join(str(r["seed"]) for r in results),
        "workers": f"{args.workers} processes × 1 torch thread",
    }
    error = max(max(r["init"]["max_error"], r["trained"]["max_error"]) for r in results)
    lines = [_common.header("Locality: ConViT's gates and attention distances (d'Ascoli et al. 2021, Figs. 5–6)",
                            command=_common.command_line(f"{NAME}.py", args.argv), wall_s=wall_s, settings=settings,
                            cost=_common.cache_note(outcome))]
    failed = _common.failures_text(outcome.failures, lambda j: f"seed {j.seed}")
    if failed:
        lines.append(failed)
    acc = _common.stats([r["accuracy"] for r in results])
    gates = [g for r in results for i, k in enumerate(kinds) if k == "gpsa" for g in r["init"]["layers"][i]["gate"]]
    if max(gates) - min(gates) <= 1e-7:
        gate_init = (f"σ(λ) at initialisation is {gates[0]:.4f}{' = σ(1)' if abs(gates[0] - 1 / (1 + math.exp(-1))) < 1e-6 else ''} "
                     "in every head of every GPSA layer and seed")
    else:
        gate_init = f"σ(λ) at initialisation ranges over {min(gates):.4f} … {max(gates):.4f}"
    rates = ", ".join(f"{r['lr']:.3g}" for r in sorted(results, key=lambda r: r["seed"]) if r.get("lr") is not None)
    lines.append(f"Validation accuracy after training: {acc.text(4)} (mean ± std [95% interval] over seeds; peak "
                 f"learning rate per seed: {rates or 'not recorded'}). "
                 f"The recomputed attention reproduces every attention module's output to {error:.1e} "
                 f"(largest absolute deviation of proj(A·V)). Uniform attention over the 7×7 grid: "
                 f"mean distance {uniform:.2f} px. {gate_init}.\n")
    lines.append("Per GPSA head (heads keep their identity across seeds: the locality init gives head h the same "
                 "offset in every seed), mean ± std [95% interval] over seeds; 'positional' is the distance of the "
                 "head's positional attention alone (σ = 1), after training:\n")
    rows = []
    for i, kind in enumerate(kinds):
        if kind != "gpsa":
            continue
        for h in range(heads):
            rows.append([f"{layers[i]} h{h}",
                         _common.stats(values("trained", i, "gate", h)).text(3),
                         _common.stats(values("init", i, "distance", h)).text(2),
                         _common.stats(values("trained", i, "distance", h)).text(2),
                         _common.stats(values("trained", i, "pos_distance", h)).text(2)])
    lines.append(_common.table(["layer / head", "σ(λ) trained", "distance init (px)", "distance trained (px)",
                                "positional trained (px)"], rows))
    lines.append("\nPer layer, the mean over heads (MHSA heads have no identity across seeds, so only layer means are "
                 "compared); differences are per seed (paired), with their 95% t interval (✓: separable from 0):\n")
    rows = []
    for i, kind in enumerate(kinds):
        before, after = values("init", i, "distance"), values("trained", i, "distance")
        gate = _common.stats(values("trained", i, "gate")).text(3) if kind == "gpsa" else "—"
        cls = _common.stats(values("trained", i, "cls_mass")).text(3) if kind == "mhsa" else "—"
        rows.append([layers[i], kind, gate, _common.stats(before).text(2), _common.stats(after).text(2),
                     _paired_text(after, before), _paired_text(after, [uniform] * len(after)), cls])
    lines.append(_common.table(["layer", "kind", "mean σ(λ) trained", "distance init (px)", "distance trained (px)",
                                "trained − init (px)", "trained − uniform (px)", "class-token mass trained"], rows,
                               align="llrrrrrr"))
    lines.append(compare_layers(results, layers, kinds))
    cpu = sum(r["cpu_s"] for r in results) / len(results)
    lines.append(f"\nCPU time per training (one thread): {cpu:.0f} s. Per-epoch validation accuracy of seed "
                 f"{first['seed']}: " + ", ".join(f"{a:.3f}" for a in first["history"]) + ".\n")
    gates_png, gates_link = _common.image_path(out, "exp_locality_gates.png")
    dist_png, dist_link = _common.image_path(out, "exp_locality_distance.png")
    plot_gates(results, layers, kinds, heads, gates_png)
    plot_distances(results, layers, heads, uniform, dist_png)
    lines.append(f"![GPSA gates per layer and head, at init and trained]({gates_link})\n")
    lines.append(f"![mean attention distance per head and layer, at init and trained]({dist_link})\n")
    return "\n".join(lines)


def _paired_text(a: list[float], b: list[float]) -> str:
    return _common.difference_text(_common.paired(a, b), sum(a) / len(a) - sum(b) / len(b), digits=2)


def layer_means(result: dict, phase: str, indices: list[int]) -> float:
    """The mean attention distance over the heads of the layers ``indices`` of one seed (``phase``: init or trained)."""
    values = [d for i in indices for d in result[phase]["layers"][i]["distance"]]
    return sum(values) / len(values)


def compare_layers(results: list[dict], layers: list[str], kinds: list[str]) -> str:
    """Do early layers stay local? Per seed, first GPSA layer − last GPSA layer, and GPSA layers − MHSA layers (mean
    distances over heads), at init and trained, with paired 95% t intervals over seeds."""
    gpsa = [i for i, k in enumerate(kinds) if k == "gpsa"]
    mhsa = [i for i, k in enumerate(kinds) if k == "mhsa"]
    comparisons = []
    if len(gpsa) > 1:
        comparisons.append((f"first GPSA ({layers[gpsa[0]]}) − last GPSA ({layers[gpsa[-1]]})", [gpsa[0]], [gpsa[-1]]))
    if gpsa and mhsa:
        comparisons.append(("GPSA layers − MHSA layers", gpsa, mhsa))
    if not comparisons:
        return ""
    rows = []
    for label, a, b in comparisons:
        cells = [label]
        for phase in ("init", "trained"):
            x = [layer_means(r, phase, a) for r in results]
            y = [layer_means(r, phase, b) for r in results]
            cells.append(_paired_text(x, y))
        rows.append(cells)
    return ("\nLayers compared, mean attention distance over the heads (px), per seed (paired), mean and 95% t interval "
            "(✓: separable from 0; negative: the first group attends more locally):\n\n"
            + _common.table(["comparison", "at init (px)", "trained (px)"], rows))


def plot_gates(results: list[dict], layers: list[str], kinds: list[str], heads: int, path: Path) -> None:
    """σ(λ) per GPSA layer × head, mean over seeds: a heat map at init and one trained."""
    plt = _common.pyplot()
    gpsa = [i for i, k in enumerate(kinds) if k == "gpsa"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, phase in zip(axes, ("init", "trained")):
        grid = torch.tensor([[sum(r[phase]["layers"][i]["gate"][h] for r in results) / len(results) for h in range(heads)]
                             for i in gpsa])
        image = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (row, col), value in zip(((a, b) for a in range(len(gpsa)) for b in range(heads)), grid.flatten().tolist()):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
        ax.set_xticks(range(heads), [f"h{h}" for h in range(heads)])
        ax.set_yticks(range(len(gpsa)), [layers[i] for i in gpsa])
        ax.set_title(f"σ(λ) {phase} (mean of {len(results)} seeds)")
    fig.colorbar(image, ax=axes, label="σ(λ): weight of the positional attention")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_distances(results: list[dict], layers: list[str], heads: int, uniform: float, path: Path) -> None:
    """Mean attention distance of every head (every seed) per layer: init hollow, trained filled."""
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for phase, style in (("init", {"facecolors": "none", "edgecolors": "tab:blue"}), ("trained", {"color": "tab:red"})):
        xs, ys = [], []
        for r in results:
            for i, row in enumerate(r[phase]["layers"]):
                for h, d in enumerate(row["distance"]):
                    xs.append(i + (h - (heads - 1) / 2) * 0.06 + (0.02 if phase == "trained" else -0.02))
                    ys.append(d)
        ax.scatter(xs, ys, s=18, label=phase, **style)
    ax.axhline(uniform, color="grey", linestyle="--", linewidth=1, label=f"uniform attention ({uniform:.1f} px)")
    ax.set_xticks(range(len(layers)), [f"{n}\n({r['kind']})" for n, r in zip(layers, results[0]["trained"]["layers"])], fontsize=8)
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_title(f"Attention distance per head ({len(results)} seeds × {heads} heads per layer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0], seeds=3)
    _common.recipe_arguments(p)
    args = _common.parse(p, argv)
    return _common.guarded(lambda: run(args))


def run(args) -> int:
    """Train and measure every seed (resuming from the cache), then write or print the section."""
    start = time.perf_counter()
    if args.quick:
        jobs = [Job(seed=s, epochs=1, limit=QUICK_LIMIT, images=32, init=args.init, lr=args.lr) for s in range(args.seeds)]
    else:
        jobs = [Job(seed=s, epochs=max(1, round(EPOCHS * args.scale)), limit=None, images=1000, init=args.init,
                    lr=args.lr)
                for s in range(args.seeds)]

    def progress(done, total, job, result):
        what = f"accuracy {result['accuracy']:.4f}, {result['cpu_s']:.0f} s CPU" if result else "failed"
        print(f"[{done}/{total}] seed {job.seed}: {what}", flush=True)

    outcome = _common.run_jobs(run_seed, jobs, workers=args.workers, cache=_common.work_folder(args, NAME), progress=progress)
    if not outcome.done:
        print(f"error: every training failed; the first: {outcome.failures[0][1]}", file=sys.stderr)
        return 1
    return _common.finish(args, NAME, lambda out: report(outcome, args, time.perf_counter() - start, out))


if __name__ == "__main__":
    sys.exit(main())
