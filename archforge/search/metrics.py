"""Plugin metrics in a search: the installed ones, measuring them on a trained model, and reading what they return.

A plugin's :class:`~archforge.registry.Metric` is measured on every model a search trains,
after training (once per training seed); a candidate's value is the median over its seeds,
like the costs. It is stored with the trial (:mod:`archforge.search.records`), is a column
of the ranking and of the report, and may be an objective (its ``goal`` is the direction)
or bounded in ``constraints.metrics``, checked after training since only the trained model
has the value.

A metric that raises, or returns anything but a finite number, fails the candidate with one
message naming the metric and the distribution that provides it; the search goes on.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import torch
from torch import nn

from archforge.errors import PLUGIN_FAULTS, describe_exception
from archforge.registry import Metric, MetricContext, PluginInfo
from archforge.search.failures import TrialError, format_traceback

#: Installed metrics by name, as :attr:`archforge.registry.Registry.metrics` holds them.
Metrics = Mapping[str, tuple[Metric, PluginInfo]]


def installed_metrics() -> dict[str, tuple[Metric, PluginInfo]]:
    """The metrics of the installed plugins (the default registry), by name."""
    from archforge import registry

    return dict(registry.default_registry().metrics)


def metric_label(name: str, plugin: PluginInfo) -> str:
    """How every message names a metric: ``metric 'energy_mj' of plugin 'energy' from 'archforge-energy'``."""
    return f"metric '{name}' of {plugin.label}"


def goals(metrics: Metrics) -> dict[str, str]:
    """The direction of each metric as an objective."""
    return {name: metric.goal for name, (metric, _) in metrics.items()}


def number(value: Any) -> float | None:
    """``value`` as a finite float when it is a real number (a NumPy scalar or a one-element tensor too), else ``None``.

    Never raises: a real number that cannot be converted (an integer too large for a float, a
    ``__float__`` that raises) is ``None`` too; :func:`not_a_number` says why.
    """
    try:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
                return None
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # True is no measurement
            return None
        value = float(value)
    except PLUGIN_FAULTS:
        return None
    return value if math.isfinite(value) else None


def not_a_number(value: Any) -> str:
    """What was returned instead of a finite number, in a few words; never raises."""
    try:
        if isinstance(value, torch.Tensor):
            if value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
                return not_a_number(value.item())
            return f"a tensor of shape {list(value.shape)}, not a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"{shown(value)}, not a number"
        return conversion_failure(value) or f"{float(value)!r}, not a finite number"
    except PLUGIN_FAULTS as exc:
        return f"{shown(value)}, which cannot be read as a number ({describe_exception(exc, 120)})"


def conversion_failure(value: Any) -> str | None:
    """Why ``value``, meant as a number (a real number, or anything with ``__float__``), cannot be converted to a float;
    ``None`` when it can, or when it is no number at all (``None``, a text, a list). Never raises."""
    try:
        if isinstance(value, (bool, str, bytes)) or not (isinstance(value, numbers.Real) or hasattr(type(value), "__float__")):
            return None
        float(value)
    except OverflowError:
        return f"{shown(value)}, too large for a float"
    except PLUGIN_FAULTS as exc:
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            return f"a tensor of shape {list(value.shape)}, not a number"
        return f"{shown(value)}, which cannot be read as a number ({describe_exception(exc, 120)})"
    return None


def shown(value: Any) -> str:
    """``value`` for a message, in at most 80 characters; never raises."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:  # a huge integer: its magnitude
            return f"about {'-' if value < 0 else ''}1e{int(math.log10(abs(value)))}"
        text = repr(value)
    except PLUGIN_FAULTS:  # a __repr__ that raises
        return f"an object of type {type(value).__name__}"
    return text if len(text) <= 80 else text[:79] + "…"


def measure_metrics(model: nn.Module, metrics: Metrics, context: MetricContext) -> dict[str, float]:
    """Each metric's ``compute(model, context)`` with ``model`` in eval mode under ``no_grad``; the training mode is restored.

    Raises :class:`~archforge.search.failures.TrialError` (kind ``"metric"``) for the first
    metric that raises or returns no finite number; a real Ctrl-C propagates.
    """
    values: dict[str, float] = {}
    was_training = model.training
    model.eval()
    try:
        for name, (metric, plugin) in metrics.items():
            failure: TrialError | None = None
            try:
                with torch.no_grad():
                    returned = metric.compute(model, context)
            except KeyboardInterrupt:
                raise
            except PLUGIN_FAULTS as exc:
                failure = TrialError(f"{metric_label(name, plugin)} raised {describe_exception(exc, 200)}; fix or uninstall "
                                     f"'{plugin.distribution}'", kind="metric", details=format_traceback(exc))
            if failure is not None:
                raise failure  # outside the except block: the model's frames are not kept alive by a chained exception
            value = number(returned)
            if value is None:
                raise TrialError(f"{metric_label(name, plugin)} returned {not_a_number(returned)}; fix or uninstall "
                                 f"'{plugin.distribution}'", kind="metric")
            values[name] = value
    finally:
        model.train(was_training)
    return values
