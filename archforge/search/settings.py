"""The ``search:`` section of a space as one pydantic model, :class:`SearchSettings`, and how overrides merge into it.

The section, the keyword arguments of :func:`archforge.search` and the flags of ``archforge
search`` are one configuration: the section is read with :func:`settings_from_dict` (errors
located at the YAML line), and API or CLI overrides are applied by :meth:`SearchSettings.merged`
and validated exactly like the section. ``train:`` is a nested
:class:`~archforge.search.training.TrainConfig`.

Strict: ``true`` is not an integer, ``'4'`` is not a number, NaN and infinity are no setting,
and unknown keys (``train.batchsize``) are located errors with a suggestion. Amounts of work are
bounded by :mod:`archforge.search.limits`. From Python, ``strategy`` may also be any Optuna
sampler object and ``pruner`` any Optuna pruner object.

What depends on this machine rather than on the text is checked with the run
(:mod:`archforge.search.checks`): that ``train.device`` is usable, and that a name in
``objectives`` or ``constraints.metrics`` that is no built-in objective is an installed plugin metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema, field_serializer, field_validator, model_validator

from archforge.errors import SettingError, SpecError, did_you_mean
from archforge.registry.extensions import METRIC_NAME
from archforge.search.training import DEVICE_PATTERN, AugmentSettings, Number, Strict, TrainConfig, at_most
from archforge.spec.load import validation_error
from archforge.spec.located_yaml import LocatedDocument

PathT = tuple[Any, ...]

#: Built-in objectives a search can optimise, with their direction (a plugin metric's is its ``goal``).
OBJECTIVES: dict[str, Literal["maximize", "minimize"]] = {
    "accuracy": "maximize",
    "params": "minimize",
    "flops": "minimize",
    "latency_ms": "minimize",
    "peak_memory_mb": "minimize",
    "train_time_s": "minimize",
}
STRATEGIES = ("grid", "random", "evolution", "tpe", "nsga2", "oneshot")
PRUNERS = ("successive_halving", "hyperband", "median")
_PRUNER_NAMES = {"sh": "successive_halving", **{name: name for name in PRUNERS}}


class Bounds(Strict):
    """The range a measured value must lie in: ``{max: 5.0}``, ``{min: 0.9}`` or both."""

    max: Number | None = None
    min: Number | None = None

    @model_validator(mode="after")
    def _some_and_ordered(self) -> "Bounds":
        if self.max is None and self.min is None:
            raise ValueError("give 'max', 'min' or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min {_number(self.min)} is above max {_number(self.max)}: no candidate could pass")
        return self


def _measured_names(value: Any) -> Any:
    if isinstance(value, Mapping):
        for name in value:
            if name in ("params", "flops"):
                raise ValueError(f"{name} is counted before training: bound it with max_{name} or min_{name}, not under metrics")
            if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a metric name: a built-in objective or an installed plugin metric")
    return value


class Constraints(Strict):
    """Limits on a candidate: parameters and FLOPs per sample, checked on the concrete spec before any training;
    ``metrics``, bounds of measured values (a plugin metric or a built-in objective), checked after training."""

    max_params: Number | None = Field(None, ge=0)
    min_params: Number | None = Field(None, ge=0)
    max_flops: Number | None = Field(None, ge=0)
    min_flops: Number | None = Field(None, ge=0)
    metrics: Annotated[dict[str, Bounds], BeforeValidator(_measured_names)] = Field(
        default_factory=dict, description="Name → {max, min}, checked after training (the trained model has the value).")

    @model_validator(mode="after")
    def _ordered(self) -> "Constraints":
        for name in ("params", "flops"):
            low, high = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{name} {_number(low)} is above max_{name} {_number(high)}: no candidate could pass")
        return self

    def active(self) -> bool:
        """Whether a bound is checked before training (params or FLOPs)."""
        return any(getattr(self, key) is not None for key in ("max_params", "min_params", "max_flops", "min_flops"))

    def violation(self, params: int, flops: int) -> str | None:
        """Why a candidate with ``params`` and ``flops`` is refused, or ``None``."""
        for name, value in (("params", params), ("flops", flops)):
            high, low = getattr(self, f"max_{name}"), getattr(self, f"min_{name}")
            if high is not None and value > high:
                return f"{name} {value:,} > max_{name} {_number(high)}"
            if low is not None and value < low:
                return f"{name} {value:,} < min_{name} {_number(low)}"
        return None

    def metric_violation(self, values: Mapping[str, float | None]) -> str | None:
        """Why a trained candidate with the measured ``values`` (by name) is refused, or ``None``.

        ``values`` has every name of ``metrics``; one that is ``None`` (not measured) is not checked.
        """
        for name, bounds in self.metrics.items():
            value = values[name]
            if value is None:
                continue
            if bounds.max is not None and value > bounds.max:
                return f"{name} {value:.6g} > max {_number(bounds.max)} (constraints.metrics, checked after training)"
            if bounds.min is not None and value < bounds.min:
                return f"{name} {value:.6g} < min {_number(bounds.min)} (constraints.metrics, checked after training)"
        return None


class ProxySettings(Strict):
    """Zero-cost pre-filter: score ``sample`` candidates without training, train the best ``keep`` fraction."""

    score: Literal["synflow", "naswot"]
    sample: Annotated[int, at_most("MAX_PROXY_SAMPLE")] = Field(64, gt=0, description="Candidates to score (all of a smaller finite space).")
    keep: Number = Field(0.25, gt=0, le=1, description="Fraction of the scored candidates that is trained.")
    batch: Annotated[int, at_most("MAX_BATCH")] = Field(64, gt=0, description="Batch for naswot.")


class OneShotSettings(Strict):
    """``strategy: oneshot``: one weight-sharing supernet, trained once, ranks the candidates (archforge.search.oneshot)."""

    sampling: Literal["uniform", "fair"] = Field("fair", description=(
        "Paths trained per step: uniform, one path drawn uniformly (SPOS); fair, as many paths as the largest decision has "
        "values, every value used once, their gradients summed into one update (FairNAS)."))
    epochs: Annotated[int, at_most("MAX_EPOCHS")] | None = Field(None, gt=0, description=(
        "Epochs the supernet trains; default: the search's epochs."))
    paths: Annotated[int, at_most("MAX_ONESHOT_PATHS")] = Field(256, gt=0, description=(
        "Candidates the supernet holds and ranks: every distinct one of a space with at most this many, else a seeded "
        "sample of this many."))
    calibration_batches: int = Field(5, gt=0, le=1000, description=(
        "Training batches each path's BatchNorm statistics are re-estimated on before it is evaluated."))
    retrain_top: Annotated[int, at_most("MAX_BUDGET")] = Field(0, ge=0, description=(
        "Train the best k of the one-shot ranking stand-alone, with the search's seeds and epochs (--retrain-top)."))


class PrunerSettings(Strict):
    """Multi-fidelity over epochs through an Optuna pruner."""

    kind: Literal["successive_halving", "hyperband", "median"]
    min_resource: int = Field(1, gt=0, description="Epochs before the first pruning decision.")
    reduction_factor: int = Field(3, gt=1)


class EvolutionSettings(Strict):
    """Regularized evolution (Real et al. 2019)."""

    population: int = Field(8, gt=1)
    sample: int = Field(3, gt=0, description="Tournament size.")


def _strategy(value: Any) -> Any:
    if isinstance(value, str):
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}{did_you_mean(value, STRATEGIES)}: use {', '.join(STRATEGIES)}, "
                             "or pass an Optuna sampler object from Python")
        return value
    import optuna

    if isinstance(value, optuna.samplers.BaseSampler):
        return value
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)} or an optuna sampler, got {type(value).__name__}")


def _pruner(value: Any) -> Any:
    if value is None or isinstance(value, PrunerSettings):
        return value
    if isinstance(value, str):
        if value in ("none", "off"):
            return None
        if value not in _PRUNER_NAMES:
            raise ValueError(f"unknown pruner {value!r}{did_you_mean(value, PRUNERS)}: use {', '.join(PRUNERS)}")
        return PrunerSettings(kind=_PRUNER_NAMES[value])
    if isinstance(value, Mapping):
        return PrunerSettings.model_validate(dict(value))
    import optuna

    if isinstance(value, optuna.pruners.BasePruner):
        return value
    raise ValueError(f"pruner must be a name, a mapping with 'kind' or an optuna pruner, got {type(value).__name__}")


def _object_name(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value if value is None or isinstance(value, str) else f"{type(value).__module__}.{type(value).__qualname__}"


class RaySettings(Strict):
    """``executor: ray``: the cluster to join and what each trial reserves on it (Ray's own resource accounting)."""

    address: str | None = Field(None, max_length=500, description=(
        "The cluster: 'auto' (the one `ray start` made on this machine), 'ray://HOST:10001', or none: a new local one."))
    cpus_per_trial: Number = Field(1.0, gt=0, le=1024, description="CPUs Ray reserves for each trial (also its torch threads).")
    gpus_per_trial: Number = Field(0.0, ge=0, le=64, description="GPUs Ray reserves for each trial (0.5: two trials share one).")


class HeartbeatSettings(Strict):
    """How a trial whose worker died is found: Optuna's heartbeats, in seconds (the same for every worker of a study)."""

    interval: int = Field(10, gt=0, le=3600, description="Seconds between two heartbeats of a running trial.")
    grace: int = Field(60, gt=0, le=86400, description=(
        "Seconds without a heartbeat after which a trial is failed and its candidate retried."))

    @model_validator(mode="after")
    def _grace_covers_beats(self) -> "HeartbeatSettings":
        if self.grace <= self.interval:
            raise ValueError(f"heartbeat grace {self.grace} s must exceed the interval {self.interval} s, "
                             "else a live worker's trial is failed between two beats")
        return self


#: A strategy name, or (from Python) an Optuna sampler; stored by class name.
Strategy = Annotated[Any, PlainValidator(_strategy), PlainSerializer(_object_name), WithJsonSchema({"enum": list(STRATEGIES)})]
#: A pruner's settings (or shorthand name), or (from Python) an Optuna pruner; stored by class name.
Pruner = Annotated[Any, PlainValidator(_pruner), PlainSerializer(_object_name), WithJsonSchema({
    "anyOf": [{"enum": [*_PRUNER_NAMES, "none", "off"]}, PrunerSettings.model_json_schema(), {"type": "null"}]})]


class SearchSettings(Strict):
    """The ``search:`` section of a space; every field is also a keyword of :func:`archforge.search` and a flag of ``archforge search``."""

    dataset: str = Field("mnist", description="A dataset name of archforge.data (mnist, digits, ...).")
    limit: int | None = Field(None, gt=0, description="Use at most this many images (train + validation).")
    val_fraction: Number = Field(0.2, gt=0, lt=1)
    strategy: Strategy = "grid"
    budget: Annotated[int, at_most("MAX_BUDGET")] | None = Field(None, gt=0, description="Candidates to evaluate; default: the whole grid, else 20.")
    epochs: Annotated[int, at_most("MAX_EPOCHS")] = Field(2, gt=0)
    seeds: Annotated[int, at_most("MAX_SEEDS")] = Field(1, gt=0, description="Train every candidate with this many seeds (mean ± std).")
    objectives: list[str] = Field(default_factory=lambda: ["accuracy"], min_length=1)
    constraints: Constraints = Field(default_factory=Constraints)
    pruner: Pruner = None
    proxy: ProxySettings | None = None
    evolution: EvolutionSettings = Field(default_factory=EvolutionSettings)
    oneshot: OneShotSettings = Field(default_factory=OneShotSettings, description="The supernet of strategy: oneshot.")
    params: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Any] = Field(
        default_factory=dict, description=(
            "Values for some of the space's params, replacing those it writes (classes: 2 to search a 10-class space on a "
            "2-class dataset); mostly given as --param NAME=VALUE."))
    train: TrainConfig = Field(default_factory=TrainConfig, description="How each candidate is trained (batch_size, lr, ...).")
    workers: Annotated[int, at_most("MAX_WORKERS")] = Field(1, gt=0, description="Worker processes sharing the study.")
    executor: Literal["local", "ray"] = Field("local", description="Where workers run: local processes, or Ray tasks.")
    devices: list[Annotated[str, StringConstraints(pattern=DEVICE_PATTERN)]] | None = Field(
        None, min_length=1, max_length=256, description=(
            "Devices the local workers are spread over, one worker each unless workers says more (cuda:0, cuda:1); "
            "none: every worker uses train.device."))
    ray: RaySettings = Field(default_factory=RaySettings, description="The Ray cluster and resources per trial (executor: ray).")
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings, description="How dead workers are found.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the samplers (NumPy's range: 0 to 2**32 - 1).")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=100, description="Run name (default: the space's name).")
    storage: str | None = Field(None, description="Where trials are stored (default runs/<name>/study.db).")

    @field_validator("proxy", mode="before")
    @classmethod
    def _proxy_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return None if value in ("none", "off") else {"score": value}
        return value

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            value = list(value)
            for name in value:
                # Whether a name that is no built-in objective is an installed metric is the run's check (checks.py).
                if name not in OBJECTIVES and not (isinstance(name, str) and METRIC_NAME.fullmatch(name)):
                    raise ValueError(f"unknown objective {name!r}{did_you_mean(str(name), OBJECTIVES)}: use a built-in objective "
                                     f"({', '.join(OBJECTIVES)}) or a plugin metric's name (a letter, then letters, digits or '_')")
            if len(set(value)) != len(value):
                raise ValueError("an objective is listed twice")
        return value

    @field_validator("train", mode="before")
    @classmethod
    def _train_without_run_fields(cls, value: Any) -> Any:
        # epochs and seeds are the search's own settings; a second place for them would be a second truth.
        written = set(value) if isinstance(value, Mapping) else set(value.model_fields_set) if isinstance(value, TrainConfig) else set()
        for key in ("epochs", "seed"):
            if key in written:
                raise ValueError(f"set '{key}{'s' if key == 'seed' else ''}' in the search section itself, not under train")
        return dict(value) if isinstance(value, Mapping) else value

    @field_serializer("train")
    def _train_without_trial_fields(self, train: TrainConfig, info: Any) -> dict[str, Any]:
        # epochs and seed are set per trial (trial_config); a dump of the section validates back to it
        return train.model_dump(mode=info.mode, exclude={"epochs", "seed"})

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and set(value) == {"."}:
            raise ValueError(f"run name {value!r} would name a folder outside the runs folder: use letters or digits")
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        # A space file chooses a database server or a place under the working folder, never a path elsewhere on disk.
        if value is None or value in ("memory", ":memory:"):
            return value
        scheme, sep, rest = value.partition("://")
        if sep and not scheme.startswith("sqlite"):
            return value  # a database server (postgresql://, mysql://): nothing written to this disk
        path = rest[1:] if sep else value
        parts = Path(path).parts
        if not path or Path(path).is_absolute() or path.startswith("~") or ".." in parts:
            raise ValueError(f"storage {value!r} would write outside the working folder: a space file may name a relative path "
                             "(runs/shared.db) or a database server URL; pass --storage on the command line for any other place")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SearchSettings":
        if isinstance(self.pruner, PrunerSettings) and self.pruner.min_resource >= self.epochs:
            # The pruner is asked after each epoch but the last (a trial that ran them all is complete).
            raise ValueError(f"pruner min_resource {self.pruner.min_resource} leaves no epoch to decide on: a trial of "
                             f"{self.epochs} epoch(s) can only be stopped before its last epoch; make min_resource less than "
                             "epochs, or raise epochs")
        if self.pruner is not None and len(self.objectives) > 1:
            raise ValueError("pruning (multi-fidelity) works with one objective; Optuna cannot prune multi-objective trials")
        if self.strategy == "oneshot":
            if self.budget is not None:
                raise ValueError("strategy oneshot ranks every candidate with one supernet; the candidates then trained "
                                 "stand-alone are its best k: set oneshot.retrain_top (--retrain-top K), not budget")
            if self.proxy is not None:
                raise ValueError("strategy oneshot and a proxy both choose what to train; use one of them")
            if "accuracy" not in self.objectives:
                raise ValueError("strategy oneshot ranks candidates by accuracy: keep accuracy among the objectives")
        if self.devices is not None and self.executor == "ray":
            raise ValueError("devices spreads local workers over devices; Ray gives each trial its own GPUs: "
                             "set ray.gpus_per_trial instead")
        return self

    @property
    def worker_count(self) -> int:
        """Workers to start: ``workers``, and at least one per device of ``devices``."""
        return max(self.workers, len(self.devices or ()))

    @property
    def directions(self) -> list[str]:
        """The direction of each objective; for plugin metrics, see :meth:`directions_with`."""
        return self.directions_with({})

    def directions_with(self, goals: Mapping[str, str]) -> list[str]:
        """The direction of each objective: a built-in one's, else the ``goal`` of the metric of that name in ``goals``."""
        unknown = [o for o in self.objectives if o not in OBJECTIVES and o not in goals]
        if unknown:
            raise SettingError(f"objective '{unknown[0]}' is neither a built-in objective nor a metric of an installed plugin")
        return [OBJECTIVES[o] if o in OBJECTIVES else goals[o] for o in self.objectives]

    @property
    def trial_budget(self) -> int | None:
        """The budget in force: as set; else the whole grid for ``grid`` (``None``), the proxy's choice, or 20;
        for ``oneshot``, the candidates retrained stand-alone (``oneshot.retrain_top``)."""
        if self.strategy == "oneshot":
            return self.oneshot.retrain_top
        if self.budget is not None or self.strategy == "grid" or self.proxy is not None:
            return self.budget
        return 20

    def trial_config(self, seed: int) -> TrainConfig:
        """The :class:`TrainConfig` of one training seed of a candidate."""
        return self.train.model_copy(update={"epochs": self.epochs, "seed": seed})

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> "SearchSettings":
        """The settings a study stored (``model_dump(mode="json")``), for reports: what only served the run is left out.

        Left out: the per-trial ``train.epochs``/``seed``, the storage (maybe named on a command line) and
        sampler or pruner objects, which are stored by class name only. Raises ``ValidationError``.
        """
        data = dict(data)
        if isinstance(data.get("train"), Mapping):
            data["train"] = {k: v for k, v in data["train"].items() if k not in ("epochs", "seed")}
            # A run stored before init was a setting trained every candidate with torch's defaults.
            data["train"].setdefault("init", "pytorch")
        if data.get("strategy") not in STRATEGIES:
            data.pop("strategy", None)
        if isinstance(data.get("pruner"), str) and data["pruner"] not in PRUNERS:
            data.pop("pruner")
        data.pop("storage", None)
        return cls.model_validate(data)

    def merged(self, **overrides: Any) -> "SearchSettings":
        """These settings with every override that is not ``None`` applied, checked like the YAML section.

        Nested sections (``train``, ``constraints``, ``evolution``, ``oneshot``, ``proxy``, ``pruner``) and ``params``
        given as mappings update the fields they name and keep the others: ``merged(train={"lr": 1e-3})``.
        Raises :class:`~archforge.errors.SettingError` naming the setting.
        """
        data = self.model_dump()
        for key in ("strategy", "pruner"):  # an Optuna object dumps as its class name; keep the object itself
            if not isinstance(getattr(self, key), (str, BaseModel, type(None))):
                data[key] = getattr(self, key)
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in type(self).model_fields:
                raise _setting_error(f"unknown search setting '{key}'{did_you_mean(key, type(self).model_fields)}")
            current = getattr(self, key)
            if isinstance(value, Mapping) and isinstance(current, BaseModel):
                value = {**(data[key] if key == "train" else current.model_dump()), **value}
            elif key == "params" and isinstance(value, Mapping):  # a mapping of values: updated, as a section is
                value = {**current, **value}
            data[key] = value
        if isinstance(overrides.get("train"), TrainConfig):
            data["train"] = overrides["train"]
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            raise _setting_error(f"{where}: {message}" if where else message) from None


