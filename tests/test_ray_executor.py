"""The Ray executor (archforge/search/ray_executor.py): runs on real Ray clusters, and what it refuses up front.

Three kinds of clusters, all on this machine: the local one a search starts for itself (and
stops), one started here and shared by the tests of a class (a driver already connected is used
as it is), and two nodes inside private network and PID namespaces (``tests/ray_two_nodes.py``;
root only), which the search joins with ``address: auto``. The evaluator
(``tests/ray_evaluators.py``) trains nothing: its accuracy is a function of the candidate, so
every stored value is checked against a fact computed here, and its log says which process and
which Ray node trained what.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import archforge
from archforge.errors import SearchError
from archforge.search.driver import RunPlan
from archforge.search.progress import Display
from archforge.search.ray_executor import check_address, cluster_problem, run_ray, task_plan, trial_slots
from archforge.search.settings import RaySettings, SearchSettings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # ray_evaluators, for this process; Ray's workers get the driver's sys.path

import ray_evaluators  # noqa: E402

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'archforge-nn[ray]')")
DATA = types.SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
EVALUATOR = "ray_evaluators:fake_train"
SPACE = """\
archforge: 1
name: raygrid
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8, 16]}, kernel: {choice: [1, 3]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width, kernel: $kernel}}
  - {id: head, block: classifier, args: {classes: 10}}
search: {epochs: 2, strategy: grid}
"""
GRID = 6  # width × kernel


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def expected_accuracies() -> dict[str, float]:
    """Every candidate of the grid and the accuracy the fake evaluator gives it, computed without a search."""
    from archforge.search.space import load_space

    candidates = load_space(archforge.search.parse_space(SPACE, "raygrid.yaml")).distinct_candidates()
    return {c.hash: ray_evaluators.accuracy_of(c.spec) for c in candidates}


def trainings(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def plan_for(storage_url: str, **settings) -> RunPlan:
    return RunPlan(space_text=SPACE, space_file="raygrid.yaml", settings=SearchSettings(**settings), storage_url=storage_url,
                   study_name="raygrid", config_key="-", dataset=DATA, evaluator=EVALUATOR)


# --------------------------------------------------------------------------- refused up front, no cluster


def test_without_ray_the_error_names_the_extra(space, tmp_path):
    script = f"""
import sys, types
sys.modules["ray"] = None  # as if it were not installed
sys.path.insert(0, {str(HERE)!r})
import archforge
from archforge.errors import SearchError
from archforge.search.ray_executor import run_ray
from archforge.search.settings import RaySettings
from test_ray_executor import DATA, plan_for
for call in (lambda: archforge.search({str(space)!r}, dataset=DATA, executor="ray", storage={str(tmp_path / 'a.db')!r},
                                      runs_dir={str(tmp_path)!r}, progress=False),
             lambda: run_ray(plan_for("sqlite:///{tmp_path}/b.db"), None, None, 1, RaySettings())):
    try:
        call()
    except SearchError as exc:
        print(exc.format())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stderr
    assert all("pip install 'archforge-nn[ray]'" in line for line in lines)
    assert not (tmp_path / "a.db").exists()  # refused before the store was made


@needs_ray
def test_memory_storage_is_refused(space, tmp_path):
    with pytest.raises(SearchError, match="storage='memory'"):
        archforge.search(space, dataset=DATA, evaluator=EVALUATOR, executor="ray", storage="memory", progress=False, runs_dir=tmp_path)
    with pytest.raises(SearchError, match="storage='memory'"):
        run_ray(plan_for("memory"), None, Display(), 2, RaySettings())


@needs_ray
def test_gpus_are_asked_of_ray_not_named():
    # Ray hands each task its GPUs (CUDA_VISIBLE_DEVICES): a device named by the settings would not be the task's.
    for named in ({"train": {"device": "cuda"}}, {"devices": ["cuda:0", "cuda:1"]}):
        with pytest.raises(SearchError, match="--gpus-per-trial"):
            run_ray(plan_for("sqlite:////nowhere/study.db", **named), None, Display(), 1, RaySettings(cpus_per_trial=1))


