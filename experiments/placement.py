"""Placement: where should convolutions end and attention begin, and does the answer survive the training recipe?

Ramachandran et al. 2019 ("Stand-Alone Self-Attention in Vision Models", §4.3) replaced
the convolutions of a ResNet by local self-attention stage by stage and found a conv stem
with attention in the later stages best. Here every conv/attention assignment of the three
stages of a small ResNet-style network (2³ = 8 placements) is trained with several seeds under
three recipes: reference initialisation (``train.init: reference``), PyTorch's default
initialisation (``train.init: pytorch``), and the learning rate tuned per candidate and seed by
a range test (``train.lr: auto``, reference init). By default the space is the main job's,
``placement_mnist`` (local self-attention units), on ``mnist`` with the space's own budget
(2 epochs, 4,000 images, lr 0.01): about 7 minutes on 2 cores.

On the long-range known-answer task (``--space placement_grid --datasets mnist,long_range``: the
space's ``classes`` param is set to each dataset's class count, and placement_grid's attention
units mix globally) the budget must be far larger: long_range is learned only after 2-5 epochs
of 4,000 images (docs/search-spaces.md, known-answer tasks), and at 3 epochs of 5,000 images three
seeds of conv/conv/attention all stayed at chance; ``--epochs 5 --limit 5000`` is about an hour
on 2 cores. Everything else (batch, learning rate, optimiser, schedule) is the space's
``search:`` section, and the section prints the settings each run stored.

Each (dataset, recipe) is one :func:`archforge.search` run in its own SQLite file under
``--workdir`` (default runs/experiments/placement), named after everything that changes its
result (space and its fingerprint, dataset, recipe, epochs, seeds, images): running the same
command again resumes and reuses what is stored, and changing a setting starts new runs.

Per run, the section shows the ranking with mean ± std and 95% intervals over seeds, which
placements are not separable from the best (Welch's interval of the difference contains 0),
the ranking's own notes, each decision's effect (``SearchResult.effects``) and its notes, and
what the run cost (trials trained by this invocation and read from the store, and
``SearchResult.compute``); then the winner per dataset × recipe, and Kendall's τ_b between the
recipes' rankings of the 8 placements (on mean accuracies;
:func:`archforge.search.fidelity.kendall_tau_b`).

    python experiments/placement.py                       # placement_mnist on mnist, 3 seeds, 3 recipes
    python experiments/placement.py --space placement_grid --datasets mnist,long_range --epochs 5 --limit 5000
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable for `experiments._common`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common

NAME = "placement"
SPACE = "placement_mnist"
DATASETS = ("mnist",)
RECIPES = {  # name → the train: overrides that make it
    "init reference": {"init": "reference"},
    "init pytorch": {"init": "pytorch"},
    "lr auto": {"lr": "auto", "init": "reference"},
}
# placement_mnist's own budget (its search: section): 2 epochs of 4,000 images, 3 recipes x 3 seeds in 388 s on 2 cores.
EPOCHS = 2  # × --scale
LIMIT = 4000  # images per dataset (train + validation, 80/20)
QUICK = {"epochs": 1, "limit": 100, "budget": 2, "batch_size": 16}  # lr auto's range test takes ≥ 50 steps: small ones
SHORT = {"conv_unit": "conv", "attention_unit": "attn"}


def placement(decisions: dict) -> str:
    """``conv/attn/conv``: the stages' blocks in order of their decision names."""
    return "/".join(SHORT.get(str(decisions[k]), str(decisions[k])) for k in sorted(decisions))


def store_name(space: Any, dataset: str, recipe: str, args) -> str:
    """The run's name (and its SQLite file's): every setting that changes its result, so a rerun with other settings
    starts a new run instead of meeting a stored one it does not match."""
    return (f"{dataset}_{recipe.replace(' ', '-')}_{space.name}-{space.fingerprint[:8]}"
            f"_e{args.epochs}_s{args.seeds}_n{args.limit}")


