"""Scaling a search out on one machine: storage URLs, devices per worker, `archforge worker` on a SQLite store.

The same on a real PostgreSQL server, with workers killed mid-trial: tests/test_distributed.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from archforge.errors import SearchError, SettingError
from archforge.search import load_run, parse_space, search
from archforge.search.settings import HeartbeatSettings, SearchSettings
from archforge.search.storage import open_storage, storage_error
from archforge.search.urls import check_server_url, engine_url, masked_url, shown_url
from archforge.search.training import TrainConfig

HERE = Path(__file__).resolve().parent

SPACE = """\
archforge: 1
name: scale
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8, 12, 16]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width}}
  - {id: head, block: classifier, args: {classes: 10}}
search: {dataset: digits, epochs: 1, heartbeat: {interval: 1, grace: 3}}
"""


def device_evaluate(spec, data, config, on_epoch=None):
    """No training: logs which process trained which candidate on which device; accuracy from the width.

    With ``ARCHFORGE_TEST_PEERS=N`` a call first waits (at most 120 s) until N processes have
    started one, so that a slow process start on a loaded machine cannot leave one with nothing to do.
    """
    width = spec.to_dict()["params"]["width"]
    path = os.environ.get("ARCHFORGE_TEST_LOG")
    entry = {"width": width, "device": config.device, "pid": os.getpid(), "seed": config.seed}
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({**entry, "event": "start"}) + "\n")
        peers, deadline = int(os.environ.get("ARCHFORGE_TEST_PEERS", "1")), time.monotonic() + 120
        while len({e["pid"] for e in _events(Path(path))}) < peers and time.monotonic() < deadline:
            time.sleep(0.1)
    time.sleep(float(os.environ.get("ARCHFORGE_TEST_EPOCH_S", "0")))
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({**entry, "event": "end"}) + "\n")
    on_epoch(1, 0.5)
    return SimpleNamespace(accuracy=0.5 + width / 100, epochs=1, history=[0.5], params=width, flops=width)


def _events(path: Path, event: str | None = None) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in lines if event is None or e["event"] == event]


# --------------------------------------------------------------------------- storage URLs


def test_a_password_never_appears_in_a_shown_url():
    assert shown_url("postgresql://me:s3cr:et@db.example.org:5432/af") == "postgresql://me:***@db.example.org:5432/af"
    assert shown_url("postgresql+psycopg://me:pw@db/af?sslmode=require") == "postgresql+psycopg://me:***@db/af?sslmode=require"
    assert shown_url("postgresql://me@db/af") == "postgresql://me@db/af"
    # Generated passwords hold '/' (base64) or '@'; libpq also takes one as a query parameter.
    assert shown_url("postgresql://me:se/cr@t@db/af") == "postgresql://me:***@db/af"
    assert shown_url("postgresql://me@db/af?password=hunter2&sslmode=require") == "postgresql://me@db/af?password=***&sslmode=require"
    assert shown_url("error: no study 'b' in postgresql://a:b@h/d") == "error: no study 'b' in postgresql://a:***@h/d"
    # A URL given whole is masked whole, whatever its password holds (spaces included).
    assert masked_url("postgresql://me:pa ss word@db/af") == "postgresql://me:***@db/af"
    long = OSError("unable to open database file " + "x" * 190 + " postgresql://me:verylongsecret@db/af")
    assert "verylong" not in storage_error(long, "postgresql://me:verylongsecret@db/af").format()
    assert shown_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_a_postgres_url_gets_an_installed_driver(monkeypatch):
    installed = {name for name in ("psycopg", "psycopg2") if importlib.util.find_spec(name) is not None}
    if not installed:
        pytest.skip("no PostgreSQL driver installed")
    url = engine_url("postgresql://me@db/af")
    assert url.split("://")[0] in {f"postgresql+{name}" for name in installed}
    assert engine_url("postgres://me@db/af").endswith("://me@db/af")
    assert engine_url("sqlite:///x.db") == "sqlite:///x.db"


def test_without_a_driver_the_error_names_the_extra_and_hides_the_password(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("psycopg") else real(name, *a))
    with pytest.raises(SearchError) as info:
        engine_url("postgresql://me:hunter2@db.example.org/af")
    text = str(info.value)
    assert "pip install 'archforge-nn[postgres]'" in text and "hunter2" not in text and "me:***@" in text


def test_other_database_servers_are_refused_with_the_reason():
    with pytest.raises(SearchError, match="SQLite files or on a PostgreSQL server"):
        check_server_url("mysql://me:pw@db/af")
    with pytest.raises(SearchError) as info:
        search(parse_space(SPACE), storage="mysql+pymysql://me:hunter2@db/af", progress=False)
    assert "hunter2" not in str(info.value)


def test_an_unreachable_server_is_one_line_without_the_password():
    pytest.importorskip("psycopg")
    started = time.perf_counter()
    with pytest.raises(SearchError) as info:
        open_storage("postgresql://me:hunter2@127.0.0.1:1/af?connect_timeout=2")
    text = str(info.value)
    assert "\n" not in text and "hunter2" not in text and "127.0.0.1" in text
    assert time.perf_counter() - started < 30


def test_the_run_heartbeat_settings_reach_the_storage(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat=HeartbeatSettings(interval=2, grace=7))
    assert (storage.heartbeat_interval, storage.grace_period) == (2, 7)
    with pytest.raises(ValueError, match="must exceed the interval"):
        HeartbeatSettings(interval=5, grace=5)


# --------------------------------------------------------------------------- devices


def test_devices_start_one_worker_each_and_each_trains_on_its_own(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    log = tmp_path / "log.jsonl"
    # meta stands in for a second accelerator: the fake evaluator allocates nothing on it.
    script = (f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
              "from archforge.search import search\n"
              "if __name__ == '__main__':\n"
              f"    search({str(space_file)!r}, evaluator='test_scale_out:device_evaluate', storage={str(tmp_path / 's.db')!r},\n"
              "           devices=['cpu', 'meta'], progress=False)\n")
    env = {**os.environ, "ARCHFORGE_TEST_LOG": str(log), "ARCHFORGE_TEST_EPOCH_S": "0.2", "ARCHFORGE_TEST_PEERS": "2"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    events = _events(log, "end")
    assert sorted(e["width"] for e in events) == [4, 8, 12, 16]  # every candidate once
    devices_of = {}
    for e in events:
        devices_of.setdefault(e["pid"], set()).add(e["device"])
    assert sorted(map(sorted, devices_of.values())) == [["cpu"], ["meta"]]


def test_a_device_this_machine_lacks_is_refused_before_anything_is_stored(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SettingError, match=r"devices: device 'cuda:0' is not available"):
        search(parse_space(SPACE), devices=["cpu", "cuda:0"], runs_dir=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_device_written_in_the_space_is_refused_at_its_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from archforge.errors import SpecError

    space = parse_space(SPACE.replace("search: {", "search: {devices: [cpu, cuda:3], "), "space.yaml")
    with pytest.raises(SpecError) as info:
        search(space, runs_dir=tmp_path / "runs", progress=False)
    assert "cuda:3" in str(info.value) and info.value.location.line == 8


def test_devices_and_ray_do_not_mix_and_devices_set_the_worker_count():
    with pytest.raises(ValueError, match="ray.gpus_per_trial"):
        SearchSettings(devices=["cuda:0"], executor="ray")
    assert SearchSettings(devices=["cuda:0", "cuda:1"]).worker_count == 2
    assert SearchSettings(devices=["cuda:0", "cuda:1"], workers=4).worker_count == 4


def test_channels_last_is_a_setting(tmp_path):
    from archforge.data.load import load_dataset
    from archforge.search.evaluate import train_model

    data = load_dataset("digits", limit=200)
    spec = parse_space(SPACE.replace("{choice: [4, 8, 12, 16]}", "4")).concretize({}).spec
    for setting, expected in ((True, True), ("auto", False), (False, False)):
        config = TrainConfig(epochs=1, batch_size=64, channels_last=setting, latency_repeats=0)
        model, result = train_model(spec, data, config)
        weight = next(p for p in model.parameters() if p.dim() == 4)  # (C, 1, 3, 3): both layouts are "contiguous"
        assert (weight.stride(1) == 1) is expected  # channels-last puts the channel dimension innermost
        assert 0 <= result.accuracy <= 1


# --------------------------------------------------------------------------- archforge worker


def test_a_worker_joins_a_search_from_the_store_alone(tmp_path):
    """`archforge search` and `archforge worker` on one SQLite store: each candidate trained once, by both processes."""
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    db = tmp_path / "runs" / "scale" / "study.db"
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "ARCHFORGE_TEST_LOG": str(log), "ARCHFORGE_TEST_EPOCH_S": "0.5", "ARCHFORGE_TEST_PEERS": "2",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cli = [sys.executable, "-m", "archforge"]
    driver = subprocess.Popen([*cli, "search", str(space_file), "--evaluator", "test_scale_out:device_evaluate", "--seeds", "2",
                               "--runs", str(tmp_path / "runs"), "--no-progress"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _events(log) and time.monotonic() < deadline:  # the study exists once a trial started
            time.sleep(0.2)
        worker = subprocess.run([*cli, "worker", "--storage", str(db), "--study", "scale", "--threads", "1"], env=env,
                                cwd=tmp_path, capture_output=True, timeout=240)
        out, err = driver.communicate(timeout=240)
    finally:
        driver.kill()
    assert driver.returncode == 0, err.decode()
    assert worker.returncode == 0, worker.stderr.decode()
    assert "worker done:" in worker.stderr.decode()
    events = _events(log, "end")
    trained = sorted((e["width"], e["seed"]) for e in events)
    assert trained == [(w, s) for w in (4, 8, 12, 16) for s in (0, 1)]  # no gap, no candidate and seed twice
    assert len({e["pid"] for e in events}) == 2
    run = load_run(db)
    assert sorted(round(r.accuracy, 4) for r in run.records if r.counted) == [0.54, 0.58, 0.62, 0.66]


def _lambda_evaluator(spec, data, config, on_epoch=None):
    return device_evaluate(spec, data, config, on_epoch)


def test_what_a_worker_cannot_rebuild_is_refused_by_name(tmp_path):
    from archforge.search.worker import join

    db = tmp_path / "s.db"
    fake = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
    search(parse_space(SPACE.replace("dataset: digits, ", "")), dataset=fake, evaluator=device_evaluate, storage=db,
           progress=False, budget=1, name="objects")
    with pytest.raises(SearchError, match="dataset object passed from Python"):
        join(str(db), "objects", progress=False)
    search(parse_space(SPACE), evaluator=lambda *a, **k: _lambda_evaluator(*a, **k), storage=db, progress=False, budget=1,
           name="lambda")
    with pytest.raises(SearchError, match=r"evaluator <.*<lambda>>, which cannot be imported by name"):
        join(str(db), "lambda", progress=False)
    with pytest.raises(SearchError, match="no study 'nothing'"):
        join(str(db), "nothing", progress=False)


def test_the_worker_command_says_what_is_wrong_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "archforge", "worker", "--storage", str(tmp_path / "none.db"), "--study", "x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no search run at" in done.stderr
    done = subprocess.run([sys.executable, "-m", "archforge", "worker", "--storage", "x.db"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "--study" in done.stderr


def test_a_run_keeps_one_heartbeat_for_every_process(tmp_path):
    db = tmp_path / "s.db"
    fake = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
    space = parse_space(SPACE.replace("dataset: digits, ", ""))
    search(space, dataset=fake, evaluator=device_evaluate, storage=db, progress=False, budget=1)
    with pytest.raises(SearchError, match="heartbeat interval 1 s and grace 3 s"):
        search(space, dataset=fake, evaluator=device_evaluate, storage=db, progress=False, budget=2,
               heartbeat={"interval": 1, "grace": 30})
    assert search(space, dataset=fake, evaluator=device_evaluate, storage=db, progress=False, budget=2).run.table


def test_a_worker_joining_a_run_spread_over_devices_takes_one_it_has(tmp_path):
    from archforge.search.worker import _run_device

    assert _run_device(["cuda:7", "cpu"], "run") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match=r"over cuda:0, cuda:1, none of which this machine has: .*--device"):
            _run_device(["cuda:0", "cuda:1"], "run")
