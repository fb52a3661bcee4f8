"""How far one study scales: 1 to 16 search workers with a no-op evaluator, on PostgreSQL and on the SQLite file.

    python benchmarks/bench_scale.py                         # 1,2,4,8,16 workers × 300 trials on each store
    python benchmarks/bench_scale.py --quick                 # 1,2,4 workers × 100 trials
    python benchmarks/bench_scale.py --postgres URL --workers 1,4,16 --trials 500 --stores postgres

Each configuration is one ``archforge.search(space, workers=N, storage=..., evaluator=...)`` call
(workers are spawned processes, as in any search) of ``--trials`` trials of a random strategy over
~37,000 candidates (few repeats), on a new study: a PostgreSQL study (``--postgres``, else
``ARCHFORGE_TEST_POSTGRES``, else a throwaway server started with ``.ci/postgres``) and a new
``study.db``. The evaluator returns at once, so all a worker does is coordination: Optuna's ask
(the sampler, the stale-trial check, the heartbeat thread), archforge's claim of the candidate
(under the study's lock: an advisory lock on PostgreSQL, a file lock for SQLite), the stored
attributes, Optuna's tell, the stop rule.

The evaluator's first call in each worker waits until all N workers have arrived, so the
measurement starts with every worker running (start-up, 3-4 s of imports per worker, is left
out), and ends when the first worker stops. In that window, per configuration:

* trials/s, and its ratio to one worker on the same store;
* coord ms: coordination cost per trial, wall time × workers / trials (worker-milliseconds),
  and its parts, per trial: ``sql ms`` inside SQL calls (a SQLAlchemy cursor listener in each
  worker; the driver process's progress polling is not counted), ``lock wait`` for the study's
  lock (PostgreSQL: the ``pg_advisory_lock`` call, an SQL call itself; SQLite: the file lock,
  timed by wrapping ``fcntl.flock`` in the workers), ``cpu ms`` the workers' own CPU time, and
  ``other ms`` the rest: waiting for a CPU, or for other workers' trials;
* lock hold (PostgreSQL): how long the study lock is held per trial (the claim reads every trial
  of the study under it); the lock serialises claims, so 1000 / hold is the most trials/s any
  number of workers can reach;
* stmts: SQL statements per trial; rows: rows the SELECTs returned per trial (PostgreSQL only:
  SQLite's cursors do not count them);
* late/early: trials/s in the window's second half ÷ its first half (below 1: trials get dearer
  as the study grows);
* machine cpu: the share of all cores busy in the window (every process on the machine, the
  database server and anything else running included);
* total s: the whole ``search()`` call, worker start-up included; check: every trial as
  archforge reads it afterwards (``cancelled``: asked after the budget was claimed).

The server is whatever the URL points at: ``.ci/postgres`` runs without fsync (a throwaway
test server), so commits cost no disk flush.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDES = [4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128]
SPACE = f"""\
archforge: 1
name: scale
input: {{shape: [1, 8, 8]}}
params:
  w1: {{choice: {SIDES}}}
  w2: {{choice: {SIDES}}}
  w3: {{choice: {SIDES}}}
  k1: {{choice: [1, 3, 5]}}
  k2: {{choice: [1, 3, 5]}}
  k3: {{choice: [1, 3]}}
nodes:
  - {{id: c1, block: conv, args: {{channels: $w1, kernel: $k1}}}}
  - {{id: c2, block: conv, args: {{channels: $w2, kernel: $k2}}}}
  - {{id: c3, block: conv, args: {{channels: $w3, kernel: $k3}}}}
  - {{id: head, block: classifier, args: {{classes: 10}}}}
