"""``load_dataset``: from a name to a normalised, split :class:`DataSplit`.

A name is resolved in this order:

1. a dataset provided through the ``archforge_datasets`` hook (the built-in ``mnist``
   and ``digits`` come in this way, from :mod:`archforge.data.sources`);
2. ``torchvision:<NAME>``: ``torchvision.datasets.<NAME>`` read from disk (never downloaded);
3. a path to an ``.npz`` file or to an image folder (``root/<class>/*.png``).

Registered names win over paths, so a folder called ``mnist`` in the working directory
does not hide the built-in dataset; write ``./mnist`` to mean the folder.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from archforge.data.errors import DatasetError
from archforge.data.loaders import load_image_folder, load_npz, load_torchvision
from archforge.data.split import DataSplit, make_split
from archforge.errors import did_you_mean
from archforge.registry import ImageData, Registry, default_registry, load_registry

TORCHVISION_PREFIX = "torchvision:"


@functools.lru_cache(maxsize=1)
def _registry_with_builtins() -> Registry:
    """The installed plugins' registry, plus :mod:`archforge.data.sources` if its entry point is not installed.

    The built-ins are announced by the ``datasets`` entry point of archforge's own
    distribution; an editable install made before that entry point existed lacks it,
    and would otherwise not know ``mnist`` and ``digits``.
    """
    registry = default_registry()
    from archforge.data import sources

    if all(s.name in registry.datasets for s in sources.BUILTIN_DATASETS):
        return registry
    return load_registry([("archforge-data", sources)], entry_points=True)


def dataset_registry(registry: Registry | None = None) -> Registry:
    """``registry``, or the default registry with the built-in datasets guaranteed."""
    return registry if registry is not None else _registry_with_builtins()


def available_datasets(registry: Registry | None = None) -> list[str]:
    """The sorted names of the datasets provided through the hook."""
    return sorted(dataset_registry(registry).datasets)


def load_images(name: str, *, registry: Registry | None = None, **options: Any) -> ImageData:
    """The raw :class:`ImageData` behind ``name`` (see the module docstring for how names resolve).

    ``options`` go to the source: ``root=`` for torchvision, ``layout=`` for .npz,
    ``mode=``/``size=`` for image folders, anything a plugin's ``load`` accepts; ``.npz``
    files and image folders also take the bounds of :mod:`archforge.data.limits`
    (``max_bytes=``, ``max_elements=``, ``max_classes=``, ``max_images=``, ``max_image_pixels=``).
    """
    reg = dataset_registry(registry)
    if name in reg.datasets:
        source, plugin = reg.datasets[name]
        try:
            return source.load(**options)
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(f"dataset '{name}' from plugin '{plugin.distribution}' failed to load: {type(exc).__name__}: {exc}") from None
    if name.startswith(TORCHVISION_PREFIX):
        return load_torchvision(name[len(TORCHVISION_PREFIX):], **options)
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        return load_image_folder(path, **options)
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DatasetError(f"cannot read {path}: a dataset file must be an .npz archive (or give an image folder)")
        return load_npz(path, **options)
    if path.exists():  # a FIFO or a device: reading it could block or never end
        raise DatasetError(f"cannot read {path}: not a regular file or folder")
    if path.suffix.lower() == ".npz" or os.sep in name or name.startswith("."):
        raise DatasetError(f"no such file or folder: {name}")
    names = sorted(reg.datasets)
    listed = ", ".join(names) if names else "none registered"
    raise DatasetError(
        f"unknown dataset '{name}'{did_you_mean(name, names)}; available: {listed}, "
        f"or a path to an .npz file or an image folder, or {TORCHVISION_PREFIX}<NAME>"
    )


def load_dataset(
    name: str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> DataSplit:
    """Load ``name`` and return a deterministic stratified train/validation :class:`DataSplit`.

    ``limit`` first keeps a stratified subset of that many samples (for fast tests and
    small budgets); then ``val_fraction`` of each class goes to validation. The same
    ``seed`` gives the same indices; images are normalised per channel with the
    training part's mean and std. Unknown names raise :class:`DatasetError` (a
    ``ValueError``) listing what is available. ``options`` are passed to the source
    (see :func:`load_images`).
    """
    images = load_images(name, registry=registry, **options)
    return make_split(images, name, val_fraction=val_fraction, seed=seed, limit=limit)