@needs_ray
@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "auto", "RAY_ADDRESS"])
def test_an_address_nobody_answers_at_is_one_line_at_once(space, tmp_path, monkeypatch, address):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # "auto": the address the last `ray start` recorded, of a cluster that has stopped since.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
    if address == "RAY_ADDRESS":  # no address given, but the environment names a cluster (as `ray job submit` does)
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(SearchError) as caught:
        archforge.search(space, dataset=DATA, evaluator=EVALUATOR, executor="ray", storage=tmp_path / "s.db", progress=False,
                         runs_dir=tmp_path, ray={"address": None if address == "RAY_ADDRESS" else address.format(port=port)})
    assert time.monotonic() - started < 15  # ray.init alone would retry for minutes
    text = caught.value.format()
    assert "\n" not in text and f"127.0.0.1:{port}" in text and "ray start --head" in text
    assert {"auto": "ray_current_cluster", "RAY_ADDRESS": "(RAY_ADDRESS)"}.get(address, "") in text
    with pytest.raises(SearchError) as early:  # the same, as the checks before the store is made can say it
        check_address(RaySettings(address=None if address == "RAY_ADDRESS" else address.format(port=port)))
    assert early.value.format() == text


def test_task_plan_gets_threads_for_its_cpus_and_cuda_for_its_gpus():
    plan = plan_for("sqlite:////x/study.db")
    assert (task_plan(plan, RaySettings(cpus_per_trial=2.5)).threads, task_plan(plan, RaySettings()).settings.train.device) == (3, "cpu")
    assert task_plan(plan, RaySettings(cpus_per_trial=0.5, gpus_per_trial=0.5)).threads == 1
    assert task_plan(plan, RaySettings(gpus_per_trial=0.5)).settings.train.device == "cuda"
    assert plan.settings.train.device == "cpu" and plan.threads is None  # the driver's plan is left as it was