search: {{strategy: random, epochs: 1, seeds: 1}}
"""
FAKE_DATA = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="none")


# --------------------------------------------------------------------------- inside each worker


class _Counters:
    """SQL statements of this process (SQLAlchemy's cursor events on every engine) and the study lock's waits and holds."""

    def __init__(self) -> None:
        self.statements = self.selects = self.rows = 0
        self.sql_s = self.lock_s = self.hold_s = 0.0
        self.locked_at: float | None = None

    def before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        now = time.perf_counter()
        if "pg_advisory_unlock" in statement and self.locked_at is not None:
            self.hold_s += now - self.locked_at
            self.locked_at = None
        conn.info.setdefault("bench_started", []).append(now)

    def after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        now = time.perf_counter()
        elapsed = now - conn.info["bench_started"].pop()
        self.statements += 1
        self.sql_s += elapsed
        if statement.lstrip()[:6].upper() == "SELECT":
            self.selects += 1
            if "pg_advisory_lock" in statement:
                self.lock_s += elapsed
                self.locked_at = now
            elif cursor.rowcount and cursor.rowcount > 0:  # sqlite3 says -1 for a SELECT
                self.rows += cursor.rowcount

    def time_file_locks(self) -> None:
        """Add the waits for exclusive file locks (SQLite's study lock is one) to ``lock_s``: fcntl.flock, timed."""
        try:
            import fcntl
        except ImportError:
            return
        flock = fcntl.flock

        def timed(fd: Any, operation: int) -> None:
            if operation & fcntl.LOCK_EX and not operation & fcntl.LOCK_NB:
                started = time.perf_counter()
                flock(fd, operation)
                self.lock_s += time.perf_counter() - started
            else:
                flock(fd, operation)

        fcntl.flock = timed


_state: dict[str, Any] = {}


def _machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot (Linux), else zeros."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def no_op(spec: Any, data: Any, config: Any, on_epoch: Any = None) -> SimpleNamespace:
    """The evaluator: returns at once; logs this worker's counters after a barrier of all workers (see the module docstring)."""
    folder = os.environ["BENCH_SCALE_DIR"]
    if _state.get("folder") != folder:  # this process's first call of this configuration
        _arrive(folder, int(os.environ["BENCH_SCALE_WORKERS"]))
        _state.update(folder=folder, calls=0, log=open(Path(folder) / f"calls.{os.getpid()}", "a", buffering=1))
        if "counters" not in _state:
            import sqlalchemy

            counters = _state["counters"] = _Counters()
            sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", counters.before)
            sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", counters.after)
            counters.time_file_locks()
    c = _state["counters"]
    busy, total = _machine_cpu()
    _state["log"].write(f"{_state['calls']} {time.time():.6f} {time.process_time():.6f} {c.statements} {c.selects} {c.rows} "
                        f"{c.sql_s:.6f} {c.lock_s:.6f} {c.hold_s:.6f} {busy} {total}\n")
    _state["calls"] += 1
    return SimpleNamespace(accuracy=0.5, epochs=config.epochs, history=[0.5] * config.epochs, stopped_early=False,
                           params=1000, flops=1000, latency_ms=1.0, peak_memory_mb=1.0, train_time_s=0.0)


def _arrive(folder: str, workers: int, limit_s: float = 600.0) -> None:
    """Wait until ``workers`` processes have called the evaluator (each leaves a file)."""
    Path(folder, f"arrived.{os.getpid()}").touch()
    deadline = time.monotonic() + limit_s
    while sum(name.startswith("arrived.") for name in os.listdir(folder)) < workers and time.monotonic() < deadline:
        time.sleep(0.01)


# --------------------------------------------------------------------------- one configuration


COLUMNS = ("time", "cpu", "statements", "selects", "rows", "sql_s", "lock_s", "hold_s", "busy", "total")
MEASURED = ("cpu", "statements", "selects", "rows", "sql_s", "lock_s", "hold_s")


def read_calls(folder: Path) -> dict[int, list[dict[str, float]]]:
    """Every worker's counters at each of its evaluator calls, by pid."""
    calls = {}
    for path in folder.glob("calls.*"):
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        calls[int(path.suffix[1:])] = [{"index": int(v[0]), **dict(zip(COLUMNS, map(float, v[1:])))} for v in lines]
    return calls


def window(calls: dict[int, list[dict[str, float]]], workers: int) -> dict[str, Any]:
    """What the workers did while all of them ran: from the last one's release to the first one's last call."""
    if len(calls) < workers or any(len(c) < 2 for c in calls.values()):
        raise RuntimeError(f"{len(calls)} of {workers} workers reached the evaluator twice: nothing to measure")
    start = max(c[0]["time"] for c in calls.values())
    end = min(c[-1]["time"] for c in calls.values())
    middle = (start + end) / 2
    totals = dict.fromkeys(("trials", "early", "late", *MEASURED), 0.0)
    for c in calls.values():
        inside = [x for x in c if start <= x["time"] <= end]
        if len(inside) < 2:
            continue
        first, last = inside[0], inside[-1]
        totals["trials"] += last["index"] - first["index"]
        totals["early"] += sum(1 for x in inside[1:] if x["time"] <= middle)
        totals["late"] += sum(1 for x in inside[1:] if x["time"] > middle)
        for key in MEASURED:
            totals[key] += last[key] - first[key]
    ender = min(calls.values(), key=lambda c: c[-1]["time"])  # its own /proc/stat readings span the window
    opening = min(ender, key=lambda x: abs(x["time"] - start))
    busy, total = ender[-1]["busy"] - opening["busy"], ender[-1]["total"] - opening["total"]
    return {**totals, "wall": end - start, "machine_cpu": busy / total if total > 0 else float("nan")}


def run_config(store: str, workers: int, trials: int, root: Path, postgres: str | None) -> dict[str, Any]:
    """One search of ``trials`` no-op trials by ``workers`` workers on a new study; the window's figures and a check."""
    import optuna

    import archforge
    from archforge.search.records import read_trials

    folder = root / f"{store}_{workers}"
    folder.mkdir()
    os.environ["BENCH_SCALE_DIR"], os.environ["BENCH_SCALE_WORKERS"] = str(folder), str(workers)  # the spawned workers inherit them
    name = f"scale_{workers}_{uuid.uuid4().hex[:8]}"
    storage = postgres if store == "postgres" else str(folder / "study.db")
    started = time.perf_counter()
    result = archforge.search(root / "space.yaml", dataset=FAKE_DATA, storage=storage, evaluator=no_op, workers=workers,
                              budget=trials, name=name, progress=False)
    total_s = time.perf_counter() - started
    records = read_trials(result.study)
    # Every trial as archforge reads it: complete evaluations, reuses of a candidate seen before, and anything else.
    statuses = Counter("reused" if r.duplicate_of is not None else r.status for r in records)
    check = ", ".join(f"{count} {status}" for status, count in statuses.most_common())
    if store == "postgres":  # keep the server's tables as small as at the start
        admin = optuna.storages.RDBStorage(postgres.replace("postgresql://", "postgresql+psycopg://", 1))
        optuna.delete_study(study_name=name, storage=admin)
        admin.engine.dispose()
    return {"store": store, "workers": workers, "total_s": total_s, **window(read_calls(folder), workers), "check": check}


# --------------------------------------------------------------------------- the server


def start_postgres(root: Path) -> str:
    """A throwaway server from ``.ci/postgres`` (stopped by :func:`stop_postgres`); its URL."""
    done = subprocess.run(["bash", str(ROOT / ".ci" / "postgres"), "start", str(root / "pg")], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_scale: .ci/postgres could not start a server: {done.stderr.strip()}")
    return done.stdout.strip()


def stop_postgres(root: Path) -> None:
    subprocess.run(["bash", str(ROOT / ".ci" / "postgres"), "stop", str(root / "pg")], capture_output=True)


def server_text(url: str) -> str:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as connection:
        version, fsync, connections = connection.execute(
            "select current_setting('server_version'), current_setting('fsync'), current_setting('max_connections')").fetchone()
    return f"PostgreSQL {version} (fsync {fsync}, max_connections {connections})"


# --------------------------------------------------------------------------- report


def per_trial(r: dict[str, Any]) -> dict[str, float]:
    """A configuration's window, per trial: rate, coordination cost and its parts (milliseconds of worker time)."""
    n = max(r["trials"], 1)
    ms = {key: r[key] / n * 1e3 for key in ("cpu", "sql_s", "lock_s", "hold_s")}
    coord = r["wall"] * r["workers"] / n * 1e3
    # The advisory lock's wait is an SQL call (inside sql_s); the file lock's is not.
    outside = ms["sql_s"] + (0.0 if r["store"] == "postgres" else ms["lock_s"])
    return {"rate": r["trials"] / r["wall"], "coord": coord, "other": coord - ms["cpu"] - outside, **ms,
            "late_early": r["late"] / r["early"] if r["early"] else float("nan")}


def saturation(rows: list[dict[str, Any]]) -> str:
    """Where adding workers stops paying: the fewest workers within 10% of the best trials/s."""
    rates = {r["workers"]: per_trial(r)["rate"] for r in rows}
    best = max(rates.values())
    at = min(n for n, rate in rates.items() if rate >= 0.9 * best)
    peak = max(rates, key=rates.get)
    text = f"saturates at {at} worker(s): {rates[at]:.1f} trials/s"
    if peak != at:
        text += f" (best {best:.1f} at {peak})"
    more = [n for n in rates if n > at]
    if more:
        last = max(more)
        text += f"; {last} workers give {rates[last] / rates[at]:.2f}× that"
    held = [r for r in rows if r["hold_s"] > 0]
    if held:
        widest = max(held, key=lambda r: r["workers"])
        hold = per_trial(widest)["hold_s"]
        text += (f"; the study lock is held {hold:.0f} ms per trial at {widest['workers']} workers, "
                 f"so claims alone allow at most {1e3 / hold:.1f} trials/s")
    return text


def print_table(rows: list[dict[str, Any]], header: str) -> None:
    print(header)
    print()
    print(f"{'store':<9}{'workers':>8}{'trials':>7}{'window s':>9}{'trials/s':>9}{'ratio':>7}{'coord ms':>9}{'late/early':>11}"
          f"{'stmts':>7}{'rows':>7}{'sql ms':>8}{'lock wait':>10}{'lock hold':>10}{'cpu ms':>8}{'other ms':>9}"
          f"{'machine cpu':>12}{'total s':>8}  check")
    one = {r["store"]: per_trial(r)["rate"] for r in rows if r["workers"] == 1}
    for r in rows:
        t, n = per_trial(r), max(r["trials"], 1)
        postgres = r["store"] == "postgres"
        ratio = f"{t['rate'] / one[r['store']]:.2f}" if r["store"] in one else "—"
        rows_text = f"{r['rows'] / n:.0f}" if postgres else "—"
        hold_text = f"{t['hold_s']:.1f}" if postgres else "—"
        print(f"{r['store']:<9}{r['workers']:>8}{r['trials']:>7.0f}{r['wall']:>9.1f}{t['rate']:>9.1f}{ratio:>7}{t['coord']:>9.0f}"
              f"{t['late_early']:>11.2f}{r['statements'] / n:>7.0f}{rows_text:>7}{t['sql_s']:>8.1f}{t['lock_s']:>10.1f}{hold_text:>10}"
              f"{t['cpu']:>8.1f}{t['other']:>9.0f}{r['machine_cpu']:>12.0%}{r['total_s']:>8.0f}  {r['check']}")
    print()
    for store in dict.fromkeys(r["store"] for r in rows):
        print(f"{store}: {saturation([r for r in rows if r['store'] == store])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4,8,16", help="comma-separated numbers of worker processes")
    parser.add_argument("--trials", type=int, default=300, help="trials per configuration (the search's budget)")
    parser.add_argument("--stores", default="postgres,sqlite", help="comma-separated, of postgres, sqlite")
    parser.add_argument("--postgres", default=None, help="a server's URL (default: $ARCHFORGE_TEST_POSTGRES, else a throwaway one)")
    parser.add_argument("--dir", default=None, help="where the SQLite stores go (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="1,2,4 workers × 100 trials")
    options = parser.parse_args()
    if options.quick:
        options.workers, options.trials = "1,2,4", 100
    counts = [int(n) for n in options.workers.split(",")]
    stores = options.stores.split(",")
    if set(stores) - {"postgres", "sqlite"}:
        parser.error(f"--stores: {', '.join(sorted(set(stores) - {'postgres', 'sqlite'}))} is neither postgres nor sqlite")

    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=options.dir))
    url = options.postgres or os.environ.get("ARCHFORGE_TEST_POSTGRES")
    own_server = "postgres" in stores and not url
    try:
        if own_server:
            url = start_postgres(root)
        (root / "space.yaml").write_text(SPACE)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        rows = [run_config(store, n, options.trials, root, url) for n in counts for store in stores]
        elapsed = time.perf_counter() - started
        server = server_text(url) if "postgres" in stores else None
    finally:
        if own_server:
            stop_postgres(root)
        shutil.rmtree(root, ignore_errors=True)

    rows.sort(key=lambda r: (stores.index(r["store"]), r["workers"]))
    driver = f"psycopg {__import__('psycopg').__version__}, {server}, " if server else ""
    header = (f"scaling benchmark — optuna {optuna.__version__}, SQLAlchemy {sqlalchemy.__version__}, {driver}Python {sys.version.split()[0]}, {os.cpu_count()} CPUs (load {load:.1f} before), "
              f"{elapsed:.0f} s\n{options.trials} no-op trials per configuration; per-trial columns are window totals ÷ trials "
              f"(median trials per worker {statistics.median(r['trials'] / r['workers'] for r in rows):.0f})")
    print_table(rows, header)


if __name__ == "__main__":
    main()
