"""Everything a search refuses, checked before anything is stored: ``archforge space`` runs the same checks.

:func:`prepare` loads what a run needs (the data, the evaluator, the installed plugin metrics)
and checks the run as a whole: the settings against the space (the strategy can search it, the
pruner fits), against this machine (``train.device`` is one torch can use here) and against the
installed plugins (every name in ``objectives`` and ``constraints.metrics`` is a built-in
objective or an installed metric), the dataset (its name, and its input shape against the
space's), the evaluator (importable, and by name when worker processes need it), the executor.
Each problem is one :class:`SearchError`, :class:`SettingError` or located :class:`SpecError`
(located when the space file wrote the setting, since an override has no place in it); the
study is created only after all of them passed, so a command that fails here leaves nothing behind.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from archforge.errors import SearchError, SettingError, SpecError, did_you_mean
from archforge.search.settings import OBJECTIVES, SearchSettings
from archforge.search.space import Space

Evaluator = Callable[..., Any]


@dataclass
class Prepared:
    """What :func:`prepare` loaded: the data split, the evaluator callable and the installed plugin metrics."""

    data: Any
    evaluate: Evaluator
    metrics: dict[str, Any] = field(default_factory=dict)  # name → (Metric, PluginInfo)


def prepare(space: Space, settings: SearchSettings, *, dataset: Any = None, evaluator: Evaluator | str | None = None,
            persistent: bool = True) -> Prepared:
    """Check the run ``space`` × ``settings`` as ``search`` would run it, and load its data and evaluator.

    ``dataset``: a ``DataSplit`` object replacing ``settings.dataset``; ``persistent``: the
    storage outlives the process (several workers need it).
    """
    from archforge.search.metrics import installed_metrics
    from archforge.search.strategies import check_strategy

    check_strategy(settings, space)
    check_device_setting(space, settings)
    metrics = installed_metrics()
    check_measured_names(space, settings, metrics)
    if settings.worker_count > 1 and not persistent:
        raise SearchError("several workers share a study through a persistent storage: drop storage='memory'")
    if settings.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise SearchError("executor 'ray' needs the optional 'ray' package: pip install 'archforge-nn[ray]'")
    if settings.executor == "ray":
        from archforge.search.ray_executor import check_address, check_settings

        check_settings(settings, persistent=persistent)
        check_address(settings.ray)  # nothing answering there: said before a study is made
    if (settings.worker_count > 1 or settings.executor == "ray") and evaluator is not None and not isinstance(evaluator, str):
        try:
            pickle.dumps(evaluator)
        except Exception:
            raise SearchError("workers > 1 need an evaluator importable by name: a module-level function or 'module:function'") from None
    evaluate = resolve_evaluator(evaluator)
    data = load_data(dataset if dataset is not None else settings.dataset, settings)
    check_input_shape(space, data)
    return Prepared(data, evaluate, metrics)


def check_run(space: Space, settings: SearchSettings) -> None:
    """What ``archforge space`` checks: :func:`prepare` with the space's own dataset and the default evaluator."""
    prepare(space, settings)


def resolve_evaluator(evaluator: Evaluator | str | None) -> Evaluator:
    """The callable that trains a candidate: the given one, ``"module:function"``, or archforge's ``evaluate``."""
    if evaluator is None:
        from archforge.search.evaluate import evaluate

        return evaluate
    if isinstance(evaluator, str):
        module, _, attr = evaluator.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError, ValueError) as exc:
            raise SearchError(f"cannot import evaluator '{evaluator}' (expected 'module:function'): {exc}") from None
        if not callable(obj):
            raise SearchError(f"evaluator '{evaluator}' is a {type(obj).__name__}, not a function")
        return obj
    if not callable(evaluator):
        raise SearchError(f"evaluator must be a function or 'module:function', got {type(evaluator).__name__}")
    return evaluator


def load_data(dataset: Any, settings: SearchSettings) -> Any:
    """A ``DataSplit``: loaded by name through :func:`archforge.data.load_dataset` (limit, val_fraction), or the object given."""
    if not isinstance(dataset, str):
        return dataset
    from archforge.data import load_dataset

    try:
        return load_dataset(dataset, val_fraction=settings.val_fraction, seed=0, limit=settings.limit)
    except SpecError:
        raise
    except (KeyError, ValueError, OSError) as exc:
        raise SearchError(f"cannot load dataset '{dataset}': {exc}") from None


def dataset_name(dataset: Any) -> str:
    return dataset if isinstance(dataset, str) else str(getattr(dataset, "name", type(dataset).__name__))


def check_input_shape(space: Space, data: Any) -> None:
    """The space's ``input.shape`` is the dataset's (a located error otherwise)."""
    shape = getattr(data, "input_shape", None)
    declared = (space.template.get("input") or {}).get("shape")
    if shape is None or not isinstance(declared, list) or not all(isinstance(v, int) for v in declared):
        return
    if tuple(declared) != tuple(shape):
        raise SpecError(
            f"the space's input shape {list(declared)} does not match dataset '{dataset_name(data)}' ({list(shape)})",
            space.document.locate(("input", "shape")),
        )


def check_device_setting(space: Space, settings: SearchSettings) -> None:
    """``train.device`` is a device torch can use on this machine (else every trial would fail, blaming a block)."""
    from archforge.builder.network import check_device

    device = settings.train.device
    try:
        check_device(device)
    except SettingError as exc:
        written = space.settings.train.device == device and _written(space, ("search", "train", "device"))
        if written:
            raise SpecError(f"search.train.device: {exc}", space.document.locate(("search", "train", "device"))) from None
        raise SettingError(f"train.device: {exc}") from None
    for i, device in enumerate(settings.devices or ()):
        try:
            check_device(device)
        except SettingError as exc:
            if space.settings.devices == settings.devices and _written(space, ("search", "devices")):
                raise SpecError(f"search.devices: {exc}", space.document.locate(("search", "devices", i))) from None
            raise SettingError(f"devices: {exc}") from None


def check_measured_names(space: Space, settings: SearchSettings, metrics: Mapping[str, Any]) -> None:
    """Every objective and every name in ``constraints.metrics`` is a built-in objective or a metric in ``metrics``."""
    known = [*OBJECTIVES, *metrics]
    for index, name in enumerate(settings.objectives):
        if name not in known:
            written = space.settings.objectives == settings.objectives
            raise _unknown(space, f"unknown objective '{name}'", name, known, ("search", "objectives", index) if written else None,
                           "objectives")
    for name in settings.constraints.metrics:
        if name not in known:
            written = name in space.settings.constraints.metrics
            raise _unknown(space, f"unknown metric '{name}' in constraints.metrics", name, known,
                           ("search", "constraints", "metrics", name) if written else None, "constraints")


def _unknown(space: Space, what: str, name: str, known: list[str], path: tuple[Any, ...] | None, setting: str) -> Exception:
    plugins = [k for k in known if k not in OBJECTIVES]
    installed = f"installed metrics: {', '.join(plugins)}" if plugins else "no plugin metric is installed"
    message = f"{what}{did_you_mean(name, known)}: use a built-in objective ({', '.join(OBJECTIVES)}) or a plugin metric ({installed})"
    if path is not None:
        return SpecError(message, space.document.locate(path, key=path[-2:-1] == ("metrics",)))
    return SettingError(f"{setting}: {message}")


def _written(space: Space, path: tuple[Any, ...]) -> bool:
    """Whether the space file itself holds the setting at ``path``."""
    data: Any = space.document.data
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True
