"""Value types returned by the dataset and metric hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn


@dataclass
class ImageData:
    """A labelled image set held in memory.

    ``images`` is ``(N, C, H, W)`` float in ``[0, 1]``; ``labels`` is ``(N,)`` int64 in
    ``[0, len(classes))``. Splitting, normalisation and augmentation are applied by the
    search, not by the source.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset a search can train on: ``load(**options)`` returns :class:`ImageData`."""

    name: str
    load: Callable[..., ImageData]
    description: str = ""


@dataclass(frozen=True)
class MetricContext:
    """What a metric may look at besides the model: the per-sample input dims and the device."""

    input_dims: tuple[int, ...]
    device: torch.device


@dataclass(frozen=True)
class Metric:
    """A number measured on a built candidate, e.g. latency on a target device."""

    name: str
    compute: Callable[[nn.Module, MetricContext], float]
    goal: Literal["minimize", "maximize"] = "minimize"
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
