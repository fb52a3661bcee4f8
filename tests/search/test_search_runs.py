"""The driver: resuming after kill -9, failures, reuse, multi-fidelity, workers, and the real evaluator."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

import archforge
from archforge.search import SearchError, candidate_hash, load_run, parse_space, search

HERE = Path(__file__).resolve().parent
DATA = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")

SPACE = """\
archforge: 1
name: runner
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8, 16]}, kernel: {choice: [1, 3]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width, kernel: $kernel}}
  - {id: head, block: classifier, args: {classes: 10}}
search: {epochs: 2}
"""


def quality(spec) -> float:
    p = spec.to_dict()["params"]
    return 0.5 + 0.02 * p["width"] + 0.05 * p["kernel"]


def _log(event: str, spec, config, **extra) -> None:
    path = os.environ.get("ARCHFORGE_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, "hash": candidate_hash(spec), "seed": config.seed, "pid": os.getpid(), **extra}) + "\n")


def slow_evaluate(spec, data, config, on_epoch=None):
    """Fake training that takes ``ARCHFORGE_TEST_EPOCH_S`` seconds per epoch and logs start and end."""
    _log("start", spec, config)
    history = []
    for epoch in range(1, config.epochs + 1):
        time.sleep(float(os.environ.get("ARCHFORGE_TEST_EPOCH_S", "0")))
        history.append(quality(spec) * epoch / config.epochs)
        if on_epoch is not None and on_epoch(epoch, history[-1]):
            break
    _log("end", spec, config, epochs=len(history))
    return SimpleNamespace(accuracy=history[-1], epochs=len(history), history=history, stopped_early=len(history) < config.epochs,
                           params=10, flops=10, latency_ms=1.0, peak_memory_mb=1.0, train_time_s=0.0)


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


SCRIPT = """\
import sys, types
sys.path.insert(0, {here!r})
from archforge.search import search
data = types.SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
search({space!r}, dataset=data, evaluator="test_search_runs:slow_evaluate", storage={db!r}, strategy="grid", budget=5,
       progress=False, workers={workers})
"""


def test_resume_after_kill_9_loses_and_repeats_nothing(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    db = tmp_path / "study.db"
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "ARCHFORGE_TEST_LOG": str(log), "ARCHFORGE_TEST_EPOCH_S": "0.4"}
    command = [sys.executable, "-c", SCRIPT.format(here=str(HERE), space=str(space_file), db=str(db), workers=1)]

    first = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it mid-trial, after two trials completed
        log_events = events(log)
        ends = [e for e in log_events if e["event"] == "end"]
        if len(ends) >= 2 and log_events[-1]["event"] == "start":
            break
        assert first.poll() is None, first.stderr.read().decode()
        time.sleep(0.05)
    else:
        pytest.fail("the first run never got two trials done")
    time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    interrupted = events(log)[-1]["hash"]
    completed_before = {e["hash"] for e in events(log) if e["event"] == "end"}
    assert interrupted not in completed_before

    with sqlite3.connect(db) as connection:  # the killed trial is left RUNNING in the store
        states = [row[0] for row in connection.execute("select state from trials")]
    assert "RUNNING" in states

    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=180)
    assert second.returncode == 0, second.stderr.decode()

    ends = [e["hash"] for e in events(log) if e["event"] == "end"]
    assert len(ends) == len(set(ends)) == 5  # nothing trained twice, the budget exactly
    assert completed_before < set(ends) and interrupted in ends
    run = load_run(db)
    counted = [r for r in run.records if r.counted]
    assert len(counted) == 5 and all(r.status == "complete" for r in counted)
    assert {r.hash for r in counted} == set(ends)
    left = [r for r in run.records if r.status == "interrupted"]
    assert len(left) == 1 and left[0].hash == interrupted and left[0].state == "FAIL"
    retry = [r for r in run.records if r.retry_of == left[0].number]
    assert len(retry) == 1 and retry[0].status == "complete" and retry[0].hash == interrupted
    assert run.compute["interrupted"] == 1


KILLED_AFTER = """\
import importlib, os, signal, sys, types
sys.path.insert(0, {here!r})
from archforge.search import search
records = importlib.import_module("archforge.search.records")
write = records.write

