"""Choice points, the grammar of a search space, and :class:`Decision`, one named choice they make.

Anywhere a value or a block name stands in a spec, a *choice point* may stand instead::

    width:   {choice: [16, 32, 64]}                 # one of the listed values (any YAML value)
    depth:   {int: [1, 4]}                          # an integer range, both ends included
    kernel:  {int: [3, 7], step: 2}                 # 3, 5, 7
    lr:      {float: [1e-4, 1e-2], log: true}       # a continuous range (no grid over it)
    block:   {choice: [conv_unit, attn_unit]}       # a block (or define) name

Each may also carry ``label`` (choice points with the same label share one decision) and
``per_copy`` (on a node with a ``repeat``: decide separately for each copy, see
:mod:`archforge.search.unroll`). The three forms are the pydantic models
:class:`ChoiceOptions`, :class:`IntRange` and :class:`FloatRange`; they check a point before
anything is computed from it, and their JSON Schema is the one editors get
(:mod:`archforge.schema`). Range ends are finite numbers within ±2**53 (Optuna stores every
value as a float), a step divides its range exactly (as Optuna checks it), a log range has
a positive low end and no step, and no decision has more values than
``archforge.search.limits.MAX_DECISION_VALUES``, read when a point is checked.
"""

from __future__ import annotations

import copy
import decimal
import json
import math
import random
import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from archforge.errors import Location, SpecError, did_you_mean
from archforge.search import limits
from archforge.spec.load import validation_error
from archforge.spec.located_yaml import LocatedDocument

PathT = tuple[Any, ...]

#: The key that says what kind of choice point a mapping is.
KINDS = ("choice", "int", "float")
LABEL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"
_POINT_ERROR = "choice_point"  # the pydantic error type of the refusals below, which carry their own wording and place


def _refuse(message: str, at: PathT = (), *, key: bool = False) -> PydanticCustomError:
    """A refusal located ``at`` a path below the field (or point) that raises it; ``key``: at the mapping key."""
    return PydanticCustomError(_POINT_ERROR, "{message}", {"message": message, "at": tuple(at), "key": key})


