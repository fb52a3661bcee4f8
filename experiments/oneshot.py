"""One-shot vs stand-alone: does one weight-sharing supernet rank the placements as training each one does?

``strategy: oneshot`` (``archforge.search.oneshot``) trains one supernet holding every placement
of a space (single-path one-shot, Guo et al. 2020; FairNAS sampling, Chu et al. 2021) and ranks
the placements by their accuracy with inherited weights after recalibrating BatchNorm. This
experiment measures that ranking against the stand-alone grid: every placement trained on its
own with several seeds, on the same data, epochs and recipe (the space's ``search:`` section).

Tasks: ``mnist`` (the main job's space, ``placement_mnist``: local attention, 2 epochs of 4,000
images) and ``long_range`` (the known-answer task, ``placement_grid``: global attention, 5 epochs
of 5,000 images, 2 classes). For each, the grid (8 placements × ``--seeds`` seeds) is one
:func:`archforge.search` run in its own SQLite store under ``--workdir`` (a rerun resumes it);
each one-shot variant trains ``--seeds`` supernets (seeds 0, 1, ...), cached as jobs. Variants
cost the same training images, about 1/12 of the 3-seed grid's:

- ``fair``: FairNAS sampling (2 paths per step, one per value of each decision), the space's epochs;
- ``uniform``: SPOS's uniform sampling (1 path per step), twice the space's epochs.

Per task and variant the section gives Kendall's τ_b between each supernet's ranking and the
grid's (mean accuracies over seeds), its mean and 95% interval over supernet seeds, whether each
supernet's winner is the grid's best or not separable from it (Welch's interval, the grid's own
marks), and the cost against the grid's: training images, and single-thread seconds (the
supernet's training and ranking vs the sum of the grid's trainings). As the yardstick, the same τ
for one stand-alone seed of the grid (that seed's ranking vs the mean of the others), which costs
a third of the grid.

    python experiments/oneshot.py                          # mnist and long_range, 3 seeds (about 25 minutes on 2 cores)
    python experiments/oneshot.py --tasks mnist --variants fair
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable for `experiments._common`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import _common

NAME = "oneshot"
TASKS = {"mnist": ("placement_mnist", "mnist"), "long_range": ("placement_grid", "long_range")}
VARIANTS = {"fair": ("fair", 1), "uniform": ("uniform", 2)}  # name → (sampling, supernet epochs per grid epoch)
QUICK = {"epochs": 1, "limit": 200, "batch_size": 16}
SHORT = {"conv_unit": "conv", "attention_unit": "attn"}


def placement(decisions: dict) -> str:
    """``conv/attn/conv``: the stages' blocks in order of their decision names."""
    return "/".join(SHORT.get(str(decisions[k]), str(decisions[k])) for k in sorted(decisions))


@dataclass(frozen=True)
class SupernetJob:
    """One supernet: trained, then every placement ranked with inherited weights."""

    space: str
    fingerprint: str
    dataset: str
    classes: int
    limit: int
    epochs: int
    sampling: str
    seed: int
    calibration_batches: int
    batch_size: int


def train_one(job: SupernetJob) -> dict[str, Any]:
    """Train ``job``'s supernet (one torch thread) and rank every placement; JSON-ready."""
    from archforge.data import load_dataset
    from archforge.search.space import load_space
    from archforge.search.supernet_training import train_supernet

    space = load_space(job.space).with_params({"classes": job.classes})
    settings = space.settings.merged(epochs=job.epochs, limit=job.limit, train={"batch_size": job.batch_size})
    data = load_dataset(job.dataset, val_fraction=settings.val_fraction, seed=0, limit=job.limit)
    candidates = space.distinct_candidates()
    config = settings.trial_config(job.seed).model_copy(update={"threads": 1})
    run = train_supernet(candidates, data, config, sampling=job.sampling, calibration_batches=job.calibration_batches)
    return {
        "accuracy": {candidates[s.index].hash: s.accuracy for s in run.scores},
        "placement": {c.hash: placement(c.values) for c in candidates},
        "train_images": run.train_images, "eval_images": run.eval_images, "steps": run.steps,
        "paths_per_step": run.paths_per_step, "train_s": run.timings["train"], "rank_s": run.timings["rank"],
        "history": run.training.history,
    }


