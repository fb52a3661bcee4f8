"""One study on a real PostgreSQL server shared by real worker processes: no duplicates, no gaps, dead workers recovered.

Every process here is a real ``python -m archforge`` (``search`` that creates the study, ``worker``
that joins it, ``report`` that reads it) on the server whose URL is in ``ARCHFORGE_TEST_POSTGRES``
(``.ci/run`` starts one with ``.ci/postgres``; without it these tests are skipped, except in CI,
where they fail). The evaluator (:mod:`distributed_evaluators`) trains nothing: it logs which
process evaluated which candidate and seed, which is the independent record the store is checked
against, and it can hold every worker mid-trial so that a test acts at a known moment (a report
while trials run, a ``kill -9`` of a worker that surely is training). The store is read with
Optuna's own ``load_study`` through SQLAlchemy's psycopg dialect, not through archforge's opener.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from distributed_evaluators import accuracy_of, read_events

ROOT = Path(__file__).resolve().parents[1]
ENV = "ARCHFORGE_TEST_POSTGRES"
EVALUATOR = "tests.distributed_evaluators:fake_train"
WIDTHS, KERNELS, SEEDS = (4, 8, 16), (1, 3), 2
GRID = set(itertools.product(WIDTHS, KERNELS))
EPOCH_S = "0.1"  # per fake epoch: 2 epochs × 2 seeds × 6 candidates ≈ 2.4 s of "training" in all
WAIT_S = 90  # the longest any step may take on a loaded 2-core machine before the test fails

SPACE = f"""\
archforge: 1
name: distributed
input: {{shape: [1, 8, 8]}}
params: {{width: {{choice: {list(WIDTHS)}}}, kernel: {{choice: {list(KERNELS)}}}}}
nodes:
  - {{id: stem, block: conv, args: {{channels: $width, kernel: $kernel}}}}
  - {{id: head, block: classifier, args: {{classes: 10}}}}
search: {{strategy: grid, epochs: 2, seeds: {SEEDS}, dataset: digits, limit: 200{{extra}}}}
"""


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get(ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{ENV} is not set in CI: .ci/run starts a PostgreSQL server with .ci/postgres and exports it")
        pytest.skip(f"{ENV} is not set: `bash .ci/postgres start /tmp/pg` starts a server and prints its URL")
    return url


def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy opens it with psycopg 3 (its default postgresql:// driver is psycopg2)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def load_records(url: str, name: str) -> list[Any]:
    """Every trial of study ``name`` as archforge reads it, through a storage of this test's own."""
    import optuna

    from archforge.search.records import read_trials

    storage = optuna.storages.RDBStorage(sqlalchemy_url(url))
    try:
        return read_trials(optuna.load_study(study_name=name, storage=storage))
    finally:
        storage.engine.dispose()


def study_ready(url: str, name: str) -> bool:
    """Whether study ``name`` exists with its run settings (what a worker needs to join), read with plain SQL.

    Plain SQL, not Optuna: opening an Optuna storage creates its tables, which would race with
    the search process creating them in a new database.
    """
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as connection:
            row = connection.execute(
                "select 1 from studies s join study_user_attributes a on a.study_id = s.study_id "
                "where s.study_name = %s and a.key = 'archforge'", (name,)).fetchone()
    except psycopg.errors.UndefinedTable:
        return False
    return row is not None


def drop_study(url: str, name: str) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(sqlalchemy_url(url))
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:  # never created
        pass
    finally:
        storage.engine.dispose()


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """One ``python -m archforge`` process, in a process group of its own (a kill takes all of it)."""

    name: str
    popen: subprocess.Popen
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def owns(self, event: dict[str, Any]) -> bool:
        return event["pgid"] == self.popen.pid

    def tail(self) -> str:
        text = self.err.read_text(errors="replace").strip().splitlines()[-15:] if self.err.exists() else []
        return f"{self.name} (pid {self.pid}, exit {self.popen.poll()}) stderr: " + " | ".join(text)

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not end within {timeout} s; {self.tail()}")