def run_one(space_name: str, dataset: str, recipe: str, classes: int, args, workdir: Path) -> dict:
    """One (dataset, recipe) search, resumed from its store when it exists: its rows, notes, effects and cost."""
    import archforge
    from archforge.search.effects import effect_notes
    from archforge.search.space import load_space

    space = load_space(space_name)
    name = store_name(space, dataset, recipe, args)
    train = {**RECIPES[recipe], "latency_repeats": 0, "threads": 1}  # latency unused; one torch thread per worker
    if args.quick:
        train["batch_size"] = QUICK["batch_size"]
    started = _dt.datetime.now().replace(microsecond=0)  # Optuna stamps trials in local time, to the second as stored
    result = archforge.search(space, dataset=dataset, params={"classes": classes}, seeds=args.seeds,
                              epochs=args.epochs, limit=args.limit, workers=args.workers, budget=args.budget, train=train,
                              name=name, strategy="grid", storage=workdir / f"{name}.db", runs_dir=workdir,
                              progress=False if args.quick else "lines")
    counted = [r for r in result.trials if r.counted]
    now = sum(1 for r in counted if r.started and _dt.datetime.fromisoformat(r.started) >= started)
    rows = [row for row in result.table if row.get("rank") is not None]
    pruned = sum(row.get("status") == "pruned" for row in result.table)
    stored = result.run.settings
    return {"dataset": dataset, "recipe": recipe, "classes": classes, "rows": rows, "notes": result.notes,
            "effects": [e.text() for e in result.effects],
            "effect_notes": effect_notes(result.effects, list(space.decisions.values()), pruned=pruned),
            "failed": result.failed, "compute": result.compute, "trained_now": now, "from_store": len(counted) - now,
            "store": f"{name}.db", "settings": stored.model_dump(mode="json", include={"epochs", "seeds", "limit", "val_fraction",
                                                                                      "strategy", "params"}),
            "train": stored.train.model_dump(mode="json", exclude={"epochs", "seed"})}


def _acc(row: dict) -> str:
    low, high = row.get("accuracy_low"), row.get("accuracy_high")
    text = f"{row['accuracy']:.4f}"
    if row.get("accuracy_std") is not None:
        text += f" ± {row['accuracy_std']:.4f}"
    if low is not None and high is not None:
        text += f" [{low:.4f}, {high:.4f}]"
    return text


def _separable(row: dict) -> str:
    if row.get("most_accurate"):
        return "best"
    flag = row.get("separable_from_best")
    gap = ""
    if row.get("gap_low") is not None:
        gap = f" (best − this: [{100 * row['gap_low']:+.1f}, {100 * row['gap_high']:+.1f}] pts)"
    return {True: "yes", False: "**no**", None: "not tested"}[flag] + gap


