"""The ``space``, ``search`` and ``report`` commands of the ``archforge`` command line.

``archforge.cli`` registers them with :func:`add_commands`. Problems with a space are
:class:`~archforge.SpecError` diagnostics (``file:line:col: message``, exit status 1),
like every other command's; a count, budget, seed or bound that makes no sense
(negative, zero where one is needed, NaN) is a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import warnings
from pathlib import Path
from typing import Any

from archforge.errors import SpecWarning

#: Bounds of the flags whose cost grows with their value: printed specs, shape-checked
#: candidates (each a full validation) and worker processes.
MAX_SAMPLES = 1_000
MAX_CHECK = 10_000
MAX_WORKERS = 256


def _stdout() -> Any:
    from rich.console import Console

    # piped into a file or a log, tables keep their columns instead of folding them into 80 characters
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def add_commands(subparsers: Any) -> None:
    """Add ``space``, ``search`` and ``report`` to an ``argparse`` sub-parser set."""
    from archforge.cli import fraction, int_range, non_negative_int, positive_int, positive_number, seed_int
    from archforge.search.strategies import STRATEGY_HELP

    s = subparsers.add_parser("space", help="decisions, number of candidates and sampled candidates of a search space",
                              description="Show a search space: how many candidates, each decision with its options and "
                                          "where it is in the file, a few sampled concrete specs, and how many of a sample "
                                          "the shape checker or the constraints reject.")
    s.add_argument("spec", help="a search space (a spec with choice points)")
    s.add_argument("-n", "--samples", type=int_range(0, MAX_SAMPLES), default=2, metavar="N", help="concrete specs to print (default 2)")
    s.add_argument("--check", type=int_range(0, MAX_CHECK), default=32, metavar="N", help="candidates to check against shapes and constraints (default 32)")
    s.add_argument("--seed", type=seed_int, default=0, help="seed of the sampling")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_space)

    s = subparsers.add_parser("search", help="search a space; running it again resumes the run",
                              description="Search a space with the settings of its search: section, overridden by flags. "
                                          "Results go to runs/<name>/study.db (or --storage); the same command again "
                                          "resumes the run without repeating or losing a completed trial.")
    s.add_argument("spec", help="a search space (a spec with choice points)")
    g = s.add_argument_group("what to search")
    g.add_argument("--strategy", choices=list(STRATEGY_HELP), help="; ".join(f"{k}: {v}" for k, v in STRATEGY_HELP.items()))
    g.add_argument("--budget", type=positive_int, metavar="N", help="candidates to evaluate (default: the whole grid, else 20)")
    g.add_argument("--objectives", metavar="LIST", help="comma-separated: accuracy, params, flops, latency_ms, peak_memory_mb, train_time_s")
    g.add_argument("--max-params", type=positive_number, metavar="N", help="reject candidates with more parameters, before training")
    g.add_argument("--max-flops", type=positive_number, metavar="N", help="reject candidates with more FLOPs per sample, before training")
    g.add_argument("--pruner", choices=["none", "successive_halving", "sh", "hyperband", "median"], help="multi-fidelity over epochs")
    g.add_argument("--proxy", choices=["none", "synflow", "naswot"], help="zero-cost pre-filter: score candidates, train the best")
    g.add_argument("--proxy-sample", type=positive_int, metavar="N", help="candidates the proxy scores (default 64)")
    g.add_argument("--proxy-keep", type=fraction, metavar="F", help="fraction of them that is trained (default 0.25)")
    g.add_argument("--seed", type=seed_int, help="seed of the samplers")
    g = s.add_argument_group("training")
    g.add_argument("--dataset", help="mnist, digits, a plugin's dataset, an .npz or an image folder")
    g.add_argument("--limit", type=positive_int, metavar="N", help="use at most N images (train + validation)")
    g.add_argument("--epochs", type=positive_int, help="epochs per candidate")
    g.add_argument("--seeds", type=positive_int, metavar="N", help="train each candidate with N seeds (mean ± std)")
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--lr", type=positive_number)
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps")
    g.add_argument("--evaluator", metavar="MODULE:FUNCTION", help="a custom evaluator(spec, data, config, on_epoch=...)")
    g = s.add_argument_group("where and how")
    g.add_argument("--name", help="run name (default: the space's name)")
    g.add_argument("--runs", default="runs", metavar="DIR", help="folder of the runs (default runs/)")
    g.add_argument("--storage", metavar="URL", help="an Optuna storage URL (e.g. postgresql://...) or a .db file")
    g.add_argument("--workers", type=int_range(1, MAX_WORKERS), metavar="N", help="worker processes sharing the study (default 1)")
    g.add_argument("--executor", choices=["local", "ray"], default="local", help="run workers as local processes or Ray tasks")
    g.add_argument("--no-progress", action="store_true", help="no progress bars: one line per finished trial")
    g.add_argument("--top", type=non_negative_int, default=10, metavar="N", help="rows of the final ranking (default 10)")
    g.add_argument("--report", action="store_true", help="also write the report files into <run>/report")
    s.set_defaults(func=cmd_search)

    s = subparsers.add_parser("report", help="ranking, CSV/JSON, Pareto and placement plots and best.yaml of a search run",
                              description="Report a search run: the ranked table, trials.csv, trials.json, pareto.png, "
                                          "placement.png and best.yaml (with --weights also best.pt, the best candidate retrained).")
    s.add_argument("run", help="a run folder (runs/<name>), its study.db, or a storage URL")
    s.add_argument("--study", help="study name (when the storage holds several)")
    s.add_argument("-o", "--out", metavar="DIR", help="output folder (default <run>/report)")
    s.add_argument("--top", type=non_negative_int, default=20, metavar="N", help="rows of the ranking (default 20; 0 for all)")
    s.add_argument("--weights", action="store_true", help="retrain the best candidate and save it as best.pt")
    s.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    s.set_defaults(func=cmd_report)


# --------------------------------------------------------------------------- space


def space_overview(space: Any, *, samples: int = 2, check: int = 32, seed: int = 0) -> dict[str, Any]:
    """What ``archforge space`` shows, as data."""
    from archforge.search.space import ENUMERATE_LIMIT

    rng = random.Random(seed)
    size = space.size
    distinct = space.distinct_candidates() if size is not None and size <= ENUMERATE_LIMIT else None
    continuous = [name for name, d in space.decisions.items() if d.size is None]
    if distinct is not None:
        pool = list(distinct)
        rng.shuffle(pool)
    else:
        seen: dict[str, Any] = {}
        for _ in range(max(check, samples) * 10):
            candidate = space.concretize(space.sample(rng))
            seen.setdefault(candidate.hash, candidate)
            if len(seen) >= max(check, samples):
                break
        pool = list(seen.values())
    checked = pool[:check]
    constraints = space.settings.constraints
    invalid, violating, reasons = 0, 0, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        for candidate in checked:
            reason = space.check(candidate, constraints)
            if reason is None:
                continue
            if _is_constraint(reason):
                violating += 1
            else:
                invalid += 1
            reasons.append({"hash": candidate.hash, "reason": reason})
    return {
        "file": space.file,
        "name": space.name,
        "candidates": len(distinct) if distinct is not None else None,
        "assignments": size,
        "continuous": continuous,
        "decisions": [d.to_dict() for d in space.decisions.values()],
        "constraints": {k: v for k, v in constraints.model_dump().items() if v is not None},
        "checked": len(checked),
        "valid": len(checked) - invalid - violating,
        "violate_constraints": violating,
        "fail_shape_check": invalid,
        "reasons": reasons,
        "samples": [{"hash": c.hash, "decisions": c.values, "spec": c.data} for c in pool[:samples]],
        "settings": space.settings.model_dump(mode="json"),
    }


def _is_constraint(reason: str) -> bool:
    return any(f" max_{n} " in reason or f" min_{n} " in reason for n in ("params", "flops"))


def cmd_space(args: argparse.Namespace) -> int:
    from rich.table import Table

    from archforge.search.space import load_space
    from archforge.spec import Spec

    space = load_space(args.spec)
    info = space_overview(space, samples=args.samples, check=args.check, seed=args.seed)
    if args.json:
        json.dump(info, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    console = _stdout()
    if info["candidates"] is not None:
        count = f"{info['candidates']:,} candidate{'s' if info['candidates'] != 1 else ''}"
        if info["assignments"] != info["candidates"]:
            count += f" ({info['assignments']:,} decision assignments, some giving the same spec)"
    elif info["continuous"]:
        count = f"infinite: {', '.join(info['continuous'])} {'is a continuous range' if len(info['continuous']) == 1 else 'are continuous ranges'}"
    else:
        count = f"{info['assignments']:,} decision assignments (too many to count distinct specs)"
    console.print(f"{space.file}: search space '{space.name}': {count}", markup=False)
    table = Table(title=f"{len(info['decisions'])} decisions", title_justify="left")
    for column in ("decision", "options", "values", "where"):
        table.add_column(column, justify="right" if column == "values" else "left")
    for d in space.decisions.values():
        where = ", ".join(str(loc) for loc in d.locations[:3]) + (f" (+{len(d.locations) - 3})" if len(d.locations) > 3 else "")
        if d.copy_of is not None:
            where += f" (copy {d.copy_of[1]} of {d.copy_of[0]})"
        table.add_row(d.name, d.describe(), str(d.size) if d.size is not None else "∞", where)
    console.print(table)
    s = space.settings
    budget = s.budget if s.budget is not None else ("all" if s.strategy == "grid" else 20)
    console.print(f"search: {s.strategy} over {s.dataset}, budget {budget}, {s.epochs} epoch(s) × {s.seeds} seed(s), "
                  f"objectives {', '.join(s.objectives)}" + (f", pruner {s.pruner.kind}" if s.pruner else "")
                  + (f", {s.workers} workers" if s.workers > 1 else "")
                  + (f", proxy {s.proxy.score}" if s.proxy else ""), markup=False)
    limits = ", ".join(f"{k} {v:,.0f}" for k, v in info["constraints"].items()) or "no constraints"
    console.print(f"checked {info['checked']} candidate(s) ({limits}): {info['valid']} valid, "
                  f"{info['violate_constraints']} violate the constraints, {info['fail_shape_check']} fail the shape check", markup=False)
    for item in info["reasons"][:5]:
        console.print(f"  {item['hash']}: {item['reason']}", markup=False)
    for i, sample in enumerate(info["samples"]):
        label = ", ".join(f"{k}={v}" for k, v in sample["decisions"].items()) or "no decisions"
        console.print(f"--- # sample {i + 1}: candidate {sample['hash']}: {label}", markup=False)
        console.print(Spec.from_dict(sample["spec"]).to_yaml().rstrip(), markup=False)
    return 0


# --------------------------------------------------------------------------- search


def search_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    constraints = None
    if args.max_params is not None or args.max_flops is not None:
        constraints = {"max_params": args.max_params, "max_flops": args.max_flops}
    proxy: Any = args.proxy
    if proxy not in (None, "none") and (args.proxy_sample or args.proxy_keep):
        proxy = {"score": proxy, **({"sample": args.proxy_sample} if args.proxy_sample else {}), **({"keep": args.proxy_keep} if args.proxy_keep else {})}
    train = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("device", args.device)) if v is not None}
    return {
        "dataset": args.dataset, "strategy": args.strategy, "budget": args.budget, "storage": args.storage, "name": args.name,
        "epochs": args.epochs, "seeds": args.seeds, "objectives": args.objectives, "constraints": constraints,
        "pruner": args.pruner, "proxy": proxy, "workers": args.workers, "train": train or None, "evaluator": args.evaluator,
        "limit": args.limit, "seed": args.seed, "runs_dir": args.runs, "executor": args.executor,
        "progress": "lines" if args.no_progress or not sys.stderr.isatty() else True,
    }


def cmd_search(args: argparse.Namespace) -> int:
    from archforge.search import load_space, search

    space = load_space(args.spec)
    kwargs = search_kwargs(args)
    if kwargs["constraints"] is not None:  # a flag overrides one limit, the space's others stay
        merged = {k: v for k, v in space.settings.constraints.model_dump().items() if v is not None}
        merged.update({k: v for k, v in kwargs["constraints"].items() if v is not None})
        kwargs["constraints"] = merged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        result = search(space, **kwargs)
    console = _stdout()
    result.print(console, top=args.top or None)
    where = result.run_dir if result.run_dir is not None else result.storage
    if args.report:
        files = result.report()
        console.print("report: " + ", ".join(str(p) for p in files.values()), markup=False)
    elif result.storage and result.storage != "memory":
        target = where if result.storage.startswith("sqlite") else result.storage
        console.print(f"stored in {result.storage}; plots and files: archforge report {target}", markup=False)
    return 0 if result.best is not None else 1


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from archforge.search.report import load_run, print_summary, write_report

    run = load_run(args.run, args.study)
    out = Path(args.out) if args.out else (Path(run.run_dir) / "report" if run.run_dir is not None else Path("report") / run.name)
    files = write_report(run, out, weights=args.weights)
    if args.json:
        summary = {
            "run": run.name, "objectives": run.objectives, "compute": run.compute,
            "best": {k: v for k, v in (run.best or {}).items() if k != "spec"} or None,
            "ranking": [{k: v for k, v in row.items() if k != "spec"} for row in run.table],
            "unreadable": [{"trial": r.number, "reason": r.error} for r in run.unreadable],
            "files": {k: str(v) for k, v in files.items()},
        }
        for r in run.unreadable[:10]:
            _stderr().print(f"warning: trial #{r.number} is unreadable and left out: {r.error}", markup=False)
        json.dump(summary, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    console = _stdout()
    print_summary(run, console, top=args.top or None)
    console.print("wrote " + ", ".join(str(p) for p in files.values()), markup=False)
    return 0
