"""A :class:`Decision`: one named choice of a search space, the Optuna parameter of the same name.

A decision is made by one choice point, or by every choice point sharing its ``label``
(:mod:`archforge.search.choices`). It knows its domain (the options of a ``choice``, the range
of an ``int`` or ``float``), how its values are encoded for Optuna (an option that is not a
plain scalar travels as its canonical JSON text), and how to enumerate, sample and mutate them.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from archforge.errors import Location
from archforge.search.choices import ChoiceOptions, ChoicePoint, canonical_json, plain_number, value_label


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
        text = f"{self.kind} {plain_number(self.low)}..{plain_number(self.high)}"
        if self.step is not None and self.step != 1:
            text += f" step {plain_number(self.step)}"
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


def _scalar_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return None
