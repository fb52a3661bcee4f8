"""Hostile inputs and faults of the search driver, by class; every case ends in a located error or a clean success.

Class 6, storage and the file system: foreign files as the store, read-only and full
stores (nothing recorded is lost, the resume works), bad run folders and run names, a
space file choosing where to write, and tampered stores read back by ``report``.
Class 7, search faults, with real processes: two searches starting at once, a worker
killed between ``ask`` and its first attribute, the driver killed under its workers, an
evaluator calling ``sys.exit``, and Ctrl-C.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from archforge.errors import SpecError
from archforge.search import SearchError, candidate_hash, load_run, parse_space, search

storage_mod = importlib.import_module("archforge.search.storage")
limits = importlib.import_module("archforge.search.limits")
report_mod = importlib.import_module("archforge.search.report")
compute_mod = importlib.import_module("archforge.search.compute")

HERE = Path(__file__).resolve().parent
DATA = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")

SPACE = """\
archforge: 1
name: hard
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8, 16]}, kernel: {choice: [1, 3]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width, kernel: $kernel}}
  - {id: head, block: classifier, args: {classes: 10}}
search: {epochs: 2}
"""
STORE_MESSAGE = "is not an archforge/Optuna study store"


def quick(spec, data, config, on_epoch=None):
    """Fake training: accuracy from the decisions, no sleeping."""
    p = spec.to_dict()["params"]
    acc = 0.5 + 0.02 * p["width"] + 0.05 * p["kernel"]
    for epoch in range(1, config.epochs + 1):
        if on_epoch is not None:
            on_epoch(epoch, acc * epoch / config.epochs)
    return SimpleNamespace(accuracy=acc, epochs=config.epochs, history=[acc], stopped_early=False, params=10, flops=10,
                           latency_ms=1.0, peak_memory_mb=1.0, train_time_s=0.0)


def exiting(spec, data, config, on_epoch=None):
    """sys.exit from one candidate, a BaseException of its own from another."""
    p = spec.to_dict()["params"]
    if (p["width"], p["kernel"]) == (4, 1):
        sys.exit(3)
    if (p["width"], p["kernel"]) == (8, 1):
        raise _Boom("a BaseException that is not an Exception")
    return quick(spec, data, config, on_epoch)


class _Boom(BaseException):
    pass


def _search(tmp_path, **kwargs):
    kwargs = {"dataset": DATA, "evaluator": quick, "runs_dir": tmp_path / "runs", "progress": False, **kwargs}
    return search(parse_space(SPACE, "hard.yaml"), **kwargs)


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _gone(pid: int) -> bool:
    """The process ``pid`` has ended (a zombie waiting for its parent counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


# =========================================================================== class 6: storage


def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as c:
        c.execute("create table notes (id integer primary key, text text)")
        c.execute("insert into notes (text) values ('precious')")
    c.close()


FOREIGN = {
    "another sqlite database": (_foreign_sqlite, "another SQLite database"),
    "a text file named study.db": (lambda p: p.write_text("hello, not a database\n"), "not a SQLite database"),
    "an empty file": (lambda p: p.write_bytes(b""), "empty file"),
    "a sqlite header on garbage": (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200), STORE_MESSAGE),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_a_foreign_file_is_never_opened_as_a_store(tmp_path, case):
    """Neither search nor report write into a file that is not an Optuna store; the file is left as it was."""
    make, reason = FOREIGN[case]
    db = tmp_path / "runs" / "hard" / "study.db"
    db.parent.mkdir(parents=True)
    make(db)
    before = db.read_bytes()
    with pytest.raises(SearchError, match=STORE_MESSAGE) as info:
        _search(tmp_path)
    assert reason in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SearchError, match=STORE_MESSAGE):
        _search(tmp_path, storage=db)
    with pytest.raises(SearchError, match=STORE_MESSAGE):
        load_run(db.parent)
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir() if not p.name.startswith("study.db.")) == ["study.db"]


def test_a_folder_where_the_store_should_be(tmp_path):
    """runs/<name>/study.db is a folder: one line, for search and report."""
    (tmp_path / "runs" / "hard" / "study.db").mkdir(parents=True)
    with pytest.raises(SearchError, match=f"{STORE_MESSAGE}: it is a folder"):
        _search(tmp_path)
    with pytest.raises(SearchError, match=f"{STORE_MESSAGE}: it is a folder"):
        load_run(tmp_path / "runs" / "hard")


