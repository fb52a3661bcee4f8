"""What an evaluator returned, read into the :class:`~archforge.search.records.SeedResult` a trial stores.

An evaluator is archforge's :func:`~archforge.search.evaluate.evaluate` or any function with its
signature; it returns an ``EvalResult``, a mapping or any object with its fields. Nothing it
returns is trusted: a count that is no count, a time that is not finite is left out, an
accuracy outside [0, 1] fails the seed, and so does a plugin metric value that is no finite
number. An evaluator that takes a ``metrics`` keyword (:func:`takes_metrics`) is given the
installed plugin metrics to measure and returns their values as its ``metrics`` mapping.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from archforge.search.metrics import Metrics, metric_label, not_a_number, number
from archforge.search.records import SeedResult, finite


def seed_result(seed: int, result: Any, history: list[float | None], *, epochs: int, pruned: bool, eval_s: float,
                metrics: Metrics | None = None) -> SeedResult:
    """A :class:`SeedResult` from what an evaluator returned (an ``EvalResult``, a mapping or any object with its fields).

    It is ``pruned`` only when the pruner asked to stop and the evaluator did stop before ``epochs``.
    ``metrics``: the installed plugin metrics, whose values are kept from the result's ``metrics``
    mapping; one that is not a finite number fails the seed.
    """
    def field(name: str) -> Any:
        return result.get(name) if isinstance(result, Mapping) else getattr(result, name, None)

    accuracy = finite(field("accuracy"))
    timings = field("timings")
    epochs_run = _count(field("epochs")) if _count(field("epochs")) is not None else len(history)
    pruned = pruned and epochs_run < epochs
    status, error = ("pruned" if pruned else "ok"), None
    if accuracy is None or not 0.0 <= accuracy <= 1.0:
        given = field("accuracy")
        problem = "no accuracy" if given is None else f"accuracy {given!r}, not a finite number" if finite(given) is None \
            else f"accuracy {given!r}, not in [0, 1]"
        status, error, accuracy = "failed", f"the evaluator gave {problem}", None
    given = field("metrics")
    values: dict[str, float | None] = {}
    for name, (_, plugin) in (metrics or {}).items():
        if not isinstance(given, Mapping) or name not in given:
            continue
        values[name] = number(given[name])
        if values[name] is None and error is None:
            status, error = "failed", f"the evaluator gave {metric_label(name, plugin)} = {not_a_number(given[name])}"
    return SeedResult(
        seed=seed, status=status, error=error, accuracy=accuracy,
        epochs_run=epochs_run,
        history=[finite(a) for a in (field("history") if isinstance(field("history"), (list, tuple)) and field("history") else history)],
        stopped_early=bool(field("stopped_early")) or pruned,
        params=_count(field("params")), flops=_count(field("flops")),
        latency_ms=finite(field("latency_ms")), latency_iqr_ms=finite(field("latency_iqr_ms")),
        peak_memory_mb=finite(field("peak_memory_mb")), train_time_s=finite(field("train_time_s")),
        eval_time_s=round(eval_s, 4), metrics=values,
        timings={str(k): finite(v) for k, v in timings.items()} if isinstance(timings, Mapping) else {},
    )


def takes_metrics(evaluate: Callable[..., Any]) -> bool:
    """Whether ``evaluate`` accepts a ``metrics`` keyword (by name, or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(evaluate).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return any(p.name == "metrics" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or p.kind is p.VAR_KEYWORD
               for p in parameters)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        return None
    return int(as_float) if as_float.is_integer() and 0 <= as_float < 2**63 else None
