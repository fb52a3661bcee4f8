"""Readers for data that lives in files: ``.npz`` archives, image folders and torchvision datasets.

Each returns :class:`~archforge.registry.ImageData` (``(N, C, H, W)`` float32 in ``[0, 1]``,
int64 labels ``0..K-1``). Nothing here downloads anything.

Pixel scaling: integer arrays are divided by the largest value of their type
(``uint8`` → 255, ``uint16`` → 65535; other integer types by their maximum value);
float arrays already inside ``[0, 1]`` are kept, other float arrays are min-max
scaled to ``[0, 1]``. The scale does not matter for training (splits are
normalised with the training mean and std) but keeps ``ImageData``'s contract.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from archforge.data.errors import DatasetError
from archforge.errors import did_you_mean
from archforge.registry import ImageData

ArrayLayout = Literal["NCHW", "NHWC", "NHW"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_IMAGE_KEYS = ("x", "images")
_LABEL_KEYS = ("y", "labels")
_CHANNELS = (1, 2, 3, 4)


def guess_layout(shape: Sequence[int]) -> ArrayLayout:
    """``NHW`` for 3-D arrays; for 4-D, the side (axis 1 or last) that looks like 1–4 channels.

    When both are 1–4 long (tiny images), the one that is 1 or 3 wins, else NCHW is
    assumed; pass ``layout=`` to override.
    """
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise DatasetError(f"images must be 3-D (N, H, W) or 4-D (N, C, H, W) / (N, H, W, C), got shape {list(shape)}")
    first, last = shape[1] in _CHANNELS, shape[3] in _CHANNELS
    if first and last:  # tiny images: prefer the axis holding a usual channel count (1 or 3)
        return "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
    if first:
        return "NCHW"
    if last:
        return "NHWC"
    raise DatasetError(f"cannot tell the channel axis of images of shape {list(shape)}: neither axis 1 nor the last has 1-4 channels")


def images_from_array(array: Any, layout: ArrayLayout | None = None) -> torch.Tensor:
    """An image array (numpy or torch; NCHW, NHWC or NHW; integer or float) as ``(N, C, H, W)`` float32 in ``[0, 1]``."""
    data = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise DatasetError(f"images must be integer or float arrays, got dtype {data.dtype}")
    layout = layout or guess_layout(data.shape)
    if layout == "NHW":
        if data.ndim != 3:
            raise DatasetError(f"layout NHW needs a 3-D array, got shape {list(data.shape)}")
        data = data[:, None]
    elif layout == "NHWC":
        if data.ndim != 4:
            raise DatasetError(f"layout NHWC needs a 4-D array, got shape {list(data.shape)}")
        data = data.transpose(0, 3, 1, 2)
    elif layout != "NCHW" or data.ndim != 4:
        raise DatasetError(f"layout must be NCHW, NHWC or NHW for an array of shape {list(data.shape)}, got {layout!r}")
    if np.issubdtype(data.dtype, np.integer):
        top = np.iinfo(data.dtype).max if data.dtype in (np.uint8, np.uint16) else max(int(data.max(initial=0)), 1)
        images = torch.from_numpy(np.ascontiguousarray(data).astype(np.float32)) / float(top)
    else:
        images = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        if not torch.isfinite(images).all():
            raise DatasetError("images contain NaN or infinite values")
        low, high = (float(images.min()), float(images.max())) if images.numel() else (0.0, 1.0)
        if low < 0.0 or high > 1.0:
            images = (images - low) / max(high - low, 1e-12)
    return images.contiguous()


def labels_from_array(array: Any, classes: Sequence[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Labels as int64 ``0..K-1`` plus class names.

    Integer labels that already are ``0..K-1`` are kept (names ``"0".."K-1"`` unless given);
    anything else (strings, sparse integers) is mapped through its sorted unique values,
    which become the class names.
    """
    data = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if data.ndim != 1:
        raise DatasetError(f"labels must be 1-D, got shape {list(data.shape)}")
    if np.issubdtype(data.dtype, np.floating) and np.all(np.mod(data, 1) == 0):
        data = data.astype(np.int64)
    if np.issubdtype(data.dtype, np.integer) and data.size and data.min() >= 0:
        count = int(data.max()) + 1
        names = list(classes) if classes is not None else [str(i) for i in range(count)]
        if len(names) >= count:
            return torch.from_numpy(data.astype(np.int64)), [str(n) for n in names]
    values, index = np.unique(data, return_inverse=True)
    names = [str(v) for v in values] if classes is None or len(classes) != len(values) else [str(c) for c in classes]
    return torch.from_numpy(index.astype(np.int64).reshape(-1)), names


