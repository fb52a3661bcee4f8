"""Shared plumbing of the article's experiments (``experiments/*.py``): arguments, workers, a job cache, intervals, the docs section.

Each experiment is one command that trains small networks, measures them, and writes its
section of ``docs/experiments.md`` between markers (``<!-- experiment:NAME -->`` …
``<!-- /experiment:NAME -->``), replacing the previous run's section and leaving the
others as they are, so the experiments can be run in any order (two at once too: the
file is read, changed and written under a lock). The section header says how the numbers
were made (command, date, machine, wall time, settings); the body holds only measured
facts — tables, 95% intervals, which differences are separable — and the interpretation
is written by a person after reading them.

Every training is a *job* (a frozen dataclass) whose result is cached as JSON under
``runs/experiments/NAME/`` (``--workdir``), keyed by the job's fields: a rerun with the same
settings reuses what finished, one that changes a setting trains only the jobs it changes,
and a job that fails is listed in the section without losing the others.

Intervals are Student-t 95% intervals over seeds (:func:`archforge.search.ranking.interval`).
A difference of two independent means is tested with Welch's interval
(:func:`archforge.search.ranking.welch_difference`), a difference measured on the same seed
twice with the paired t interval (:func:`paired`); either is *separable* when its interval
excludes 0, and *not tested* when there is no interval: fewer than two seeds, or values that
do not vary (a zero-width interval is no evidence).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import multiprocessing
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from archforge.errors import SettingError, SpecError
from archforge.files import write_text
from archforge.search.ranking import Difference, interval, t_quantile

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "experiments.md"
WORKDIR = ROOT / "runs" / "experiments"
TITLE = "# Experiments\n\nThe article's experiments, each one command (`python experiments/NAME.py`); every section below is written by its command.\n"
_SAME = 1e-9  # paired differences closer than this (relative) are one value: float noise, not seed variation


# --------------------------------------------------------------------------- arguments


def learning_rate(text: str) -> float | str:
    """An argparse ``type=`` for ``--lr``: a positive finite number, or ``auto`` (a range test per training)."""
    if text == "auto":
        return text
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def recipe_arguments(p: argparse.ArgumentParser) -> None:
    """``--init`` and ``--lr``: the training recipe of an experiment that trains with TrainConfig directly."""
    p.add_argument("--init", choices=("reference", "pytorch"), default=None, help="initial weights (default: the spec's own)")
    p.add_argument("--lr", type=learning_rate, default=None,
                   help="peak learning rate, or auto (a range test per training); default TrainConfig's 2e-3")


def parser(description: str, *, seeds: int, workers: int = 2) -> argparse.ArgumentParser:
    """The arguments every experiment takes: ``--scale``, ``--seeds``, ``--quick``, ``--out``, ``--workers``, ``--workdir``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the training budget (steps or epochs) by this; default 1")
    p.add_argument("--seeds", type=int, default=seeds, help=f"seeds per configuration (default {seeds})")
    p.add_argument("--quick", action="store_true", help="a tiny version for smoke tests (well under a minute); writes no docs unless --out")
    p.add_argument("--out", type=Path, default=None, help="the markdown file to write the section into (default docs/experiments.md)")
    p.add_argument("--workers", type=int, default=workers, help=f"processes training in parallel, one torch thread each (default {workers})")
    p.add_argument("--workdir", type=Path, default=None, help="where finished trainings are kept so that a rerun resumes "
                                                             "(default runs/experiments; none with --quick unless given)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Exit with one line (status 1) when a count is not positive."""
    for name in ("seeds", "workers"):
        if getattr(args, name) < 1:
            sys.exit(f"error: --{name} must be at least 1, got {getattr(args, name)}")
    if not (args.scale > 0 and math.isfinite(args.scale)):
        sys.exit(f"error: --scale must be a positive number, got {args.scale}")


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``p``'s arguments from ``argv`` (default: the command line), checked by :func:`check_args`; ``args.argv`` keeps
    them for the section header."""
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    check_args(args)
    return args


def names(text: str, flag: str) -> list[str]:
    """A comma-separated list of names; exit (one line, status 1) on an empty one or a repeated one."""
    listed = [n.strip() for n in text.split(",")]
    if not all(listed):
        sys.exit(f"error: {flag} {text!r} has an empty name; give names separated by single commas")
    repeated = next((n for n in listed if listed.count(n) > 1), None)
    if repeated:
        sys.exit(f"error: {flag} names {repeated!r} twice")
    return listed


def output_path(args: argparse.Namespace) -> Path | None:
    """Where the section goes: ``--out``, else docs/experiments.md, else nowhere in ``--quick`` mode."""
    if args.out is not None:
        return args.out
    return None if args.quick else DOCS


def work_folder(args: argparse.Namespace, name: str) -> Path | None:
    """Where experiment ``name`` keeps its finished jobs: ``--workdir``/NAME, default runs/experiments/NAME; none in
    ``--quick`` mode without ``--workdir`` (a smoke run leaves nothing behind)."""
    if args.workdir is not None:
        return args.workdir / name
    return None if args.quick else WORKDIR / name


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command, for the section header: ``python experiments/NAME.py ARGS`` (``argv``, default this process's)."""
    argv = sys.argv[1:] if argv is None else argv
    return "python " + " ".join(shlex.quote(a) for a in [f"experiments/{script}", *argv])


# --------------------------------------------------------------------------- workers and the job cache


@dataclass
class Outcome:
    """What :func:`run_jobs` ran: a result per job (``None`` for a failed one), the failures, and how many came from the cache."""

    results: list[Any]
    failures: list[tuple[Any, str]] = field(default_factory=list)  # (job, "ExceptionType: message")
    cached: int = 0

    @property
    def done(self) -> list[Any]:
        """The results of the jobs that finished."""
        return [r for r in self.results if r is not None]


def job_key(job: Any) -> str:
    """The cache key of a job (a dataclass): a hash of its fields as canonical JSON."""
    return hashlib.sha1(json.dumps(dataclasses.asdict(job), sort_keys=True).encode()).hexdigest()[:16]


def _cached(folder: Path | None, job: Any) -> Any:
    if folder is None:
        return None
    path = folder / f"{job_key(job)}.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or a partial file a killed writer left: train again
        return None
    return stored["result"] if stored.get("job") == json.loads(json.dumps(dataclasses.asdict(job))) else None


def _store(folder: Path | None, job: Any, result: Any) -> None:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / f"{job_key(job)}.json", json.dumps({"job": dataclasses.asdict(job), "result": result}), overwrite=True)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int, threads: int = 1, cache: Path | None = None,
             progress: Callable[[int, int, Any, Any], None] | None = None) -> Outcome:
    """``fn(job)`` for every job, in ``workers`` spawned processes of ``threads`` torch threads each.

    A job whose result is in ``cache`` (a folder, see :func:`job_key`) is not run again; each new
    result (JSON-serialisable) is stored there as soon as it comes back. A job that raises is a
    failure (listed in the outcome, not cached: a rerun tries it again), the others go on; Ctrl-C or
    a worker process killed outright stops everything (queued jobs are cancelled) and re-raises.
    With one worker the jobs run in this process (its thread count restored after).
    ``progress(done, total, job, result)`` is called as each job ends (result ``None`` on failure).
    """
    outcome = Outcome([None] * len(jobs))
    todo = []
    for i, job in enumerate(jobs):
        outcome.results[i] = _cached(cache, job)
        if outcome.results[i] is None:
            todo.append(i)
    outcome.cached = len(jobs) - len(todo)
    done = outcome.cached

    def finished(i: int, result: Any, error: BaseException | None) -> None:
        nonlocal done
        done += 1
        if error is None:
            outcome.results[i] = json.loads(json.dumps(result))  # as the cache gives it back: lists, not tuples
            _store(cache, jobs[i], result)
        else:
            outcome.failures.append((jobs[i], _failure(error)))
        if progress:
            progress(done, len(jobs), jobs[i], outcome.results[i])

    if workers <= 1 or len(todo) <= 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for i in todo:
                try:
                    result, error = fn(jobs[i]), None
                except Exception as exc:  # one job's failure; KeyboardInterrupt is not an Exception and stops all
                    result, error = None, exc
                finished(i, result, error)
        finally:
            torch.set_num_threads(previous)
        return outcome
    # spawn, not fork: a forked child inherits torch's thread pools in an undefined state
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                                                  initargs=(threads,))
    try:
        futures = {pool.submit(fn, jobs[i]): i for i in todo}
        for future in concurrent.futures.as_completed(futures):
            error = future.exception()
            if isinstance(error, BrokenProcessPool):  # a worker died (killed, out of memory): the pool is gone
                raise error
            finished(futures[future], None if error else future.result(), error)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return outcome


