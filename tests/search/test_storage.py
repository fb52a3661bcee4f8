"""Where trials are kept: resolving a store, refusing files that are not one, one-line faults, opening runs, file locks."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import warnings
from pathlib import Path

import optuna
import pytest

from archforge.errors import SearchError, SpecError
from archforge.search import limits, storage
from archforge.search.locks import claim_store, sole_user, store_lock
from archforge.search.storage import (
    HEARTBEAT_INTERVAL, STUDY_FILE, check_run_name, check_store_file, load_run_study, open_storage, resolve_storage, sqlite_path,
    stale_trial_callback, storage_error, storage_errors,
)

fcntl = pytest.importorskip("fcntl")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """An Optuna store with no study, made once (creating the schema is the slow part) and copied by each test."""
    path = tmp_path_factory.mktemp("template") / STUDY_FILE
    optuna.storages.RDBStorage(f"sqlite:///{path}")  # rollback journal: every table is in the file itself
    return path


def _store(template: Path, path: Path, studies: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    for name in studies:
        optuna.create_study(storage=f"sqlite:///{path}", study_name=name)
    return path


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Record the URLs resolve_storage opens instead of opening them (opening is tested on its own)."""
    urls: list[str] = []

    def fake_open(url: str, *, heartbeat: bool = True) -> tuple[str, str]:
        urls.append(url)
        return ("opened", url)

    monkeypatch.setattr(storage, "open_storage", fake_open)
    return urls


# --------------------------------------------------------------------------- resolve_storage


def test_default_store_is_runs_name_study_db(tmp_path, opened):
    ref, obj = resolve_storage(None, "demo", tmp_path / "runs")
    expected = (tmp_path / "runs" / "demo").resolve() / "study.db"
    assert ref.url == f"sqlite:///{expected}" and obj == ("opened", ref.url) and opened == [ref.url]
    assert (ref.study_name, ref.run_dir, ref.persistent) == ("demo", expected.parent, True)
    assert expected.parent.is_dir() and not expected.exists()


def test_a_db_path_is_the_store_and_its_folder_the_run_folder(tmp_path, opened):
    ref, _ = resolve_storage(str(tmp_path / "stores" / "shared.db"), "demo", tmp_path / "runs")
    assert ref.url == f"sqlite:///{(tmp_path / 'stores').resolve() / 'shared.db'}"
    assert ref.run_dir == (tmp_path / "stores").resolve() and (tmp_path / "stores").is_dir()


@pytest.mark.parametrize("make", [True, False], ids=["existing folder", "name without suffix"])
def test_a_folder_holds_study_db(tmp_path, opened, make):
    folder = tmp_path / "place"
    if make:
        folder.mkdir()
    ref, _ = resolve_storage(folder, "demo", tmp_path / "runs")
    assert ref.url == f"sqlite:///{folder.resolve() / STUDY_FILE}" and folder.is_dir()


@pytest.mark.parametrize("memory", ["memory", ":memory:"])
def test_memory_is_an_in_memory_storage_and_writes_nothing(tmp_path, opened, memory):
    ref, obj = resolve_storage(memory, "demo", tmp_path / "runs")
    assert (ref.url, ref.persistent, ref.run_dir) == ("memory", False, tmp_path / "runs" / "demo")
    assert isinstance(obj, optuna.storages.InMemoryStorage) and opened == []
    assert list(tmp_path.iterdir()) == []


def test_a_server_url_is_kept_and_nothing_is_written(tmp_path, opened):
    url = "postgresql://user@db.example/archforge"
    ref, obj = resolve_storage(url, "demo", tmp_path / "runs")
    assert (ref.url, ref.run_dir, obj) == (url, tmp_path / "runs" / "demo", ("opened", url))
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_url_has_its_folder_as_run_folder(tmp_path, opened):
    url = f"sqlite:///{tmp_path}/elsewhere/x.db"
    ref, _ = resolve_storage(url, "demo", tmp_path / "runs")
    assert (ref.url, ref.run_dir) == (url, tmp_path / "elsewhere")