def grid(task: str, args, workdir: Path) -> dict[str, Any]:
    """The stand-alone grid of ``task`` (resumed from its store): per placement mean, interval, mark, per-seed accuracies."""
    import archforge
    from archforge.data import load_dataset
    from archforge.search.space import load_space

    space_name, dataset = TASKS[task]
    space = load_space(space_name)
    epochs, limit = args.epochs_of[task], args.limit_of[task]
    classes = load_dataset(dataset, limit=limit).num_classes
    name = f"{dataset}_grid_{space.name}-{space.fingerprint[:8]}_e{epochs}_s{args.seeds}_n{limit}"
    train = {"latency_repeats": 0, "threads": 1, **({"batch_size": QUICK["batch_size"]} if args.quick else {})}
    result = archforge.search(space, dataset=dataset, params={"classes": classes}, seeds=args.seeds, epochs=epochs, limit=limit,
                              workers=args.workers, train=train, name=name, strategy="grid", storage=workdir / f"{name}.db",
                              runs_dir=workdir, progress=False if args.quick else "lines")
    rows = {row["hash"]: row for row in result.table if row.get("rank") is not None}
    records = {r.hash: r for r in result.trials if r.status == "complete" and r.counted and r.hash in rows}  # not reuses
    n_train = len(load_dataset(dataset, val_fraction=result.run.settings.val_fraction, seed=0, limit=limit).train_y)
    return {
        "space": space_name, "dataset": dataset, "classes": classes, "store": f"{name}.db", "epochs": epochs, "limit": limit,
        "fingerprint": space.fingerprint, "n_train": n_train, "batch_size": result.run.settings.train.batch_size,
        "rows": {h: {"placement": placement(r["decisions"]), "accuracy": r["accuracy"], "low": r.get("accuracy_low"),
                     "high": r.get("accuracy_high"), "best": bool(r.get("most_accurate")),
                     "separable": r.get("separable_from_best"),
                     "seeds": {str(s): v.accuracy for s, v in records[h].seeds.items()} if h in records else {}}
                 for h, r in rows.items()},
        "eval_s": sum(r.eval_time_s or 0.0 for r in records.values()),
        "trainings": sum(len(r.seeds) for r in records.values()),
    }


def tau(a: dict[str, float], b: dict[str, float]) -> float | None:
    from archforge.search.fidelity import kendall_tau_b

    common = sorted(set(a) & set(b))
    value, _ = kendall_tau_b([a[h] for h in common], [b[h] for h in common])
    return value


def separable_pairs(rows: dict[str, dict]) -> list[tuple[str, str]]:
    """The pairs (better, worse) of placements the grid tells apart: Welch's 95% interval of their difference excludes 0."""
    from archforge.search.ranking import welch_difference

    pairs = []
    hashes = sorted(rows)
    for i, a in enumerate(hashes):
        for b in hashes[i + 1:]:
            d = welch_difference(list(rows[a]["seeds"].values()), list(rows[b]["seeds"].values()))
            if d is not None and d.excludes_zero:
                pairs.append((a, b) if d.mean > 0 else (b, a))
    return pairs


def pair_agreement(scores: dict[str, float], pairs: list[tuple[str, str]]) -> tuple[int, int]:
    """How many of the grid's separable pairs ``scores`` orders the same way (a tie counts as not), out of how many."""
    return sum(scores[a] > scores[b] for a, b in pairs if a in scores and b in scores), len(pairs)


def seed_yardstick(rows: dict[str, dict]) -> list[float | None]:
    """τ_b of each stand-alone seed's ranking against the mean of the other seeds'."""
    seeds = sorted({s for r in rows.values() for s in r["seeds"]})
    taus = []
    for s in seeds:
        one = {h: r["seeds"][s] for h, r in rows.items() if s in r["seeds"]}
        rest = {h: statistics.fmean(v for k, v in r["seeds"].items() if k != s) for h, r in rows.items()
                if any(k != s for k in r["seeds"])}
        taus.append(tau(one, rest))
    return taus


