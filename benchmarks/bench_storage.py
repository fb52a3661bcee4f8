"""Optuna storage for several search workers on one machine: SQLite (``RDBStorage``) or the journal file.

    python benchmarks/bench_storage.py                          # 1, 2, 4 writers × 100 trials on a store of 200
    python benchmarks/bench_storage.py --quick                  # 1, 2 writers × 20 trials on a store of 60
    python benchmarks/bench_storage.py --writers 1,2,4 --trials 100 --prefill 200 --kills 4
    python benchmarks/bench_storage.py --stores sqlite,sqlite-nohb,journal   # also SQLite without heartbeats

Each writer process runs ``study.optimize`` as a search worker does, without training (Optuna's
``RandomSampler``, which costs next to nothing): suggest a few categorical decisions, store six user
attributes (worker, a ~2 KB candidate, three seed results, the outcome), read every trial once
(``get_trials(deepcopy=False)``, the cache lookup), return a value for Optuna to tell. ``sqlite`` is
opened as archforge opens it (busy timeout 120 s, WAL, ``synchronous=NORMAL``, heartbeat every 10 s,
grace period 60 s, ``RetryHeartbeatStaleTrialCallback``: ``study.optimize`` then adds
``fail_stale_trials`` and a heartbeat thread to every trial); ``sqlite-nohb`` is it without
heartbeats; ``journal`` is ``JournalStorage(JournalFileBackend(path))`` (no heartbeats exist for it).

One writer fills a store with ``--prefill`` trials; it is copied for every writer count, and the
writers start together at a barrier. Per storage and writer count:

* trials/s: finished trials / wall time from the barrier to the last end; ratio: ÷ ``sqlite``'s;
* cpu ms: the writers' CPU time per finished trial (steadier than trials/s on a loaded machine);
* open ms: a writer's time to open the store and load the study (the journal replays its log);
* medians (ms) over the last half of every writer's trials: ``ask`` (Optuna's stale check, ask and
  heartbeat thread start, plus the suggests), ``attr`` (set_user_attr), ``get_trials``, ``tell``
  (heartbeat thread stop and tell); p99 over ask, attr and tell;
* locked: failures with "database is locked"; errors: other failures;
* check: a fresh ``optuna.load_study`` sees every trial once (numbers 0..n-1), complete, with its six
  attributes intact; reopen ms: its time, reading every trial.

Then, ``--kills`` times per storage, a writer is killed with SIGKILL at a random moment and a fresh
one must open the store and finish a trial (``blocked``: it waited > 3 s on a lock the dead writer
left, which is then removed by hand). Last, a journal whose final record is cut short (a write
interrupted by a full disk or a power cut) gets three more trials and is reopened.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import queue
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

STUDY = "bench"
# archforge.search.storage's settings, copied (not imported: the benchmark measures Optuna, not archforge)
SQLITE_TIMEOUT_S = 120
HEARTBEAT_INTERVAL, GRACE_PERIOD, MAX_RETRY = 10, 60, 3
DECISIONS = {"width": [16, 32, 48, 64], "depth": [2, 3, 4], "kernel": [3, 5, 7], "block": ["conv", "mbconv", "attention"], "act": ["relu", "gelu"]}
ATTRS = ("worker", "candidate", "seed_0", "seed_1", "seed_2", "outcome")
OPS = ("ask", "attr", "get_trials", "tell")
KINDS = ("sqlite", "sqlite-nohb", "journal")
BLOCKED_AFTER_S = 3.0


# --------------------------------------------------------------------------- one store


def store_path(root: Path, kind: str) -> Path:
    return root / ("study.log" if kind == "journal" else "study.db")


def open_store(kind: str, path: Path, heartbeat: bool = True, grace: int = GRACE_PERIOD) -> Any:
    """The storage as archforge opens SQLite (WAL, NORMAL sync, long busy timeout, heartbeats) or a journal file."""
    import optuna
    import sqlalchemy

    if kind == "journal":
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    beats = heartbeat and kind == "sqlite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}},
            heartbeat_interval=min(HEARTBEAT_INTERVAL, grace) if beats else None, grace_period=grace if beats else None,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY) if beats else None)

    def on_connect(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # the connection made while creating the tables predates the pragmas
    return storage


def close_store(storage: Any) -> None:
    if hasattr(storage, "engine"):
        storage.engine.dispose()


def candidate_spec(params: dict[str, Any], tag: str) -> dict[str, Any]:
    """A concrete spec of about 2 KB, like the ``candidate`` attribute a worker stores."""
    nodes = [{"id": "stem", "block": "conv", "args": {"channels": params["width"], "kernel": 3, "stride": 2}}]
    for stage in range(params["depth"]):
        for unit in range(2):
            nodes.append({"id": f"stage{stage}_unit{unit}", "block": params["block"],
                          "args": {"channels": params["width"] * (stage + 1), "kernel": params["kernel"], "act": params["act"],
                                   "norm": "batch_norm", "stride": 2 if unit == 0 and stage else 1}})
    nodes.append({"id": "head", "block": "classifier", "args": {"classes": 10}})
    spec = {"archforge": 1, "name": f"bench_{tag}", "input": {"shape": [3, 32, 32]}, "nodes": nodes}
    while len(json.dumps(spec)) < 2000:
        spec.setdefault("meta", []).append({"note": "padding to the size of a real candidate", "index": len(spec.get("meta", []))})
    return spec


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def failure(exc: BaseException) -> str:
    """``locked`` for SQLite's "database is locked" anywhere in the chain, else the error in one line."""
    cause: BaseException | None = exc
    while cause is not None:
        if "database is locked" in str(cause):
            return "locked"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