def test_a_read_only_store_is_one_line_and_loses_nothing(tmp_path):
    """A store opened read-only (as a read-only disk would): one line; the trials stay; a writable resume finishes."""
    _search(tmp_path, budget=2)
    db = (tmp_path / "runs" / "hard" / "study.db").resolve()
    with pytest.raises(SearchError, match="read-only.*every trial recorded so far is kept.*run the same command again") as info:
        _search(tmp_path, storage=f"sqlite:///file:{db}?mode=ro&uri=true", budget=4)
    assert "\n" not in str(info.value)
    assert [r.status for r in load_run(db).records] == ["complete", "complete"]
    result = _search(tmp_path, budget=4)
    assert [r.status for r in result.trials] == ["complete"] * 4


def test_a_full_disk_is_one_line_and_the_resume_after_freeing_space_works(tmp_path, monkeypatch):
    """SQLite's max_page_count makes the store full after a few trials; nothing recorded is lost, nothing trained twice."""
    import sqlalchemy

    trained: list[str] = []

    def counting(spec, data, config, on_epoch=None):
        trained.append(candidate_hash(spec))
        return quick(spec, data, config, on_epoch)

    original = storage_mod._sqlite_pragmas

    def tiny_disk(storage):
        original(storage)

        def on_connect(connection, record):
            cursor = connection.cursor()
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages + 1}")
            cursor.close()

        sqlalchemy.event.listen(storage.engine, "connect", on_connect)

    _search(tmp_path, budget=1, evaluator=counting)  # create the store at its normal size
    monkeypatch.setattr(storage_mod, "_sqlite_pragmas", tiny_disk)
    with pytest.raises(SearchError, match="the disk is full.*every trial recorded so far is kept: free some space"):
        _search(tmp_path, evaluator=counting)
    monkeypatch.setattr(storage_mod, "_sqlite_pragmas", original)
    kept = [r for r in load_run(tmp_path / "runs" / "hard").records if r.status == "complete"]
    assert 1 <= len(kept) < 6
    done_before = {r.hash for r in kept}
    result = _search(tmp_path, evaluator=counting)
    complete = [r for r in result.trials if r.status == "complete"]
    assert len({r.hash for r in complete}) == 6 and done_before <= {r.hash for r in complete}
    assert all(trained.count(h) == 1 for h in done_before)  # a recorded result is never trained again


