"""Where a search keeps its trials: an Optuna storage, by default one SQLite file per run.

``runs/<name>/study.db`` holds the study (what each trial stores: :mod:`archforge.search.records`).
SQLite through Optuna's ``RDBStorage`` is the store for one machine, chosen over Optuna's journal
file for heartbeats (a dead worker's trial is failed and retried by Optuna's retry callback; the
journal has none) and robustness: a killed writer can leave the journal's lock file behind
(every writer then stalls 30 s) and a torn last record makes it unreadable. The journal is
2-3× faster per trial (``benchmarks/bench_storage.py``), but 60-80 ms of store time per trial
is noise next to training. A PostgreSQL server (``postgresql://user@host/db``, driver: the
``postgres`` extra) serves workers on many machines; ``optuna.load_study`` and optuna-dashboard
open both. Other database servers are refused: the claim that keeps two workers from training
one candidate is a lock only SQLite (a file lock) and PostgreSQL (an advisory lock) provide here
(:mod:`archforge.search.locks`).

Messages show a URL with its password masked (:mod:`archforge.search.urls`).

Faults. Only a file that already is an Optuna store (or a new one) is ever opened as one; a
storage failure (read-only or full disk, I/O error) is a one-line :class:`SearchError` saying
that the trials recorded so far are kept and how to resume.
"""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from archforge.errors import SearchError, SpecError
from archforge.search import limits
from archforge.search.locks import store_lock
from archforge.search.urls import CLIENT_KEEPALIVES, check_server_url, engine_url, is_postgres, masked_url, shown_url, url_password

RUNS_DIR = "runs"
STUDY_FILE = "study.db"
#: Seconds between heartbeats of a running trial, and after which a silent one is stale (failed and retried).
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 60
#: Times a candidate whose worker died is retried.
MAX_RETRY = 3
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class StorageRef:
    """How to reach a study: a URL (or ``memory``), the study name and the run folder for outputs."""

    url: str
    study_name: str
    run_dir: Path | None

    @property
    def persistent(self) -> bool:
        return self.url != "memory"

    @property
    def shown(self) -> str:
        """The URL as messages show it: the password masked."""
        return masked_url(self.url)


def check_run_name(name: Any) -> str:
    """``name`` if it is one safe folder name, else a :class:`SearchError` saying what to use."""
    if not isinstance(name, str) or not name.strip():
        raise SearchError(f"run name {name!r} is empty: give a name with letters or digits (--name)")
    bad = next((c for c in ("/", "\\", "\0") if c in name), None)
    if bad is not None or set(name) <= {"."} or name != name.strip() or any(ord(c) < 32 for c in name):
        raise SearchError(f"run name {name!r} is not one folder name inside the runs folder: use letters, digits, '_', '-' or '.' (--name)")
    if len(name) > limits.MAX_NAME:
        raise SearchError(f"run name of {len(name)} characters is too long: at most {limits.MAX_NAME} (--name)")
    return name


def in_memory(storage: Any) -> bool:
    """Whether ``storage`` (as :func:`resolve_storage` takes it) keeps nothing beyond this process."""
    from optuna.storages import BaseStorage

    if isinstance(storage, BaseStorage):
        return getattr(storage, "url", None) is None
    return storage in ("memory", ":memory:")


def resolve_storage(storage: Any, name: str, runs_dir: str | os.PathLike[str] = RUNS_DIR, *,
                    from_spec: bool = False, heartbeat: Any = None) -> tuple[StorageRef, Any]:
    """Turn ``storage`` (``None``, a URL, a ``.db`` path, ``"memory"`` or an Optuna storage) into a reference.

    Returns the reference and the storage object to use in this process. ``from_spec``: the
    storage was written in a space file, which may only name a database server or a file
    inside the working folder or the runs folder (symbolic links followed). ``heartbeat``: the
    run's :class:`~archforge.search.settings.HeartbeatSettings` (default: 10 s beats, 60 s grace).
    """
    from optuna.storages import BaseStorage, InMemoryStorage

    check_run_name(name)
    runs = Path(runs_dir)
    if isinstance(storage, BaseStorage):
        return StorageRef("memory" if in_memory(storage) else storage.url, name, runs / name), storage
    if in_memory(storage):
        return StorageRef("memory", name, runs / name), InMemoryStorage()
    if storage is None:
        _make_folder(runs, "runs folder")
        path = _make_folder(runs / name, "run folder").resolve() / STUDY_FILE
        url = f"sqlite:///{path}"
    elif "://" in str(storage):
        url = str(storage)
        check_server_url(url)
        if from_spec and sqlite_path(url) is not None:
            _confine(sqlite_path(url), storage, runs)
    else:
        path = Path(storage)
        if path.is_dir() or not path.suffix:
            path = path / STUDY_FILE
        if from_spec:
            _confine(path, storage, runs)
        path = _make_folder(path.parent, "storage folder").resolve() / path.name
        url = f"sqlite:///{path}"
    db = sqlite_path(url)
    run_dir = db.parent if db is not None else runs / name
    with store_lock(db):
        if db is not None:
            # Under the lock: a store another search is creating right now is briefly empty or half-made.
            check_store_file(db)
        return StorageRef(url, name, run_dir), open_storage(url, heartbeat=heartbeat)