def test_an_optuna_storage_object_is_used_as_is(tmp_path, opened):
    memory = optuna.storages.InMemoryStorage()
    ref, obj = resolve_storage(memory, "demo", tmp_path / "runs")
    assert obj is memory and ref.url == "memory" and opened == []


def test_a_foreign_file_at_the_resolved_path_is_refused_before_opening(tmp_path, opened):
    (tmp_path / "notes.db").write_text("my notes\n")
    with pytest.raises(SearchError, match="is not an archforge/Optuna study store: it is not a SQLite database"):
        resolve_storage(tmp_path / "notes.db", "demo", tmp_path / "runs")
    assert opened == [] and (tmp_path / "notes.db").read_text() == "my notes\n"


def test_a_runs_folder_that_is_a_file_is_refused(tmp_path, opened):
    (tmp_path / "runs").write_text("")
    with pytest.raises(SearchError, match="runs folder .* is a file, not a folder"):
        resolve_storage(None, "demo", tmp_path / "runs")


def test_a_space_files_store_stays_in_the_working_folder(tmp_path, opened, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ref, _ = resolve_storage("runs/shared.db", "demo", "runs", from_spec=True)
    assert ref.url == f"sqlite:///{work.resolve() / 'runs' / 'shared.db'}"
    for outside in (str(tmp_path / "outside.db"), f"sqlite:///{tmp_path}/outside.db"):
        with pytest.raises(SearchError, match="is outside the working folder"):
            resolve_storage(outside, "demo", "runs", from_spec=True)
    (work / "link").symlink_to(tmp_path, target_is_directory=True)  # a link inside that leads out
    with pytest.raises(SearchError, match="is outside the working folder"):
        resolve_storage("link/outside.db", "demo", "runs", from_spec=True)
    ref, _ = resolve_storage(str(tmp_path / "outside.db"), "demo", "runs")  # the command line may name any place
    assert ref.url.endswith("/outside.db")


@pytest.mark.parametrize("name", ["", "  ", "a/b", "a\\b", ".", "..", " x", "x\n", None, 3])
def test_run_names_that_are_not_one_folder_are_refused(name):
    with pytest.raises(SearchError, match="--name"):
        check_run_name(name)


def test_run_name_length_is_bounded_by_limits(monkeypatch):
    assert check_run_name("a.b-c_1") == "a.b-c_1"
    monkeypatch.setattr(limits, "MAX_NAME", 5)
    assert check_run_name("abcde") == "abcde"
    with pytest.raises(SearchError, match="too long: at most 5"):
        check_run_name("abcdef")


# --------------------------------------------------------------------------- what may be opened


def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("create table people (name text)")
    connection.close()


@pytest.mark.parametrize("make, reason", [
    (_foreign_sqlite, "it is another SQLite database (tables people)"),
    (lambda p: p.write_text("name,accuracy\nx,0.5\n"), "it is not a SQLite database"),
    (lambda p: p.write_bytes(b""), "it is an empty file"),
    (lambda p: p.mkdir(), "it is a folder"),
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200), "is not an archforge/Optuna study store"),
], ids=["foreign sqlite", "text file", "empty file", "folder", "corrupt sqlite"])
def test_check_store_file_refuses_what_is_not_a_store(tmp_path, make, reason):
    path = tmp_path / "study.db"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(SearchError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_store_file(path)
    assert (path.read_bytes() if path.is_file() else None) == before  # nothing written


def test_check_store_file_accepts_a_new_file_a_blank_database_and_a_store(tmp_path, template):
    check_store_file(tmp_path / "missing.db")
    with sqlite3.connect(tmp_path / "blank.db") as connection:
        connection.execute("pragma user_version = 1")  # a database file with no table yet
    connection.close()
    check_store_file(tmp_path / "blank.db")
    check_store_file(template)


@pytest.mark.parametrize("url, path", [
    ("sqlite:///runs/x/study.db", Path("runs/x/study.db")),
    ("sqlite:////abs/x.db", Path("/abs/x.db")),
    ("sqlite:///x.db?timeout=30", Path("x.db")),
    ("sqlite:///file:data/x.db?mode=ro&uri=true", Path("data/x.db")),
    ("sqlite:///:memory:", None),
    ("sqlite://", None),
    ("sqlite:///", None),
    ("postgresql://user@host/db", None),
    ("memory", None),
])
def test_sqlite_path(url, path):
    assert sqlite_path(url) == path


# --------------------------------------------------------------------------- faults


def _chained(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except Exception as exc:
        return exc


FAULTS = {
    "disk full": (sqlite3.OperationalError("database or disk is full"), "the disk is full", "free some space"),
    "read-only": (sqlite3.OperationalError("attempt to write a readonly database"), "the store is read-only", "make it writable"),
    "sqlalchemy wrapper": (_chained(RuntimeError("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO trials]"),
                                    ValueError("inner")), "the disk is full", "free some space"),
    "ENOSPC in the chain": (_chained(RuntimeError("commit failed"), OSError(errno.ENOSPC, "No space left on device")),
                            "the disk is full", "free some space"),
    "ENOSPC errno only": (OSError(errno.ENOSPC, "x"), "the disk is full", "free some space"),
    "EROFS": (OSError(errno.EROFS, "x"), "the store is read-only", "make it writable"),
    "EDQUOT": (OSError(errno.EDQUOT, "x"), "the disk quota is used up", "free some space"),
    "EIO": (OSError(errno.EIO, "x"), "a disk I/O error", "fix that"),
    "disk I/O text": (sqlite3.OperationalError("disk I/O error"), "a disk I/O error", "fix that"),
}


@pytest.mark.parametrize("exc, reason, fix", FAULTS.values(), ids=FAULTS.keys())
def test_storage_faults_are_one_line(exc, reason, fix):
    error = storage_error(exc, "sqlite:///runs/x/study.db")
    assert isinstance(error, SearchError)
    assert error.message.startswith(f"storage sqlite:///runs/x/study.db: {reason} (")
    assert f"every trial recorded so far is kept: {fix} and run the same command again to resume" in error.message
    assert "\n" not in str(error) and "[SQL" not in str(error)


def test_a_store_that_cannot_be_opened_says_to_check_the_path():
    error = storage_error(sqlite3.OperationalError("unable to open database file"), "sqlite:///x.db")
    assert "the store cannot be opened" in error.message and "check the path" in error.message


def test_other_errors_are_no_storage_fault():
    assert storage_error(ValueError("boom"), "u") is None
    assert storage_error(OSError(errno.EACCES, "Permission denied"), "u") is None
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a  # a cycle ends
    assert storage_error(a, "u") is None


def test_storage_errors_maps_faults_and_lets_the_rest_through():
    with pytest.raises(SearchError, match="the disk is full"):
        with storage_errors("u"):
            raise OSError(errno.ENOSPC, "No space left on device")
    spec_error = SpecError("a located problem")
    with pytest.raises(SpecError) as info, storage_errors("u"):
        raise spec_error
    assert info.value is spec_error
    with pytest.raises(KeyError), storage_errors("u"):
        raise KeyError("x")


# --------------------------------------------------------------------------- open_storage


def test_open_storage_on_sqlite_has_heartbeats_retries_and_wal(tmp_path, template):
    path = _store(template, tmp_path / "study.db")
    url = f"sqlite:///{path}"
    opened = open_storage(url)
    assert opened.get_heartbeat_interval() == HEARTBEAT_INTERVAL
    callback = stale_trial_callback(opened)
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    assert isinstance(callback, retry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        optuna.create_study(storage=opened, study_name="s").ask()
    with sqlite3.connect(path) as connection:
        assert connection.execute("pragma journal_mode").fetchone()[0] == "wal"
    connection.close()
    plain = open_storage(url, heartbeat=False)
    assert plain.get_heartbeat_interval() is None and stale_trial_callback(plain) is None


def test_open_storage_refusals_are_search_errors(tmp_path):
    assert isinstance(open_storage("memory"), optuna.storages.InMemoryStorage)
    assert stale_trial_callback(optuna.storages.InMemoryStorage()) is None
    _foreign_sqlite(tmp_path / "other.db")
    with pytest.raises(SearchError, match="another SQLite database"):
        open_storage(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(SearchError, match="cannot open storage nosuchdb://x: NoSuchModuleError"):
        open_storage("nosuchdb://x")
    with pytest.raises(SearchError, match="the store cannot be opened"):
        open_storage(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}")


# --------------------------------------------------------------------------- load_run_study


def test_load_run_study_with_one_study_by_folder_file_and_url(tmp_path, template):
    path = _store(template, tmp_path / "run" / STUDY_FILE, studies=("only",))
    for source in (tmp_path / "run", path, str(path), f"sqlite:///{path}"):
        assert load_run_study(source).study_name == "only"
    assert load_run_study(path, "only").study_name == "only"


def test_load_run_study_with_no_study(tmp_path, template):
    path = _store(template, tmp_path / STUDY_FILE)
    with pytest.raises(SearchError, match=r"holds 0 studies \(none\): name one with --study"):
        load_run_study(path)


def test_load_run_study_with_two_studies_needs_a_name(tmp_path, template):
    path = _store(template, tmp_path / STUDY_FILE, studies=("alpha", "beta"))
    with pytest.raises(SearchError, match=r"holds 2 studies \(alpha, beta\): name one with --study"):
        load_run_study(path)
    assert load_run_study(path, "beta").study_name == "beta"
    with pytest.raises(SearchError, match=r"no study 'bta' in .* \(did you mean 'beta'\?\)"):
        load_run_study(path, "bta")


def test_load_run_study_never_creates_a_store(tmp_path):
    for source in (tmp_path / "nothing", tmp_path / "nothing.db"):
        with pytest.raises(SearchError, match="no search run at"):
            load_run_study(source)
    with pytest.raises(SearchError, match="does not exist"):
        load_run_study(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert list(tmp_path.iterdir()) == []


def test_load_run_study_refuses_a_foreign_file(tmp_path):
    (tmp_path / STUDY_FILE).write_text("not a store")
    with pytest.raises(SearchError, match="not a SQLite database"):
        load_run_study(tmp_path)


# --------------------------------------------------------------------------- locks


def test_store_lock_excludes_others_while_held(tmp_path):
    db = tmp_path / "study.db"
    with store_lock(db):
        other = os.open(f"{db}.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    other = os.open(f"{db}.lock", os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(other)


def test_store_lock_without_a_file_or_folder_does_nothing(tmp_path):
    with store_lock(None):
        pass
    with store_lock(tmp_path / "missing" / "study.db"):
        pass
    assert not (tmp_path / "missing").exists()


def test_claims_on_separate_descriptors_conflict_within_one_process(tmp_path):
    db = tmp_path / "study.db"
    first, alone = claim_store(db)
    assert first is not None and alone
    try:
        second, alone_second = claim_store(db)
        assert second is not None and not alone_second  # flock locks belong to open files, not processes
        try:
            assert not sole_user(first)
        finally:
            os.close(second)
        assert sole_user(first)
        assert sole_user(first)  # asking again keeps the claim
        third, alone_third = claim_store(db)
        assert not alone_third  # the first claim is still held after sole_user
        os.close(third)
    finally:
        os.close(first)
    fourth, alone_fourth = claim_store(db)
    assert alone_fourth
    os.close(fourth)


def test_a_failed_sole_user_keeps_the_claim(tmp_path):
    db = tmp_path / "study.db"
    first, _ = claim_store(db)
    second, _ = claim_store(db)
    try:
        assert not sole_user(first)
        assert not sole_user(second)  # the first process still uses the store
    finally:
        os.close(first)
        os.close(second)


def test_claim_store_cannot_tell_without_a_sqlite_file(tmp_path):
    assert claim_store(None) == (None, False)
    assert claim_store(tmp_path / "missing" / "study.db") == (None, False)
