"""The ``search:`` section of a space: pydantic models that check it strictly, and :func:`settings_from_dict`.

Strict: ``true`` is not an integer, ``'4'`` is not a number, NaN and infinity are no setting,
and unknown keys (``train.batchsize``) are located errors with a suggestion. The bounds on the
amounts of work a section may set (``MAX_WORKERS``, ``MAX_EPOCHS``, ...) live with the other
bounds in :mod:`archforge.search.space`, where they are raised, and are read at check time.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from archforge.errors import SpecError, did_you_mean
from archforge.spec.load import validation_error
from archforge.spec.located_yaml import LocatedDocument

PathT = tuple[Any, ...]

#: Objectives a search can optimise, with their direction.
OBJECTIVES: dict[str, Literal["maximize", "minimize"]] = {
    "accuracy": "maximize",
    "params": "minimize",
    "flops": "minimize",
    "latency_ms": "minimize",
    "peak_memory_mb": "minimize",
    "train_time_s": "minimize",
}
STRATEGIES = ("grid", "random", "evolution", "tpe", "nsga2")



class _Strict(BaseModel):
    # Strict: a YAML boolean is not an integer, a quoted '4' is not a number; NaN and infinity are no setting.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


_EXPONENT = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+")


def _exponent_float(value: Any) -> Any:
    # YAML 1.1 (PyYAML) reads 2e5 and 1e-3 as strings; YAML 1.2 and every user read them as numbers.
    if isinstance(value, str) and _EXPONENT.fullmatch(value):
        return float(value.replace("_", ""))
    return value


def _at_most(name: str):
    def check(value: Any) -> Any:
        # Read from archforge.search.space at check time: the bounds live there with the others, users raise them
        # there, and space imports this module, so it cannot be imported here at load time.
        space = importlib.import_module("archforge.search.space")
        bound = getattr(space, name)
        if value is not None and value > bound:
            raise ValueError(f"at most {bound:,} (the bound is {space.bound_text(name)}; raise it to allow more)")
        return value
    return AfterValidator(check)


#: A finite number; ``2e5`` written without a dot counts as one.
Number = Annotated[float, BeforeValidator(_exponent_float)]


class Constraints(_Strict):
    """Limits checked on the concrete spec before any training (params and FLOPs per sample)."""

    max_params: Number | None = Field(None, ge=0)
    min_params: Number | None = Field(None, ge=0)
    max_flops: Number | None = Field(None, ge=0)
    min_flops: Number | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Constraints":
        for name in ("params", "flops"):
            low, high = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{name} {_number(low)} is above max_{name} {_number(high)}: no candidate could pass")
        return self

    def active(self) -> bool:
        return any(v is not None for v in self.model_dump().values())

    def violation(self, params: int, flops: int) -> str | None:
        for name, value in (("params", params), ("flops", flops)):
            high, low = getattr(self, f"max_{name}"), getattr(self, f"min_{name}")
            if high is not None and value > high:
                return f"{name} {value:,} > max_{name} {_number(high)}"
            if low is not None and value < low:
                return f"{name} {value:,} < min_{name} {_number(low)}"
        return None


class ProxySettings(_Strict):
    """Zero-cost pre-filter: score ``sample`` candidates without training, train the best ``keep`` fraction."""

    score: Literal["synflow", "naswot"]
    sample: Annotated[int, _at_most("MAX_PROXY_SAMPLE")] = Field(64, gt=0, description="Candidates to score (all of a smaller finite space).")
    keep: Number = Field(0.25, gt=0, le=1, description="Fraction of the scored candidates that is trained.")
    batch: Annotated[int, _at_most("MAX_BATCH")] = Field(64, gt=0, description="Batch for naswot.")


class PrunerSettings(_Strict):
    """Multi-fidelity over epochs through an Optuna pruner."""

    kind: Literal["successive_halving", "hyperband", "median"]
    min_resource: int = Field(1, gt=0, description="Epochs before the first pruning decision.")
    reduction_factor: int = Field(3, gt=1)


class EvolutionSettings(_Strict):
    """Regularized evolution (Real et al. 2019)."""

    population: int = Field(8, gt=1)
    sample: int = Field(3, gt=0, description="Tournament size.")


class AugmentSettings(_Strict):
    """``train.augment`` as a mapping: the fields of :class:`archforge.data.AugmentConfig`."""

    crop_padding: Annotated[int, _at_most("MAX_CROP_PADDING")] = Field(2, ge=0)
    hflip: bool = False


class TrainSettings(_Strict):
    """The ``train:`` mapping of the search section, checked strictly before any search.

    Mirrors the fields of :class:`archforge.search.evaluate.TrainConfig` except ``epochs``
    and ``seed``, which the search section sets itself. Only the keys written are passed on.
    """

    batch_size: Annotated[int, _at_most("MAX_BATCH")] = Field(128, gt=0)
    lr: Number = Field(2e-3, gt=0)
    weight_decay: Number = Field(0.05, ge=0)
    warmup_epochs: Number = Field(0.5, ge=0)
    label_smoothing: Number = Field(0.1, ge=0, lt=1)
    augment: bool | AugmentSettings = True
    device: str = Field("cpu", pattern=r"^[a-z]+(:[0-9]{1,3})?$", description="cpu, cuda, cuda:1, mps")
    amp: bool = True
    threads: Annotated[int, _at_most("MAX_THREADS")] | None = Field(None, gt=0)
    latency_batch: Annotated[int, _at_most("MAX_BATCH")] = Field(1, gt=0)
    latency_repeats: Annotated[int, _at_most("MAX_LATENCY_REPEATS")] = Field(20, ge=0)


_PRUNER_NAMES = {"sh": "successive_halving", "successive_halving": "successive_halving", "hyperband": "hyperband", "median": "median"}


class SearchSettings(_Strict):
    """The ``search:`` section of a space; every field is also a flag of ``archforge search``."""

    dataset: str = "mnist"
    limit: int | None = Field(None, gt=0, description="Use at most this many images (train + validation).")
    val_fraction: Number = Field(0.2, gt=0, lt=1)
    strategy: Literal["grid", "random", "evolution", "tpe", "nsga2"] = "grid"
    budget: Annotated[int, _at_most("MAX_BUDGET")] | None = Field(None, gt=0, description="Candidates to evaluate; default: the whole grid, else 20.")
    epochs: Annotated[int, _at_most("MAX_EPOCHS")] = Field(2, gt=0)
    seeds: Annotated[int, _at_most("MAX_SEEDS")] = Field(1, gt=0, description="Train every candidate with this many seeds (mean ± std).")
    objectives: list[str] = Field(default_factory=lambda: ["accuracy"], min_length=1)
    constraints: Constraints = Field(default_factory=Constraints)
    pruner: PrunerSettings | None = None
    proxy: ProxySettings | None = None
    evolution: EvolutionSettings = Field(default_factory=EvolutionSettings)
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields (batch_size, lr, ...).")
    workers: Annotated[int, _at_most("MAX_WORKERS")] = Field(1, gt=0)
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the samplers (NumPy's range: 0 to 2**32 - 1).")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=100, description="Run name (default: the space's name).")
    storage: str | None = None

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value in ("none", "off"):
                return None
            if value not in _PRUNER_NAMES:
                raise ValueError(f"unknown pruner '{value}': use successive_halving, hyperband or median")
            return {"kind": _PRUNER_NAMES[value]}
        return value

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
        if isinstance(value, list):
            for name in value:
                if name not in OBJECTIVES:
                    raise ValueError(f"unknown objective {name!r}{did_you_mean(str(name), OBJECTIVES)}: use {', '.join(OBJECTIVES)}")
            if len(set(value)) != len(value):
                raise ValueError("an objective is listed twice")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and set(value) == {"."}:
            raise ValueError(f"run name {value!r} would name a folder outside the runs folder: use letters or digits")
        return value

    @model_validator(mode="after")
    def _pruner_fits_epochs(self) -> "SearchSettings":
        if self.pruner is not None and self.pruner.min_resource > self.epochs:
            raise ValueError(f"pruner min_resource {self.pruner.min_resource} is more than the {self.epochs} epoch(s) of a trial: "
                             "the pruner would never decide; lower it or raise epochs")
        return self

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        # A file chooses a database server or a place under the working folder, never a path elsewhere on disk.
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

    @field_validator("train")
    @classmethod
    def _train(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in ("epochs", "seed"):
            if key in value:
                raise ValueError(f"set '{key}' in the search section itself, not under train")
        TrainSettings.model_validate(value)  # the keys written are passed on, checked like the rest
        return value

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]


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
    if isinstance(train, dict) and isinstance(train.get("augment"), dict):
        try:
            AugmentSettings.model_validate(train["augment"])
        except ValidationError as exc:
            raise validation_error(exc, doc, prefix + ("train", "augment"), model=AugmentSettings) from None
    sub_models: dict[str, type[BaseModel]] = {"constraints": Constraints, "evolution": EvolutionSettings, "proxy": ProxySettings,
                                              "pruner": PrunerSettings, "train": TrainSettings}
    for key, model in sub_models.items():
        if isinstance(data.get(key), dict) and not (key == "train" and ({"epochs", "seed"} & set(data[key]))):
            try:
                model.model_validate(data[key])
            except ValidationError as exc:
                raise validation_error(exc, doc, prefix + (key,), model=model) from None
    try:
        return SearchSettings.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, doc, prefix, model=SearchSettings) from None