def failures_text(failures: Sequence[tuple[Any, str]], describe: Callable[[Any], str]) -> str:
    """The section's list of failed jobs (empty when none failed): ``describe(job)`` and the error of each."""
    if not failures:
        return ""
    lines = [f"**{len(failures)} training(s) failed** and are left out of everything below (a rerun tries them again):\n"]
    lines += [f"- {describe(job)}: {error}" for job, error in failures]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stats:
    """Mean, sample standard deviation and 95% t interval of one value over seeds (``low``/``high`` nan for one seed)."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    def text(self, digits: int = 3, scale: float = 1.0) -> str:
        """``mean ± std [low, high]`` (just the mean for one seed), each multiplied by ``scale``."""
        m = f"{self.mean * scale:.{digits}f}"
        if self.n < 2:
            return m
        return f"{m} ± {self.std * scale:.{digits}f} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


def stats(values: Iterable[float]) -> Stats:
    """:class:`Stats` of ``values`` (one per seed)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("stats of no values")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    bounds = interval(values) or (math.nan, math.nan)
    return Stats(len(values), mean, std, bounds[0], bounds[1])


def paired(a: Sequence[float], b: Sequence[float]) -> Difference | None:
    """The 95% t interval of the mean of ``a[i] − b[i]`` (the same seed measured twice), ``dof = n − 1``.

    ``None`` (not tested) with fewer than two pairs, or when every difference is the same number
    (to 1e-9, relative): their spread is 0 and a zero-width interval is no evidence.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2 or max(d) - min(d) <= _SAME * max(1.0, max(abs(x) for x in d)):
        return None
    mean = statistics.fmean(d)
    half = t_quantile(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return Difference(mean, mean - half, mean + half, len(d) - 1)


def difference_text(d: Difference | None, diff: float, *, digits: int = 3, scale: float = 1.0) -> str:
    """``+0.012 [+0.003, +0.021] ✓`` (✓: the interval excludes 0), or ``+0.012 (not tested)`` without an interval
    (``d`` None; ``diff``, the difference of the means, is printed)."""
    if d is None:
        return f"{diff * scale:+.{digits}f} (not tested)"
    text = f"{d.mean * scale:+.{digits}f} [{d.low * scale:+.{digits}f}, {d.high * scale:+.{digits}f}]"
    return text + (" ✓" if d.excludes_zero else "")


def config_text(configs: Sequence[dict[str, Any]], *, skip: Iterable[str] = ()) -> str:
    """The training settings every config (``TrainConfig.model_dump(mode="json")``) shares, ``k = v`` joined by commas,
    and the names of those that differ between them (``skip``: fields the section states elsewhere)."""
    skip = set(skip)
    keys = [k for k in configs[0] if k not in skip] if configs else []
    same = [k for k in keys if all(c.get(k) == configs[0][k] for c in configs)]
    text = ", ".join(f"{k} {json.dumps(configs[0][k])}" for k in same)
    varying = [k for k in keys if k not in same]
    return text + (f"; varying between trainings: {', '.join(varying)}" if varying else "")


# --------------------------------------------------------------------------- the docs section


def machine() -> str:
    """The machine in one line: CPU cores usable by this process, platform, Python and torch versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        usable = os.cpu_count() or 0
    return (f"{usable} CPU cores usable ({os.cpu_count()} present), {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; ``align`` is one letter per column, ``l`` or ``r`` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header(title: str, *, command: str, wall_s: float, settings: dict[str, Any], cost: str | None = None) -> str:
    """The section's title and how its numbers were made; ``cost`` qualifies the wall time (what was reused)."""
    listed = "; ".join(f"{k} = {v}" for k, v in settings.items())
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"## {title}\n\n"
            f"- command: `{command}`\n- date: {date}\n- machine: {machine()}\n"
            f"- wall time: {wall_s:.0f} s{f' ({cost})' if cost else ''}\n- settings: {listed}\n")


