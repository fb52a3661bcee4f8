"""Deterministic stratified subsets and train/validation splits, and per-channel normalisation.

Everything is driven by one ``numpy.random.default_rng(seed)`` stream: first the
optional ``limit`` subset, then the split. Within each class the indices are shuffled
and cut, so every class keeps its share in both parts (largest-remainder rounding for
the subset). Normalisation statistics (per-channel mean and population std) come
from the training part only and are applied to both parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from archforge.data.errors import DatasetError
from archforge.data.limits import how_to_raise, resolve
from archforge.registry import ImageData


@dataclass(repr=False)
class DataSplit:
    """A dataset split for one search: normalised tensors resident in memory.

    ``train_x``/``val_x`` are ``(N, C, H, W)`` float32, normalised per channel with the
    training part's ``mean`` and ``std`` (in the ``[0, 1]`` pixel scale of the source);
    ``train_y``/``val_y`` are ``(N,)`` int64 in ``[0, num_classes)``.
    ``train_index``/``val_index`` are the positions of the samples in the source dataset.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    val_index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-sample ``(C, H, W)``: what a spec's ``input.shape`` must be."""
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"DataSplit(name={self.name!r}, train={len(self.train_y)}, val={len(self.val_y)}, "
                f"input_shape={self.input_shape}, classes={self.num_classes})")


def stratified_subset(labels: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``limit`` samples with the class proportions of ``labels`` (largest remainder)."""
    if limit <= 0:
        raise DatasetError(f"limit must be a positive number of samples, got {limit}")
    if limit >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (limit / len(labels))
    quota = np.floor(exact).astype(np.int64)
    # Hand the remaining samples to the largest remainders; ties go to the earlier class.
    order = np.lexsort((np.arange(len(classes)), -(exact - quota)))
    quota[order[: limit - int(quota.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def stratified_split(labels: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, val)`` positions into ``labels``: each class split in the ratio ``val_fraction``.

    A class of two or more samples gets at least one validation and one training
    sample when ``0 < val_fraction < 1``; a class with one sample goes to training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(np.floor(len(members) * val_fraction + 0.5))  # half up, not to even
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        elif len(members) < 2:
            n_val = 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``(N, C, H, W)`` images (std 0 is reported as 1)."""
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).double()
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(images - mean) / std`` per channel, as a new float32 tensor."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((images.float() - m) / s).contiguous()


def check_image_data(data: ImageData, name: str) -> ImageData:
    """``data`` with its contract enforced: 4-D finite float images, 1-D int64 labels in range, class names.

    Labels are checked before any class name is made, so a label of 10**12 is an error, not a list.
    """
    images, labels = data.images, data.labels
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise DatasetError(f"dataset '{name}' must provide torch tensors, got {type(images).__name__} and {type(labels).__name__}")
    if images.dim() == 3:  # (N, H, W): one channel
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise DatasetError(f"dataset '{name}' images must be (N, C, H, W), got shape {list(images.shape)}")
    if images.is_complex():
        raise DatasetError(f"dataset '{name}' images must be real numbers, got dtype {images.dtype}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise DatasetError(f"dataset '{name}' has {len(images)} images but labels of shape {list(labels.shape)}")
    if len(labels) == 0:
        raise DatasetError(f"dataset '{name}' is empty")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DatasetError(f"dataset '{name}' labels must be integer class numbers, got dtype {labels.dtype}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise DatasetError(f"dataset '{name}' images contain NaN or infinite values")
    labels = labels.long()
    low, high = int(labels.min()), int(labels.max())
    classes = [str(c) for c in data.classes]
    max_classes = resolve("classes", None)
    if len(classes) > max_classes:
        raise DatasetError(f"dataset '{name}' names {len(classes):,} classes, " + how_to_raise("classes", max_classes))
    if classes and (low < 0 or high >= len(classes)):
        raise DatasetError(f"dataset '{name}' has labels in [{low}, {high}] but {len(classes)} classes")
    if not classes and low < 0:
        raise DatasetError(f"dataset '{name}' has labels in [{low}, {high}] and no class names: labels must be class numbers from 0")
    if not classes and high >= max_classes:  # the names "0".."high" would be made next
        raise DatasetError(f"dataset '{name}' has labels up to {high:,} and no class names, {high + 1:,} classes, " + how_to_raise("classes", max_classes))
    classes = classes or [str(i) for i in range(high + 1)]
    return ImageData(images.float(), labels, classes)


def make_split(data: ImageData, name: str, *, val_fraction: float = 0.2, seed: int = 0, limit: int | None = None) -> DataSplit:
    """Subset (``limit``), split and normalise ``data`` deterministically from ``seed``."""
    data = check_image_data(data, name)
    labels = data.labels.numpy()
    rng = np.random.default_rng(seed)
    keep = stratified_subset(labels, limit, rng) if limit is not None else np.arange(len(labels))
    train_pos, val_pos = stratified_split(labels[keep], val_fraction, rng)
    train_index = torch.from_numpy(keep[train_pos].astype(np.int64))
    val_index = torch.from_numpy(keep[val_pos].astype(np.int64))
    train_raw = data.images[train_index]
    mean, std = channel_stats(train_raw)
    return DataSplit(
        name=name,
        train_x=normalize(train_raw, mean, std),
        train_y=data.labels[train_index].contiguous(),
        val_x=normalize(data.images[val_index], mean, std),
        val_y=data.labels[val_index].contiguous(),
        classes=list(data.classes),
        mean=mean,
        std=std,
        train_index=train_index,
        val_index=val_index,
    )