def node(address: str, cpus: float, gpus: float = 0.0) -> dict:
    """One alive node as ``ray.nodes()`` lists it."""
    return {"Alive": True, "NodeManagerAddress": address, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_sqlite_is_refused_when_a_node_is_on_another_machine():
    sqlite, postgres, settings = "sqlite:////runs/x/study.db", "postgresql://u:secret@db:5432/x", RaySettings()
    here = "10.0.0.1"
    # Nodes on this machine (its address, or loopback as in the namespace test) open the file.
    assert cluster_problem([node(here, 4), node("127.0.0.2", 4)], here, sqlite, settings) is None
    problem = cluster_problem([node(here, 4), node("10.0.0.2", 4), node("10.0.0.3", 4)], here, sqlite, settings)
    assert problem is not None and "10.0.0.2, 10.0.0.3" in problem and "--storage postgresql://" in problem and "\n" not in problem
    assert cluster_problem([node("10.0.0.2", 4)], here, sqlite, settings) is not None  # a remote cluster of one node
    assert cluster_problem([node(here, 4), node("10.0.0.2", 4)], here, postgres, settings) is None


def test_a_trial_bigger_than_every_node_is_found():
    url, here = "postgresql://db/x", "10.0.0.1"
    nodes = [node("10.0.0.2", 8), node("10.0.0.3", 4, gpus=2)]
    assert cluster_problem(nodes, here, url, RaySettings(cpus_per_trial=8)) is None
    assert cluster_problem(nodes, here, url, RaySettings(cpus_per_trial=4, gpus_per_trial=2)) is None
    for too_big in (RaySettings(cpus_per_trial=9), RaySettings(cpus_per_trial=8, gpus_per_trial=1), RaySettings(gpus_per_trial=3)):
        problem = cluster_problem(nodes, here, url, too_big)
        assert problem is not None and "the largest: 4 CPUs, 2 GPUs" in problem and "--cpus-per-trial" in problem
    assert trial_slots(nodes, RaySettings(cpus_per_trial=2)) == 4 + 2
    assert trial_slots(nodes, RaySettings(cpus_per_trial=1, gpus_per_trial=0.5)) == 4  # 8 CPUs, but 2 GPUs × 2
    assert trial_slots(nodes, RaySettings(cpus_per_trial=0.5)) == 24


# --------------------------------------------------------------------------- a local cluster of the search's own


@needs_ray
def test_ray_run_stores_what_a_local_run_stores(space, tmp_path, monkeypatch):
    import optuna

    from archforge.search.records import read_trials
    from archforge.search.report import RunData

    log = tmp_path / "trainings.jsonl"
    monkeypatch.setenv("ARCHFORGE_TEST_LOG", str(log))  # the cluster the search starts inherits it
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # what ray.init sets in this process is put back
    sigterm = signal.getsignal(signal.SIGTERM)
    options = dict(dataset=DATA, evaluator=EVALUATOR, progress=False, runs_dir=tmp_path)
    local = archforge.search(space, executor="local", workers=1, storage=tmp_path / "local.db", **options)
    local_trainings = len(trainings(log))
    started = time.perf_counter()
    result = archforge.search(space, executor="ray", workers=2, ray={"cpus_per_trial": 1}, storage=tmp_path / "ray.db", **options)
    ray_s = time.perf_counter() - started

    import ray

    assert not ray.is_initialized()  # the cluster it started is stopped
    assert "RAY_AUTH_MODE" not in os.environ and signal.getsignal(signal.SIGTERM) == sigterm
    expected = expected_accuracies()
    for run in (local, result):
        counted = [r for r in run.trials if r.counted]
        assert {r.hash: r.accuracy for r in counted} == pytest.approx(expected)
        assert len(counted) == GRID and all(r.status == "complete" for r in counted)
    studies = {name: optuna.load_study(study_name="raygrid", storage=f"sqlite:///{tmp_path / name}.db") for name in ("local", "ray")}
    # The same records: what each complete trial stores, and the study's own attributes (worker statistics by kind).
    stored = {name: ({key for t in study.trials if t.state.name == "COMPLETE" for key in t.user_attrs}, {key.partition(":")[0] for key in study.user_attrs})
              for name, study in studies.items()}
    assert stored["ray"] == stored["local"] and stored["ray"][0]
    study = studies["ray"]
    records = read_trials(study)
    assert {r.hash for r in RunData.from_study(study).records if r.counted} == set(expected)
    # Trained in Ray's worker processes, each candidate once, with one torch thread per CPU.
    ray_trainings = trainings(log)[local_trainings:]
    assert sorted(t["hash"] for t in ray_trainings) == sorted(expected)
    assert os.getpid() not in {t["pid"] for t in ray_trainings} and {t["threads"] for t in ray_trainings} == {1}
    assert {r.worker.pid for r in records if r.counted} == {t["pid"] for t in ray_trainings}
    print(f"ray run of {GRID} trials: {ray_s:.1f} s")


# --------------------------------------------------------------------------- a cluster the tests started


@pytest.fixture(scope="class")
def connected():
    """A local cluster this process connected to before the search, as a notebook would."""
    import ray

    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "PYTHONBREAKPOINT")}
    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()
        for name, value in saved.items():  # what ray.init set in this process
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        signal.signal(signal.SIGTERM, sigterm)