def report(tasks: dict[str, dict], shots: dict[tuple[str, str], list[dict]], args, wall_s: float, out: Path) -> str:
    """The section: settings, the summary table, then per task the grid and each supernet's ranking."""
    settings = {
        "tasks": "; ".join(f"{t}: {g['space']} on {g['dataset']} ({g['classes']} classes), {g['epochs']} epochs of {g['n_train']:,} "
                           f"training images, batch {g['batch_size']}, the space's own recipe" for t, g in tasks.items()),
        "grid": f"{args.seeds} seeds per placement, stores under {args.workdir_text} (rerunning resumes)",
        "supernets": f"{args.seeds} seeds per variant; variants " + ", ".join(
            f"{v} ({VARIANTS[v][0]} sampling, {VARIANTS[v][1]}× the grid's epochs)" for v in args.variants)
            + f"; BatchNorm recalibrated on {args.calibration} training batches per placement",
        "workers": f"{args.workers} processes × 1 torch thread",
    }
    lines = [_common.header("One-shot vs stand-alone: a supernet's ranking of the placements against the grid's",
                            command=_common.command_line(f"{NAME}.py", args.argv), wall_s=wall_s, settings=settings)]
    lines.append("τ_b: Kendall's τ_b between a ranking of the 8 placements and the grid's (mean over seeds); per supernet "
                 "seed, then mean [95% interval] over seeds. Winner: the grid's mark of each supernet's top placement "
                 "(best; ≈ not separable from the best at 95%; < separably worse). Separable pairs in order: of the pairs "
                 "of placements the grid tells apart (Welch's 95% interval of their difference excludes 0), how many each "
                 "ranking puts in the grid's order, per seed: τ also counts the pairs the grid itself cannot order, "
                 "which are noise. Cost: training images, and "
                 "single-thread seconds (training + ranking), against the whole grid's.\n")
    head = ["task", "method", "τ_b per seed", "τ_b mean [95%]", "separable pairs in order", "winner per seed", "images vs grid",
            "seconds vs grid"]
    rows = []
    for t, g in tasks.items():
        grid_images = g["trainings"] * g["epochs"] * (g["n_train"] // g["batch_size"]) * g["batch_size"]  # full batches
        mean = {h: r["accuracy"] for h, r in g["rows"].items()}
        yard = seed_yardstick(g["rows"])
        pairs = separable_pairs(g["rows"])
        seeds = sorted({s for r in g["rows"].values() for s in r["seeds"]})
        single = [pair_agreement({h: r["seeds"][s] for h, r in g["rows"].items() if s in r["seeds"]}, pairs) for s in seeds]
        rows.append([t, "one stand-alone seed", _taus(yard), _mean(yard), _pairs(single), "—", f"{1 / max(1, args.seeds):.2f}",
                     f"{1 / max(1, args.seeds):.2f}"])
        for v in args.variants:
            runs = shots.get((t, v), [])
            if not runs:
                rows.append([t, f"one-shot, {v}", "failed", "—", "—", "—", "—", "—"])
                continue
            taus = [tau(r["accuracy"], mean) for r in runs]
            winners = [_mark(g["rows"].get(max(r["accuracy"], key=r["accuracy"].get))) for r in runs]
            images = statistics.fmean(r["train_images"] for r in runs) / grid_images
            seconds = statistics.fmean(r["train_s"] + r["rank_s"] for r in runs) / g["eval_s"] if g["eval_s"] else math.nan
            agree = [pair_agreement(r["accuracy"], pairs) for r in runs]
            rows.append([t, f"one-shot, {v}", _taus(taus), _mean(taus), _pairs(agree), " ".join(winners), f"{images:.3f}",
                         f"{seconds:.3f}"])
    lines.append(_common.table(head, rows, align="llllllrr"))
    for t, g in tasks.items():
        lines.append(f"\n### {t}: {g['space']} on {g['dataset']}\n")
        lines.append(f"Grid store `{g['store']}`: {g['trainings']} trainings, {g['eval_s']:.0f} single-thread seconds in all.\n")
        order = sorted(g["rows"], key=lambda h: -g["rows"][h]["accuracy"])
        head = ["stages 1/2/3", "stand-alone mean [95%]", "mark"] + [f"{v} s{i}" for v in args.variants
                                                                     for i in range(len(shots.get((t, v), [])))]
        body = []
        for h in order:
            r = g["rows"][h]
            cells = [r["placement"], f"{r['accuracy']:.4f} [{_num(r['low'])}, {_num(r['high'])}]", _mark(r)]
            for v in args.variants:
                for run in shots.get((t, v), []):
                    acc = run["accuracy"].get(h)
                    rank = sorted(run["accuracy"].values(), reverse=True).index(acc) + 1 if acc is not None else None
                    cells.append(f"{acc:.4f} (#{rank})" if acc is not None else "—")
            body.append(cells)
        lines.append(_common.table(head, body))
        lines.append("\nOne-shot columns: accuracy with inherited weights (after BatchNorm recalibration) and the "
                     "supernet's rank; s0, s1, ...: supernet seeds.\n")
        for v in args.variants:
            for i, run in enumerate(shots.get((t, v), [])):
                lines.append(f"- {v} s{i}: {run['steps']} steps × {run['paths_per_step']} path(s), {run['train_images']:,} "
                             f"training images, {run['eval_images']:,} ranking images, {run['train_s']:.0f} s training + "
                             f"{run['rank_s']:.0f} s ranking; probe-path accuracy per epoch "
                             + ", ".join(f"{a:.3f}" for a in run["history"]))
    return "\n".join(lines)


def _mark(row: dict | None) -> str:
    if row is None:
        return "?"
    return "best" if row["best"] else "≈" if row["separable"] is False else "<" if row["separable"] else "·"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _pairs(values: list[tuple[int, int]]) -> str:
    return " ".join(f"{k}/{n}" for k, n in values) if values and values[0][1] else "none separable"


def _taus(values: list[float | None]) -> str:
    return " ".join("undef." if v is None else f"{v:+.2f}" for v in values)


def _mean(values: list[float | None]) -> str:
    finite = [v for v in values if v is not None]
    if not finite:
        return "—"
    s = _common.stats(finite)
    return f"{s.mean:+.2f}" + (f" [{s.low:+.2f}, {s.high:+.2f}]" if len(finite) > 1 and not math.isnan(s.low) else "")


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0], seeds=3)
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of: {', '.join(TASKS)} (default all)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)} (default all)")
    from archforge.search.settings import OneShotSettings

    default = OneShotSettings().calibration_batches
    p.add_argument("--calibration", type=int, default=default,
                   help=f"training batches each placement's BatchNorm is recalibrated on (default {default}, oneshot's own)")
    args = _common.parse(p, argv)
    for flag, field, known in (("--tasks", "tasks", TASKS), ("--variants", "variants", VARIANTS)):
        values = _common.names(getattr(args, field), flag)
        unknown = [n for n in values if n not in known]
        if unknown:
            sys.exit(f"error: {flag} names {unknown[0]!r}; give names of {', '.join(known)}")
        setattr(args, field, values)
    if args.calibration < 1:
        sys.exit(f"error: --calibration must be at least 1, got {args.calibration}")
    return _common.guarded(lambda: run(args))


