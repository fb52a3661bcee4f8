"""Reading ``.npz`` archives without trusting them.

An ``.npz`` is a zip of ``.npy`` members, each a small header (dtype and shape) followed by
the data, usually compressed. A few megabytes of zeros can declare gigabytes, and numpy
allocates what a header declares before it reads a byte. So every member's header is read
through :mod:`zipfile` first and checked against the bounds of :mod:`archforge.data.limits`
(elements, decompressed bytes, dtype); only then is any data decompressed. Object arrays
(pickles) are refused, never loaded.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from archforge.data.errors import DatasetError
from archforge.data.limits import how_to_raise, resolve

#: Bytes an .npy header may take (numpy's own default).
MAX_HEADER_BYTES = 10_000


@dataclass(frozen=True)
class Member:
    """What one ``.npy`` member of an archive declares in its header."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    stored: int  # bytes of data after the header, as the zip entry declares them

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize


class NpzArchive:
    """An open ``.npz`` whose member headers can be inspected before any data is read."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise DatasetError(f"no such file: {self.path}") from None
        except IsADirectoryError:
            raise DatasetError(f"{self.path} is a folder, not an .npz archive") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise DatasetError(f"cannot read {self.path} as an .npz archive (a zip of .npy files): {type(exc).__name__}: {exc}") from None
        self._names = {info.filename.removesuffix(".npy"): info for info in self.zip.infolist() if not info.is_dir()}

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.zip.close()

    @property
    def keys(self) -> list[str]:
        return list(self._names)

    def member(self, key: str) -> Member:
        """The header of member ``key``, checked to be a plain (non-object, non-structured) array."""
        info = self._names[key]
        where = f"{self.path}: member '{key}'"
        try:
            with self.zip.open(info) as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle, max_header_size=MAX_HEADER_BYTES)
                elif version == (2, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle, max_header_size=MAX_HEADER_BYTES)
                else:
                    raise DatasetError(f"{where} is .npy format version {version[0]}.{version[1]}; archforge reads versions 1.0 and 2.0")
                header_end = handle.tell()
        except DatasetError:
            raise
        except Exception as exc:  # not an .npy member, a corrupt header or a broken zip entry
            raise DatasetError(f"{where} is not a readable .npy array: {type(exc).__name__}: {exc}") from None
        # numpy checks that the shape is a tuple of ints, not that they are whole sizes: (-1, 8, 8) would pass on
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise DatasetError(f"{where} declares shape {list(shape)}: every dimension of an array is an integer of 0 or more, "
                               "so the header is corrupt or forged; save the array again (numpy.savez)")
        if dtype.hasobject:
            raise DatasetError(f"{where} holds Python objects (dtype {dtype}), which would need unpickling: archforge never unpickles; store numbers or strings")
        if dtype.fields is not None or dtype.subdtype is not None:
            raise DatasetError(f"{where} has a structured dtype {dtype}: store a plain numeric or string array")
        return Member(key, tuple(int(d) for d in shape), dtype, bool(fortran_order), max(info.file_size - header_end, 0))

    def read(self, member: Member) -> np.ndarray:
        """The data of a checked ``member`` (decompressed only now, in numpy's bounded chunks)."""
        try:
            with self.zip.open(self._names[member.key]) as handle:
                return np.lib.format.read_array(handle, allow_pickle=False, max_header_size=MAX_HEADER_BYTES)
        except Exception as exc:  # a CRC mismatch, a member shorter than its header says
            raise DatasetError(f"{self.path}: cannot read member '{member.key}': {type(exc).__name__}: {exc}") from None


def check_members(path: Path, members: Sequence[Member], *, max_bytes: int | None = None, max_elements: int | None = None) -> None:
    """Refuse members that together declare more than ``max_bytes``, one that declares more than ``max_elements``,
    or one whose entry holds less data than its header declares (checked before numpy allocates it)."""
    max_bytes, max_elements = resolve("bytes", max_bytes), resolve("elements", max_elements)
    for member in members:
        if member.elements > max_elements:
            raise DatasetError(f"{path}: member '{member.key}' declares shape {list(member.shape)}, {member.elements:,} elements, "
                               + how_to_raise("elements", max_elements))
    total = sum(m.nbytes for m in members)
    if total > max_bytes:
        listed = ", ".join(f"'{m.key}' {m.nbytes:,}" for m in members)
        raise DatasetError(f"{path}: the arrays declare {total:,} bytes once decompressed ({listed}), " + how_to_raise("bytes", max_bytes))
    for member in members:
        if member.nbytes > member.stored:
            raise DatasetError(f"{path}: member '{member.key}' declares shape {list(member.shape)} ({member.nbytes:,} bytes) but holds "
                               f"only {member.stored:,} bytes of data: the archive is truncated or forged")


def read_members(path: str | os.PathLike[str], keys: Sequence[str] | None = None, *, max_bytes: int | None = None,
                 max_elements: int | None = None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (default: all) of the archive at ``path``, headers checked before any data is read."""
    with NpzArchive(path) as archive:
        members = [archive.member(k) for k in (archive.keys if keys is None else keys)]
        check_members(archive.path, members, max_bytes=max_bytes, max_elements=max_elements)
        return {m.key: archive.read(m) for m in members}