def cache_note(outcome: Outcome) -> str | None:
    """What the wall time covers when some jobs came from the cache (None when none did)."""
    if not outcome.cached:
        return None
    return (f"this invocation only: {outcome.cached} of {len(outcome.results)} trainings were read from the cache "
            "of an earlier run, their time is not in it")


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- experiment:{name} -->", f"<!-- /experiment:{name} -->"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s ``.lock`` file (flock; nothing to hold where there is none, e.g. Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_section(path: Path, name: str, body: str) -> Path:
    """Put ``body`` between ``name``'s markers in ``path`` (replacing what was there, or appending).

    The file is created with a title if missing; sections of other experiments are kept as they
    are. The read, change and (atomic) write happen under a lock on ``PATH.lock``, so that two
    experiments finishing at once cannot lose each other's section.
    """
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    with _locked(path):
        text = path.read_text() if path.exists() else TITLE
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        write_text(path, text if text.endswith("\n") else text + "\n", overwrite=True)
    return path


def read_section(path: Path, name: str) -> str | None:
    """The body between ``name``'s markers in ``path``, or None."""
    start, end = _markers(name)
    if not path.exists():
        return None
    match = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), path.read_text(), re.DOTALL)
    return match.group(1) if match else None


def image_path(docs: Path, filename: str) -> tuple[Path, str]:
    """Where a plot for the section in ``docs`` goes (``images/`` beside it), and the link the section uses."""
    folder = docs.parent / "images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / filename, f"images/{filename}"


def finish(args: argparse.Namespace, name: str, report: Callable[[Path], str]) -> int:
    """Write the section ``report(docs_path)`` makes into the output file, or print it (``--quick`` without ``--out``:
    its plots then go to a temporary folder). Returns 0."""
    out = output_path(args)
    if out is not None:
        write_section(out, name, report(out))
        print(f"wrote the '{name}' section of {out}")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        print(report(Path(folder) / "experiments.md"))
    return 0


def guarded(main: Callable[[], int]) -> int:
    """``main()``, with archforge's own errors (a space, setting, spec or dataset that cannot be used; SearchError is a
    SpecError) and file errors turned into one line on stderr and status 1."""
    from archforge.data import DatasetError

    try:
        return main()
    except (SpecError, SettingError, DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