@needs_ray
@pytest.mark.usefixtures("connected")
class TestOnAClusterStartedBefore:
    """A driver connected before the search: the search uses that cluster, and leaves it connected."""

    def test_workers_that_fail_end_the_search_with_one_line(self, space, tmp_path, monkeypatch):
        import ray

        # An evaluator this process can import, but Ray's workers cannot: each fails at once.
        ghost = types.ModuleType("ghost_evaluators")
        ghost.fake_train = ray_evaluators.fake_train
        monkeypatch.setitem(sys.modules, "ghost_evaluators", ghost)
        started = time.monotonic()
        with pytest.raises(SearchError) as caught:
            archforge.search(space, dataset=DATA, evaluator="ghost_evaluators:fake_train", executor="ray", workers=2,
                             storage=tmp_path / "s.db", progress=False, runs_dir=tmp_path)
        text = caught.value.format()
        assert text.startswith("error: every Ray worker failed: worker ") and "\n" not in text
        assert "cannot import evaluator 'ghost_evaluators:fake_train'" in text and "(and 1 more worker failed)" in text
        assert time.monotonic() - started < 60
        assert ray.is_initialized()  # the caller's connection is left as it was

    def test_a_trial_bigger_than_every_node_is_refused_not_waited_for(self, space, tmp_path):
        started = time.monotonic()
        with pytest.raises(SearchError, match="more than any node of the cluster has") as caught:
            archforge.search(space, dataset=DATA, evaluator=EVALUATOR, executor="ray", ray={"cpus_per_trial": 3}, workers=2,
                             storage=tmp_path / "s.db", progress=False, runs_dir=tmp_path)
        assert "the largest: 2 CPUs, 0 GPUs" in caught.value.format()
        assert time.monotonic() - started < 30

    def test_ctrl_c_stops_the_tasks_and_leaves_no_trial_running(self, space, tmp_path, monkeypatch):
        import optuna

        from archforge.search import executors

        monitor = executors.monitor
        interrupted_at: list[float] = []

        def ctrl_c_after_the_first_trial(study, display, alive, interval=1.0):
            def alive_until_ctrl_c() -> bool:
                running = alive()
                if any(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
                    interrupted_at.append(time.monotonic())
                    raise KeyboardInterrupt
                return running

            monitor(study, display, alive_until_ctrl_c, interval=0.2)

        monkeypatch.setattr(executors, "monitor", ctrl_c_after_the_first_trial)
        with pytest.raises(KeyboardInterrupt):
            archforge.search(space, dataset=DATA, evaluator="ray_evaluators:slow_train", executor="ray", workers=2,
                             storage=tmp_path / "s.db", progress=False, runs_dir=tmp_path)
        assert time.monotonic() - interrupted_at[0] < 15
        study = optuna.load_study(study_name="raygrid", storage=f"sqlite:///{tmp_path / 's.db'}")
        trials = study.get_trials(deepcopy=False)
        assert 0 < sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) < GRID
        assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        time.sleep(2)  # no worker goes on in the background
        assert len(study.get_trials(deepcopy=False)) == len(trials)


# --------------------------------------------------------------------------- two nodes, in namespaces


def _namespaces_usable() -> tuple[str | None, bool]:
    """Why the two-node test cannot run here (``None``: it can), and whether CI should have made it possible."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (unshare --net --pid --mount)", True
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2; .ci/run installs them)", True
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount", "--mount-proc", "true"], capture_output=True, text=True)
    # A kernel or container that forbids namespaces is the machine's policy, not something CI can install.
    return (None, False) if probe.returncode == 0 else (f"unshare is not permitted here: {probe.stderr.strip()}", False)


@needs_ray
def test_two_nodes_in_a_private_network(space, tmp_path):
    why, ci_can_fix = _namespaces_usable()
    if why is not None:
        if os.environ.get("CI") and ci_can_fix:
            pytest.fail(f"the two-node Ray test cannot run in CI: {why}")
        pytest.skip(why)
    command = ["unshare", "--net", "--pid", "--fork", "--mount", "--mount-proc", "--kill-child",
               sys.executable, str(HERE / "ray_two_nodes.py"), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    # The grid, each candidate trained and stored once, on both nodes, each trial on the GPU share Ray gave it.
    expected = expected_accuracies()
    counted = [r for r in out["records"] if r["counted"]]
    assert len(counted) == GRID and all(r["status"] == "complete" for r in counted)
    assert {r["hash"]: r["accuracy"] for r in counted} == pytest.approx(expected)
    assert sorted(t["hash"] for t in out["trainings"]) == sorted(expected)
    assert len({t["node"] for t in out["trainings"]}) == 2
    assert {(t["device"], t["cuda_visible"], t["threads"]) for t in out["trainings"]} == {("cuda", "0", 1)}
    # The second node died mid-trial: that trial was failed by its heartbeats and its candidate
    # trained on the first node; the driver said so in one line and did not wait for the dead node.
    assert out["killed"] >= 1
    lost = [r for r in out["records"] if r["status"] == "interrupted"]
    assert len(lost) == 1 and lost[0]["state"] == "FAIL" and lost[0]["hash"] in expected
    assert out["ended_at"] - out["killed_at"] < 30
    lines = [line for line in out["driver_stderr"].splitlines() if "Ray lost it" in line]
    assert len(lines) == 1 and lines[0].startswith("worker ") and "the other workers went on" in lines[0]
    print(f"two nodes: cluster up in {out['cluster_s']} s, run {out['run_s']} s, "
          f"ended {out['ended_at'] - out['killed_at']:.1f} s after the node was killed")
