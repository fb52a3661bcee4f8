"""Readers for data that lives in files: ``.npz`` archives, image folders and torchvision datasets.

Each returns :class:`~archforge.registry.ImageData` (``(N, C, H, W)`` float32 in ``[0, 1]``,
int64 labels ``0..K-1``). Nothing here downloads anything.

Nothing is read before it is bounded (see :mod:`archforge.data.limits`): the headers of
an ``.npz`` and of every image are checked before any data is decompressed or decoded,
and labels before any list of class names is built.

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
from archforge.data.limits import how_to_raise, resolve
from archforge.data.npz import NpzArchive, check_members
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


def labels_from_array(array: Any, classes: Sequence[str] | None = None, *, max_classes: int | None = None,
                      where: str = "labels") -> tuple[torch.Tensor, list[str]]:
    """Labels as int64 ``0..K-1`` plus class names.

    Integer labels that already are ``0..K-1`` are kept (names ``"0".."K-1"`` unless given);
    other non-negative integers (sparse ones) and strings are mapped through their sorted
    unique values, which become the class names. Negative or fractional numbers are refused,
    and so is any ``K`` over ``max_classes`` (default :data:`~archforge.data.limits.MAX_CLASSES`),
    before a single name is made.
    """
    max_classes = resolve("classes", max_classes)
    data = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if data.ndim != 1:
        raise DatasetError(f"{where} must be 1-D, got shape {list(data.shape)}")
    if data.dtype.hasobject or data.dtype.kind not in "biufUS":
        raise DatasetError(f"{where} must be integers or strings, got dtype {data.dtype}")
    if classes is not None and len(classes) > max_classes:
        raise DatasetError(f"{where}: {len(classes):,} class names, " + how_to_raise("classes", max_classes))
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.all(np.mod(data, 1) == 0):
            bad = data[~(np.isfinite(data) & (np.mod(np.nan_to_num(data), 1) == 0))][0]
            raise DatasetError(f"{where} must be whole class numbers, got {bad!r}")
        if data.size and (data.min() < 0 or data.max() >= 2**62):
            raise DatasetError(f"{where} must be class numbers from 0, got {data.min() if data.min() < 0 else data.max()!r}")
        data = data.astype(np.int64)
    if data.dtype.kind in "iu" and data.size:
        low, high = int(data.min()), int(data.max())
        if low < 0:
            raise DatasetError(f"{where} must be class numbers from 0, got {low}")
        names = list(classes) if classes is not None else None
        if high < max_classes and (names is None or len(names) > high):
            count = high + 1
            names = names if names is not None else [str(i) for i in range(count)]
            return torch.from_numpy(data.astype(np.int64)), [str(n) for n in names]
        if classes is None:  # a label at 10**12 would mean 10**12 class names
            raise DatasetError(f"{where}: a label of {high:,} makes {high + 1:,} classes, " + how_to_raise("classes", max_classes)
                               + "; or number the classes 0..K-1")
    values, index = np.unique(data, return_inverse=True)
    if len(values) > max_classes:
        raise DatasetError(f"{where}: {len(values):,} distinct labels make as many classes, " + how_to_raise("classes", max_classes))
    names = [str(v) for v in values] if classes is None or len(classes) != len(values) else [str(c) for c in classes]
    return torch.from_numpy(index.astype(np.int64).reshape(-1)), names


def load_npz(
    path: str | os.PathLike[str],
    *,
    layout: ArrayLayout | None = None,
    max_bytes: int | None = None,
    max_elements: int | None = None,
    max_classes: int | None = None,
) -> ImageData:
    """Read ``path``: images under ``x`` or ``images``, labels under ``y`` or ``labels``, optional ``classes``.

    The members' headers are checked first (dtype, shapes that agree, at most ``max_elements``
    image elements and ``max_bytes`` decompressed bytes; defaults in :mod:`archforge.data.limits`);
    only then is any data decompressed.
    """
    path = Path(path)
    with NpzArchive(path) as archive:
        keys = archive.keys
        image_key = next((k for k in _IMAGE_KEYS if k in keys), None)
        label_key = next((k for k in _LABEL_KEYS if k in keys), None)
        if image_key is None or label_key is None:
            raise DatasetError(f"{path} must hold images under 'x' or 'images' and labels under 'y' or 'labels'; it has {keys}")
        images_h, labels_h = archive.member(image_key), archive.member(label_key)
        classes_h = archive.member("classes") if "classes" in keys else None
        members = [m for m in (images_h, labels_h, classes_h) if m is not None]
        check_members(path, members, max_bytes=max_bytes, max_elements=max_elements)
        if images_h.dtype.kind not in "biuf":
            raise DatasetError(f"{path}: member '{image_key}' must hold integer or float pixels, got dtype {images_h.dtype}")
        if len(images_h.shape) not in (3, 4):
            raise DatasetError(f"{path}: member '{image_key}' must be 3-D (N, H, W) or 4-D (N, C, H, W) / (N, H, W, C), got shape {list(images_h.shape)}")
        if images_h.shape[0] == 0:
            raise DatasetError(f"{path}: the dataset is empty (member '{image_key}' holds 0 images)")
        if 0 in images_h.shape:
            raise DatasetError(f"{path}: member '{image_key}' has an empty axis: shape {list(images_h.shape)}")
        if len(labels_h.shape) != 1 or labels_h.shape[0] != images_h.shape[0]:
            raise DatasetError(f"{path}: member '{image_key}' holds {images_h.shape[0]:,} images but member '{label_key}' "
                               f"has shape {list(labels_h.shape)}; it needs one label per image")
        if classes_h is not None and (len(classes_h.shape) != 1 or classes_h.dtype.kind not in "US"):
            raise DatasetError(f"{path}: member 'classes' must be a 1-D array of names, got {classes_h.dtype} of shape {list(classes_h.shape)}")
        max_classes = resolve("classes", max_classes)
        if classes_h is not None and classes_h.shape[0] > max_classes:
            raise DatasetError(f"{path}: member 'classes' lists {classes_h.shape[0]:,} names, " + how_to_raise("classes", max_classes))
        images, labels = archive.read(images_h), archive.read(labels_h)
        classes = [str(c) for c in archive.read(classes_h)] if classes_h is not None else None
    targets, names = labels_from_array(labels, classes, max_classes=max_classes, where=f"{path}: member '{label_key}'")
    try:
        pixels = images_from_array(images, layout)
    except DatasetError as exc:
        raise DatasetError(f"{path}: member '{image_key}': {exc.message}") from None
    return ImageData(pixels, targets, names)


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    mode: Literal["L", "RGB"] | None = None,
    size: tuple[int, int] | None = None,
    max_images: int | None = None,
    max_image_pixels: int | None = None,
    max_elements: int | None = None,
    max_classes: int | None = None,
) -> ImageData:
    """Read ``root/<class>/*.png|jpg|...`` with Pillow; class names are the sorted sub-folder names.

    ``mode``: ``"L"`` (grayscale) or ``"RGB"``; by default grayscale when every image is
    grayscale, RGB otherwise. ``size``: ``(height, width)`` to resize every image to;
    by default all images must have the same size. Folders, files, and every image's
    size (read from its header) are checked against the bounds of
    :mod:`archforge.data.limits` before any image is decoded.
    """
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("reading an image folder needs Pillow: pip install pillow") from None
    root = Path(root)
    max_images, max_pixels = resolve("images", max_images), resolve("image_pixels", max_image_pixels)
    max_elements, max_classes = resolve("elements", max_elements), resolve("classes", max_classes)
    if size is not None:
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)):
            raise DatasetError(f"size must be (height, width), two positive integers, got {size!r}")
        if size[0] * size[1] > max_pixels:
            raise DatasetError(f"size {tuple(size)} has {size[0] * size[1]:,} pixels per image, " + how_to_raise("image_pixels", max_pixels))
    folders = _listing(root, lambda p: p.is_dir(), max_classes)
    if len(folders) > max_classes:
        raise DatasetError(f"image folder {root} has more class sub-folders than the bound: " + how_to_raise("classes", max_classes))
    if not folders:
        raise DatasetError(f"image folder {root} has no class sub-folders (expected {root}/<class>/*.png)")
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(folders):
        # regular files only: a FIFO or a device named x.png would block or never end
        found = _listing(folder, lambda p: p.suffix.lower() in IMAGE_SUFFIXES and p.is_file(), max_images - len(files))
        if len(files) + len(found) > max_images:
            raise DatasetError(f"image folder {root} holds more image files than the bound (counting up to {folder}): "
                               + how_to_raise("images", max_images))
        if not found:
            raise DatasetError(f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        files.extend((p, label) for p in found)

    pictures = []
    elements = 0
    for path, _ in files:
        try:
            with Image.open(path) as picture:
                width, height = picture.size  # from the header: nothing decoded yet
                if width * height > max_pixels:
                    raise DatasetError(f"image {path} is {width}x{height}, {width * height:,} pixels, " + how_to_raise("image_pixels", max_pixels))
                elements += (size[0] * size[1] if size is not None else width * height) * 3
                if elements > max_elements:
                    raise DatasetError(f"the images of {root} hold more than {max_elements:,} values (at {path}): "
                                       + how_to_raise("elements", max_elements))
                picture.load()
                pictures.append(picture)
        except DatasetError:
            raise
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


def _listing(folder: Path, keep: Any, limit: int) -> list[Path]:
    """The sorted visible entries of ``folder`` that ``keep`` accepts; listing stops at ``limit + 1`` (the caller refuses more)."""
    found: list[Path] = []
    try:
        for entry in folder.iterdir():
            if not entry.name.startswith(".") and keep(entry):
                found.append(entry)
                if len(found) > limit:
                    break
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from None
    return sorted(found)


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
    max_images = resolve("images", None)
    if len(dataset) > max_images:
        raise DatasetError(f"torchvision dataset {name} has {len(dataset):,} samples to read one by one, " + how_to_raise("images", max_images))
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
