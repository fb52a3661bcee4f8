"""Writing output files atomically, and refusing to replace one unless asked to.

Every file archforge writes goes through :func:`atomic_output`: the content is written
to a temporary file in the target's directory and renamed over the target only once it
is complete, so the target is never a partial file: it is the previous file or the complete
new one. A failed write (full disk, exporter error, an exception or Ctrl-C in the process)
also removes the temporary file; a process killed outright (SIGKILL, power loss) leaves
its hidden temporary ``.NAME.XXXXXXXX.tmpSUFFIX`` beside the target, to be deleted by hand. Failures are :class:`OSError` whose
``filename`` is the target (never the temporary file) and whose ``strerror`` is one
readable phrase, e.g. ``cannot write: No space left on device``.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

OVERWRITE_HINT = "pass overwrite=True to replace it"


def check_target(path: str | os.PathLike[str], *, overwrite: bool = False, hint: str = OVERWRITE_HINT) -> Path:
    """Raise the :class:`OSError` that writing ``path`` would end in, before any work is done.

    A missing parent directory is fine (it is created); a parent that is a file, a target
    that is a directory or a device, or an existing target without ``overwrite`` are not.
    A symbolic link as target is replaced itself, never written through.
    """
    path = Path(path)
    if "\0" in str(path):  # os functions would raise a bare ValueError
        raise OSError(errno.EINVAL, "cannot write: the name contains a NUL character", str(path).replace("\0", "\\0"))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a file name", str(path))
    try:
        mode = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        # Never even with overwrite: renaming over /dev/null or a pipe would replace the device node itself.
        raise OSError(errno.EEXIST, "is not a regular file (a device, pipe or socket); refusing to replace it", str(path))
    if mode is not None and not overwrite:
        raise FileExistsError(errno.EEXIST, f"already exists; {hint}", str(path))
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"cannot write: '{ancestor}' is a file, not a directory", str(path))
            break
    return path


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = False, hint: str = OVERWRITE_HINT) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without error it becomes ``path``.

    Write the content to the yielded path (it exists, empty, with the target's suffix so
    that writers choosing a format by suffix still work). Without ``overwrite`` an
    existing ``path`` is never replaced, even one created while the content was written.
    """
    target = check_target(path, overwrite=overwrite, hint=hint)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = _create_temp(target)
    except OSError as exc:
        raise _about(exc, target) from None
    try:
        yield temp
        _sync(temp)
        _publish(temp, target, overwrite, hint)
    except OSError as exc:
        raise _about(exc, target) from None
    finally:
        temp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False, hint: str = OVERWRITE_HINT) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, overwrite=overwrite, hint=hint) as temp:
        temp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False, hint: str = OVERWRITE_HINT) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_output`)."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite, hint=hint)


def _create_temp(target: Path) -> Path:
    # A hidden sibling with the same suffix; the name is bounded so that a long target name
    # cannot push it past the file system's name limit.
    for _ in range(100):
        temp = target.with_name(f".{target.name[:64]}.{secrets.token_hex(4)}.tmp{target.suffix[:16]}")
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # 0o666: the umask applies, as for open()
            return temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file next to it", str(target))


def _sync(temp: Path) -> None:
    """Flush to disk, so that a full disk shows up here rather than after the rename."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(temp: Path, target: Path, overwrite: bool, hint: str) -> None:
    if overwrite:
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)  # fails if the target appeared meanwhile: no check-then-replace race
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"already exists; {hint}", str(target)) from None
    except OSError:  # a file system without hard links
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, f"already exists; {hint}", str(target)) from None
        os.replace(temp, target)


def _about(exc: OSError, target: Path) -> OSError:
    """``exc`` said about the target, in one phrase, instead of about the temporary file."""
    if exc.filename == str(target) and exc.strerror and exc.strerror.startswith(("cannot", "already", "is a")):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OSError(exc.errno, f"cannot write: {reason}", str(target))


__all__ = ["OVERWRITE_HINT", "atomic_output", "check_target", "write_bytes", "write_text"]