@dataclass
class Cluster:
    """The processes of one test, its log of evaluations, the hold file and the study; cleaned up at the end."""

    url: str
    name: str
    folder: Path
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = self.folder / "evaluations.jsonl"
        self.hold_file = self.folder / "hold"
        self.space = self.folder / "space.yaml"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                    "ARCHFORGE_TEST_LOG": str(self.log), "ARCHFORGE_TEST_HOLD": str(self.hold_file),
                    "ARCHFORGE_TEST_EPOCH_S": EPOCH_S, "OMP_NUM_THREADS": "1"}

    def write_space(self, extra: str = "") -> None:
        self.space.write_text(SPACE.replace("{extra}", extra))

    def start(self, label: str, *args: str) -> Proc:
        out, err = self.folder / f"{label}.out", self.folder / f"{label}.err"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            popen = subprocess.Popen([sys.executable, "-m", "archforge", *args], cwd=self.folder, env=self.env,
                                     stdout=stdout, stderr=stderr, start_new_session=True)
        proc = Proc(label, popen, out, err)
        self.procs.append(proc)
        return proc

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "archforge", *args], cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=WAIT_S)

    def search(self) -> Proc:
        return self.start("search", "search", str(self.space), "--storage", self.url, "--name", self.name,
                          "--evaluator", EVALUATOR, "--no-progress")

    def worker(self) -> Proc:
        return self.start("worker", "worker", "--storage", self.url, "--study", self.name)

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.log)

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        """Poll ``condition`` until it is true; fail saying ``what`` when it times out or a process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            ended = [p for p in self.procs if p.popen.poll() is not None]
            if ended or time.monotonic() > deadline:
                why = "ended" if ended else f"{timeout} s passed"
                pytest.fail(f"{why} before {what}; " + "; ".join(p.tail() for p in self.procs))
            time.sleep(0.1)

    def held(self, procs: list[Proc], since: int = 0) -> dict[str, dict[str, Any]]:
        """The ``held`` event of each of ``procs`` logged after the first ``since`` events, by process name."""
        found = {}
        for event in self.events()[since:]:
            for p in procs:
                if event["event"] == "held" and p.owns(event):
                    found.setdefault(p.name, event)
        return found

    def hold_all(self, procs: list[Proc]) -> None:
        """Wait until every one of ``procs`` is held mid-trial (the hold file must exist)."""
        self.wait_for(f"{' and '.join(p.name for p in procs)} were both held mid-trial", lambda: len(self.held(procs)) == len(procs))

    def start_search_and_worker(self) -> tuple[Proc, Proc]:
        """The search, then a worker once the study exists; both held in their first trial when this returns."""
        self.hold_file.touch()
        search = self.search()
        self.wait_for("the search stored its study", lambda: study_ready(self.url, self.name))
        worker = self.worker()
        self.hold_all([search, worker])
        return search, worker

    def close(self) -> None:
        self.hold_file.unlink(missing_ok=True)
        for p in self.procs:
            if p.popen.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.popen.wait()
        drop_study(self.url, self.name)


@pytest.fixture
def cluster(postgres_url, tmp_path, request):
    made = Cluster(postgres_url, f"dist_{request.node.name[5:25]}_{uuid.uuid4().hex[:8]}", tmp_path)
    yield made
    made.close()


def report_json(cluster: Cluster, label: str) -> dict[str, Any]:
    done = cluster.run("report", cluster.url, "--study", cluster.name, "--json", "-o", str(cluster.folder / label))
    assert done.returncode == 0, f"{label}: exit {done.returncode}: {done.stderr.strip()[-2000:]}"
    return json.loads(done.stdout)


def params_of(record: Any) -> tuple[int, int]:
    params = record.spec["params"]
    return params["width"], params["kernel"]


def check_grid_done_once(records: list[Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every grid candidate evaluated by exactly one counted trial, each seed trained once; returns the counted ones by hash."""
    counted = [r for r in records if r.counted]
    by_hash = {r.hash: r for r in counted}
    assert len(by_hash) == len(counted), f"a candidate evaluated twice: {sorted(r.hash for r in counted)}"
    assert sorted(params_of(r) for r in counted) == sorted(GRID), "a grid candidate is missing or foreign"
    seeds = {e["seed"] for e in events if e["event"] == "end"}
    assert len(seeds) == SEEDS
    for r in counted:
        assert r.status == "complete" and r.state == "COMPLETE", (r.number, r.status, r.error)
        assert sorted(r.seeds) == sorted(seeds) and all(s.status == "ok" for s in r.seeds.values())
        for seed, result in r.seeds.items():
            assert result.accuracy == pytest.approx(accuracy_of(r.spec, seed), abs=1e-12)
        assert r.accuracy == pytest.approx(sum(accuracy_of(r.spec, s) for s in seeds) / SEEDS, abs=1e-12)
    for r in records:  # a trial that reused results says whose, and trained nothing
        if r.duplicate_of is not None:
            assert r.hash in by_hash and by_hash[r.hash].number == r.duplicate_of, (r.number, r.hash, r.duplicate_of)
    trained = [(e["hash"], e["seed"]) for e in events if e["event"] == "end"]
    assert len(trained) == len(set(trained)), f"a candidate and seed trained twice: {sorted(trained)}"
    assert set(trained) == {(h, s) for h in by_hash for s in seeds}
    return by_hash


