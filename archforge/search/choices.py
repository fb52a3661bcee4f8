"""Choice points, the grammar of a search space (the named choice each one makes: :mod:`archforge.search.decision`).

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
import re
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from archforge.errors import SpecError, did_you_mean
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
                raise _refuse(f"option {value_label(option)} holds {plain_number(bad[1])}: NaN and infinity cannot be a decision's value; "
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
                raise _refuse(f"the range of '{kind}' has a {plain_number(end)} end: both ends must be finite numbers", (i,))
            if abs(end) > limits.MAX_RANGE_END:
                raise _refuse(f"range end {plain_number(end)} is beyond ±2**53, where numbers stop being exact as floats "
                              "(Optuna stores every value as one): use smaller numbers", (i,))
        low, high = bounds
        if low > high or (kind == "float" and low == high):
            raise _refuse(f"empty {kind} range [{plain_number(low)}, {plain_number(high)}]: low must be below high")
        if info.data.get("log") and low <= 0:
            raise _refuse(f"a log range needs a positive low end, got {plain_number(low)}")
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
            raise _refuse(f"step {plain_number(step)} is beyond 2**53, where numbers stop being exact as floats: use a smaller step")
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
                    raise _refuse(f"step {plain_number(step)} is finer than floats resolve at range ends of "
                                  f"{plain_number(max(abs(low), abs(high)))}: use a larger step", ("step",))
                # Optuna checks the same divisibility on the decimal texts (and would shift high otherwise).
                quotient, remainder = divmod(decimal.Decimal(str(high)) - decimal.Decimal(str(low)), decimal.Decimal(str(step)))
                if remainder != 0:
                    raise _refuse(f"step {step!r} does not divide the range [{low!r}, {high!r}] into whole steps", ("step",))
                size = int(quotient) + 1
        else:
            size = None
        if size is not None and size > limits.MAX_DECISION_VALUES:
            shown_step = f" step {plain_number(step)}" if step not in (None, 1) else ""
            raise _refuse(f"'{kind}' range [{plain_number(low)}, {plain_number(high)}]{shown_step} has {_count_text(size)} values, "
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


def plain_number(value: Any) -> str:
    """A number as messages write it: ``3`` for 3.0, ``0.0001`` for 1e-4."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _count_text(count: float) -> str:
    """A count for a message: exact below 10**15; beyond, in scientific notation (a step of 1e-300 counts 10**300 values)."""
    if count == math.inf:
        return "over 1e+308"
    return f"{count:,}" if count < 10**15 else f"about {float(count):.1e}"