def load_npz(path: str | os.PathLike[str], *, layout: ArrayLayout | None = None) -> ImageData:
    """Read ``path``: images under ``x`` or ``images``, labels under ``y`` or ``labels``, optional ``classes``."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"no such file: {path}") from None
    except Exception as exc:
        raise DatasetError(f"cannot read {path} as an .npz archive: {type(exc).__name__}: {exc}") from None
    with archive:
        keys = list(archive.files)
        image_key = next((k for k in _IMAGE_KEYS if k in keys), None)
        label_key = next((k for k in _LABEL_KEYS if k in keys), None)
        if image_key is None or label_key is None:
            raise DatasetError(f"{path} must hold images under 'x' or 'images' and labels under 'y' or 'labels'; it has {keys}")
        try:
            images, labels = archive[image_key], archive[label_key]
            classes = [str(c) for c in archive["classes"]] if "classes" in keys else None
        except ValueError as exc:  # object arrays need pickle, which is refused
            raise DatasetError(f"cannot read {path}: {exc}") from None
    if len(images) != len(labels):
        raise DatasetError(f"{path}: {len(images)} images but {len(labels)} labels")
    targets, names = labels_from_array(labels, classes)
    return ImageData(images_from_array(images, layout), targets, names)


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    mode: Literal["L", "RGB"] | None = None,
    size: tuple[int, int] | None = None,
) -> ImageData:
    """Read ``root/<class>/*.png|jpg|...`` with Pillow; class names are the sorted sub-folder names.

    ``mode``: ``"L"`` (grayscale) or ``"RGB"``; by default grayscale when every image is
    grayscale, RGB otherwise. ``size``: ``(height, width)`` to resize every image to;
    by default all images must have the same size.
    """
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("reading an image folder needs Pillow: pip install pillow") from None
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"image folder {root} has no class sub-folders (expected {root}/<class>/*.png)")
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(folders):
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not found:
            raise DatasetError(f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        files.extend((p, label) for p in found)

    pictures = []
    for path, _ in files:
        try:
            with Image.open(path) as picture:
                picture.load()
                pictures.append(picture)
        except Exception as exc:
            raise DatasetError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
    if mode is None:
        mode = "L" if all(p.mode in ("1", "L", "LA", "I", "I;16", "F") for p in pictures) else "RGB"
    arrays = []
    for (path, _), picture in zip(files, pictures):
        picture = picture.convert(mode)
        if size is not None:
            picture = picture.resize((size[1], size[0]), Image.BILINEAR)
        arrays.append(np.asarray(picture, dtype=np.uint8))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first, second = sorted(shapes)[:2]
        raise DatasetError(f"images in {root} have different sizes (e.g. {first[:2]} and {second[:2]}); pass size=(height, width) to resize")
    stacked = np.stack(arrays)
    images = images_from_array(stacked, "NHW" if mode == "L" else "NHWC")
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageData(images, labels, [f.name for f in folders])


TORCHVISION_ROOT_ENV = "ARCHFORGE_DATA_ROOT"


def torchvision_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``$ARCHFORGE_DATA_ROOT``, else ``<cache dir>/torchvision``."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(TORCHVISION_ROOT_ENV):
        return Path(os.environ[TORCHVISION_ROOT_ENV]).expanduser()
    from archforge.data.cache import cache_dir

    return cache_dir() / "torchvision"


def load_torchvision(name: str, *, root: str | os.PathLike[str] | None = None, train: bool = True, **kwargs: Any) -> ImageData:
    """The training split of ``torchvision.datasets.<name>`` read from ``root`` (never downloaded).

    The files must already be under ``root`` (see :func:`torchvision_root`); the search
    splits that training set into its own train and validation parts.
    """
    try:
        import torchvision.datasets as tv_datasets
    except ImportError:
        raise DatasetError(f"'torchvision:{name}' needs torchvision, which is not installed (pip install torchvision)") from None
    cls = getattr(tv_datasets, name, None)
    if not isinstance(cls, type):
        known = [n for n in dir(tv_datasets) if isinstance(getattr(tv_datasets, n, None), type) and not n.startswith("_")]
        raise DatasetError(f"torchvision has no dataset '{name}'{did_you_mean(name, known)}")
    where = torchvision_root(root)
    params = inspect.signature(cls).parameters
    options: dict[str, Any] = dict(kwargs)
    if "download" in params:
        options["download"] = False
    if "train" in params:
        options.setdefault("train", train)
    elif "split" in params:
        options.setdefault("split", "train" if train else "test")
    try:
        dataset = cls(str(where), **options)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        raise DatasetError(
            f"torchvision dataset {name} not found under {where} (archforge never downloads: put the files there, "
            f"pass root=..., or set ${TORCHVISION_ROOT_ENV}): {exc}"
        ) from None
    return _from_torchvision(dataset, name)


def _from_torchvision(dataset: Any, name: str) -> ImageData:
    classes = [str(c) for c in getattr(dataset, "classes", [])] or None
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = getattr(dataset, "labels", None)
    if data is not None and targets is not None and len(data) == len(targets):
        images = images_from_array(data)
        labels, names = labels_from_array(np.asarray(targets), classes)
        return ImageData(images, labels, names)
    # Generic path: index the dataset (slow, but works for any map-style dataset of PIL images/arrays).
    arrays, labels_list, tensors = [], [], False
    for i in range(len(dataset)):
        picture, label = dataset[i]
        tensors = isinstance(picture, torch.Tensor)
        arrays.append(picture.numpy() if tensors else np.asarray(picture))
        labels_list.append(int(label))
    if not arrays:
        raise DatasetError(f"torchvision dataset {name} is empty")
    stacked = np.stack(arrays)
    images = images_from_array(stacked, "NCHW" if tensors and stacked.ndim == 4 else None)
    labels, names = labels_from_array(np.asarray(labels_list), classes)
    return ImageData(images, labels, names)