@pytest.mark.parametrize("name, why", [
    ("..", "parent folder"), (".", "the runs folder itself"), ("a/b", "two folders"), ("/etc", "absolute path"),
    ("a\\b", "a Windows separator"), ("a\0b", "NUL"), ("", "empty"), (" ", "blank"), ("x" * 101, "too long"),
])
def test_a_run_name_is_one_folder_inside_the_runs_folder(tmp_path, name, why):
    """resolve_storage checks the name whatever the caller (API, CLI, space file); nothing is created."""
    with pytest.raises(SearchError, match="run name"):
        storage_mod.resolve_storage(None, name, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_space_named_dotdot_does_not_put_its_store_outside_the_runs_folder(tmp_path):
    space = SPACE.replace("name: hard", "name: '..'")
    with pytest.raises((SearchError, SpecError)):
        search(parse_space(space, "dots.yaml"), dataset=DATA, evaluator=quick, runs_dir=tmp_path / "runs", progress=False)
    assert not (tmp_path / "study.db").exists() and not list(tmp_path.rglob("study.db"))


@pytest.mark.parametrize("case", ["runs is a file", "runs is under a file"])
def test_a_runs_folder_that_is_a_file_is_one_line(tmp_path, case):
    (tmp_path / "file").write_text("x")
    runs = tmp_path / "file" if case == "runs is a file" else tmp_path / "file" / "runs"
    with pytest.raises(SearchError, match="is a file") as info:
        search(parse_space(SPACE, "hard.yaml"), dataset=DATA, evaluator=quick, runs_dir=runs, progress=False)
    assert "\n" not in str(info.value)
    assert (tmp_path / "file").read_text() == "x"


def test_the_cli_says_one_line_for_a_runs_file(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "runs").write_text("not a folder")
    done = _cli(tmp_path, "search", "space.yaml", "--runs", "runs", "--evaluator", "test_hardening_search:quick", "--dataset", "digits")
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "runs folder" in lines[0] and "is a file" in lines[0], done.stderr


@pytest.mark.parametrize("storage, why", [
    ("/tmp/archforge-elsewhere/x.db", "absolute path"),
    ("../outside.db", "parent folder"),
    ("sqlite:////tmp/archforge-elsewhere/x.db", "absolute URL"),
])
def test_a_space_file_cannot_choose_where_to_write(tmp_path, monkeypatch, storage, why):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    space = SPACE.replace("search: {epochs: 2}", f"search: {{epochs: 2, storage: '{storage}'}}")
    with pytest.raises((SpecError, SearchError), match="outside the working folder"):
        search(parse_space(space, "s.yaml"), dataset=DATA, evaluator=quick, progress=False)
    assert not Path("/tmp/archforge-elsewhere").exists() and not (tmp_path / "outside.db").exists()


def test_a_space_file_storage_through_a_symlink_is_refused(tmp_path, monkeypatch):
    """Second line of defence: a relative path that resolves outside the working folder."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (work / "link").symlink_to(outside)
    monkeypatch.chdir(work)
    space = SPACE.replace("search: {epochs: 2}", "search: {epochs: 2, storage: 'link/x.db'}")
    with pytest.raises(SearchError, match="outside the working folder"):
        search(parse_space(space, "s.yaml"), dataset=DATA, evaluator=quick, progress=False)
    assert list(outside.iterdir()) == []
    # the same place given by the caller is the caller's choice
    result = search(parse_space(space, "s.yaml"), dataset=DATA, evaluator=quick, storage="link/x.db", progress=False, budget=1)
    assert result.best is not None and (outside / "x.db").exists()


def test_a_space_file_may_name_a_store_inside_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = SPACE.replace("search: {epochs: 2}", "search: {epochs: 2, storage: 'runs/shared.db'}")
    result = search(parse_space(space, "s.yaml"), dataset=DATA, evaluator=quick, progress=False, budget=2)
    assert len(result.table) == 2 and (tmp_path / "runs" / "shared.db").exists()


# --------------------------------------------------------------------------- tampered stores


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    search(parse_space(SPACE, "hard.yaml"), dataset=DATA, evaluator=quick, runs_dir=root, progress=False)
    return root / "hard" / "study.db"


def _copy(source: Path, target: Path) -> None:
    """A consistent copy of a store in WAL mode (the data may still be in study.db-wal)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def _tampered(finished_run, tmp_path, number: int, key: str, edit) -> Path:
    db = tmp_path / "study.db"
    _copy(finished_run, db)
    with sqlite3.connect(db) as c:
        (trial_id,) = c.execute("select trial_id from trials where number = ?", (number,)).fetchone()
        row = c.execute("select value_json from trial_user_attributes where trial_id = ? and key = ?", (trial_id, key)).fetchone()
        value = json.loads(row[0])
        text = edit(value)
        c.execute("update trial_user_attributes set value_json = ? where trial_id = ? and key = ?",
                  (text if isinstance(text, str) else json.dumps(text), trial_id, key))
    c.close()
    return db


def _set(path: str, new):
    def edit(value):
        target = value
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        if new is _DELETE:
            del target[last]
        else:
            target[last] = new
        return value
    return edit


_DELETE = object()
CANDIDATE, OUTCOME = "its candidate cannot be read: ", "its outcome cannot be read: "
TAMPER = {  # reason → (attribute, edit, words of the warning: the attribute, the field and what is wrong with it)
    "hash not hex": ("candidate", _set("hash", "zzzzzzzzzzzz"), CANDIDATE + "hash: String should match pattern '^[0-9a-f]{12}$'"),
    "hash too short": ("candidate", _set("hash", "abc"), CANDIDATE + "hash: String should match pattern '^[0-9a-f]{12}$'"),
    "hash not a string": ("candidate", _set("hash", 12), CANDIDATE + "hash: Input should be a valid string"),
    "hash of another spec": ("candidate", _set("hash", "0123456789ab"), CANDIDATE + "spec: the hash 0123456789ab does not match the spec"),
    "spec missing": ("candidate", _set("spec", _DELETE), CANDIDATE + "spec: Field required"),
    "spec not a mapping": ("candidate", _set("spec", [1, 2]), CANDIDATE + "spec: Input should be a valid dictionary"),
    "candidate not a mapping": ("candidate", lambda v: json.dumps("a string"), CANDIDATE + "Input should be a valid dictionary"),
    "outcome not a mapping": ("outcome", lambda v: [1], OUTCOME + "Input should be a valid dictionary"),
    "unknown status": ("outcome", _set("status", "excellent"), OUTCOME + "status: Input should be 'complete', 'failed'"),
    "accuracy a string": ("outcome", _set("accuracy", "high"), OUTCOME + "accuracy: Input should be a valid number"),
    "complete without accuracy": ("outcome", _set("accuracy", _DELETE), "it is complete but has no accuracy"),
    "accuracy NaN": ("outcome", lambda v: json.dumps({**v, "accuracy": math.nan}), OUTCOME + "accuracy: Input should be a finite number"),
    "latency infinite": ("outcome", lambda v: json.dumps({**v, "latency_ms": math.inf}), OUTCOME + "latency_ms: Input should be a finite number"),
    "params a string": ("outcome", _set("params", "many"), OUTCOME + "params: Input should be a valid integer"),
    "params negative": ("outcome", _set("params", -5), OUTCOME + "params: Input should be greater than or equal to 0"),
    "epochs a float": ("outcome", _set("epochs_run", 1.5), OUTCOME + "epochs_run: Input should be a valid integer"),
    "accuracies not a list": ("outcome", _set("accuracies", "x"), OUTCOME + "accuracies: Input should be a valid list"),
    "error not a text": ("outcome", _set("error", {"a": 1}), OUTCOME + "error: Input should be a valid string"),
    "huge error text": ("outcome", _set("error", "x" * 1_000_000), OUTCOME + f"error: a text longer than {limits.MAX_TEXT:,} characters"),
    "huge decision value": ("candidate", _set("decisions.width", "w" * 100_000),
                            CANDIDATE + f"decisions: a text longer than {limits.MAX_TEXT:,} characters"),
    "decisions a list": ("candidate", _set("decisions", [1]), CANDIDATE + "decisions: Input should be a valid dictionary"),
    "control: rewritten as it was": ("worker", lambda v: v, None),  # must stay readable
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_a_tampered_trial_is_reported_unreadable_and_the_rest_works(finished_run, tmp_path, case):
    key, edit, words = TAMPER[case]
    db = _tampered(finished_run, tmp_path, 2, key, edit)
    run = load_run(db)
    bad = [r for r in run.unreadable]
    if words is None:
        assert bad == [] and len(run.table) == 6
        return
    assert [r.number for r in bad] == [2] and bad[0].error.startswith(words) and "\n" not in bad[0].error, bad
    assert len(run.table) == 5 and 2 not in {row["trial"] for row in run.table}
    from rich.console import Console

    from archforge.cli.search_commands import print_run

    console = Console(record=True, width=200)
    print_run(run, console)
    text = console.export_text()
    assert "warning: trial #2 is unreadable and left out: " in text and text.count("\n") < 40
    report_mod.write_csv(run, tmp_path / "t.csv")
    report_mod.write_json(run, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["trials"][2]["status"] == "unreadable"


def test_a_spec_that_does_not_validate_is_never_the_best(finished_run, tmp_path):
    """The best candidate's spec edited into nonsense, with a matching hash: the next one is best, best.yaml builds."""
    import optuna

    best = load_run(finished_run).best

    def broken(value):
        value["spec"]["nodes"] = {"not": "a list"}
        value["hash"] = candidate_hash(value["spec"])
        return value

    db = _tampered(finished_run, tmp_path, best["trial"], "candidate", broken)
    run = load_run(db)
    assert [r.number for r in run.unreadable] == [best["trial"]] and "does not validate" in run.unreadable[0].error
    assert run.best["trial"] != best["trial"]
    files = report_mod.write_report(run, tmp_path / "report")
    from archforge.spec import load_spec

    assert load_spec(files["best"]) is not None
    assert optuna.load_study(study_name="hard", storage=f"sqlite:///{db}").trials  # the store itself is untouched


@pytest.mark.parametrize("edit, words", [
    (lambda meta: "not a mapping", "the study's 'archforge' attribute cannot be read: Input should be a valid dictionary"),
    (lambda meta: {"settings": meta["settings"]}, "the study's 'archforge' attribute cannot be read: space: Field required"),
    (lambda meta: {**meta, "settings": {**meta["settings"], "objectives": ["speed"]}},
     "has settings archforge cannot read (objectives: unknown objective 'speed'"),
    (lambda meta: {**meta, "settings": {**meta["settings"], "epochs": "two"}},
     "has settings archforge cannot read (epochs: Input should be a valid integer)"),
], ids=["not a mapping", "fields missing", "unknown objective", "epochs a string"])
def test_damaged_study_settings_are_one_line(finished_run, tmp_path, edit, words):
    db = tmp_path / "study.db"
    _copy(finished_run, db)
    with sqlite3.connect(db) as c:
        (text,) = c.execute("select value_json from study_user_attributes where key = 'archforge'").fetchone()
        c.execute("update study_user_attributes set value_json = ? where key = 'archforge'", (json.dumps(edit(json.loads(text))),))
    c.close()
    with pytest.raises(SearchError) as info:
        load_run(db)
    message = str(info.value)
    assert "study 'hard'" in message and words in message and "\n" not in message, message
    assert message.endswith("report a copy of the store made before it was edited")


def test_a_stored_text_with_a_line_break_cannot_add_yaml_to_best_yaml(finished_run, tmp_path):
    """best.yaml's header comments quote stored texts; a line break in one must not become a YAML line."""
    db = tmp_path / "study.db"
    _copy(finished_run, db)
    with sqlite3.connect(db) as c:
        (text,) = c.execute("select value_json from study_user_attributes where key = 'archforge'").fetchone()
        meta = json.loads(text)
        meta["space_file"] = "x.yaml\nname: injected\nnodes: []"
        meta["dataset"] = "d\r\u2028input: {shape: [9]}"
        c.execute("update study_user_attributes set value_json = ? where key = 'archforge'", (json.dumps(meta),))
    c.close()
    run = load_run(db)
    path = report_mod.write_best_yaml(run, tmp_path / "best.yaml")
    from archforge.spec import load_spec

    assert load_spec(path).to_dict() == run.record(run.best["trial"]).spec
    assert all(line.startswith("#") for line in path.read_text().split("\n")[:3])


def test_the_report_command_survives_a_tampered_store(finished_run, tmp_path):
    db = _tampered(finished_run, tmp_path, 1, "outcome", _set("accuracy", "high"))
    done = _cli(tmp_path, "report", str(db), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "warning: trial #1 is unreadable" in done.stdout + done.stderr
    assert (tmp_path / "out" / "best.yaml").exists()


def _json_values():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                        max_leaves=8)


def test_any_stored_attributes_give_a_record_or_unreadable_never_a_crash(tmp_path):
    """Hypothesis: arbitrary JSON in place of the candidate, the outcome and the links; rank, print and export never raise."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial
    from rich.console import Console

    from archforge.cli.search_commands import print_run
    from archforge.search.records import RunMeta, TrialRecord
    from archforge.search.settings import SearchSettings

    valid_spec = {"archforge": 1, "name": "x", "input": {"shape": [1, 8, 8]}, "nodes": [{"id": "head", "block": "classifier", "args": {"classes": 10}}]}
    keys = st.sampled_from(["candidate", "outcome", "worker", "progress", "proxy", "lineage", "seed_0", "seed_1", "retry_of", "parent"])
    # Optuna's own record of a retry (RetryFailedTrialCallback) lives in the system attributes
    system_keys = st.sampled_from(["failed_trial", "retry_history", "fixed_params"])
    meta = RunMeta(space="", space_file="x.yaml", space_fingerprint="f", space_name="x", config_key="k", dataset="d",
                   settings=SearchSettings(objectives=["accuracy", "params"], epochs=2).model_dump(mode="json"))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(keys, _json_values(), max_size=4), st.dictionaries(st.sampled_from(["hash", "spec", "decisions", "x"]), _json_values(), max_size=3),
           st.dictionaries(st.sampled_from(["status", "accuracy", "params", "error", "accuracies", "epochs_run", "duplicate_of"]), _json_values(), max_size=4),
           st.dictionaries(system_keys, _json_values(), max_size=2))
    def check(attrs, candidate_extra, outcome_extra, system_attrs):
        candidate = {"hash": candidate_hash(valid_spec), "spec": valid_spec, "decisions": {}, **candidate_extra}
        outcome = {"status": "complete", "accuracy": 0.5, "params": 10, **outcome_extra}
        user_attrs = {"candidate": candidate, "outcome": outcome, **attrs}
        trial = create_trial(state=TrialState.COMPLETE, values=[0.5, 10], params={"w": 1}, distributions={"w": CategoricalDistribution([1, 2])},
                             user_attrs=user_attrs, system_attrs=system_attrs)
        record = TrialRecord.of(trial)
        assert record.status in ("unreadable", "complete", "failed", "pruned", "rejected", "cancelled")
        run = report_mod.RunData("x", meta, [record])
        compute_mod.compute_summary(run.records, run.settings, None)
        print_run(run, Console(file=open(os.devnull, "w"), width=120))
        report_mod.write_csv(run, tmp_path / "t.csv")
        report_mod.write_json(run, tmp_path / "t.json")
        assert json.loads((tmp_path / "t.json").read_text())["trials"][0]["status"] == run.records[0].status

    check()


# =========================================================================== class 7: faults, with real processes


def _cli(cwd: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    return subprocess.run([sys.executable, "-m", "archforge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


RACE = """\
import os, sys, time, types
sys.path.insert(0, {here!r})
from archforge.search import search
data = types.SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
open({go!r} + ".ready%d" % os.getpid(), "w").close()
while not os.path.exists({go!r}):
    time.sleep(0.001)
search({space!r}, dataset=data, evaluator="test_hardening_search:quick", runs_dir={runs!r}, progress=False)
"""


def test_two_searches_started_at_once_on_a_fresh_folder(tmp_path):
    """Both create the store at the same moment (released by one file): neither dies, the grid is done once."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    for attempt in range(2):  # without the lock one of the two died in every try
        runs, go = tmp_path / f"runs{attempt}", tmp_path / f"go{attempt}"
        script = RACE.format(here=str(HERE), go=str(go), space=str(space), runs=str(runs))
        procs = [subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob(f"go{attempt}.ready*"))) < 2:  # both have imported archforge and wait for the go
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, procs[0].stderr.read() if procs[0].poll() else ""
            time.sleep(0.02)
        go.write_text("")
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert p.returncode == 0 and "IntegrityError" not in err, err
        run = load_run(runs / "hard")
        assert len({r.hash for r in run.records if r.status == "complete"}) == 6


KILLED_AFTER_ASK = """\
import importlib, os, sys, types
sys.path.insert(0, {here!r})
from archforge.search import search
driver = importlib.import_module("archforge.search.driver")
if {die!r}:
    driver.Objective.__call__ = lambda self, trial: os._exit(3)  # killed right after ask: study.optimize calls the objective
else:  # the resume must not wait for the heartbeat of the dead trial to go stale
    importlib.import_module("archforge.search.storage").GRACE_PERIOD = 24 * 3600
data = types.SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
search({space!r}, dataset=data, evaluator="test_hardening_search:quick", runs_dir={runs!r}, progress=False)
"""


def test_a_trial_killed_between_ask_and_its_first_attribute_is_retried_at_once(tmp_path):
    """The resume fails the dead trial and retries its grid point first, without waiting for the grace period."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    runs = tmp_path / "runs"

    def run(die: bool) -> subprocess.CompletedProcess:
        script = KILLED_AFTER_ASK.format(here=str(HERE), die=die, space=str(space), runs=str(runs))
        return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert run(True).returncode == 3
    with sqlite3.connect(runs / "hard" / "study.db") as c:
        rows = c.execute("select t.state, count(a.key) from trials t left join trial_user_attributes a on a.trial_id = t.trial_id group by t.trial_id").fetchall()
    c.close()
    assert rows == [("RUNNING", 0)]
    done = run(False)
    assert done.returncode == 0, done.stderr
    records = load_run(runs / "hard").records
    assert records[0].state == "FAIL" and records[0].status == "interrupted"
    assert records[1].retry_of == 0 and records[1].status == "complete"  # retried at once: the resume's first trial
    assert len({r.hash for r in records if r.status == "complete"}) == 6


DRIVER = """\
import sys, types
sys.path.insert(0, {here!r})
from archforge.search import search
data = types.SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
search({space!r}, dataset=data, evaluator="test_search_runs:slow_evaluate", runs_dir={runs!r}, progress=False, workers=2)
"""


def test_killing_the_driver_stops_its_workers(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("epochs: 2", "epochs: 50"))
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "ARCHFORGE_TEST_LOG": str(log), "ARCHFORGE_TEST_EPOCH_S": "0.2"}
    script = DRIVER.format(here=str(HERE), space=str(space), runs=str(tmp_path / "runs"))
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len({e["pid"] for e in _events(log)}) < 2:
        assert driver.poll() is None, driver.stderr.read().decode()
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    workers = {e["pid"] for e in _events(log)}
    assert driver.pid not in workers
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if not _gone(pid)]
    for pid in alive:  # don't leave them behind, whatever the test says
        os.kill(pid, signal.SIGKILL)
    assert alive == [], "workers kept training after the driver died"


def test_an_evaluator_calling_sys_exit_fails_its_trial_and_the_search_goes_on(tmp_path, capsys):
    result = _search(tmp_path, evaluator=exiting, progress="lines")
    by = {(r.decisions["width"], r.decisions["kernel"]): r for r in result.trials if r.counted}
    assert len(by) == 6
    assert by[4, 1].status == "failed" and by[4, 1].error == "the evaluator called sys.exit(3)"
    assert by[8, 1].status == "failed" and by[8, 1].error.startswith("_Boom: a BaseException")
    assert sum(r.status == "complete" for r in by.values()) == 4
    assert "the evaluator called sys.exit(3); the trial is failed and the search goes on" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_fails_the_trials_says_how_to_resume_and_exits_130(tmp_path, workers):
    """Ctrl-C as a terminal sends it (to the whole process group) in the middle of a trial."""
    (tmp_path / "space.yaml").write_text(SPACE)
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "ARCHFORGE_TEST_LOG": str(log), "ARCHFORGE_TEST_EPOCH_S": "0.3"}
    args = [sys.executable, "-m", "archforge", "search", "space.yaml", "--runs", "runs", "--dataset", "digits", "--limit", "100",
            "--evaluator", "test_search_runs:slow_evaluate", "--no-progress", "--workers", str(workers)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not any(e["event"] == "end" for e in _events(log)) or _events(log)[-1]["event"] != "start":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    ended = {e["hash"] for e in _events(log) if e["event"] == "end"}
    interrupted = {e["hash"] for e in _events(log) if e["event"] == "start"} - ended
    assert proc.returncode == 130, err
    assert f"interrupted: {len(ended)} done; run the same command again to resume" in err, err
    assert "Traceback" not in err and interrupted
    records = load_run(tmp_path / "runs" / "hard").records
    assert not [r for r in records if r.state == "RUNNING"]  # nothing waits for a grace period
    started = {e["hash"] for e in _events(log) if e["event"] == "start"}
    # a trial stopped after its training returned but before its outcome was stored is interrupted too (its seed is kept)
    # (a trial asked for but not yet given its candidate when the workers stopped is interrupted without a hash)
    marked = {r.hash for r in records if r.status == "interrupted" and r.hash is not None}
    assert interrupted <= marked <= started, [(r.number, r.hash, r.state, r.status) for r in records]
    if workers > 1:  # resuming with workers is test_search_runs's; once is enough here
        return
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    ends = [e["hash"] for e in _events(log) if e["event"] == "end"]
    assert len(ends) == len(set(ends)) == 6 and interrupted <= set(ends)