# --------------------------------------------------------------------------- a writer process


class Worker:
    """The objective and the callback of one writer's ``study.optimize``, timing every storage operation.

    What Optuna does between two objective calls is split at the objective's return: before it
    is ``tell``, after the callback (which runs right after the tell) it is ``ask``.
    """

    def __init__(self, index: int, done: Any = None):
        self.index, self.done = index, done
        self.times: dict[str, list[float]] = {op: [] for op in OPS}
        self.failures: list[str] = []
        self.finished = 0
        self.mark = time.perf_counter()
        self.returned: float | None = None

    def objective(self, trial: Any) -> float:
        clock = time.perf_counter
        before = clock() - self.mark
        try:
            start = clock()
            params = {name: trial.suggest_categorical(name, choices) for name, choices in DECISIONS.items()}
            self.times["ask"].append(before + clock() - start)
            spec = candidate_spec(params, f"{self.index}_{trial.number}")
            key = spec_hash(spec)
            self.attr(trial, "worker", {"host": "bench", "pid": os.getpid(), "index": self.index, "session": key})
            self.attr(trial, "candidate", {"hash": key, "decisions": params, "spec": spec})
            start = clock()
            trials = trial.study.get_trials(deepcopy=False)
            known = [t.number for t in trials if t.user_attrs.get("candidate", {}).get("hash") == key and "outcome" in t.user_attrs]
            self.times["get_trials"].append(clock() - start)
            accuracies = [random.random() for _ in range(3)]
            for seed, accuracy in enumerate(accuracies):
                self.attr(trial, f"seed_{seed}", {"accuracy": accuracy, "epochs_run": 2, "train_time_s": 0.5, "reused_from": known[:1]})
            value = statistics.mean(accuracies)
            self.attr(trial, "outcome", {"status": "complete", "accuracy": value, "accuracies": accuracies, "epochs_run": 6})
        except Exception as exc:
            self.failures.append(failure(exc))
            raise
        self.returned = clock()
        return value

    def attr(self, trial: Any, key: str, value: Any) -> None:
        start = time.perf_counter()
        trial.set_user_attr(key, value)
        self.times["attr"].append(time.perf_counter() - start)

    def after(self, study: Any, trial: Any) -> None:
        now = time.perf_counter()
        if self.returned is not None:
            self.times["tell"].append(now - self.returned)
        self.returned, self.mark = None, now
        self.finished += trial.state.name == "COMPLETE"
        if self.done is not None:
            self.done.value += 1