def _setting_error(message: str) -> SettingError:
    return SettingError(message)


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def settings_from_dict(data: Any, doc: LocatedDocument | None = None, prefix: PathT = ("search",)) -> SearchSettings:
    """Validate a ``search:`` mapping; errors are located in ``doc`` when given."""
    if data is None:
        data = {}
    doc = doc or LocatedDocument(data={"search": data}, file="<search>")
    if not isinstance(data, dict):
        raise SpecError(f"'search' must be a mapping of settings, got {type(data).__name__}", doc.locate(prefix))
    train = data.get("train")
    if isinstance(train, dict):
        for key in ("epochs", "seed"):
            if key in train:
                raise SpecError(f"set '{key}{'s' if key == 'seed' else ''}' in the search section itself, not under train",
                                doc.locate(prefix + ("train", key), key=True))
        if isinstance(train.get("augment"), dict):
            _check(AugmentSettings, train["augment"], doc, prefix + ("train", "augment"))
    for key, model in (("constraints", Constraints), ("evolution", EvolutionSettings), ("oneshot", OneShotSettings), ("proxy", ProxySettings),
                       ("pruner", PrunerSettings), ("train", TrainConfig)):
        if isinstance(data.get(key), dict):
            _check(model, data[key], doc, prefix + (key,))
    try:
        return SearchSettings.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, doc, prefix, model=SearchSettings) from None


def _check(model: type[BaseModel], data: dict[str, Any], doc: LocatedDocument, path: PathT) -> None:
    # Each nested section on its own, so that an error is located in it and an unknown key gets a suggestion.
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, doc, path, model=model) from None

