"""What an evaluator returned, read into the :class:`~archforge.search.records.SeedResult` a trial stores.

An evaluator is archforge's :func:`~archforge.search.evaluate.evaluate` or any function with its
signature; it returns an ``EvalResult``, a mapping or any object with its fields. Nothing it
returns is trusted: a count that is no count, a time that is not finite is left out, an
accuracy outside [0, 1] fails the seed, and so does a plugin metric value that is no finite
number. A field that cannot be read at all (reading it raises, a number that no float can
hold such as ``10**400``, a ``__float__`` that raises) fails the seed with one message naming
the field; nothing an evaluator returns stops the search. An evaluator that takes a
``metrics`` keyword (:func:`takes_metrics`) is given the installed plugin metrics to measure
and returns their values as its ``metrics`` mapping.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from archforge.errors import PLUGIN_FAULTS, describe_exception
from archforge.search.metrics import Metrics, conversion_failure, metric_label, not_a_number, number, shown
from archforge.search.records import SeedResult, finite


def seed_result(seed: int, result: Any, history: list[float | None], *, epochs: int, pruned: bool, eval_s: float,
                metrics: Metrics | None = None) -> SeedResult:
    """A :class:`SeedResult` from what an evaluator returned (an ``EvalResult``, a mapping or any object with its fields).

    It is ``pruned`` only when the pruner asked to stop and the evaluator did stop before ``epochs``.
    ``metrics``: the installed plugin metrics, whose values are kept from the result's ``metrics``
    mapping; one that is not a finite number fails the seed. The first field that fails the seed
    is its error (the accuracy first, then the plugin metrics, then the rest).
    """
    read = _Reader(result)
    accuracy = _accuracy(read)
    values = _metric_values(read, metrics or {})
    epochs_run = read.count("epochs")
    epochs_run = epochs_run if epochs_run is not None else len(history)
    given_history = read.field("history")
    if isinstance(given_history, (list, tuple)) and given_history:
        history = [read.real(f"history[{i}]", a) for i, a in enumerate(given_history)]
    stopped_early = read.flag("stopped_early")
    params, flops = read.count("params"), read.count("flops")
    costs = {name: read.real(name, read.field(name)) for name in ("latency_ms", "latency_iqr_ms", "peak_memory_mb", "train_time_s")}
    lr = read.real("lr", read.field("lr"))  # left out (None) when the evaluator gives none, or not a finite number
    timings = read.timings()
    pruned = pruned and epochs_run < epochs
    error = read.problems[0] if read.problems else None
    return SeedResult(
        seed=seed, status="failed" if error else "pruned" if pruned else "ok", error=error, accuracy=accuracy,
        epochs_run=epochs_run, history=[finite(a) for a in history], stopped_early=stopped_early or pruned,
        params=params, flops=flops, **costs, eval_time_s=round(eval_s, 4), metrics=values, timings=timings, lr=lr,
    )


def takes_metrics(evaluate: Callable[..., Any]) -> bool:
    """Whether ``evaluate`` accepts a ``metrics`` keyword (by name, or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(evaluate).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return any(p.name == "metrics" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or p.kind is p.VAR_KEYWORD
               for p in parameters)


def _accuracy(read: "_Reader") -> float | None:
    """The accuracy, or ``None`` with the seed failed: it is missing, no finite number, or outside [0, 1]."""
    given = read.field("accuracy")
    accuracy = finite(given)
    if accuracy is not None and 0.0 <= accuracy <= 1.0:
        return accuracy
    if given is None:
        problem = "no accuracy"
    elif accuracy is None:
        problem = f"accuracy {conversion_failure(given) or shown(given) + ', not a finite number'}"
    else:
        problem = f"accuracy {shown(given)}, not in [0, 1]"
    read.fail(f"the evaluator gave {problem}")
    return None


def _metric_values(read: "_Reader", metrics: Metrics) -> dict[str, float | None]:
    """The values of the installed plugin metrics in the result's ``metrics`` mapping; one that is no finite number fails the seed."""
    given = read.field("metrics")
    values: dict[str, float | None] = {}
    for name, (_, plugin) in metrics.items():
        try:
            if not isinstance(given, Mapping) or name not in given:
                continue
            value = given[name]
        except PLUGIN_FAULTS as exc:
            read.fail(f"the evaluator's metrics raised {describe_exception(exc, 200)} when {metric_label(name, plugin)} was read")
            continue
        values[name] = number(value)
        if values[name] is None:
            read.fail(f"the evaluator gave {metric_label(name, plugin)} = {not_a_number(value)}")
    return values


class _Reader:
    """Reads the fields of what an evaluator returned; every field that fails the seed adds its reason to ``problems``."""

    def __init__(self, result: Any):
        self.result = result
        self.problems: list[str] = []

    def fail(self, problem: str) -> None:
        self.problems.append(problem)

    def field(self, name: str) -> Any:
        """The field ``name`` (``None`` when absent, or when reading it raises: that fails the seed)."""
        try:
            return self.result.get(name) if isinstance(self.result, Mapping) else getattr(self.result, name, None)
        except PLUGIN_FAULTS as exc:
            self.fail(f"the evaluator's result raised {describe_exception(exc, 200)} when its '{name}' was read")
            return None

    def real(self, what: str, value: Any) -> float | None:
        """``value`` as a finite float; ``None`` when it is no number or not finite (left out), or cannot be converted (the seed fails)."""
        failure = conversion_failure(value)
        if failure is not None:
            self.fail(f"the evaluator gave {what} {failure}")
            return None
        return finite(value)

    def count(self, name: str) -> int | None:
        """The field ``name`` as a count in [0, 2**63); ``None`` when it is none (left out), or cannot be converted (the seed fails)."""
        value = self.field(name)
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):  # exactly, however large: a float could not hold 10**400
            return value if 0 <= value < 2**63 else None
        if isinstance(value, str):  # "7" counts, as float() reads it; any other text is none
            try:
                value = float(value)
            except ValueError:
                return None
        as_float = self.real(name, value)
        return int(as_float) if as_float is not None and as_float.is_integer() and 0 <= as_float < 2**63 else None

    def flag(self, name: str) -> bool:
        value = self.field(name)
        try:
            return bool(value)
        except PLUGIN_FAULTS as exc:  # a NumPy array of several elements has no truth value
            self.fail(f"the evaluator gave {name} {shown(value)}, which is neither true nor false ({describe_exception(exc, 120)})")
            return False

    def timings(self) -> dict[str, float | None]:
        given = self.field("timings")
        if not isinstance(given, Mapping):
            return {}
        try:
            return {str(key): self.real(f"timings[{shown(key)}]", value) for key, value in given.items()}
        except PLUGIN_FAULTS as exc:
            self.fail(f"the evaluator's timings cannot be read: {describe_exception(exc, 200)}")
            return {}
