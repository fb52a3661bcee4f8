"""Locks that let many processes share one study store: file locks for SQLite, advisory locks for PostgreSQL.

- :func:`store_lock`: serialises creating a SQLite store (concurrent schema creation fails in
  SQLAlchemy/Alembic) and the check that a file is a store;
- :func:`study_lock`: serialises the claims of one study's workers (a candidate claimed for
  training, :func:`archforge.search.cache.claim`), on one machine (SQLite) or on many (a
  PostgreSQL advisory lock: the server releases it when a worker's connection dies, so a killed
  worker never leaves it taken); :func:`server_lock` is the PostgreSQL half, also used while
  Optuna creates its tables on a new database;
- :func:`claim_store` / :func:`sole_user`: every driver and worker holds a shared lock on
  ``<db>.alive`` while it runs. A process that can take it exclusively knows that no other
  process on this machine uses the store, so every trial still ``RUNNING`` there was left by a
  dead process and can be failed and retried at once, without waiting for its heartbeat to go
  stale. Across machines (PostgreSQL) the heartbeats alone decide.
"""

from __future__ import annotations

import hashlib
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from archforge.errors import SearchError


@contextmanager
def store_lock(path: Path | None) -> Iterator[None]:
    """Serialise opening and creating the SQLite store ``path`` (nothing to lock for ``None``: a server or memory)."""
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


@contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Hold the lock of study ``study_name`` in the store at ``url`` (nothing to lock in memory)."""
    from archforge.search.storage import sqlite_path

    path = sqlite_path(url)
    if path is not None:
        with store_lock(path):
            yield
    else:
        with server_lock(url, f"study:{study_name}"):
            yield


_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


@contextmanager
def server_lock(url: str, name: str) -> Iterator[None]:
    """Hold the PostgreSQL advisory lock ``name`` on the server at ``url``; nothing for other stores.

    A session lock on a connection of its own: it is released when the block ends, or by the
    server when this process dies and its connection drops.
    """
    from archforge.search.urls import CLIENT_KEEPALIVES, engine_url, is_postgres

    if not is_postgres(url):
        yield
        return
    import sqlalchemy

    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = sqlalchemy.create_engine(engine_url(url), pool_size=1, max_overflow=2, pool_pre_ping=True,
                                                                connect_args=CLIENT_KEEPALIVES)
            sqlalchemy.event.listen(engine, "connect", _drop_dead_holders)
    key = int.from_bytes(hashlib.sha256(f"archforge:{name}".encode()).digest()[:8], "big", signed=True)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield
        finally:
            try:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
            except sqlalchemy.exc.DBAPIError:
                # The connection died (a server restart): the server released the lock with it.
                connection.invalidate()


def _drop_dead_holders(dbapi_connection: Any, record: Any) -> None:
    """Keepalives on the lock's session: a machine that vanished holding the lock loses it within ~30 s, not hours."""
    cursor = dbapi_connection.cursor()
    for setting, value in (("tcp_keepalives_idle", 10), ("tcp_keepalives_interval", 5), ("tcp_keepalives_count", 3)):
        cursor.execute(f"SET {setting} = {value}")
    cursor.close()
    dbapi_connection.commit()


def claim_store(path: Path | None) -> tuple[int | None, bool]:
    """Mark this process as a user of the SQLite store ``path``; whether no other process on this machine uses it.

    Each driver and worker holds a shared lock on ``<db>.alive`` while it runs (the descriptor
    returned; closing it releases the lock). Returns the descriptor to keep open (``None`` when this cannot be told: not SQLite, no flock).
    """
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
        fcntl.flock(claim, fcntl.LOCK_SH)  # flock(2) drops the shared lock when the upgrade fails: take it back
        return False
    fcntl.flock(claim, fcntl.LOCK_SH)
    return True
