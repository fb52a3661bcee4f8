"""``archforge space``, ``search``, ``worker`` and ``report``: look at a search space, search it, join a search, report a run.

``space`` checks everything ``search`` would check before storing anything (the settings,
the strategy against the space, the dataset, the evaluator: :func:`archforge.search.checks.check_run`),
then a sample of candidates; it exits 1 when any of that fails or when every checked
candidate is refused. Flags of ``search`` are overrides of the space's ``search:`` section
(:mod:`archforge.cli.search_flags`). Problems with a space are :class:`~archforge.SpecError`
diagnostics (``file:line:col: message``, exit status 1); a flag with a bad value is a
usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from archforge.cli.common import (
    SPACE_HELP, command_help, defer_arguments, fail, int_range, key_value, non_negative_int, quiet_optuna, seed_int, stderr_console,
    stdout_console, usage_error,
)
from archforge.cli.search_flags import add_search_flags, search_overrides
from archforge.errors import SettingError

#: Bounds of the flags whose cost grows with their value: printed specs and checked candidates (each a full validation).
MAX_SAMPLES = 1_000
MAX_CHECK = 10_000
#: Problems of ``archforge space`` printed (each stands for every candidate refused for the same reason).
SHOWN_PROBLEMS = 5


# --------------------------------------------------------------------------- space


def cmd_space(args: argparse.Namespace) -> int:
    from archforge.search.checks import check_run
    from archforge.search.overview import space_overview
    from archforge.search.space import load_space

    space = load_space(args.spec)
    overrides = {"dataset": args.dataset, "params": dict(args.param) if args.param else None}
    settings = space.settings.merged(**overrides)
    space = space.with_params(settings.params)
    check_run(space, settings)
    info = space_overview(space, samples=args.samples, check=args.check, seed=args.seed)
    if args.json:
        json.dump(info, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_space(space, info, settings)
    if info["checked"] and not info["valid"]:
        return fail(f"none of the {info['checked']} checked candidates of '{space.name}' can be trained: "
                    f"{_refusal_counts(info)}; a search would train nothing")
    return 0


def _refusal_counts(info: dict[str, Any]) -> str:
    return f"{info['do_not_fit']} do not fit, {info['rejected_by_constraint']} rejected by constraint"


def _print_space(space: Any, info: dict[str, Any], settings: Any) -> None:
    from rich.table import Table

    from archforge.spec import Spec

    console = stdout_console()
    console.print(f"{space.file}: search space '{space.name}': {_count_text(info)}", markup=False)
    table = Table(title=f"{len(info['decisions'])} decisions", title_justify="left")
    for column in ("decision", "options", "values", "where"):
        table.add_column(column, justify="right" if column == "values" else "left", overflow="fold")
    for d in space.decisions.values():
        where = ", ".join(str(loc) for loc in d.locations[:3]) + (f" (+{len(d.locations) - 3})" if len(d.locations) > 3 else "")
        if d.copy_of is not None:
            where += f" (copy {d.copy_of[1]} of {d.copy_of[0]})"
        table.add_row(d.name, d.describe(), str(d.size) if d.size is not None else "∞", where)
    console.print(table)
    console.print(_settings_text(settings), markup=False)
    bounds = _bounds_text(info["constraints"])
    console.print(f"checked {info['checked']} candidate(s) ({bounds}): {info['valid']} valid, {_refusal_counts(info)}", markup=False)
    for problem in info["problems"][:SHOWN_PROBLEMS]:
        example = f"e.g. {problem['candidates'][0]}" if problem["count"] > 1 else problem["candidates"][0]
        console.print(f"  {_problem_count(problem['count'], problem['kind'])} ({example}): {problem['reason']}", markup=False)
    if len(info["problems"]) > SHOWN_PROBLEMS:
        console.print(f"  and {len(info['problems']) - SHOWN_PROBLEMS} more reasons (archforge space --json lists them)", markup=False)
    for i, sample in enumerate(info["samples"]):
        label = ", ".join(f"{k}={v}" for k, v in sample["decisions"].items()) or "no decisions"
        console.print(f"--- # sample {i + 1}: candidate {sample['hash']}: {label}", markup=False)
        console.print(Spec.from_dict(sample["spec"]).to_yaml().rstrip(), markup=False)


def _bounds_text(constraints: dict[str, Any]) -> str:
    """``max_params 100,000, min_flops 1,000``; bounds of metrics (measured after training, so not by ``space``) said apart."""
    counted = [f"{name} {value:,.0f}" for name, value in constraints.items() if isinstance(value, (int, float))]
    measured = [f"{name} {' '.join(f'{side} {value:.6g}' for side, value in bounds.items() if value is not None)}"
                for name, bounds in (constraints.get("metrics") or {}).items()]
    if measured:
        counted.append(f"after training: {', '.join(measured)}")
    return ", ".join(counted) or "no constraints"


def _problem_count(count: int, kind: str) -> str:
    """``1 candidate does not fit``, ``3 candidates do not fit``, ``2 candidates rejected by constraint``."""
    if count == 1:
        kind = kind.replace("do not", "does not")
    return f"{count} candidate{'s' if count != 1 else ''} {kind}"


def _count_text(info: dict[str, Any]) -> str:
    if info["candidates"] is not None:
        text = f"{info['candidates']:,} candidate{'s' if info['candidates'] != 1 else ''}"
        if info["assignments"] != info["candidates"]:
            text += f" ({info['assignments']:,} decision assignments, some giving the same spec)"
        return text
    if info["continuous"]:
        ranges = info["continuous"]
        return f"infinite: {', '.join(ranges)} {'is a continuous range' if len(ranges) == 1 else 'are continuous ranges'}"
    return f"{info['assignments']:,} decision assignments (too many to count distinct specs)"


def _settings_text(s: Any) -> str:
    strategy = s.strategy if isinstance(s.strategy, str) else type(s.strategy).__name__
    if strategy == "oneshot":
        o = s.oneshot
        top = o.retrain_top
        text = (f"search: oneshot over {s.dataset}: one weight-sharing supernet ({o.sampling} sampling, {o.epochs or s.epochs} "
                f"epoch(s)) ranks up to {o.paths:,} candidates, then "
                + (f"the best {top} are trained stand-alone, {s.epochs} epoch(s) × {s.seeds} seed(s)" if top else
                   "none is trained stand-alone (--retrain-top K trains the best K)")
                + f", objectives {', '.join(s.objectives)}")
    else:
        budget = s.trial_budget if s.trial_budget is not None else ("all" if s.strategy == "grid" else "the proxy's choice")
        text = (f"search: {strategy} over {s.dataset}, budget {budget}, {s.epochs} epoch(s) × {s.seeds} seed(s), "
                f"objectives {', '.join(s.objectives)}")
    if s.pruner is not None:
        text += f", pruner {getattr(s.pruner, 'kind', type(s.pruner).__name__)}"
    if s.proxy is not None:
        text += f", proxy {s.proxy.score}"
    if s.worker_count > 1 or s.executor != "local":
        text += f", {s.worker_count} {s.executor} worker{'s' if s.worker_count != 1 else ''}"
    if s.devices:
        text += f" on {', '.join(s.devices)}"
    return text


# --------------------------------------------------------------------------- search


def cmd_search(args: argparse.Namespace) -> int:
    import archforge
    from archforge.search.space import load_space

    space = load_space(args.spec)
    try:
        overrides = search_overrides(args, space.settings)
        space.settings.merged(**overrides)  # the space's own settings are valid: what fails here is a flag
    except SettingError as exc:
        return usage_error("archforge search", str(exc))
    progress: bool | str = "lines" if args.no_progress or not sys.stderr.isatty() else True
    with quiet_optuna():
        result = archforge.search(space, **overrides, storage=args.storage, evaluator=args.evaluator, runs_dir=args.runs,
                                  progress=progress)
    console = stdout_console()
    print_run(result.run, console, top=args.top or None)
    if args.report:
        files = result.report()
        console.print("report: " + ", ".join(str(p) for p in files.values()), markup=False)
    elif result.storage and result.storage != "memory":
        from archforge.search.urls import masked_url

        local = result.run_dir is not None and result.storage.startswith("sqlite")
        where = str(result.run_dir) if local else f"{masked_url(result.storage)} --study {result.run.name}"
        console.print(f"stored in {masked_url(result.storage)}; plots and files: archforge report {where}", markup=False)
    # A one-shot run with no stand-alone training has the one-shot winner as its result; one whose retrained ones all failed has none.
    if result.best is None:
        return fail(f"no candidate of '{space.name}' completed training; the reasons are above and in archforge report")
    return 0


# --------------------------------------------------------------------------- worker


def cmd_worker(args: argparse.Namespace) -> int:
    from archforge.search.worker import join

    with quiet_optuna():
        stats = join(args.storage, args.study, device=args.device, threads=args.threads,
                     progress=True if args.progress and sys.stderr.isatty() else "lines")
    stderr_console().print(f"worker done: {stats.trials} trial(s), {stats.evaluated} evaluated, in {stats.wall_s:.1f}s "
                           "(the budget is spent or every candidate is known)", markup=False)
    return 0


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from archforge.search import oneshot_report
    from archforge.search.report import load_run, write_report
    from archforge.search.result import SearchResult

    with quiet_optuna():
        run = load_run(args.run, args.study)
        out = Path(args.out) if args.out else (Path(run.run_dir) / "report" if run.run_dir is not None else Path("report") / run.name)
        files = write_report(run, out, weights=args.weights)
    if args.json:
        summary = {
            "run": run.name, "objectives": run.objectives, "compute": run.compute,
            "best": SearchResult(run).best,  # as trials.json has it
            "ranking": [{k: v for k, v in row.items() if k != "spec"} for row in run.table], "notes": run.notes,
            "oneshot": oneshot_report.summary(run),
            "effects": [effect.model_dump(mode="json") for effect in run.effects], "effect_notes": run.effect_notes,
            "unreadable": [{"trial": r.number, "reason": r.error} for r in run.unreadable],
            "files": {k: str(v) for k, v in files.items()},
        }
        for r in run.unreadable[:10]:
            stderr_console().print(f"warning: trial #{r.number} is unreadable and left out: {r.error}", markup=False)
        json.dump(summary, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    console = stdout_console()
    print_run(run, console, top=args.top or None)
    console.print("wrote " + ", ".join(str(p) for p in files.values()), markup=False)
    return 0


def print_run(run: Any, console: Any, *, top: int | None = 10) -> None:
    """The ranking of a run with its notes, the decision effects, its failures, the compute saved and the winner."""
    from archforge.cli.tables import print_effects, print_ranking
    from archforge.search.compute import compute_text
    from archforge.search.ranking import bounds_text

    unreadable = run.unreadable
    for r in unreadable[:10]:
        console.print(f"warning: trial #{r.number} is unreadable and left out: {r.error}", markup=False)
    if len(unreadable) > 10:
        console.print(f"warning: {len(unreadable) - 10} more unreadable trials left out (see trials.csv)", markup=False)
    oneshot = getattr(run, "oneshot", None)
    if oneshot is not None:
        print_oneshot(run, console, top=top)
    what = "trained stand-alone" if oneshot is not None else "evaluated"
    rows = run.table if top is None else [r for r in run.table if r["status"] != "failed"][:top]
    if run.table and not rows:  # every one failed: no empty table, but what happened (the reasons follow)
        console.print(f"{run.name}: {len(run.table)} candidates {what}, none completed: "
                      f"{'all' if len(run.table) > 1 else 'it'} failed (the reasons below)", markup=False)
    elif run.table:
        print_ranking(console, rows, objectives=run.objectives, names=run.decision_names,
                      title=f"{run.name}: {len(run.table)} candidates {what}", notes=run.notes)
        print_effects(console, run.effects, run.effect_notes, limit=None if top is None else 12)
        rungs = [row for row in run.rung_agreement if row.tau is not None]
        if rungs and rungs[0].candidates >= 3 and not any(row["status"] == "pruned" for row in run.table):
            console.print(f"early epochs against the final ranking ({rungs[0].candidates} candidates, Kendall τ_b; what a pruner's "
                          "rung at that epoch would see): " + ", ".join(f"epoch {row.epoch} {row.tau:+.2f}" for row in rungs),
                          markup=False)
    elif oneshot is None:
        console.print(f"{run.name}: no candidate evaluated yet", markup=False)
        return
    failed = run.failed
    if failed:
        console.print(f"{len(failed)} failed:", markup=False)
        for row in failed[:10]:
            console.print(f"  #{row['trial']} {row['hash']}: {row['error']}", markup=False)
    rejected = run.rejected
    if rejected:
        console.print(f"{len({r.hash for r in rejected})} rejected before training, e.g. #{rejected[0].number} {rejected[0].hash}: "
                      f"{rejected[0].error}", markup=False)
    console.print(compute_text(run.compute_summary), markup=False)
    best = run.best
    if best is None and oneshot is not None:
        console.print(_oneshot_best_text(run), markup=False)
    elif best is not None:
        acc = f"{best['accuracy']:.4f}" if best["accuracy"] is not None else "—"
        if best.get("accuracy_std") is not None and best["n_seeds"] > 1:
            acc += f" ± {best['accuracy_std']:.4f} over {best['n_seeds']} seeds"
        if best.get("accuracy_low") is not None and best.get("accuracy_high") is not None:
            acc += f", 95% {bounds_text(best['accuracy_low'], best['accuracy_high'])}"
        decisions = ", ".join(f"{k}={v}" for k, v in best["decisions"].items()) or "(no decisions)"
        params = f" · params {best['params']:,}" if best.get("params") is not None else ""
        console.print(f"best: #{best['trial']} {best['hash']} accuracy {acc}{params} · {decisions}", markup=False)


def _oneshot_best_text(run: Any) -> str:
    """The best line of a one-shot run with no ranked best: the one-shot winner when it stands for the result
    (nothing trained stand-alone), else that the candidates trained stand-alone did not complete."""
    from archforge.search import oneshot_report

    winner = run.oneshot.ranking[0]
    if oneshot_report.fallback(run):
        decisions = ", ".join(f"{k}={v}" for k, v in winner.decisions.items()) or "(no decisions)"
        return (f"best: the one-shot winner {winner.hash}, accuracy {winner.accuracy:.4f} with inherited weights "
                f"(not trained stand-alone) · params {winner.params:,} · {decisions}")
    return (f"best: none: no candidate trained stand-alone completed{oneshot_report.status_text(run)}, so the run has no result; "
            f"the one-shot winner {winner.hash} ({winner.accuracy:.4f} with inherited weights) only chose what to train")


def oneshot_cost_text(phase: Any) -> str:
    """What a one-shot phase cost, in one line: its supernet's training images (its learning-rate range test's
    included) and what they are worth in stand-alone trainings of a candidate (each ``candidate_images``: the
    search's epochs), the forward-only images of its ranking beside them, and seconds."""
    images = phase.training_images
    sample = " (a seeded sample of the space)" if phase.sampled else ""
    rejected = f", {phase.rejected} rejected before training" if phase.rejected else ""
    range_test = f" ({phase.range_images:,} of them in the lr range test)" if phase.range_images else ""
    return (f"one-shot: one supernet of {phase.paths} candidates{sample}{rejected}, {phase.epochs} epoch(s) of {phase.sampling} "
            f"sampling, {phase.paths_per_step} path(s) per step × {phase.steps} steps: {images:,} training images{range_test}, "
            f"as many as {phase.standalone_trainings:.1f} stand-alone trainings ({phase.candidate_images:,} each), + {phase.eval_images:,} "
            f"forward-only images to rank; {phase.train_s + phase.rank_s:.1f}s ({phase.train_s:.1f}s training, "
            f"{phase.rank_s:.1f}s ranking)")


def oneshot_agreement_text(agreement: Any) -> str:
    """The agreement of the one-shot order with stand-alone accuracy, in one line."""
    tau = f"{agreement.tau:+.2f}" if agreement.tau is not None else "undefined (their stand-alone accuracies all tie)"
    return (f"one-shot order vs stand-alone accuracy of the {agreement.candidates} retrained: Kendall τ_b {tau} over "
            f"{agreement.pairs} pairs (+1 = the same order, −1 = the reverse)")


def print_oneshot(run: Any, console: Any, *, top: int | None = 10) -> None:
    """The one-shot phase of a run: what it cost, its ranking joined with stand-alone results, the agreement and its notes."""
    from archforge.cli.tables import print_oneshot_ranking
    from archforge.search import oneshot_report

    phase = run.oneshot
    table = oneshot_report.table(run)
    rows = table if top is None else table[:top]
    more = f"; the first {len(rows)} shown, oneshot.csv of archforge report has them all" if len(rows) < len(table) else ""
    agreement = oneshot_report.agreement(run)
    print_oneshot_ranking(console, rows, objectives=run.objectives, names=run.decision_names,
                          title=f"{run.name}: one-shot ranking of {len(table)} candidates (accuracy with inherited weights){more}",
                          before=[oneshot_cost_text(phase)], after=[oneshot_agreement_text(agreement)] if agreement is not None else [],
                          notes=oneshot_report.notes(run))


# --------------------------------------------------------------------------- parsers


def add_commands(subparsers: Any) -> None:
    """Add ``space``, ``search`` and ``report`` to the CLI's ``add_subparsers()`` object."""
    s = subparsers.add_parser(
        "space", help="decisions, number of candidates and sampled candidates of a search space",
        **command_help(
            "Show a search space: how many candidates, each decision with its options and where it is in the file, a few "
            "sampled concrete specs; check everything a search checks before it starts, and how many of a sample of "
            "candidates do not fit or are rejected by a constraint. Exit status 1 when the search could not run or would "
            "train nothing.",
            "archforge space placement_mnist",
            "archforge space my_space.yaml -n 0 --check 500",
        ),
    )
    s.add_argument("spec", metavar="SPACE", help=SPACE_HELP)
    s.add_argument("-n", "--samples", type=int_range(0, MAX_SAMPLES), default=2, metavar="N", help="concrete specs to print (default 2)")
    s.add_argument("--check", type=int_range(0, MAX_CHECK), default=32, metavar="N",
                   help="candidates to check against shapes and constraints (default 32)")
    s.add_argument("--seed", type=seed_int, default=0, help="seed of the sampling")
    s.add_argument("--dataset", help="check against this dataset instead of the space's (as archforge search --dataset)")
    s.add_argument("--param", type=key_value, action="append", metavar="NAME=VALUE",
                   help="give one of the space's params another value (repeatable), as archforge search --param")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_space)

    s = subparsers.add_parser("search", help="search a space; running it again resumes the run", **command_help(
        "Search a space with the settings of its search: section, overridden by flags (each flag is the setting of "
        "the same name). Results go to runs/<name>/study.db (or --storage); the same command again resumes the run "
        "without repeating or losing a completed trial.",
        "archforge search placement_mnist",
        "archforge search cnn_mnist --strategy tpe --budget 40 --epochs 2 --device cuda",
        "archforge search my_space.yaml --train lr=0.01 --report",
    ))
    s.add_argument("spec", metavar="SPACE", help=SPACE_HELP)
    defer_arguments(s, _add_search_arguments)
    s.set_defaults(func=cmd_search)

    s = subparsers.add_parser("worker", help="one more worker for a search whose study is on a server", **command_help(
        "Join a search started with `archforge search SPACE --storage URL --name NAME` and train its candidates until "
        "the budget is spent or every candidate is known, then exit. The study carries the space and the settings: "
        "this machine needs only the same archforge, plugins and dataset. No candidate and seed is trained twice; a "
        "worker that dies mid-trial loses nothing: when its heartbeat stops (search.heartbeat.grace, 60 s) its trial "
        "is failed and another worker trains the candidate.",
        "archforge worker --storage postgresql://me@db.example.org/archforge --study placement_mnist",
        "archforge worker --storage postgresql://me@db.example.org/archforge --study placement_mnist --device cuda:1",
        "archforge worker --storage runs/placement_mnist/study.db --study placement_mnist --threads 1",
    ))
    s.add_argument("--storage", required=True, metavar="URL", help="the search's storage: postgresql://user@host/db, "
                   "or a study.db on this machine")
    s.add_argument("--study", required=True, metavar="NAME", help="the search's study (its run name)")
    s.add_argument("--device", help="train on this device instead of the run's train.device: cpu, cuda, cuda:1")
    s.add_argument("--threads", type=int_range(1, 1024), metavar="N", help="torch threads of this worker")
    s.add_argument("--progress", action="store_true", help="progress bars on a terminal (default: one line per finished trial)")
    s.set_defaults(func=cmd_worker)

    s = subparsers.add_parser(
        "report", help="ranking, CSV/JSON, Pareto and placement plots and best.yaml of a search run",
        **command_help(
            "Report a search run: the ranked table, trials.csv, trials.json, pareto.png, placement.png and best.yaml "
            "(with --weights also best.pt, the best candidate retrained with the run's train: settings, its device included); "
            "a strategy: oneshot run adds its one-shot ranking and oneshot.csv.",
            "archforge report runs/placement_mnist",
            "archforge report runs/placement_mnist/study.db --top 0 -o placement_report",
            "archforge report runs/placement_mnist --weights",
        ),
    )
    s.add_argument("run", metavar="RUN", help="a run folder (runs/<name>), its study.db, or an Optuna storage URL")
    s.add_argument("--study", help="study name (when the storage holds several)")
    s.add_argument("-o", "--out", metavar="DIR", help="output folder (default <run>/report)")
    s.add_argument("--top", type=non_negative_int, default=20, metavar="N", help="rows of the ranking (default 20; 0 for all)")
    s.add_argument("--weights", action="store_true", help="retrain the best candidate and save it as best.pt (a one-shot run "
                   "with no candidate trained stand-alone: copy the one-shot winner's checkpoint, its inherited weights)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    s.set_defaults(func=cmd_report)


def _add_search_arguments(s: Any) -> None:
    """The flags of ``search``: the settings of the search: section, then what lies beside it."""
    add_search_flags(s)
    g = s.add_argument_group("beside the search: section")
    g.add_argument("--runs", default="runs", metavar="DIR", help="folder of the runs (default runs/)")
    g.add_argument("--evaluator", metavar="MODULE:FUNCTION", help="a custom evaluator(spec, data, config, on_epoch=...)")
    g = s.add_argument_group("output")
    g.add_argument("--no-progress", action="store_true", help="no progress bars: one line per finished trial")
    g.add_argument("--top", type=non_negative_int, default=10, metavar="N", help="rows of the ranking (default 10; 0 for all)")
    g.add_argument("--report", action="store_true", help="also write the report files into <run>/report")


__all__ = ["add_commands", "cmd_report", "cmd_search", "cmd_space", "cmd_worker", "oneshot_agreement_text", "oneshot_cost_text",
           "print_oneshot", "print_run"]
