"""Data efficiency: a micro ConViT, a micro DeiT-style net and a micro ResNet on 5–100% of the MNIST training split.

d'Ascoli et al. 2021 (ConViT, Table 2) trained ConViT-S and DeiT-S on a fraction of the
images of each ImageNet class and found the ConViT's lead largest at 5–10% of the data.
Here the three bundled micro models train on stratified subsets (5, 10, 30, 100%) of the
4,000 training images of the bundled MNIST subset and are validated on the same 1,000
held-out images:

* ``convit_micro_28``: 4 GPSA layers, the class token, 2 MHSA layers (204,826 parameters);
* ``deit_micro_28``: the same network with every GPSA replaced by plain MHSA (204,746);
* ``resnet_micro_28``: a CIFAR-style ResNet (77,754).

Budget: every fraction gets the same number of optimisation steps (``--budget steps``, the
default): ``3 × --scale`` epochs of the full split, and proportionally more epochs of a
smaller subset, with the warm-up also fixed in steps. With a fixed number of epochs instead
(``--budget epochs``) a 5% run would take 20× fewer steps, and "less data" would be
confounded with "less training". The released ConViT code (facebookresearch/convit, ``--sampling_ratio``)
keeps each class's first images and leaves ``--epochs`` (300) as it is, i.e. fewer steps on a
smaller subset: ``--budget epochs`` is that recipe; equal steps is the comparison at equal compute.

Per seed, the subset (drawn by :func:`archforge.data.split.stratified_subset`) is the same
for the three models, and the weights and data order come from the seed
(:func:`archforge.search.evaluate.train_model`): two models are compared per seed (paired
differences). The question of Table 2 — does ConViT's lead grow as data shrinks? — is a
difference of leads at two fractions, whose subsets differ: Welch's interval of
(lead at 5%) − (lead at 100%) over seeds. The images stay normalised with the full
training split's statistics, so a subset changes only which images are seen. Validation
runs once, after training, on all 1,000 images (``train_model`` validates after every epoch;
it is given a 16-image slice for that, since a 5% run has 20× more epochs).

    python experiments/data_efficiency.py               # 3 seeds
    python experiments/data_efficiency.py --scale 3 --seeds 5
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable for `experiments._common`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from experiments import _common

NAME = "data_efficiency"
MODELS = ("convit_micro_28", "deit_micro_28", "resnet_micro_28")
FRACTIONS = (0.05, 0.10, 0.30, 1.00)
QUICK_FRACTIONS = (0.25, 1.00)
BATCH = 64
FULL_EPOCHS = 3  # steps of the budget = FULL_EPOCHS · scale epochs of the full training split
WARMUP_EPOCHS = 0.5  # budget "steps": of the full split, turned into steps; budget "epochs": of each subset
QUICK_LIMIT = 100
PROBE = 16  # validation images train_model sees after each epoch (the real validation is at the end)


@dataclass(frozen=True)
class Job:
    """One training: a model on a fraction of the training split with a seed (every field is part of the cache key)."""

    model: str
    fraction: float
    seed: int
    steps: int  # the budget in optimisation steps (ignored with budget "epochs")
    warmup_steps: int  # budget "steps": the warm-up in steps (ignored with budget "epochs")
    epochs: int  # with budget "epochs": epochs at every fraction
    budget: str
    limit: int | None  # images of the dataset used (quick mode), None for all
    init: str | None
    lr: float | str | None = None  # None: TrainConfig's default; "auto": a range test per model, fraction and seed


_DATA: dict[int | None, object] = {}


def load(limit: int | None):
    """The MNIST train/validation split (80/20, stratified, seed 0; ``limit`` images in all), loaded once per process."""
    if limit not in _DATA:
        from archforge.data import load_dataset

        _DATA[limit] = load_dataset("mnist", val_fraction=0.2, seed=0, limit=limit)
    return _DATA[limit]


def subset(data, fraction: float, seed: int):
    """``data`` with a stratified ``fraction`` of its training images (drawn from ``seed``), the validation kept."""
    from archforge.data.split import stratified_subset

    n = max(len(data.classes), round(fraction * len(data.train_y)))
    keep = torch.from_numpy(stratified_subset(data.train_y.numpy(), n, np.random.default_rng(seed)))
    return replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep], train_index=data.train_index[keep])


def steps_per_epoch(n_train: int) -> int:
    """Optimisation steps of one epoch of ``n_train`` images: full batches only, as train_model takes them."""
    return max(1, n_train // min(BATCH, n_train))


def schedule(n_train: int, job: Job) -> tuple[int, float]:
    """Epochs and warm-up (in epochs of ``n_train`` images) of ``job``: with budget "steps", the fewest whole epochs that
    give ``job.steps`` steps, and ``job.warmup_steps`` of warm-up; with "epochs", ``job.epochs`` and WARMUP_EPOCHS."""
    if job.budget == "epochs":
        return job.epochs, WARMUP_EPOCHS
    per_epoch = steps_per_epoch(n_train)
    return math.ceil(job.steps / per_epoch), job.warmup_steps / per_epoch


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``x``, ``y``."""
    model.eval()
    correct = sum(int((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(y), 500))
    return correct / len(y)


def train_one(job: Job) -> dict:
    """Train ``job.model`` on its subset; the validation accuracy on all held-out images, and what was run."""
    import archforge
    from archforge.search.evaluate import train_model
    from archforge.search.training import TrainConfig

    data = load(job.limit)
    part = subset(data, job.fraction, job.seed)
    probe = replace(part, val_x=part.val_x[:PROBE], val_y=part.val_y[:PROBE], val_index=part.val_index[:PROBE])
    epochs, warmup = schedule(len(part.train_y), job)
    config = TrainConfig(epochs=epochs, batch_size=BATCH, warmup_epochs=warmup, seed=job.seed, latency_repeats=0,
                         **({"init": job.init} if job.init else {}), **({"lr": job.lr} if job.lr is not None else {}))
    cpu = time.process_time()
    model, result = train_model(archforge.load_spec(job.model), probe, config)
    cpu = time.process_time() - cpu
    per_epoch = steps_per_epoch(len(part.train_y))
    return {"model": job.model, "fraction": job.fraction, "seed": job.seed, "train_images": len(part.train_y),
            "full_images": len(data.train_y), "epochs": epochs, "steps": epochs * per_epoch,
            "warmup_steps": min(round(warmup * per_epoch), epochs * per_epoch), "params": result.params,
            "val_images": len(data.val_y), "accuracy": accuracy(model, data.val_x, data.val_y), "lr": result.lr,
            "config": config.model_dump(mode="json"), "train_s": result.train_time_s, "cpu_s": cpu}


def jobs_for(args, n_train: int) -> list[Job]:
    """Every (model, fraction, seed) of the run, for a full training split of ``n_train`` images.

    Budget "steps": every job has ``FULL_EPOCHS · scale`` epochs' worth of steps of the full split
    and a warm-up of ``WARMUP_EPOCHS`` of its steps, whatever its fraction (:func:`schedule` turns
    them into epochs of the subset). Budget "epochs": ``FULL_EPOCHS · scale`` epochs at every
    fraction. ``--quick``: QUICK_LIMIT images, fractions QUICK_FRACTIONS, one step per training.
    A job's seed draws its subset, so the three models of one (fraction, seed) see the same images.
    """
    if args.quick:
        return [Job(model=m, fraction=f, seed=s, steps=1, warmup_steps=0, epochs=1, budget=args.budget, limit=QUICK_LIMIT,
                    init=args.init, lr=args.lr)
                for s in range(args.seeds) for f in QUICK_FRACTIONS for m in MODELS]
    full_steps = steps_per_epoch(n_train)
    return [Job(model=m, fraction=f, seed=s, steps=max(1, round(FULL_EPOCHS * args.scale * full_steps)),
                warmup_steps=round(WARMUP_EPOCHS * full_steps), epochs=max(1, round(FULL_EPOCHS * args.scale)),
                budget=args.budget, limit=None, init=args.init, lr=args.lr)
            for s in range(args.seeds) for f in FRACTIONS for m in MODELS]


def _short(model: str) -> str:
    return model.split("_")[0]


def report(outcome: _common.Outcome, args, wall_s: float, out: Path) -> str:
    """The section: settings, the accuracy table, paired differences per fraction, the growth of the lead, the plot."""
    results = outcome.done
    fractions = sorted({r["fraction"] for r in results})
    models = [m for m in MODELS if any(r["model"] == m for r in results)]
    acc = {(m, f): {r["seed"]: r["accuracy"] for r in results if r["model"] == m and r["fraction"] == f}
           for m in models for f in fractions}
    example = {f: next(r for r in results if r["fraction"] == f) for f in fractions}
    params = {m: next(r["params"] for r in results if r["model"] == m) for m in models}
    first = results[0]
    configs = [r["config"] for r in results]
    if args.budget == "steps":
        budget = (f"the same optimisation steps at every fraction: {FULL_EPOCHS} × scale {args.scale:g} epochs of the "
                  f"{first['full_images']:,}-image split, rounded up to whole epochs of each subset, with the same "
                  f"warm-up in steps (both per fraction in the table)")
    else:
        budget = (f"the same epochs at every fraction ({first['epochs']}), warm-up {WARMUP_EPOCHS} epoch of each subset "
                  "(so fewer steps, and a shorter warm-up in steps, on a smaller subset: see the table)")
    settings = {
        "dataset": (f"mnist{f' (first {QUICK_LIMIT} images, quick)' if args.quick else ''}, {first['full_images']:,} training / "
                    f"{first['val_images']:,} validation images (80/20 stratified, seed 0); subsets stratified, drawn per seed"),
        "fractions": ", ".join(f"{f:.0%}" for f in fractions),
        "models": ", ".join(f"{m} ({params[m]:,} params)" for m in models),
        "seeds": args.seeds,
        "budget": budget,
        "training (TrainConfig as used)": _common.config_text(configs, skip=("epochs", "warmup_epochs", "seed")),
        "validation": f"all {first['val_images']:,} validation images once after training (train_model's per-epoch "
                      f"validation sees the first {PROBE})",
        "workers": f"{args.workers} processes × 1 torch thread",
    }
    lines = [_common.header("Data efficiency: ConViT vs DeiT vs ResNet on 5–100% of MNIST (d'Ascoli et al. 2021, Table 2)",
                            command=_common.command_line(f"{NAME}.py", args.argv), wall_s=wall_s, settings=settings,
                            cost=_common.cache_note(outcome))]
    failed = _common.failures_text(outcome.failures, lambda j: f"{j.model} at {j.fraction:.0%}, seed {j.seed}")
    if failed:
        lines.append(failed)
    lines.append(f"Validation accuracy ({first['val_images']:,} images), mean ± std [95% interval] over seeds:\n")
    rows = []
    for f in fractions:
        e = example[f]
        cells = [f"{f:.0%}", f"{e['train_images']:,}", f"{e['epochs']} / {e['steps']} / {e['warmup_steps']}"]
        cells += [_common.stats(acc[(m, f)].values()).text() if acc[(m, f)] else "—" for m in models]
        rows.append(cells)
    lines.append(_common.table(["fraction", "train images", "epochs / steps / warm-up steps", *models], rows))
    if args.lr == "auto":
        lrs = {m: [r["lr"] for r in results if r["model"] == m] for m in models}
        lines.append("\nLearning rates the range test chose (min … max over fractions and seeds): "
                     + ", ".join(f"{m} {min(v):.2g} … {max(v):.2g}" for m, v in lrs.items() if v) + ".\n")
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    lines.append("\nDifferences of accuracy at each fraction, paired by seed (the two models saw the same subset), "
                 "mean and 95% t interval (✓: separable, the interval excludes 0):\n")
    rows = []
    for f in fractions:
        cells = [f"{f:.0%}"]
        for a, b in pairs:
            x, y = _paired_values(acc[(a, f)], acc[(b, f)])
            cells.append(_common.difference_text(_common.paired(x, y), _mean_diff(x, y)) if x else "—")
        rows.append(cells)
    lines.append(_common.table(["fraction", *[f"{_short(a)} − {_short(b)}" for a, b in pairs]], rows))
    lines.append(growth(acc, models, fractions))
    cpu = {m: [r["cpu_s"] for r in results if r["model"] == m] for m in models}
    lines.append(f"\n{len(results)} trainings; mean CPU time per training (one thread, build to last step): "
                 + ", ".join(f"{m} {sum(v) / len(v):.0f} s" for m, v in cpu.items()) + ".\n")
    image, link = _common.image_path(out, "exp_data_efficiency.png")
    plot(acc, models, fractions, image)
    lines.append(f"![validation accuracy against the fraction of training data]({link})\n")
    return "\n".join(lines)


def _paired_values(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    """The accuracies of the seeds both have, in seed order."""
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _mean_diff(x: list[float], y: list[float]) -> float:
    return sum(x) / len(x) - sum(y) / len(y)


def leads(acc: dict, model: str, other: str, fraction: float) -> list[float]:
    """``model``'s accuracy minus ``other``'s at ``fraction``, per seed both have."""
    x, y = _paired_values(acc[(model, fraction)], acc[(other, fraction)])
    return [a - b for a, b in zip(x, y)]


def growth(acc: dict, models: list[str], fractions: list[float]) -> str:
    """ConViT's lead over each other model at each smaller fraction minus its lead on the full split: Welch's interval
    over seeds (the subsets differ between fractions, so the two leads are independent samples)."""
    from archforge.search.ranking import welch_difference

    lead, full = models[0], fractions[-1]
    others = models[1:]
    if not others or len(fractions) < 2:
        return ""
    text = [f"\nDoes {_short(lead)}'s lead grow as data shrinks? (lead at the fraction) − (lead at {full:.0%}), where a lead "
            "is the per-seed paired difference above; Welch 95% interval over seeds (✓: separable; positive: a larger "
            "lead on less data):\n"]
    rows = []
    for f in fractions[:-1]:
        cells = [f"{f:.0%} vs {full:.0%}"]
        for o in others:
            small, large = leads(acc, lead, o, f), leads(acc, lead, o, full)
            if not small or not large:
                cells.append("—")
                continue
            diff = sum(small) / len(small) - sum(large) / len(large)
            cells.append(_common.difference_text(welch_difference(small, large), diff))
        rows.append(cells)
    text.append(_common.table(["fractions", *[f"lead over {_short(o)}" for o in others]], rows))
    return "\n".join(text)


def plot(acc: dict, models: list[str], fractions: list[float], path: Path) -> None:
    """Accuracy ± 95% interval against the fraction (log x), one curve per model."""
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in models:
        present = [f for f in fractions if acc[(m, f)]]
        s = [_common.stats(acc[(m, f)].values()) for f in present]
        err = [[x.mean - x.low if x.n > 1 else 0 for x in s], [x.high - x.mean if x.n > 1 else 0 for x in s]]
        ax.errorbar(present, [x.mean for x in s], yerr=err, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("fraction of the training split (log scale)")
    ax.set_ylabel("validation accuracy (mean, 95% interval)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0], seeds=3)
    p.add_argument("--budget", choices=("steps", "epochs"), default="steps",
                   help="same optimisation steps at every fraction (default), or same epochs")
    _common.recipe_arguments(p)
    args = _common.parse(p, argv)
    return _common.guarded(lambda: run(args))


def run(args) -> int:
    """Train every job (resuming from the cache), then write or print the section."""
    start = time.perf_counter()
    jobs = jobs_for(args, len(load(QUICK_LIMIT if args.quick else None).train_y))

    def progress(done, total, job, result):
        what = (f"accuracy {result['accuracy']:.4f} ({result['epochs']} epochs, {result['steps']} steps, "
                f"{result['cpu_s']:.0f} s CPU)") if result else "failed"
        print(f"[{done}/{total}] {job.model} {job.fraction:.0%} seed {job.seed}: {what}", flush=True)

    # the full-data ConViT runs are the longest: start them first so the two workers finish together
    order = sorted(jobs, key=lambda j: (-j.fraction, j.model != "convit_micro_28"))
    outcome = _common.run_jobs(train_one, order, workers=args.workers, cache=_common.work_folder(args, NAME), progress=progress)
    if not outcome.done:
        print(f"error: every training failed; the first: {outcome.failures[0][1]}", file=sys.stderr)
        return 1
    return _common.finish(args, NAME, lambda out: report(outcome, args, time.perf_counter() - start, out))


if __name__ == "__main__":
    sys.exit(main())