def report(runs: list[dict], args, wall_s: float, out: Path) -> str:
    """The section: settings, the winner table, Kendall τ between recipes, per-run rankings, notes, effects and cost, the plot."""
    from archforge.search.compute import compute_text
    from archforge.search.fidelity import kendall_tau_b
    from archforge.search.space import load_space

    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    recipes = list(dict.fromkeys(r["recipe"] for r in runs))
    space = load_space(args.space)
    own = space.settings
    trained = sum(r["trained_now"] for r in runs)
    reused = sum(r["from_store"] for r in runs)
    first = runs[0]["settings"]
    settings = {
        "space": f"{space.name} (fingerprint {space.fingerprint[:8]}; {space.size} placements; its own search section: "
                 f"epochs {own.epochs}, limit {own.limit}, lr {own.train.lr}, batch {own.train.batch_size})",
        "datasets": ", ".join(f"{r['dataset']} (classes {r['classes']})" for r in runs if r["recipe"] == recipes[0]),
        "recipes": ", ".join(f"{k} (train {RECIPES[k]})" for k in recipes),
        "stored search settings": ", ".join(f"{k} {v}" for k, v in first.items() if k != "params"),
        "stored training settings": _common.config_text([r["train"] for r in runs]),
        "store": f"{args.workdir_text} (one SQLite file per dataset × recipe, named after its settings; rerunning resumes)",
        "workers": f"{args.workers} search worker processes × 1 torch thread",
    }
    cost = (f"this invocation; it trained {trained} trial(s) and read {reused} from the stores of earlier runs"
            if reused else None)
    lines = [_common.header("Placement: conv vs attention per stage, across datasets and recipes (Ramachandran et al. 2019)",
                            command=_common.command_line(f"{NAME}.py", args.argv), wall_s=wall_s, settings=settings, cost=cost)]
    by = {(r["dataset"], r["recipe"]): r for r in runs}
    lines.append("Winner per dataset × recipe (highest mean validation accuracy; the placements not separable from it "
                 "at 95% in parentheses):\n")
    rows = []
    for d in datasets:
        cells = [d]
        for k in recipes:
            run = by.get((d, k))
            if run is None or not run["rows"]:
                cells.append("—")
                continue
            best = next((r for r in run["rows"] if r.get("most_accurate")), run["rows"][0])
            close = [placement(r["decisions"]) for r in run["rows"] if r.get("separable_from_best") is False and r is not best]
            cells.append(f"{placement(best['decisions'])} {best['accuracy']:.4f}" + (f" ({', '.join(close)})" if close else ""))
        rows.append(cells)
    lines.append(_common.table(["dataset", *recipes], rows))
    lines.append("\nKendall's τ_b between two recipes' rankings of the placements (1: same order, −1: reversed). It is "
                 "computed on the mean accuracies and ignores their noise: placements not separable within a recipe can "
                 "swap places by chance, which lowers τ without any change of answer:\n")
    rows = []
    for d in datasets:
        for i, k1 in enumerate(recipes):
            for k2 in recipes[i + 1:]:
                r1, r2 = by.get((d, k1)), by.get((d, k2))
                if not r1 or not r2:
                    continue
                m1 = {placement(r["decisions"]): r["accuracy"] for r in r1["rows"]}
                m2 = {placement(r["decisions"]): r["accuracy"] for r in r2["rows"]}
                common = sorted(set(m1) & set(m2))
                tau, _ = kendall_tau_b([m1[p] for p in common], [m2[p] for p in common])
                rows.append([d, f"{k1} vs {k2}", len(common), "undefined" if tau is None else f"{tau:+.2f}"])
    lines.append(_common.table(["dataset", "recipes", "placements", "τ_b"], rows) if rows else "(one recipe: nothing to compare)")
    for run in runs:
        lines.append(f"\n### {run['dataset']}, {run['recipe']}\n")
        lines.append(f"Store `{run['store']}`: {run['trained_now']} trial(s) trained by this invocation, {run['from_store']} "
                     f"read from the store; {compute_text(run['compute'])}.\n")
        if run["failed"]:
            lines.append(f"{len(run['failed'])} placement(s) failed: "
                         + "; ".join(f"{placement(r['decisions'])}: {r.get('error')}" for r in run["failed"]) + "\n")
        head = ["#", "stages 1/2/3", "accuracy: mean ± std [95%]", "separable from best", "lr"]
        rows = [[r["rank"], placement(r["decisions"]), _acc(r), _separable(r), f"{r['lr']:.2g}" if r.get("lr") is not None else "—"]
                for r in run["rows"]]
        lines.append(_common.table(head, rows, align="rlrlr"))
        lines.append("\nlr: the peak learning rate trained with (with lr auto, the range test's; the lower median over seeds).\n")
        lines += [f"- {note}" for note in run["notes"]]
        lines.append("\nDecision effects (points of accuracy, 95% interval):\n")
        lines += [f"- {e}" for e in run["effects"]] or ["- none"]
        lines += [f"- note: {note}" for note in run["effect_notes"]]
    image, link = _common.image_path(out, "exp_placement.png")
    plot(runs, datasets, recipes, image)
    lines.append(f"\n![mean accuracy ± 95% interval per placement, dataset and recipe]({link})\n")
    return "\n".join(lines)


