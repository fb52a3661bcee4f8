"""Where a search keeps its trials: an Optuna storage, by default one SQLite file per run.

``runs/<name>/study.db`` holds the study; every trial carries, as user attributes, the
concrete spec it evaluated (``candidate``), the worker that ran it (``worker``), one
result per training seed as soon as that seed finishes (``seed_<s>``) and, once it is
done, its ``outcome`` (status, metrics, error, epochs run). The study itself carries the
space text and the settings (``archforge``), so a run can be resumed and reported from
the storage alone, e.g. from a PostgreSQL database shared by many machines.

A trial that is ``FAIL`` without an ``outcome`` was left behind by a dead worker
(``kill -9``, a lost machine): it is *stale*, and its candidate is retried.

Faults. Only a file that already is an Optuna store (or a new one) is ever opened as
one; a storage failure (read-only or full disk, I/O error) is one-line
:class:`SearchError` saying that the trials recorded so far are kept and how to resume;
what is read back is checked, and a tampered trial is reported as ``unreadable``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import math
import os
import re
import socket
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from archforge.errors import SpecError

RUNS_DIR = "runs"
STUDY_FILE = "study.db"
META_KEY = "archforge"
PROXY_KEY = "archforge_proxy"
#: Seconds between heartbeats of a running trial, and after which a silent one is stale.
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 120

COUNTED = ("complete", "failed", "pruned")
#: Longest run name (it is a folder name).
MAX_NAME = 100
#: Longest text read back from a stored trial (an error message, a decision value) before it is unreadable.
MAX_TEXT = 10_000
_SQLITE_MAGIC = b"SQLite format 3\x00"
_HASH = re.compile(r"^[0-9a-f]{12}$")


class SearchError(SpecError):
    """A search that cannot run as asked (settings, storage, an incompatible run to resume)."""

    def format(self) -> str:
        return super().format() if self.location is not None else f"error: {self.message}"


# --------------------------------------------------------------------------- storage


@dataclass
class StorageRef:
    """How to reach a study: a URL (or ``memory``), the study name and the run folder for outputs."""

    url: str
    study_name: str
    run_dir: Path | None

    @property
    def persistent(self) -> bool:
        return self.url != "memory"


def check_run_name(name: Any) -> str:
    """``name`` if it is one safe folder name, else a :class:`SearchError` saying what to use."""
    if not isinstance(name, str) or not name.strip():
        raise SearchError(f"run name {name!r} is empty: give a name with letters or digits (--name)")
    bad = next((c for c in ("/", "\\", "\0") if c in name), None)
    if bad is not None or set(name) <= {"."} or name != name.strip() or any(ord(c) < 32 for c in name):
        raise SearchError(f"run name {name!r} is not one folder name inside the runs folder: use letters, digits, '_', '-' or '.' (--name)")
    if len(name) > MAX_NAME:
        raise SearchError(f"run name of {len(name)} characters is too long: at most {MAX_NAME} (--name)")
    return name


def resolve_storage(storage: Any, name: str, runs_dir: str | os.PathLike[str] = RUNS_DIR, *,
                    from_spec: bool = False) -> tuple[StorageRef, Any]:
    """Turn ``storage`` (``None``, a URL, a ``.db`` path, ``"memory"`` or an Optuna storage) into a reference.

    Returns the reference and the storage object to use in this process. ``from_spec``: the
    storage was written in a space file, which may only name a database server or a file
    inside the working folder or the runs folder (symbolic links followed).
    """
    from optuna.storages import BaseStorage, InMemoryStorage

    check_run_name(name)
    runs = Path(runs_dir)
    if isinstance(storage, BaseStorage):
        url = getattr(storage, "url", None) or "memory"
        return StorageRef(url, name, runs / name), storage
    if storage in ("memory", ":memory:"):
        return StorageRef("memory", name, runs / name), InMemoryStorage()
    if storage is None:
        _make_folder(runs, "runs folder")
        path = _make_folder(runs / name, "run folder").resolve() / STUDY_FILE
        url = f"sqlite:///{path}"
    elif "://" in str(storage):
        url = str(storage)
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
    with store_lock(url):
        if db is not None:
            # Under the lock: a store another search is creating right now is briefly empty or half-made.
            check_store_file(db)
        return StorageRef(url, name, run_dir), open_storage(url)


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


@contextmanager
def store_lock(url: str) -> Iterator[None]:
    """Serialise opening and creating a SQLite store: concurrent schema creation fails in SQLAlchemy/Alembic."""
    path = sqlite_path(url)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): Optuna's own retries only
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None or not path.parent.is_dir():
        yield
        return
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise SearchError(f"cannot create {path}.lock next to the store: {exc.strerror or exc}; "
                          "give a folder you can write (--storage, --runs)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def claim_store(url: str) -> tuple[int | None, bool]:
    """Mark this process as a user of the SQLite store ``url``; whether no other process on this machine uses it.

    Each driver and worker holds a shared lock on ``<db>.alive`` while it runs; a trial left
    ``RUNNING`` with no worker recorded can then be failed at once when nobody else holds it.
    Returns the descriptor to keep open (``None`` when this cannot be told: not SQLite, no flock).
    """
    path = sqlite_path(url)
    try:
        import fcntl
    except ImportError:
        return None, False
    if path is None or not path.parent.is_dir():
        return None, False
    try:
        fd = os.open(f"{path}.alive", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None, False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
    except OSError:
        alone = False
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd, alone


def sole_user(claim: int) -> bool:
    """Whether the process holding ``claim`` (from :func:`claim_store`) is now the only user of the store."""
    import fcntl

    try:
        fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    fcntl.flock(claim, fcntl.LOCK_SH)
    return True


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
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        reason = next((r for key, r in _FAULTS if key in text), None)
        if reason is None and isinstance(current, OSError) and current.errno in _ERRNOS:
            reason = _ERRNOS[current.errno]
        if reason is not None:
            detail = str(current).splitlines()[0][:200] if str(current) else type(current).__name__
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


def open_storage(url: str, *, heartbeat: bool = True) -> Any:
    """An Optuna storage for ``url``: SQLite in WAL mode with a generous lock timeout, heartbeats on."""
    import optuna
    from optuna.storages import InMemoryStorage

    if url == "memory":
        return InMemoryStorage()
    if sqlite_path(url) is not None:
        check_store_file(sqlite_path(url))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL if heartbeat else None,
            grace_period=GRACE_PERIOD if heartbeat else None,
        )
    except ImportError as exc:
        raise SearchError(f"storage {url}: {exc} (install the database driver)") from None
    except Exception as exc:  # sqlalchemy errors: bad URL, unreachable server, ...
        mapped = storage_error(exc, url)
        if mapped is not None:
            raise mapped from None
        raise SearchError(f"cannot open storage {url}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if url.startswith("sqlite"):
        _sqlite_pragmas(storage)
    return storage


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


# --------------------------------------------------------------------------- workers and liveness


#: Worker sessions running in this process; a trial of this process from another session was left behind.
LIVE_SESSIONS: set[str] = set()


def worker_info(index: int = 0) -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid), "index": index, "session": uuid.uuid4().hex[:12]}


def _process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return None


def _process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def worker_alive(info: Any) -> bool | None:
    """Whether the worker process is alive; ``None`` when it ran on another host (ask the heartbeat)."""
    if not isinstance(info, dict):
        return None
    if info.get("host") != socket.gethostname():
        return None
    try:
        pid = int(info.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    if pid == os.getpid() and info.get("session") is not None:  # e.g. a search() that failed earlier in this process
        return info.get("session") in LIVE_SESSIONS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _process_state(pid) in ("Z", "X"):
        return False
    start = info.get("start")
    return start is None or _process_start(pid) in (None, start)


# --------------------------------------------------------------------------- records


@dataclass
class TrialRecord:
    """One stored trial, as the report and the search result show it."""

    number: int
    state: str
    status: str
    hash: str | None = None
    decisions: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] | None = None
    accuracy: float | None = None
    accuracy_std: float | None = None
    accuracies: list[float] = field(default_factory=list)
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    peak_memory_mb: float | None = None
    train_time_s: float | None = None
    epochs_run: int = 0
    epochs_full: int = 0
    error: str | None = None
    duplicate_of: int | None = None
    retry_of: int | None = None
    parent: int | None = None
    mutated: str | None = None
    proxy_score: float | None = None
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: list[float] | None = None
    driver_time_s: float | None = None
    eval_time_s: float | None = None
    started: str | None = None
    finished: str | None = None
    worker: dict[str, Any] | None = None

    @property
    def counted(self) -> bool:
        """An evaluation of its own (not a reuse, rejection, stale or cancelled trial)."""
        return self.status in COUNTED and self.duplicate_of is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_of(trial: Any) -> TrialRecord:
    """A :class:`TrialRecord` from an Optuna ``FrozenTrial``; status ``unreadable`` when its attributes were tampered with."""
    from optuna.trial import TrialState

    problem = unreadable(trial)
    if problem is not None:
        return TrialRecord(number=trial.number, state=trial.state.name, status="unreadable", error=problem,
                           started=_iso(trial.datetime_start), finished=_iso(trial.datetime_complete))
    attrs = trial.user_attrs
    outcome = attrs.get("outcome") or {}
    candidate = attrs.get("candidate") or {}
    if outcome:
        status = outcome.get("status", "complete")
    elif trial.state == TrialState.RUNNING:
        status = "running"
    elif trial.state == TrialState.WAITING:
        status = "waiting"
    else:
        status = "stale"
    seeds = {k[len("seed_"):]: v for k, v in attrs.items() if k.startswith("seed_") and isinstance(v, dict)}
    proxy = attrs.get("proxy") or {}
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        status=status,
        hash=candidate.get("hash"),
        decisions=candidate.get("decisions") or {},
        spec=candidate.get("spec"),
        accuracy=_num(outcome.get("accuracy")),
        accuracy_std=_num(outcome.get("accuracy_std")),
        accuracies=[a for a in outcome.get("accuracies", []) if a is not None],
        params=outcome.get("params", candidate.get("params")),
        flops=outcome.get("flops", candidate.get("flops")),
        latency_ms=_num(outcome.get("latency_ms")),
        peak_memory_mb=_num(outcome.get("peak_memory_mb")),
        train_time_s=_num(outcome.get("train_time_s")),
        epochs_run=int(outcome.get("epochs_run", 0) or 0) if outcome else sum(int(s.get("epochs_run", 0) or 0) for s in seeds.values()),
        epochs_full=int(outcome.get("epochs_full", 0) or 0),
        error=outcome.get("error"),
        duplicate_of=outcome.get("duplicate_of"),
        retry_of=attrs.get("retry_of"),
        parent=attrs.get("parent"),
        mutated=attrs.get("mutated"),
        proxy_score=_num(proxy.get("score")),
        seeds=seeds,
        values=list(trial.values) if trial.values is not None else None,
        driver_time_s=_num(outcome.get("driver_time_s")),
        eval_time_s=_num(outcome.get("eval_time_s")),
        started=_iso(trial.datetime_start),
        finished=_iso(trial.datetime_complete),
        worker=attrs.get("worker"),
    )


_STATUSES = ("complete", "failed", "pruned", "rejected", "cancelled")
_FLOATS = ("accuracy", "accuracy_std", "latency_ms", "peak_memory_mb", "train_time_s", "driver_time_s", "eval_time_s")


def unreadable(trial: Any) -> str | None:
    """Why the archforge attributes of a stored trial cannot be trusted, or ``None`` when they can.

    Checks the types and ranges of what archforge wrote (a store can be edited by hand or by
    another program): the candidate hash against its spec, the status, the metrics (finite
    numbers, whole counts), the trial links, and the length of every text.
    """
    attrs = trial.user_attrs
    try:
        candidate = attrs.get("candidate")
        if candidate is not None:
            if not isinstance(candidate, dict):
                return "its candidate is not a mapping"
            key, spec = candidate.get("hash"), candidate.get("spec")
            if not isinstance(key, str) or not _HASH.match(key):
                return f"its candidate hash {_short(key)} is not 12 hex digits"
            if not isinstance(spec, dict):
                return "its candidate spec is missing or not a mapping"
            from archforge.search.space import candidate_hash

            if candidate_hash(spec) != key:
                return f"its candidate hash {key} does not match its spec ({candidate_hash(spec)})"
            if not isinstance(candidate.get("decisions", {}), dict):
                return "its decisions are not a mapping"
            if _too_long(candidate.get("decisions", {})):
                return f"a decision value is longer than {MAX_TEXT:,} characters"
        outcome = attrs.get("outcome")
        if outcome is not None:
            if not isinstance(outcome, dict):
                return "its outcome is not a mapping"
            if outcome.get("status", "complete") not in _STATUSES:
                return f"its status {_short(outcome.get('status'))} is none of {', '.join(_STATUSES)}"
            if outcome.get("status") in ("complete", "failed", "pruned") and candidate is None:
                return "it has an outcome but no candidate"
            for name in _FLOATS:
                value = outcome.get(name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                    return f"its {name} {_short(value)} is not a finite number"
            if outcome.get("status", "complete") == "complete" and outcome.get("accuracy") is None:
                return "it is complete but has no accuracy"
            accuracies = outcome.get("accuracies", [])
            if not isinstance(accuracies, list) or not all(a is None or (isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)) for a in accuracies):
                return "its accuracies are not a list of finite numbers"
            for name in ("params", "flops", "epochs_run", "epochs_full", "duplicate_of"):
                if not _count(outcome.get(name)):
                    return f"its {name} {_short(outcome.get(name))} is not a whole number"
            if outcome.get("error") is not None and not isinstance(outcome.get("error"), str):
                return "its error is not a text"
            if _too_long(outcome):
                return f"a text in its outcome is longer than {MAX_TEXT:,} characters"
        for name in ("retry_of", "parent"):
            if not _count(attrs.get(name)):
                return f"its {name} {_short(attrs.get(name))} is not a trial number"
        if attrs.get("mutated") is not None and not (isinstance(attrs["mutated"], str) and len(attrs["mutated"]) <= MAX_TEXT):
            return "its mutation is not a short text"
        proxy = attrs.get("proxy")
        if proxy is not None and (not isinstance(proxy, dict) or (proxy.get("score") is not None and _num(proxy.get("score")) is None)):
            return "its proxy score is not a number"
        for name, value in attrs.items():
            if name.startswith("seed_") and isinstance(value, dict) and not _count(value.get("epochs_run")):
                return f"its {name}.epochs_run {_short(value.get('epochs_run'))} is not a whole number"
        if attrs.get("worker") is not None and not isinstance(attrs["worker"], dict):
            return "its worker is not a mapping"
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
        return f"its attributes cannot be read ({type(exc).__name__})"
    return None


def _count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63)


def _too_long(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return len(value) > MAX_TEXT
    if depth > 20:
        return True
    if isinstance(value, dict):
        return any(_too_long(k, depth + 1) or _too_long(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_too_long(v, depth + 1) for v in value)
    return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _iso(value: _dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def records(study: Any) -> list[TrialRecord]:
    return [record_of(t) for t in study.get_trials(deepcopy=False)]


# --------------------------------------------------------------------------- opening runs


def load_run_study(source: str | os.PathLike[str], study_name: str | None = None) -> Any:
    """The study of a finished or running search: a run folder, a ``.db`` file or a storage URL."""
    import optuna

    text = str(source)
    if "://" in text:
        url = text
        db = sqlite_path(url)
        if db is not None and not db.exists():  # reading a run never creates a store
            raise SearchError(f"no search run at {source}: {db} does not exist")
    else:
        path = Path(source)
        if path.is_dir():
            path = path / STUDY_FILE
        if not path.exists():
            raise SearchError(f"no search run at {source}: expected a run folder (runs/<name>), a study.db or a storage URL")
        url = f"sqlite:///{path.resolve()}"
    storage = open_storage(url, heartbeat=False)
    names = study_names(storage)
    if study_name is None:
        if len(names) != 1:
            raise SearchError(f"{source} holds {len(names)} studies ({', '.join(names) or 'none'}): name one with --study")
        study_name = names[0]
    elif study_name not in names:
        from archforge.errors import did_you_mean

        raise SearchError(f"no study '{study_name}' in {source}{did_you_mean(study_name, names)}")
    return optuna.load_study(study_name=study_name, storage=storage)


def wait_for(predicate: Any, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def iter_finished(trials: Iterable[Any]) -> Iterable[Any]:
    return (t for t in trials if t.state.is_finished())