def write_then_die(trial, value):
    write(trial, value)
    if {key!r} == records.key_of(value):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 right after this attribute is stored

records.write = write_then_die
data = types.SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
search({space!r}, dataset=data, evaluator="test_search_runs:slow_evaluate", storage={db!r}, strategy="grid", seeds=2, progress=False)
"""


def test_kill_9_after_each_stored_attribute_loses_and_repeats_nothing(tmp_path):
    """Killed after the candidate, after its first seed, after its outcome, then resumed: each seed of each candidate trained once."""
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    db = tmp_path / "study.db"
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "ARCHFORGE_TEST_LOG": str(log), "ARCHFORGE_TEST_EPOCH_S": "0"}
    for key in ("candidate", "seed_0", "outcome", None):
        script = KILLED_AFTER.format(here=str(HERE), key=key, space=str(space_file), db=str(db))
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert done.returncode == (-signal.SIGKILL if key else 0), done.stderr

    trained = [(e["hash"], e["seed"]) for e in events(log) if e["event"] == "end"]
    assert len(trained) == len(set(trained)) == 6 * 2  # every seed of every candidate, once
    assert len([e for e in events(log) if e["event"] == "start"]) == 12  # and nothing started twice either
    records = load_run(db).records
    first, second, third = records[:3]  # the first candidate, killed three times
    assert first.hash == second.hash == third.hash
    assert (first.state, first.status, first.seeds) == ("FAIL", "interrupted", {})  # killed before training
    assert (second.state, second.status, second.retry_of, list(second.seeds)) == ("FAIL", "interrupted", 0, [0])
    # killed after its outcome was stored but before Optuna was told: the resume tells Optuna what it found, and
    # nothing is retried (retry_of is Optuna's record: the first trial of the candidate's chain of retries)
    assert (third.state, third.status, third.retry_of, sorted(third.seeds)) == ("COMPLETE", "complete", 0, [0, 1])
    assert third.values == [third.accuracy]
    assert third.seeds[0] == second.seeds[0] and third.epochs_run == 2  # seed 0 reused, only seed 1 trained
    assert [r.number for r in records if r.retry_of == 0] == [1, 2]  # the complete one is not retried
    counted = [r for r in records if r.counted]
    assert len(counted) == 6 and {r.status for r in counted} == {"complete"} and len({r.hash for r in counted}) == 6
    run = load_run(db)
    assert run.compute["epochs_run"] == 6 * 2 * 2 and run.compute["interrupted"] == 2


FAIL_SPACE = SPACE.replace("{width: {choice: [4, 8, 16]}, kernel: {choice: [1, 3]}}", "{width: {choice: [4, 8, 16]}, kernel: {choice: [1, 3]}}")


def flaky_evaluate(spec, data, config, on_epoch=None):
    from archforge.search.evaluate import TrialError

    p = spec.to_dict()["params"]
    if p["width"] == 4 and p["kernel"] == 1:
        raise TrialError("the training loss became NaN at epoch 1 step 3 (lr 0.002, batch 128)", kind="nan")
    if p["width"] == 8 and p["kernel"] == 1:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if p["width"] == 16 and p["kernel"] == 1:
        return SimpleNamespace(accuracy=math.nan, epochs=2, history=[math.nan, math.nan], stopped_early=False,
                               params=1, flops=1, latency_ms=1.0, peak_memory_mb=1.0, train_time_s=0.0)
    return slow_evaluate(spec, data, config, on_epoch)


def test_failures_are_recorded_and_the_search_goes_on(tmp_path):
    result = search(parse_space(FAIL_SPACE, "f.yaml"), dataset=DATA, evaluator=flaky_evaluate, storage=tmp_path / "f.db",
                    runs_dir=tmp_path, progress=False)
    by_width = {(r.decisions["width"], r.decisions["kernel"]): r for r in result.trials if r.counted}
    assert len(by_width) == 6
    assert by_width[4, 1].status == "failed" and by_width[4, 1].error.startswith("the training loss became NaN")
    assert by_width[8, 1].status == "failed" and by_width[8, 1].error.startswith("out of memory: CUDA out of memory")
    assert by_width[16, 1].status == "failed" and "not a finite number" in by_width[16, 1].error
    assert all(by_width[w, 3].status == "complete" for w in (4, 8, 16))
    assert [row["status"] for row in result.table] == ["complete"] * 3 + ["failed"] * 3
    assert sorted(row["error"] for row in result.failed) == sorted(by_width[w, 1].error for w in (4, 8, 16))
    from rich.console import Console

    from archforge.cli.search_commands import print_run

    console = Console(record=True, width=200)
    print_run(result.run, console)
    out = console.export_text()
    assert "3 failed:" in out and "out of memory" in out
    files = result.report(tmp_path / "report")
    csv_text = files["csv"].read_text()
    assert "the training loss became NaN" in csv_text
    trials = json.loads(files["json"].read_text())["trials"]
    assert sum(t["status"] == "failed" for t in trials) == 3


def test_a_rerun_reuses_everything(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("ARCHFORGE_TEST_LOG", str(log))
    kwargs = dict(dataset=DATA, evaluator=slow_evaluate, storage=tmp_path / "s.db", runs_dir=tmp_path, progress=False)
    first = search(parse_space(SPACE, "s.yaml"), **kwargs)
    assert len(events(log)) == 12
    again = search(parse_space(SPACE, "s.yaml"), **kwargs)  # the grid is done: nothing to run
    assert len(events(log)) == 12
    assert [r["hash"] for r in again.table] == [r["hash"] for r in first.table]
    more = search(parse_space(SPACE, "s.yaml"), **{**kwargs, "strategy": "random", "budget": 8})  # more budget, new sampler
    starts = [e["hash"] for e in events(log) if e["event"] == "start"]
    assert len(starts) == len(set(starts)) == 6  # the space has only 6 candidates: none trained again
    assert len([r for r in more.trials if r.counted]) == 6
    with pytest.raises(SearchError, match="other settings .*epochs 2 → 3"):
        search(parse_space(SPACE, "s.yaml"), **{**kwargs, "epochs": 3})
    with pytest.raises(SearchError, match="another version of the search space"):
        search(parse_space(SPACE.replace("[4, 8, 16]", "[4, 8]"), "s.yaml"), **kwargs)


PRUNE_SPACE = SPACE.replace("kernel: {choice: [1, 3]}", "kernel: {choice: [1, 3, 5]}").replace("epochs: 2", "epochs: 9")


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_multi_fidelity_prunes_and_the_compute_saved_adds_up(tmp_path, monkeypatch, pruner):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("ARCHFORGE_TEST_LOG", str(log))
    result = search(parse_space(PRUNE_SPACE, "p.yaml"), dataset=DATA, evaluator=slow_evaluate, storage="memory",
                    runs_dir=tmp_path, progress=False, pruner={"kind": pruner, "min_resource": 1, "reduction_factor": 3})
    counted = [r for r in result.trials if r.counted]
    pruned = [r for r in counted if r.status == "pruned"]
    assert len(counted) == 9 and pruned and len(pruned) < 9
    assert all(r.epochs_run < 9 for r in pruned)
    assert all(r.epochs_run == 9 for r in counted if r.status == "complete")
    ran = sum(e["epochs"] for e in events(log) if e["event"] == "end")  # what the evaluator actually trained
    c = result.compute
    assert c["epochs_run"] == ran == sum(r.epochs_run for r in counted)
    assert c["epochs_full"] == 9 * 9
    assert c["epochs_saved"] == 81 - ran and c["saved_fraction"] == pytest.approx((81 - ran) / 81)
    assert c["pruned"] == len(pruned)
    # pruned candidates rank below every complete one
    statuses = [row["status"] for row in result.table]
    assert statuses == sorted(statuses, key=lambda s: s != "complete")
    from archforge.search.compute import compute_text

    assert f"{ran} epochs run of the 81" in compute_text(c)


def test_two_worker_processes_share_one_study(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    db = tmp_path / "study.db"
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "ARCHFORGE_TEST_LOG": str(log), "ARCHFORGE_TEST_EPOCH_S": "0.2"}
    script = SCRIPT.format(here=str(HERE), space=str(space_file), db=str(db), workers=2).replace("budget=5", "budget=None")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr.decode()
    ends = [e["hash"] for e in events(log) if e["event"] == "end"]
    assert len(ends) == len(set(ends)) == 6
    assert len({e["pid"] for e in events(log)}) == 2  # both workers trained
    run = load_run(db)
    assert {r.worker.index for r in run.records if r.counted} == {0, 1}
    assert len([r for r in run.records if r.counted]) == 6


REAL_SPACE = """\
archforge: 1
name: real
input: {shape: [1, 8, 8]}
nodes:
  - {id: stem, block: conv, args: {channels: {choice: [4, 8]}}}
  - {id: stage, block: {choice: [conv, identity_unit], per_copy: true}, repeat: 2, args: {channels: 8}}
  - {id: head, block: classifier, args: {classes: 10}}