def plot(runs: list[dict], datasets: list[str], recipes: list[str], path: Path) -> None:
    """One panel per dataset: mean accuracy ± 95% interval of each placement, one marker per recipe."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    by = {(r["dataset"], r["recipe"]): r for r in runs}
    for ax, d in zip(axes[0], datasets):
        first = next((by[(d, k)] for k in recipes if (d, k) in by and by[(d, k)]["rows"]), None)
        if first is None:
            continue
        order = [placement(r["decisions"]) for r in first["rows"]]  # the first recipe's ranking
        for j, k in enumerate(recipes):
            run = by.get((d, k))
            if run is None:
                continue
            rows = {placement(r["decisions"]): r for r in run["rows"]}
            shown = [p for p in order if p in rows]
            xs = [order.index(p) + (j - (len(recipes) - 1) / 2) * 0.2 for p in shown]
            ys = [rows[p]["accuracy"] for p in shown]
            low = [rows[p]["accuracy"] - (rows[p].get("accuracy_low") or rows[p]["accuracy"]) for p in shown]
            high = [(rows[p].get("accuracy_high") or rows[p]["accuracy"]) - rows[p]["accuracy"] for p in shown]
            ax.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=2, label=k)
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{d} (placements in the order of '{recipes[0]}')")
        ax.set_ylabel("validation accuracy (mean, 95% interval)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        sys.exit(f"error: {flag} must be a positive whole number, got {value}")


def check(args) -> None:
    """Every argument checked before any work: one line and exit status 1 on the first problem."""
    from archforge.data import available_datasets

    _positive(args.limit, "--limit")
    _positive(args.budget, "--budget")
    _positive(args.epochs, "--epochs")
    args.recipes = _common.names(args.recipes, "--recipes")
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        sys.exit(f"error: unknown recipe {unknown[0]!r}; choose among: {', '.join(RECIPES)}")
    args.datasets = _common.names(args.datasets, "--datasets")
    known = available_datasets()
    unknown = [d for d in args.datasets if d not in known]
    if unknown:
        sys.exit(f"error: unknown dataset {unknown[0]!r}; choose among: {', '.join(known)}")
    if args.space is None or not args.space.strip() or "," in args.space or "=" in args.space:
        sys.exit(f"error: --space {args.space!r} must be one space (a bundled name or a .yaml file) for every dataset")


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0], seeds=3)
    p.add_argument("--space", default=SPACE, help=f"the placement space, for every dataset (default {SPACE}); its params "
                                                  "must include classes")
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated (default {','.join(DATASETS)})")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)} (default all)")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs per training (default {EPOCHS} × --scale)")
    p.add_argument("--limit", type=int, default=None, help=f"images per dataset, train + validation (default {LIMIT})")
    p.add_argument("--budget", type=int, default=None, help="placements per run (default: all of the grid)")
    args = _common.parse(p, argv)
    check(args)
    if args.epochs is None:
        args.epochs = QUICK["epochs"] if args.quick else max(1, round(EPOCHS * args.scale))
    if args.limit is None:
        args.limit = QUICK["limit"] if args.quick else LIMIT
    if args.budget is None and args.quick:
        args.budget = QUICK["budget"]
    return _common.guarded(lambda: run(args))


def run(args) -> int:
    """Load the space, count each dataset's classes, run every (dataset, recipe), then write or print the section."""
    import tempfile

    from archforge.data import load_dataset
    from archforge.search.space import load_space

    start = time.perf_counter()
    space = load_space(args.space)  # a missing or broken space fails here, before any training
    classes = {d: load_dataset(d, limit=args.limit).num_classes for d in args.datasets}
    for n in set(classes.values()):
        space.with_params({"classes": n})  # a space without a classes param fails here too (SpecError: one line)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = _common.work_folder(args, NAME) or Path(scratch)
        args.workdir_text = str(workdir) if _common.work_folder(args, NAME) else "a temporary folder"
        workdir.mkdir(parents=True, exist_ok=True)
        runs = []
        for d in args.datasets:
            for k in args.recipes:
                print(f"== {d} ({classes[d]} classes), {k}", flush=True)
                runs.append(run_one(args.space, d, k, classes[d], args, workdir))
        return _common.finish(args, NAME, lambda out: report(runs, args, time.perf_counter() - start, out))


if __name__ == "__main__":
    sys.exit(main())