def _make_folder(path: Path, what: str) -> Path:
    """``path`` as a folder, created if missing; a one-line error when it is a file or cannot be made."""
    if path.exists() and not path.is_dir():
        raise SearchError(f"{what} '{path}' is a file, not a folder: give another --runs folder or --name")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a part of it is a file" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror or str(exc)
        raise SearchError(f"cannot create the {what} '{path}': {reason}; give a folder you can write (--runs)") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SearchError(f"{what} '{path}' is not writable: give a folder you can write (--runs)")
    return path


def _confine(path: Path, written: Any, runs: Path) -> None:
    """A space file's storage stays inside the working folder or the runs folder (links resolved)."""
    target = (Path.cwd() / path).resolve()
    for root in (Path.cwd().resolve(), (Path.cwd() / runs).resolve()):
        if target == root or root in target.parents:
            return
    raise SearchError(f"the space file's storage {str(written)!r} is outside the working folder ({target}): "
                      "pass --storage (or storage=) to use another place")


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (``file:`` URIs and query strings dropped)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    rest = rest[len("file:"):] if rest.startswith("file:") else rest
    return Path(rest) if rest and rest != ":memory:" else None


def check_store_file(path: Path) -> None:
    """Refuse to open anything but a new file or an Optuna store: archforge never writes into other files."""
    what = f"{path} is not an archforge/Optuna study store"
    if path.is_dir():
        raise SearchError(f"{what}: it is a folder; give the study.db inside it or another --storage")
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise SearchError(f"cannot read the study store {path}: {exc.strerror or exc}") from None
    if not head:
        raise SearchError(f"{what}: it is an empty file; delete it or give another --storage or --name")
    if head != _SQLITE_MAGIC:
        raise SearchError(f"{what}: it is not a SQLite database; give another --storage or --name")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            tables = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise SearchError(f"{what}: {exc}; give another --storage or --name") from None
    if tables and not {"studies", "trials", "alembic_version"} <= tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise SearchError(f"{what}: it is another SQLite database (tables {shown}); give another --storage or --name")




_FAULTS = (
    ("readonly database", "the store is read-only"),
    ("read-only file system", "the store is read-only"),
    ("database or disk is full", "the disk is full"),
    ("no space left", "the disk is full"),
    ("disk quota", "the disk quota is used up"),
    ("disk i/o error", "a disk I/O error"),
    ("unable to open database file", "the store cannot be opened (a missing or unwritable folder)"),
)
# EACCES is left to the caller: a dataset or plugin file that cannot be read is no storage fault.
_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EROFS: "the store is read-only",
           errno.EIO: "a disk I/O error"}


def storage_error(exc: BaseException, where: str) -> SearchError | None:
    """A one-line :class:`SearchError` for a storage or file-system fault found in ``exc``'s chain, else ``None``."""
    where = masked_url(where)  # a URL or a path, whole
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        reason = next((r for key, r in _FAULTS if key in text), None)
        if reason is None and isinstance(current, OSError) and current.errno in _ERRNOS:
            reason = _ERRNOS[current.errno]
        if reason is not None:
            detail = shown_url(str(current).splitlines()[0])[:200] if str(current) else type(current).__name__
            if reason.startswith("the store cannot be opened"):
                return SearchError(f"storage {where}: {reason} ({detail}); check the path, and that its folder exists and is writable")
            fix = "free some space" if "full" in reason or "quota" in reason else "make it writable" if "read-only" in reason else "fix that"
            return SearchError(f"storage {where}: {reason} ({detail}); every trial recorded so far is kept: "
                               f"{fix} and run the same command again to resume")
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def storage_errors(where: str) -> Iterator[None]:
    """Turn storage and file-system faults raised inside the block into one-line :class:`SearchError` s."""
    try:
        yield
    except SpecError:
        raise
    except Exception as exc:
        mapped = storage_error(exc, where)
        if mapped is None:
            raise
        raise mapped from None