define:
  identity_unit:
    params: {channels: 8}
    nodes:
      - {id: skip, block: identity}
search:
  dataset: digits
  limit: 400
  epochs: 1
  strategy: random
  budget: 3
  train: {batch_size: 64, latency_repeats: 2}
"""


def test_real_evaluator_on_digits_end_to_end(tmp_path):
    pytest.importorskip("archforge.search.evaluate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search(parse_space(REAL_SPACE, "real.yaml"), runs_dir=tmp_path, progress=False)
    counted = [r for r in result.trials if r.counted]
    assert len(counted) == 3 and all(r.status == "complete" for r in counted), [r.error for r in counted]
    for r in counted:
        assert 0.0 <= r.accuracy <= 1.0 and r.params > 0 and r.flops > 0 and r.latency_ms > 0 and r.epochs_run == 1
        spec = archforge.Spec.from_dict(r.spec)
        assert candidate_hash(spec) == r.hash and archforge.summarize(spec).params == r.params
    assert (tmp_path / "real" / "study.db").exists() and (tmp_path / "real" / "space.yaml").read_text() == REAL_SPACE
    model = archforge.build(result.best_spec)
    assert sum(p.numel() for p in model.parameters()) == result.best["params"]


def test_proxy_prefilter_trains_only_the_best_scored(tmp_path, monkeypatch):
    from archforge.search import proxies

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("ARCHFORGE_TEST_LOG", str(log))
    space = parse_space(PRUNE_SPACE.replace("epochs: 9", "epochs: 2"), "p.yaml")
    kwargs = dict(dataset=DATA, evaluator=slow_evaluate, storage=tmp_path / "proxy.db", runs_dir=tmp_path, progress=False,
                  proxy={"score": "synflow", "sample": 9, "keep": 0.34})
    result = search(space, **kwargs)
    scores = {c.hash: proxies.synflow(c.spec, (1, 8, 8)) for c in space.distinct_candidates()}
    best = sorted(scores, key=scores.get, reverse=True)[:4]
    trained = [e["hash"] for e in events(log) if e["event"] == "end"]
    assert sorted(trained) == sorted(best)  # ceil(0.34 * 9) = 4, the four best synflow scores
    assert all(r.proxy_score == pytest.approx(scores[r.hash]) for r in result.trials if r.counted)
    c = result.compute
    assert (c["proxy_discarded"], c["epochs_run"], c["epochs_full"], c["epochs_saved"]) == (5, 8, 18, 10)
    again = search(space, **kwargs)  # resuming neither rescores nor retrains
    assert len(events(log)) == 8 and len([r for r in again.trials if r.counted]) == 4
