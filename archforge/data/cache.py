"""Where decoded datasets are cached, and how a cache file is written safely.

The cache directory is ``$ARCHFORGE_CACHE`` if set, else ``$XDG_CACHE_HOME/archforge``,
else ``~/.cache/archforge``. Files are written to a temporary name in the same
directory and renamed into place, so a concurrent reader (several search workers
starting at once) sees either no file or a complete one, never a partial one.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from archforge.data.npz import read_members
from archforge.files import atomic_output


def cache_dir() -> Path:
    """The directory decoded datasets are cached in (not created here)."""
    explicit = os.environ.get("ARCHFORGE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "archforge"


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or ``None`` when it is absent or unreadable (a corrupt file is ignored)."""
    try:  # the headers are checked first, so a planted or corrupt file cannot make us allocate what it declares
        return read_members(path)
    except Exception:  # absent, truncated, foreign or oversized: behave as if absent, it gets rewritten
        return None


def write_npz_atomic(path: Path, **arrays: np.ndarray) -> bool:
    """Write ``arrays`` to ``path`` atomically (temp file + rename); ``False`` (with a warning) if impossible.

    A read-only or full cache directory is not an error: the data is simply not cached.
    """
    try:
        with atomic_output(path, overwrite=True) as temp, open(temp, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as exc:
        warnings.warn(f"archforge: could not cache {path.name} in {path.parent}: {exc}", RuntimeWarning, stacklevel=2)
        return False
    return True