class _Point(BaseModel):
    """What every choice point may carry besides its kind."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    kind: ClassVar[str]

    label: str | None = Field(None, pattern=LABEL_PATTERN, description="Choice points with the same label share one decision.")
    per_copy: bool = Field(False, description="On a node with a repeat: decide separately for each copy.")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kinds = [k for k in KINDS if k in data]
            if len(kinds) > 1:
                raise _refuse(f"a choice point has one of 'choice', 'int' or 'float', not {' and '.join(repr(k) for k in kinds)}",
                              (kinds[1],), key=True)
            allowed = [f.alias or name for name, f in cls.model_fields.items()]
            for key in data:
                if key not in allowed:
                    raise _refuse(f"unknown key '{key}' in a '{cls.kind}' choice point{did_you_mean(str(key), allowed)}", (key,), key=True)
        return data

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and re.fullmatch(LABEL_PATTERN, value)):
            return value
        raise _refuse("'label' must be a name (letters, digits, '_' and '.')")

    @field_validator("per_copy", "log", mode="before", check_fields=False)
    @classmethod
    def _switch(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, bool):
            raise _refuse(f"'{info.field_name}' must be true or false")
        return value


class ChoiceOptions(_Point):
    """A choice point: one of the listed options (any values, a block name among them)."""

    kind: ClassVar[str] = "choice"
    options: list[Any] = Field(alias="choice", min_length=1, description="The options, each a value where the point stands.")

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, options: Any) -> Any:
        if not isinstance(options, list) or not options:
            raise _refuse("'choice' needs a non-empty list of options")
        if len(options) > limits.MAX_DECISION_VALUES:
            raise _refuse(f"'choice' lists {len(options):,} options, more than {limits.bound_text('MAX_DECISION_VALUES')}: "
                          "raise the bound to allow more")
        seen: set[str] = set()
        for i, option in enumerate(options):
            if _contains_choice(option):
                raise _refuse("a choice option cannot contain another choice point: give the inner one its own place (e.g. a param)", (i,))
            bad = _non_finite(option, (i,))
            if bad is not None:
                raise _refuse(f"option {value_label(option)} holds {_plain(bad[1])}: NaN and infinity cannot be a decision's value; "
                              "use a finite number", bad[0])
            text = canonical_json(option)
            if text in seen:
                raise _refuse(f"option {value_label(option)} is listed twice", (i,))
            seen.add(text)
        return copy.deepcopy(options)


class _Range(_Point):
    """What the two ranges share; ``bounds`` and ``step`` are typed by each."""

    log: bool = Field(False, description="Sample on a log scale: a positive low end and no step.")

    @field_validator("bounds", mode="before", check_fields=False)
    @classmethod
    def _bounds(cls, bounds: Any, info: ValidationInfo) -> Any:
        kind = cls.kind
        number = (int,) if kind == "int" else (int, float)
        if not isinstance(bounds, list) or len(bounds) != 2 or any(isinstance(b, bool) or not isinstance(b, number) for b in bounds):
            raise _refuse(f"'{kind}' needs a range [low, high] of two {'integers' if kind == 'int' else 'numbers'}")
        for i, end in enumerate(bounds):
            if isinstance(end, float) and not math.isfinite(end):
                raise _refuse(f"the range of '{kind}' has a {_plain(end)} end: both ends must be finite numbers", (i,))
            if abs(end) > limits.MAX_RANGE_END:
                raise _refuse(f"range end {_plain(end)} is beyond ±2**53, where numbers stop being exact as floats "
                              "(Optuna stores every value as one): use smaller numbers", (i,))
        low, high = bounds
        if low > high or (kind == "float" and low == high):
            raise _refuse(f"empty {kind} range [{_plain(low)}, {_plain(high)}]: low must be below high")
        if info.data.get("log") and low <= 0:
            raise _refuse(f"a log range needs a positive low end, got {_plain(low)}")
        return (low, high) if kind == "int" else (float(low), float(high))

    @field_validator("step", mode="before", check_fields=False)
    @classmethod
    def _step(cls, step: Any, info: ValidationInfo) -> Any:
        if step is None:
            return None
        kind = cls.kind
        number = (int,) if kind == "int" else (int, float)
        if isinstance(step, bool) or not isinstance(step, number) or (isinstance(step, float) and not math.isfinite(step)) or step <= 0:
            raise _refuse(f"'step' must be a positive {'integer' if kind == 'int' else 'finite number'}")
        if step > limits.MAX_RANGE_END:
            raise _refuse(f"step {_plain(step)} is beyond 2**53, where numbers stop being exact as floats: use a smaller step")
        if info.data.get("log") and (kind == "float" or step != 1):
            raise _refuse("a log range cannot have a step")
        return step if kind == "int" else float(step)

    @model_validator(mode="after")
    def _countable(self) -> "_Range":
        """A step must divide the range, and the values must stay within MAX_DECISION_VALUES (counted, never listed)."""
        low, high = self.bounds  # type: ignore[attr-defined]
        step = self.step  # type: ignore[attr-defined]
        kind = self.kind
        if kind == "int":
            step = step or 1
            if (high - low) % step:
                raise _refuse(f"step {step} does not divide the range [{low}, {high}]", ("step",))
            size: float | None = (high - low) // step + 1
        elif step is not None:
            ratio = (high - low) / step
            if not math.isfinite(ratio) or ratio + 1 > limits.MAX_DECISION_VALUES:
                size = int(ratio) + 1 if math.isfinite(ratio) else math.inf
            else:
                if step < max(abs(low), abs(high)) * 1e-12:  # low + k * step would round onto the same floats
                    raise _refuse(f"step {_plain(step)} is finer than floats resolve at range ends of "
                                  f"{_plain(max(abs(low), abs(high)))}: use a larger step", ("step",))
                # Optuna checks the same divisibility on the decimal texts (and would shift high otherwise).
                quotient, remainder = divmod(decimal.Decimal(str(high)) - decimal.Decimal(str(low)), decimal.Decimal(str(step)))
                if remainder != 0:
                    raise _refuse(f"step {step!r} does not divide the range [{low!r}, {high!r}] into whole steps", ("step",))
                size = int(quotient) + 1
        else:
            size = None
        if size is not None and size > limits.MAX_DECISION_VALUES:
            shown_step = f" step {_plain(step)}" if step not in (None, 1) else ""
            raise _refuse(f"'{kind}' range [{_plain(low)}, {_plain(high)}]{shown_step} has {_count_text(size)} values, "
                          f"more than {limits.bound_text('MAX_DECISION_VALUES')}: use a larger step or a smaller range, "
                          "or raise the bound", (kind,))
        return self


_End = Annotated[int, Field(ge=-limits.MAX_RANGE_END, le=limits.MAX_RANGE_END)]
_FloatEnd = Annotated[float, Field(ge=-limits.MAX_RANGE_END, le=limits.MAX_RANGE_END)]


class IntRange(_Range):
    """A choice point: an integer in [low, high], both ends included."""

    kind: ClassVar[str] = "int"
    bounds: tuple[_End, _End] = Field(alias="int", description="[low, high], both included.")
    step: int | None = Field(None, gt=0, description="Distance between values; it must divide the range (default 1).")


class FloatRange(_Range):
    """A choice point: a number in [low, high], both ends included; with a step, a grid of them."""

    kind: ClassVar[str] = "float"
    bounds: tuple[_FloatEnd, _FloatEnd] = Field(alias="float", description="[low, high], both included, low below high.")
    step: float | None = Field(None, gt=0, description="Distance between values; it must divide the range (default: continuous).")


#: A checked choice point, and the model of each kind.
ChoicePoint = Union[ChoiceOptions, IntRange, FloatRange]
POINT_MODELS: dict[str, type[ChoiceOptions | IntRange | FloatRange]] = {"choice": ChoiceOptions, "int": IntRange, "float": FloatRange}


def is_choice_point(value: Any) -> bool:
    """Whether ``value`` is written as a choice point (a mapping with a ``choice``, ``int`` or ``float`` key)."""
    return isinstance(value, dict) and any(k in value for k in KINDS)


def read_choice_point(point: dict[str, Any], document: LocatedDocument, path: PathT) -> ChoicePoint:
    """The choice point written at ``path`` of ``document``, checked; a refusal is a :class:`SpecError` at its line."""
    model = POINT_MODELS[next(k for k in KINDS if k in point)]
    try:
        return model.model_validate(point)
    except ValidationError as exc:
        raise _located(exc, document, path, model) from None


def _located(exc: ValidationError, document: LocatedDocument, path: PathT, model: type[BaseModel]) -> SpecError:
    """The first refusal by position in the file: in its own words at its own place, or as pydantic said it."""
    def place(error: Any) -> PathT:
        return path + tuple(error["loc"]) + tuple((error.get("ctx") or {}).get("at", ()))

    def position(error: Any) -> tuple[int, int]:
        location = document.locate(place(error))
        return location.line, location.column

    first = min(exc.errors(), key=position)
    if first["type"] == _POINT_ERROR:
        return SpecError(first["ctx"]["message"], document.locate(place(first), key=first["ctx"]["key"]))
    return validation_error(exc, document, path, model=model)


class Decision(BaseModel):
    """One independent choice of a space (an Optuna parameter of the same name)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["choice", "int", "float"]
    options: list[Any] | None = None
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    label: str | None = None
    locations: list[Location] = Field(default_factory=list)
    copy_of: tuple[str, int] | None = Field(None, description="(node, copy index) of a per-copy decision.")

    @classmethod
    def of(cls, point: ChoicePoint, name: str, location: Location) -> "Decision":
        """The decision a checked choice point makes."""
        if isinstance(point, ChoiceOptions):
            return cls(name=name, kind="choice", options=point.options, label=point.label, locations=[location])
        low, high = point.bounds
        step = (point.step or 1) if point.kind == "int" else point.step
        return cls(name=name, kind=point.kind, low=low, high=high, step=step, log=point.log, label=point.label, locations=[location])

    # -- domain ---------------------------------------------------------------
    @property
    def size(self) -> int | None:
        """Number of values; ``None`` for a continuous range (computed, never enumerated)."""
        if self.kind == "choice":
            return len(self.options or [])
        if self.kind == "int":
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        if self.step is None:
            return None
        return int(round((self.high - self.low) / self.step)) + 1

    def value_at(self, k: int) -> Any:
        """The ``k``-th value of a finite decision, without listing the others."""
        if self.kind == "choice":
            return (self.options or [])[k]
        if self.kind == "int":
            return int(self.low) + k * int(self.step or 1)
        return self._round(self.low + k * self.step)

    def first(self) -> Any:
        """The first value (the low end of a continuous range)."""
        return self.value_at(0) if self.size is not None else self.low

    def index(self, value: Any) -> int | None:
        """Position of ``value`` among the values of a finite decision, or ``None``."""
        size = self.size
        if size is None:
            return None
        if self.kind == "choice":
            text = canonical_json(value)
            return next((i for i, option in enumerate(self.options or []) if canonical_json(option) == text), None)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        k = int(round((value - self.low) / (self.step or 1)))
        return k if 0 <= k < size and canonical_json(self.value_at(k)) == canonical_json(value) else None

    def values(self) -> list[Any]:
        """Every value of a finite decision, in order."""
        size = self.size
        if size is None:
            raise ValueError(f"decision '{self.name}' is a continuous range")
        return [self.value_at(k) for k in range(size)]

    def _round(self, value: float) -> float:
        if self.step is None:
            return float(value)
        return round(float(value), max(0, -math.floor(math.log10(self.step)) + 6))

    # -- Optuna ---------------------------------------------------------------
    @property
    def encoded(self) -> bool:
        """Whether the options go to Optuna as JSON strings (lists, mappings, mixed types)."""
        if self.kind != "choice":
            return False
        kinds = {_scalar_kind(o) for o in self.options or []}
        return len(kinds) != 1 or None in kinds

    def distribution(self) -> Any:
        """The Optuna distribution of this decision."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution([self.encode(o) for o in self.options or []])
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), step=self.step, log=self.log)

    def encode(self, value: Any) -> Any:
        """``value`` as Optuna stores it."""
        return canonical_json(value) if self.kind == "choice" and self.encoded else value

    def decode(self, value: Any) -> Any:
        """The decision value Optuna stored as ``value``."""
        if self.kind == "choice":
            if self.encoded:
                for option in self.options or []:
                    if canonical_json(option) == value:
                        return copy.deepcopy(option)
                raise ValueError(f"{value!r} is not an option of decision '{self.name}'")
            return value
        if self.kind == "int":
            return int(value)
        return self._round(value)

    def grid_values(self) -> list[Any]:
        """Every value as Optuna stores it (for its grid sampler)."""
        return [self.encode(v) for v in self.values()]

    # -- sampling -------------------------------------------------------------
    def sample(self, rng: random.Random) -> Any:
        """A value drawn uniformly (log-uniformly for a log range)."""
        size = self.size
        if size is not None:  # the same draw as rng.choice(self.values()), without the list
            return self.value_at(rng.randrange(size))
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def mutate(self, value: Any, rng: random.Random) -> Any:
        """A value different from ``value`` (the value itself when there is no other)."""
        size = self.size
        if size is None:
            for _ in range(20):
                other = self.sample(rng)
                if other != value:
                    return other
            return value
        current = self.index(value)
        others = size - (current is not None)
        if others == 0:
            return value
        k = rng.randrange(others)  # the same draw as rng.choice(values without value)
        if current is not None and k >= current:
            k += 1
        return self.value_at(k)

    # -- text -----------------------------------------------------------------
    def describe(self) -> str:
        """The domain in a few words: ``4, 8, 16`` or ``float 0.0001..0.01 log``."""
        if self.kind == "choice":
            return ", ".join(value_label(o) for o in self.options or [])
        text = f"{self.kind} {_plain(self.low)}..{_plain(self.high)}"
        if self.step is not None and self.step != 1:
            text += f" step {_plain(self.step)}"
        if self.log:
            text += " log"
        return text

    def same_domain(self, other: "Decision") -> bool:
        """Whether ``other`` offers exactly the same values."""
        return (self.kind, canonical_json(self.options), self.low, self.high, self.step, self.log) == (
            other.kind, canonical_json(other.options), other.low, other.high, other.step, other.log)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the domain, its size and where the decision is written."""
        return {
            "name": self.name, "kind": self.kind, "options": self.options, "low": self.low, "high": self.high,
            "step": self.step, "log": self.log, "label": self.label, "size": self.size,
            "where": [str(loc) for loc in self.locations],
        }


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value``: sorted keys, no spaces (what candidate hashes and encoded options use)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def value_label(value: Any, width: int = 40) -> str:
    """A decision value as tables and candidate labels show it: a string as written, anything else as compact JSON."""
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _contains_choice(value: Any) -> bool:
    if isinstance(value, dict):
        return is_choice_point(value) or any(_contains_choice(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_choice(v) for v in value)
    return False


def _non_finite(value: Any, path: PathT) -> tuple[PathT, float] | None:
    """Where ``value`` holds a NaN or an infinity, and which, or ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, path + (key,))
        if found is not None:
            return found
    return None


def _scalar_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return None


def _plain(value: Any) -> str:
    """A number as messages write it: ``3`` for 3.0, ``0.0001`` for 1e-4."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _count_text(count: float) -> str:
    """A count for a message: exact below 10**15; beyond, in scientific notation (a step of 1e-300 counts 10**300 values)."""
    if count == math.inf:
        return "over 1e+308"
    return f"{count:,}" if count < 10**15 else f"about {float(count):.1e}"