def writer(kind: str, path: str, index: int, trials: int | None, barrier: Any, results: Any, done: Any = None,
           create: bool = False) -> None:
    """Open the store, wait for the others, run ``trials`` trials (forever for ``None``) and report times and failures."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lock_waits = []

    class CountLockWaits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "lock" in record.getMessage():
                lock_waits.append(record.getMessage())

    optuna.logging.get_logger("optuna").addHandler(CountLockWaits(logging.WARNING))
    start = time.perf_counter()
    storage = open_store(kind, Path(path))
    if create:
        optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study = optuna.load_study(study_name=STUDY, storage=storage, sampler=optuna.samplers.RandomSampler())
    opened = time.perf_counter() - start
    worker = Worker(index, done)
    barrier.wait(timeout=300)
    began = worker.mark = time.perf_counter()
    cpu = time.process_time()
    while trials is None or len(worker.times["ask"]) + len(worker.failures) < trials:
        left = None if trials is None else trials - len(worker.times["ask"]) - len(worker.failures)
        try:
            study.optimize(worker.objective, n_trials=left, callbacks=[worker.after], catch=(Exception,))
        except Exception as exc:  # outside the objective (ask, tell, stale check): counted, and the worker goes on
            worker.failures.append(failure(exc))
            worker.mark = time.perf_counter()
    results.put({"index": index, "opened": opened, "began": began, "ended": time.perf_counter(), "finished": worker.finished,
                 "cpu": time.process_time() - cpu,
                 "times": worker.times, "failures": worker.failures, "lock_waits": len(lock_waits)})


def spawn(kind: str, path: Path, count: int, trials: int, create: bool = False) -> list[dict[str, Any]]:
    """Run ``count`` writers of ``trials`` trials each together on one store; their reports."""
    ctx = multiprocessing.get_context()
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(kind, str(path), i, trials, barrier, results, None, create)) for i in range(count)]
    for p in procs:
        p.start()
    reports: list[dict[str, Any]] = []
    while len(reports) < count:
        try:
            reports.append(results.get(timeout=1))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                barrier.abort()
                raise RuntimeError(f"{count - len(reports)} {kind} writer(s) died: exit codes {[p.exitcode for p in procs]}") from None
    for p in procs:
        p.join()
    return reports


def copy_store(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copy(f"{src}{suffix}", f"{dst}{suffix}")


# --------------------------------------------------------------------------- checks


def check_store(kind: str, path: Path, expected: int) -> dict[str, Any]:
    """What a fresh ``load_study`` sees: every trial once, complete, attributes intact; and its time."""
    import optuna

    start = time.perf_counter()
    storage = open_store(kind, path, heartbeat=False)
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    reopen = time.perf_counter() - start
    close_store(storage)
    numbers = [t.number for t in trials]
    bad = [t.number for t in trials if t.state.name == "COMPLETE" and (set(ATTRS) - set(t.user_attrs)
           or spec_hash(t.user_attrs["candidate"]["spec"]) != t.user_attrs["candidate"]["hash"])]
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    ok = sorted(numbers) == list(range(len(numbers))) and not bad and complete >= expected
    return {"ok": ok, "trials": len(trials), "complete": complete, "running": sum(t.state.name == "RUNNING" for t in trials),
            "duplicates": len(numbers) - len(set(numbers)), "bad": len(bad), "reopen": reopen}


def kill_test(kind: str, path: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    """Kill a writer ``kills`` times at random moments; each time a fresh writer must open the store and finish a trial."""
    ctx = multiprocessing.get_context()
    lock = Path(f"{path}.lock")
    ok, blocked, probe_s = 0, 0, []
    for _ in range(kills):
        done = ctx.Value("i", 0)
        victim = ctx.Process(target=writer, args=(kind, str(path), 0, None, ctx.Barrier(1), ctx.Queue(), done))
        victim.start()
        deadline = time.monotonic() + 60
        while done.value < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        results = ctx.Queue()
        probe = ctx.Process(target=writer, args=(kind, str(path), 1, 1, ctx.Barrier(1), results))
        start = time.perf_counter()
        probe.start()
        probe.join(BLOCKED_AFTER_S)
        if probe.is_alive() and kind == "journal" and os.path.lexists(lock):
            blocked += 1
            lock.unlink()  # what an operator would do; Optuna itself waits out its 30 s grace period
        probe.join(120)
        report = results.get(timeout=5) if probe.exitcode == 0 else {"finished": 0}
        probe_s.append(time.perf_counter() - start)
        ok += report["finished"] == 1
    return {**check_store(kind, path, 0), "next_ok": ok, "blocked": blocked, "probe": statistics.median(probe_s),
            "reaped": reap(kind, path)}


def reap(kind: str, path: Path) -> int:
    """Killed writers' RUNNING trials that ``fail_stale_trials`` fails, with the grace period shortened to 1 s."""
    import optuna

    storage = open_store(kind, path, grace=1)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    running = len(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    time.sleep(2)  # SQLite stores heartbeats to the second
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    left = len(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    close_store(storage)
    return running - left


def torn_tail_test(path: Path, root: Path) -> str:
    """Cut the last record of a journal short, run three trials, reopen: does the store still load?"""
    torn = root / "torn" / "study.log"
    copy_store(path, torn)
    with open(torn, "rb+") as f:
        f.truncate(f.seek(0, os.SEEK_END) - 40)
    try:
        report = spawn("journal", torn, 1, 3)[0]
    except Exception as exc:
        return f"the writer failed ({exc})"
    errors = "; ".join(sorted(set(report["failures"]))) or "none"
    text = f"writer finished {report['finished']}/3 trials (errors: {errors[:110]})"
    try:
        check = check_store("journal", torn, 0)
    except Exception as exc:
        return f"{text}; reopening fails: {failure(exc)[:90]}"
    return f"{text}; reopens with {check['trials']} trials"


# --------------------------------------------------------------------------- report


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f}" if values else "—"


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput, and latency medians over the last half of every writer's trials (the fullest store)."""
    wall = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
    tail = {op: [x for r in reports for x in r["times"][op][len(r["times"][op]) // 2:]] for op in OPS}
    writes = sorted(x for r in reports for op in ("ask", "attr", "tell") for x in r["times"][op])
    failures = [f for r in reports for f in r["failures"]]
    finished = sum(r["finished"] for r in reports)
    return {"rate": finished / wall, "cpu": sum(r["cpu"] for r in reports) / max(finished, 1),
            "open": statistics.median(r["opened"] for r in reports),
            "tail": tail, "p99": writes[int(0.99 * (len(writes) - 1))] if writes else 0.0,
            "locked": failures.count("locked"), "errors": [f for f in failures if f != "locked"],
            "lock_waits": sum(r["lock_waits"] for r in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", default="1,2,4", help="comma-separated numbers of concurrent writer processes")
    parser.add_argument("--trials", type=int, default=100, help="trials per writer")
    parser.add_argument("--prefill", type=int, default=200, help="trials in the store before the writers start")
    parser.add_argument("--stores", default="sqlite,journal", help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--kills", type=int, default=4, help="SIGKILLs per storage in the robustness test (0: skip)")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="1,2 writers × 20 trials on a store of 60, 2 kills")
    options = parser.parse_args()
    if options.quick:
        options.writers, options.trials, options.prefill, options.kills = "1,2", 20, 60, 2
    counts = [int(n) for n in options.writers.split(",")]
    kinds = ["sqlite"] + [k for k in options.stores.split(",") if k != "sqlite"]  # the reference first
    if set(kinds) - set(KINDS):
        parser.error(f"--stores: {', '.join(sorted(set(kinds) - set(KINDS)))} is none of {', '.join(KINDS)}")
    rng = random.Random(0)

    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench_storage_", dir=options.dir))
    try:
        for kind in kinds:  # first use in this process (lazy imports, SQLAlchemy mappers), inherited by the writers
            warm = store_path(root / f"{kind}_warm", kind)
            warm.parent.mkdir()
            storage = open_store(kind, warm, heartbeat=False)
            optuna.create_study(study_name=STUDY, storage=storage).get_trials()
            close_store(storage)
        start = time.perf_counter()
        base = {}
        for kind in kinds:  # one filled store per kind, copied for every writer count
            base[kind] = store_path(root / f"{kind}_base", kind)
            base[kind].parent.mkdir(parents=True)
            spawn(kind, base[kind], 1, options.prefill, create=True)
        rows = []
        for count in counts:
            for kind in kinds:
                path = store_path(root / f"{kind}_{count}", kind)
                copy_store(base[kind], path)
                summary = summarize(spawn(kind, path, count, options.trials))
                rows.append((count, kind, summary, check_store(kind, path, options.prefill + count * options.trials)))
        kills = {kind: kill_test(kind, base[kind], options.kills, rng) for kind in kinds} if options.kills else {}
        torn = torn_tail_test(base["journal"], root) if "journal" in kinds else None
        elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"storage benchmark — optuna {optuna.__version__}, SQLAlchemy {sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {elapsed:.0f} s")
    print(f"store prefilled with {options.prefill} trials; {options.trials} trials per writer; "
          f"medians (ms) over the last half of each writer's trials; ratio = trials/s ÷ sqlite's")
    print()
    print(f"{'writers':<8}{'storage':<12}{'trials/s':>9}{'ratio':>7}{'cpu ms':>8}{'open ms':>9}{'ask':>7}{'attr':>7}{'get_trials':>11}"
          f"{'tell':>7}{'p99 write':>10}{'locked':>8}{'errors':>8}{'reopen ms':>10}  check")
    reference = {count: s["rate"] for count, kind, s, _ in rows if kind == "sqlite"}
    for count, kind, s, c in rows:
        t = s["tail"]
        check = f"{'ok' if c['ok'] else 'FAILED'} {c['complete']}/{options.prefill + count * options.trials}"
        if c["duplicates"] or c["bad"]:
            check += f" ({c['duplicates']} duplicate numbers, {c['bad']} damaged)"
        print(f"{count:<8}{kind:<12}{s['rate']:>9.1f}{s['rate'] / reference[count]:>7.2f}{s['cpu'] * 1e3:>8.1f}{s['open'] * 1e3:>9.0f}{ms(t['ask']):>7}"
              f"{ms(t['attr']):>7}{ms(t['get_trials']):>11}{ms(t['tell']):>7}{s['p99'] * 1e3:>10.1f}"
              f"{s['locked']:>8}{len(s['errors']):>8}{c['reopen'] * 1e3:>10.0f}  {check}")
        for error in sorted(set(s["errors"]))[:3]:
            print(f"{'':<20}error: {error}")
        if s["lock_waits"]:
            print(f"{'':<20}{s['lock_waits']} Optuna warnings of a writer waiting > 10 s for the journal lock")
    if kills:
        print()
        print(f"kill -9 of a writer at a random moment, {options.kills} times each; then a fresh writer opens the store and runs a trial")
        print(f"{'storage':<12}{'next trial ok':>14}{'blocked':>9}{'next trial s':>13}{'trials':>8}{'RUNNING left':>13}"
              f"{'reaped':>8}{'duplicates':>11}")
        for kind, k in kills.items():
            print(f"{kind:<12}{k['next_ok']:>10}/{options.kills:<3}{k['blocked']:>9}{k['probe']:>13.2f}{k['trials']:>8}"
                  f"{k['running']:>13}{k['reaped']:>8}{k['duplicates']:>11}")
        print("reaped: RUNNING trials of killed writers that fail_stale_trials fails once the grace period is over "
              "(shortened to 1 s here; only RDBStorage has heartbeats)")
        print(f"blocked: the killed writer left the journal's lock file; Optuna waits out its grace period (30 s) "
              f"before breaking it, here it was removed after {BLOCKED_AFTER_S:.0f} s")
    if torn is not None:
        print(f"journal with its last record cut short, then three trials: {torn}")


if __name__ == "__main__":
    main()