# --------------------------------------------------------------------------- two workers, one grid


@pytest.fixture(scope="module")
def grid_run(postgres_url, tmp_path_factory):
    """A search and a worker on one grid study, with a report while both are held mid-trial and one after."""
    run = Cluster(postgres_url, f"dist_grid_{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("grid"))
    try:
        run.write_space()
        search, worker = run.start_search_and_worker()
        run.hold_file.unlink()
        # Let some trials finish, then hold again: the report reads a study with finished and running trials.
        run.wait_for("four seeds were trained", lambda: sum(e["event"] == "end" for e in run.events()) >= 4)
        mark = len(run.events())
        run.hold_file.touch()
        held = run.wait_for("a process was held again", lambda: run.held([search, worker], mark))
        during = report_json(run, "report_during")
        running = [r for r in load_records(postgres_url, run.name) if r.status == "running"]
        holding = [p for p in (search, worker) if p.name in held]
        alive = all(p.popen.poll() is None for p in holding)
        run.hold_file.unlink()
        codes = {p.name: p.wait() for p in (search, worker)}
        after = report_json(run, "report_after")
        yield SimpleNamespace(search=search, worker=worker, codes=codes, during=during, running=running, alive=alive,
                              after=after, records=load_records(postgres_url, run.name), events=run.events(), url=postgres_url)
    finally:
        run.close()


def test_two_workers_complete_a_grid_with_no_duplicates_and_no_gaps(grid_run):
    assert grid_run.codes == {"search": 0, "worker": 0}, [grid_run.search.tail(), grid_run.worker.tail()]
    check_grid_done_once(grid_run.records, grid_run.events)
    trained_by = {name: [e for e in grid_run.events if e["event"] == "end" and p.owns(e)]
                  for name, p in (("search", grid_run.search), ("worker", grid_run.worker))}
    assert all(trained_by.values()), f"one process trained nothing: { {k: len(v) for k, v in trained_by.items()} }"
    assert sum(map(len, trained_by.values())) == len(GRID) * SEEDS  # nobody else trained
    # Each counted trial was run (and stored as run) by the process whose evaluator trained it.
    pids = {e["hash"]: e["pid"] for e in grid_run.events if e["event"] == "end"}
    assert all(r.worker is not None and r.worker.pid == pids[r.hash] for r in grid_run.records if r.counted)
    assert not [r for r in grid_run.records if r.status in ("running", "waiting")]


def test_report_works_while_workers_run_and_after(grid_run):
    assert grid_run.running and grid_run.alive  # the first report read a study with trials in flight
    expected = {r.hash: r.accuracy for r in grid_run.records if r.counted}
    during = {row["hash"]: row["accuracy"] for row in grid_run.during["ranking"]}
    assert during and len(during) < len(GRID)  # some trials finished, not all
    assert all(during[h] == pytest.approx(expected[h], abs=1e-4) for h in during)
    after = {row["hash"]: row["accuracy"] for row in grid_run.after["ranking"]}
    assert after.keys() == expected.keys()
    assert all(after[h] == pytest.approx(expected[h], abs=1e-4) for h in after)
    best = max(expected, key=expected.get)
    assert grid_run.after["best"]["hash"] == best


# --------------------------------------------------------------------------- a worker killed mid-trial


def test_worker_killed_mid_trial_is_recovered_by_the_other(cluster):
    cluster.write_space(", heartbeat: {interval: 1, grace: 3}")
    search, worker = cluster.start_search_and_worker()
    victim = cluster.held([worker])["worker"]  # what the worker is training right now
    os.killpg(worker.pid, signal.SIGKILL)  # kill -9 of the whole worker, as a lost machine
    assert worker.popen.wait(10) == -signal.SIGKILL
    cluster.hold_file.unlink()
    released = time.monotonic()
    assert search.wait() == 0, search.tail()
    # The space's grace of 3 s, not the default 60 s, decided that the trial was dead.
    assert time.monotonic() - released < 45, "the search waited about as long as the default heartbeat grace (60 s)"

    records, events = load_records(cluster.url, cluster.name), cluster.events()
    by_hash = check_grid_done_once(records, events)
    killed = [r for r in records if r.status == "interrupted"]
    assert len(killed) == 1, [(r.number, r.state, r.status) for r in records]
    killed = killed[0]
    assert killed.state == "FAIL" and killed.hash == victim["hash"] and killed.worker.pid == victim["pid"]
    # One retry was queued and ran: it trained the candidate, or reused the result of a trial of the
    # other worker that had asked for the same grid point and waited for the dead one's claim.
    retries = [r for r in records if r.retry_of == killed.number]
    assert len(retries) == 1 and retries[0].status == "complete" and retries[0].worker.pid != victim["pid"]
    counted = by_hash[killed.hash].number
    assert retries[0].number == counted or retries[0].duplicate_of == counted
    started = [(e["hash"], e["seed"]) for e in events if e["event"] == "start"]
    # Only the seed the worker died in was started twice; its other finished seeds were not trained again.
    assert [k for k in set(started) if started.count(k) > 1] == [(victim["hash"], victim["seed"])]
    assert not [r for r in records if r.status in ("running", "waiting")]


# --------------------------------------------------------------------------- no driver, no password in messages


SECRET = "Wr0ngPassw0rd4test"

COMMANDS = """\
import sys
{block}
from archforge.cli import main
for argv in {commands!r}:
    print("@@@", flush=True)
    print("@@@", file=sys.stderr, flush=True)
    code = main(argv)
    print(f"@@@ exit {{code}}", file=sys.stderr, flush=True)
"""


def run_commands(cluster: Cluster, url: str, *, block: str = "") -> list[tuple[int, list[str], str]]:
    """``search``, ``worker`` and ``report`` on ``url`` in one process; each one's exit status, stderr lines and stdout."""
    cluster.write_space()
    commands = [["search", str(cluster.space), "--storage", url, "--name", cluster.name, "--evaluator", EVALUATOR, "--no-progress"],
                ["worker", "--storage", url, "--study", cluster.name],
                ["report", url, "--study", cluster.name]]
    done = subprocess.run([sys.executable, "-c", COMMANDS.format(block=block, commands=commands)], cwd=cluster.folder,
                          env=cluster.env, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    errs, outs = done.stderr.split("@@@\n")[1:], done.stdout.split("@@@\n")[1:]
    assert len(errs) == len(outs) == len(commands), done.stderr[-3000:]
    results = []
    for err, out in zip(errs, outs):
        body, _, status = err.rpartition("@@@ exit ")
        results.append((int(status), [line for line in body.splitlines() if line.strip()], out))
    return results


def with_user(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    host = rest.split("@", 1)[-1]
    return f"{scheme}://{user}:{password}@{host}"


def test_postgres_without_driver_names_the_extra_and_hides_the_password(cluster):
    url = with_user(cluster.url, "archforge", SECRET)
    block = "sys.modules['psycopg'] = None\nsys.modules['psycopg2'] = None"
    for code, lines, out in run_commands(cluster, url, block=block):
        assert code == 1 and len(lines) == 1, lines
        assert "pip install 'archforge-nn[postgres]'" in lines[0]
        assert SECRET not in lines[0] and SECRET not in out


def test_postgres_refusing_the_login_hides_the_password(cluster):
    url = with_user(cluster.url, f"nobody_{uuid.uuid4().hex[:6]}", SECRET)  # the server has no such role
    for code, lines, out in run_commands(cluster, url):
        assert code == 1 and len(lines) == 1, lines
        assert SECRET not in lines[0] and SECRET not in out
        assert "127.0.0.1" in lines[0]  # it still says which server