def run(args) -> int:
    import tempfile

    from archforge.search.space import load_space

    start = time.perf_counter()
    args.epochs_of, args.limit_of = {}, {}
    for t in args.tasks:
        own = load_space(TASKS[t][0]).settings
        args.epochs_of[t] = QUICK["epochs"] if args.quick else max(1, round(own.epochs * args.scale))
        args.limit_of[t] = QUICK["limit"] if args.quick else own.limit
    with tempfile.TemporaryDirectory() as scratch:
        workdir = _common.work_folder(args, NAME) or Path(scratch)
        args.workdir_text = str(workdir) if _common.work_folder(args, NAME) else "a temporary folder"
        workdir.mkdir(parents=True, exist_ok=True)
        tasks = {}
        for t in args.tasks:
            print(f"== {t}: the stand-alone grid", flush=True)
            tasks[t] = grid(t, args, workdir)
        jobs = [SupernetJob(space=g["space"], fingerprint=g["fingerprint"], dataset=g["dataset"], classes=g["classes"],
                            limit=g["limit"], epochs=g["epochs"] * VARIANTS[v][1], sampling=VARIANTS[v][0], seed=s,
                            calibration_batches=args.calibration, batch_size=g["batch_size"])
                for t, g in tasks.items() for v in args.variants for s in range(args.seeds)]
        print(f"== {len(jobs)} supernets", flush=True)
        outcome = _common.run_jobs(train_one, jobs, workers=args.workers, cache=workdir / "supernets",
                                   progress=lambda done, total, job, result: print(
                                       f"  {done}/{total}: {job.dataset} {job.sampling} seed {job.seed}"
                                       + ("" if result is not None else " failed"), flush=True))
        shots: dict[tuple[str, str], list[dict]] = {}
        for job, result in zip(jobs, outcome.results):
            if result is None:
                continue
            t = next(t for t, g in tasks.items() if g["dataset"] == job.dataset and g["space"] == job.space)
            v = next(v for v in args.variants if VARIANTS[v] == (job.sampling, job.epochs // tasks[t]["epochs"]))
            shots.setdefault((t, v), []).append(result)

        def section(out: Path) -> str:
            text = report(tasks, shots, args, time.perf_counter() - start, out)
            failed = _common.failures_text(outcome.failures, lambda job: f"{job.dataset} {job.sampling} seed {job.seed}")
            return text + ("\n\n" + failed if failed else "")

        return _common.finish(args, NAME, section)


if __name__ == "__main__":
    sys.exit(main())
