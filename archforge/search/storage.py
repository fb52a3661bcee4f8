"""Where a search keeps its trials: an Optuna storage, by default one SQLite file per run.

``runs/<name>/study.db`` holds the study; every trial carries, as user attributes, the
concrete spec it evaluated (``candidate``), the worker that ran it (``worker``), one
result per training seed as soon as that seed finishes (``seed_<s>``) and, once it is
done, its ``outcome`` (status, metrics, error, epochs run). The study itself carries the
space text and the settings (``archforge``), so a run can be resumed and reported from
the storage alone, e.g. from a PostgreSQL database shared by many machines.

A trial that is ``FAIL`` without an ``outcome`` was left behind by a dead worker
(``kill -9``, a lost machine): it is *stale*, and its candidate is retried.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from archforge.errors import SpecError

RUNS_DIR = "runs"
STUDY_FILE = "study.db"
META_KEY = "archforge"
PROXY_KEY = "archforge_proxy"
#: Seconds between heartbeats of a running trial, and after which a silent one is stale.
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 120

COUNTED = ("complete", "failed", "pruned")


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


def resolve_storage(storage: Any, name: str, runs_dir: str | os.PathLike[str] = RUNS_DIR) -> tuple[StorageRef, Any]:
    """Turn ``storage`` (``None``, a URL, a ``.db`` path, ``"memory"`` or an Optuna storage) into a reference.

    Returns the reference and the storage object to use in this process.
    """
    from optuna.storages import BaseStorage, InMemoryStorage

    runs = Path(runs_dir)
    if isinstance(storage, BaseStorage):
        url = getattr(storage, "url", None) or "memory"
        return StorageRef(url, name, runs / name), storage
    if storage in ("memory", ":memory:"):
        return StorageRef("memory", name, runs / name), InMemoryStorage()
    if storage is None:
        path = (runs / name / STUDY_FILE).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    elif "://" in str(storage):
        url = str(storage)
    else:
        path = Path(storage)
        if path.is_dir() or not path.suffix:
            path = path / STUDY_FILE
        path = path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    run_dir = sqlite_path(url).parent if sqlite_path(url) is not None else runs / name
    return StorageRef(url, name, run_dir), open_storage(url)


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    return None


def open_storage(url: str, *, heartbeat: bool = True) -> Any:
    """An Optuna storage for ``url``: SQLite in WAL mode with a generous lock timeout, heartbeats on."""
    import optuna
    from optuna.storages import InMemoryStorage

    if url == "memory":
        return InMemoryStorage()
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


def worker_info(index: int = 0) -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid), "index": index}


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


def worker_alive(info: dict[str, Any]) -> bool | None:
    """Whether the worker process is alive; ``None`` when it ran on another host (ask the heartbeat)."""
    if info.get("host") != socket.gethostname():
        return None
    pid = int(info.get("pid", -1))
    if pid <= 0:
        return False
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
    """A :class:`TrialRecord` from an Optuna ``FrozenTrial``."""
    from optuna.trial import TrialState

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
