"""Value types returned by the dataset and metric hooks, and the names a plugin metric may not take."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:  # annotations only: settings read METRIC_NAME from here, and `archforge search --help` must not import torch
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


#: What a search measures on every candidate itself, by the name objectives, constraints and
#: result columns give it. A plugin metric with one of these names would be ambiguous: it is refused.
BUILTIN_MEASUREMENTS: dict[str, str] = {
    "accuracy": "validation accuracy",
    "accuracy_std": "standard deviation of the accuracy over seeds",
    "params": "parameter count",
    "flops": "FLOPs per sample",
    "latency_ms": "median forward latency",
    "latency_iqr_ms": "interquartile range of the latency",
    "peak_memory_mb": "peak memory of a training step",
    "train_time_s": "training time",
}

#: A metric's name is written in a space's ``objectives`` and ``constraints`` and heads a column:
#: a letter, then letters, digits or ``_``.
METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class MetricContext:
    """What a metric may look at besides the model: the per-sample input dims and the device."""

    input_dims: tuple[int, ...]
    device: torch.device


@dataclass(frozen=True)
class Metric:
    """A number measured on each trained candidate, e.g. energy per inference on a target device.

    A search calls ``compute(model, context)`` once per trained model (once per training seed),
    after training: the model is in eval mode, on the trial's device, under ``torch.no_grad()``;
    ``compute`` must leave it as it found it. It returns a finite number; anything else, or an
    exception, fails that candidate with a message naming the metric and its distribution.
    ``goal`` is the direction when a space names the metric in ``objectives``. ``options`` are
    the metric's own settings, for the plugin's use.
    """

    name: str
    compute: Callable[[nn.Module, MetricContext], float]
    goal: Literal["minimize", "maximize"] = "minimize"
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