def open_storage(url: str, *, heartbeat: Any = True) -> Any:
    """An Optuna storage for ``url``: SQLite in WAL mode with a generous lock timeout, heartbeats on.

    ``heartbeat``: ``True`` (the defaults), ``False`` (none: for reading a run) or a
    :class:`~archforge.search.settings.HeartbeatSettings` (the run's interval and grace period).
    """
    import optuna
    from optuna.storages import InMemoryStorage

    from archforge.search.locks import server_lock

    if url == "memory":
        return InMemoryStorage()
    if sqlite_path(url) is not None:
        check_store_file(sqlite_path(url))
    interval, grace = _heartbeat(heartbeat)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}
    elif is_postgres(url):
        # A server that went away (a restart, a dropped connection) is noticed before a query, not by it.
        engine_kwargs = {"pool_pre_ping": True, "connect_args": CLIENT_KEEPALIVES}
    try:
        # Optuna creates its tables on first use; two workers doing it at once on a new database collide.
        with server_lock(url, "schema"), warnings.catch_warnings():
            # heartbeats and the retry callback are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                engine_url(url), engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace,
                **{_retry_argument(): retry_callback() if interval else None},
            )
    except SearchError:
        raise
    except ImportError as exc:
        raise SearchError(f"storage {masked_url(url)}: {exc} (install the database driver)") from None
    except Exception as exc:  # sqlalchemy errors: bad URL, unreachable server, ...
        mapped = storage_error(exc, masked_url(url))
        if mapped is not None:
            raise mapped from None
        raise SearchError(f"cannot open storage {masked_url(url)}: {type(exc).__name__}: {_first_line(exc, url)}") from None
    if url.startswith("sqlite"):
        _sqlite_pragmas(storage)
    return storage


def _heartbeat(heartbeat: Any) -> tuple[int | None, int | None]:
    if heartbeat is True:
        return HEARTBEAT_INTERVAL, GRACE_PERIOD
    if not heartbeat:
        return None, None
    return heartbeat.interval, heartbeat.grace


def _first_line(exc: BaseException, url: str) -> str:
    """The first line of a driver's error, the password masked even where the driver quotes the URL or its parts."""
    text = shown_url(str(exc).splitlines()[0] if str(exc) else "")
    password = url_password(url)
    # A driver may quote the password alone; a very short one would mask unrelated letters.
    return text.replace(password, "***") if password and len(password) >= 4 else text


@functools.cache
def _retry_argument() -> str:
    # Optuna 4.9 renamed RDBStorage's failed_trial_callback; the older name serves the releases before.
    import inspect

    import optuna

    parameters = inspect.signature(optuna.storages.RDBStorage).parameters
    return "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in parameters else "failed_trial_callback"


def stale_trial_callback(storage: Any) -> Any:
    """The retry callback ``storage`` was opened with (``None`` for a storage without heartbeats)."""
    for name in ("get_heartbeat_stale_trial_callback", "get_failed_trial_callback"):
        if hasattr(storage, name):
            return getattr(storage, name)()
    return None


def retry_callback() -> Any:
    """Optuna's callback that queues a stale trial's parameters (and attributes) again, up to :data:`MAX_RETRY` times."""
    import optuna

    from archforge.search.records import retry_callback_class

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return retry_callback_class()(max_retry=MAX_RETRY)


def _sqlite_pragmas(storage: Any) -> None:
    """WAL lets workers read while one writes; NORMAL sync survives a killed process (not a power cut)."""
    import sqlalchemy

    def on_connect(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()


def study_names(storage: Any) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


# --------------------------------------------------------------------------- opening runs


def run_url(source: str | os.PathLike[str]) -> str:
    """The storage URL of a run: ``source`` is a run folder, a ``.db`` file or a storage URL (which must exist)."""
    text = str(source)
    if "://" in text:
        check_server_url(text)
        db = sqlite_path(text)
        if db is not None and not db.exists():  # reading a run never creates a store
            raise SearchError(f"no search run at {source}: {db} does not exist")
        return text
    path = Path(source)
    if path.is_dir():
        path = path / STUDY_FILE
    if not path.exists():
        raise SearchError(f"no search run at {source}: expected a run folder (runs/<name>), a study.db or a storage URL")
    return f"sqlite:///{path.resolve()}"


def load_run_study(source: str | os.PathLike[str], study_name: str | None = None) -> Any:
    """The study of a finished or running search: a run folder, a ``.db`` file or a storage URL."""
    import optuna

    storage = open_storage(run_url(source), heartbeat=False)
    source = masked_url(str(source))
    names = study_names(storage)
    if study_name is None:
        if len(names) != 1:
            raise SearchError(f"{source} holds {len(names)} studies ({', '.join(names) or 'none'}): name one with --study")
        study_name = names[0]
    elif study_name not in names:
        from archforge.errors import did_you_mean

        raise SearchError(f"no study '{study_name}' in {source}{did_you_mean(study_name, names)}")
    return optuna.load_study(study_name=study_name, storage=storage)
