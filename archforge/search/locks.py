"""File locks that let several processes on one machine share a SQLite study store safely.

- :func:`store_lock`: serialises creating a store (concurrent schema creation fails in
  SQLAlchemy/Alembic) and the check that a file is a store;
- :func:`claim_store` / :func:`sole_user`: every driver and worker holds a shared lock on
  ``<db>.alive`` while it runs. A process that can take it exclusively knows that no other
  process on this machine uses the store, so every trial still ``RUNNING`` there was left by a
  dead process and can be failed and retried at once, without waiting for its heartbeat to go
  stale. Across machines (PostgreSQL) the heartbeats alone decide.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
