"""Search spaces: a spec with choice points, and the ``search:`` section that says how to search it.

A search space is written in the spec language itself. Anywhere a value or a block
name stands, a *choice point* may stand instead::

    width:   {choice: [16, 32, 64]}                 # one of the listed values (any YAML value)
    depth:   {int: [1, 4]}                          # an integer range, both ends included
    kernel:  {int: [3, 7], step: 2}                 # 3, 5, 7
    lr:      {float: [1e-4, 1e-2], log: true}       # a continuous range (no grid over it)
    block:   {choice: [conv_unit, attn_unit]}       # a block (or define) name

Every choice point is one *decision*, named after where it stands (``width`` for a
param, ``stem.channels`` for an arg of node ``stem``, ``stage.block`` for a node's
block, ``basic.conv1.kernel`` inside define ``basic``) unless it has a ``label``:
all choice points with the same label share one decision (and must offer the same
options). A choice point inside a define is one decision for every use of the define;
to decide per use, make it a param of the define and put the choice in each node's args.

Per-copy placement. On a node with a ``repeat``, a choice point marked
``per_copy: true`` is decided separately for each copy::

    - {id: stage, block: {choice: [conv_unit, attn_unit], per_copy: true}, repeat: 3, args: {channels: 32}}

The repeat is unrolled into explicit nodes ``stage_0``, ``stage_1``, ``stage_2``
(chained; whatever read ``stage`` reads the last copy) with decisions
``stage.block[0]``, ``stage.block[1]``, ``stage.block[2]``. The unrolling is structural,
the same for every candidate, so concrete specs stay plain specs and parameter names
(``stage_1.attn.qkv.weight``) are stable across candidates. Choice points of the node
without ``per_copy`` stay one decision shared by all copies. The repeat count must be
a fixed integer (a literal or a ``$param`` holding one).

The optional top-level ``search:`` section (see :class:`SearchSettings`, defined in
:mod:`archforge.search.settings` and importable from here) holds the defaults of
``archforge search``: dataset, strategy, budget, epochs, seeds, objectives, constraints
(``max_params``, ``max_flops``, ...), multi-fidelity pruner, zero-cost proxy and training
settings. It is not part of any candidate.

Bounds. Nothing a space file writes can make archforge list, allocate or loop over more
than the module's ``MAX_*`` bounds allow (values of one decision, decisions, assignments,
values added by per-copy unrolling, and the amounts of work the ``search:`` section sets);
each is checked before the work it bounds, and its error says which bound to raise. Range
ends are finite numbers within ±2**53, a float step divides its range exactly (as Optuna
checks it), and the ``search:`` section is strict: ``true`` is not an integer, ``'4'`` is
not a number, NaN and infinity are no setting, and unknown keys (``train.batchsize``) are
located errors with a suggestion.

A *candidate* is the plain spec left when every decision has a value. It is identified
by :func:`candidate_hash`: sha256 of its canonical JSON, first 12 hex digits.
"""

from __future__ import annotations

import copy
import decimal
import hashlib
import itertools
import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from archforge.errors import Location, SpecError, did_you_mean
from archforge.search.settings import (  # noqa: F401 - moved to settings.py; importable from here as before
    OBJECTIVES, STRATEGIES, AugmentSettings, Constraints, EvolutionSettings, Number, ProxySettings, PrunerSettings,
    SearchSettings, TrainSettings, settings_from_dict,
)
from archforge.spec.load import read_spec_text, spec_from_document
from archforge.spec.located_yaml import LocatedDocument, load_located
from archforge.spec.schema import Spec

PathT = tuple[Any, ...]

KINDS = ("choice", "int", "float")
_ALLOWED_KEYS = {
    "choice": {"choice", "label", "per_copy"},
    "int": {"int", "step", "log", "label", "per_copy"},
    "float": {"float", "step", "log", "label", "per_copy"},
}
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
#: Decisions whose domain is at most this big are enumerated exactly by :meth:`Space.distinct_candidates`.
ENUMERATE_LIMIT = 5000

# Bounds on what a space file can make archforge do, each checked before the work it bounds.
# Raise one by assigning the module attribute, e.g. ``archforge.search.space.MAX_DECISION_VALUES = 10**7``.
#: Values of one finite decision: choice options, an int range, a float range with a step.
MAX_DECISION_VALUES = 1_000_000
#: Decisions of a space, per-copy decisions included.
MAX_DECISIONS = 10_000
#: Decision assignments of a space (the grid), counted without enumerating them.
MAX_ASSIGNMENTS = 10**100
#: Values per-copy unrolling may add (every copy of a node copies its body); as many as a YAML document may hold.
MAX_UNROLLED_VALUES = 200_000
#: Decision assignments × values of the space that :meth:`Space.distinct_candidates` may concretise.
MAX_ENUMERATION_WORK = 2_000_000
#: Largest magnitude of a range end; not a tunable: Optuna stores every value as a float, exact only up to 2**53.
MAX_RANGE_END = 2**53
#: Settings of the ``search:`` section that set an amount of work (checked by :mod:`archforge.search.settings`).
MAX_SEEDS = 100
MAX_WORKERS = 256
MAX_EPOCHS = 10_000
MAX_BUDGET = 1_000_000
MAX_PROXY_SAMPLE = 100_000
MAX_BATCH = 65_536
MAX_THREADS = 1_024
MAX_LATENCY_REPEATS = 10_000
MAX_CROP_PADDING = 1_024


def bound_text(name: str) -> str:
    """``archforge.search.space.NAME = value``, for messages that say which bound to raise."""
    value = globals()[name]
    return f"archforge.search.space.{name} = {value:,}" if value < 10**15 else f"archforge.search.space.{name} = {value:.0e}"


# --------------------------------------------------------------------------- decisions


@dataclass
class Decision:
    """One independent choice of a space (an Optuna parameter of the same name)."""

    name: str
    kind: Literal["choice", "int", "float"]
    options: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    label: str | None = None
    locations: list[Location] = field(default_factory=list)
    copy_of: tuple[str, int] | None = None  # (node, copy index) for per-copy decisions

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
            text = _canonical(value)
            return next((i for i, option in enumerate(self.options or []) if _canonical(option) == text), None)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        k = int(round((value - self.low) / (self.step or 1)))
        return k if 0 <= k < size and _canonical(self.value_at(k)) == _canonical(value) else None

    def values(self) -> list[Any]:
        size = self.size
        if size is None:
            raise ValueError(f"decision '{self.name}' is a continuous range")
        return [self.value_at(k) for k in range(size)]

    def _round(self, value: float) -> float:
        if self.step is None:
            return float(value)
        decimals = max(0, -math.floor(math.log10(self.step)) + 6) if self.step > 0 else 6
        return round(float(value), decimals)

    # -- Optuna ---------------------------------------------------------------
    @property
    def encoded(self) -> bool:
        """Whether the options go to Optuna as JSON strings (lists, mappings, mixed types)."""
        if self.kind != "choice":
            return False
        opts = self.options or []
        kinds = {_scalar_kind(o) for o in opts}
        return len(kinds) != 1 or None in kinds

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution([self.encode(o) for o in self.options or []])
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), step=self.step, log=self.log)

    def encode(self, value: Any) -> Any:
        if self.kind == "choice" and self.encoded:
            return _canonical(value)
        return value

    def decode(self, value: Any) -> Any:
        if self.kind == "choice":
            if self.encoded:
                for option in self.options or []:
                    if _canonical(option) == value:
                        return copy.deepcopy(option)
                raise ValueError(f"{value!r} is not an option of decision '{self.name}'")
            return value
        if self.kind == "int":
            return int(value)
        return self._round(value)

    def grid_values(self) -> list[Any]:
        return [self.encode(v) for v in self.values()]

    # -- sampling -------------------------------------------------------------
    def sample(self, rng: random.Random) -> Any:
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
        if self.kind == "choice":
            return ", ".join(short_value(o) for o in self.options or [])
        text = f"{self.kind} {_plain(self.low)}..{_plain(self.high)}"
        if self.step is not None and self.step != 1:
            text += f" step {_plain(self.step)}"
        if self.log:
            text += " log"
        return text

    def same_domain(self, other: "Decision") -> bool:
        return (self.kind, _canonical(self.options), self.low, self.high, self.step, self.log) == (
            other.kind, _canonical(other.options), other.low, other.high, other.step, other.log)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "options": self.options, "low": self.low, "high": self.high,
            "step": self.step, "log": self.log, "label": self.label, "size": self.size,
            "where": [str(loc) for loc in self.locations],
        }


def _count_text(count: float) -> str:
    """A count for a message: exact below 10**15; beyond, in scientific notation (a step of 1e-300 counts 10**300 values)."""
    if count == math.inf:
        return "over 1e+308"
    return f"{count:,}" if count < 10**15 else f"about {float(count):.1e}"


def _scalar_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return None


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def short_value(value: Any, width: int = 40) -> str:
    """A decision value as tables show it."""
    text = value if isinstance(value, str) else _canonical(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def candidate_hash(spec: Spec | Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a concrete spec's plain dict, first 12 hex digits."""
    data = spec.to_dict() if isinstance(spec, Spec) else dict(spec)
    return hashlib.sha256(_canonical(data).encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- template markers


@dataclass(frozen=True)
class _Slot:
    """Where a decision's value goes."""

    name: str


@dataclass
class _PerCopy:
    """A per-copy choice point before its node is unrolled."""

    decision: Decision
    path: PathT


@dataclass(frozen=True)
class _DefaultId:
    """The id ``<block>_<index>`` that expansion would give a node without one, at its original index."""

    index: int


@dataclass
class Candidate:
    """A concrete spec picked from a space, with the decisions that made it."""

    values: dict[str, Any]
    spec: Spec
    hash: str
    params: int | None = None
    flops: int | None = None

    @property
    def data(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def to_yaml(self) -> str:
        return self.spec.to_yaml()

    def label(self, names: Sequence[str] | None = None) -> str:
        names = names if names is not None else list(self.values)
        return ", ".join(f"{n}={short_value(self.values[n], 24)}" for n in names if n in self.values)


# --------------------------------------------------------------------------- the space


class _SpaceDocument(LocatedDocument):
    """A concrete spec's document whose locations point into the space file (through the unrolling)."""

    def __init__(self, data: Any, source: LocatedDocument, index_maps: dict[PathT, list[int]]):
        super().__init__(data=data, file=source.file, values=source.values, keys=source.keys)
        self._index_maps = index_maps

    def locate(self, path: PathT, *, key: bool = False) -> Location:
        return super().locate(self.original_path(tuple(path)), key=key)

    def original_path(self, path: PathT) -> PathT:
        for prefix, mapping in self._index_maps.items():
            n = len(prefix)
            if path[:n] == prefix and len(path) > n and isinstance(path[n], int) and path[n] < len(mapping):
                return prefix + (mapping[path[n]],) + path[n + 1:]
        return path


class Space:
    """A parsed search space. Create one with :func:`load_space` or :func:`parse_space`."""

    def __init__(self, document: LocatedDocument, text: str):
        self.document = document
        self.text = text
        self.file = document.file
        data = document.data
        if data is None or not isinstance(data, dict):
            raise SpecError("a search space must be a mapping (a spec with choice points)", document.locate(()))
        self.settings = settings_from_dict(data.get("search"), document)
        self.decisions: dict[str, Decision] = {}
        self._index_maps: dict[PathT, list[int]] = {}
        body = {k: v for k, v in data.items() if k != "search"}
        self._unrolled = 0  # values added by per-copy unrolling, bounded by MAX_UNROLLED_VALUES
        template = self._walk(body, ())
        template = self._unroll_all(template)
        self.template = template
        self._template_values = _count_values(template)
        self.name = body.get("name") if isinstance(body.get("name"), str) else "space"
        self._check_size()
        self._check_structure()

    # -- parsing ---------------------------------------------------------------
    def error(self, message: str, path: PathT, *, key: bool = False) -> SpecError:
        return SpecError(message, self.document.locate(path, key=key))

    def _walk(self, value: Any, path: PathT) -> Any:
        if isinstance(value, dict):
            if not _is_name_mapping(path) and any(k in value for k in KINDS):
                return self._choice_point(value, path)
            return {k: self._walk(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, path + (i,)) for i, v in enumerate(value)]
        return value

    def _choice_point(self, point: dict[str, Any], path: PathT) -> Any:
        kinds = [k for k in KINDS if k in point]
        if len(kinds) > 1:
            raise self.error(f"a choice point has one of 'choice', 'int' or 'float', not {' and '.join(repr(k) for k in kinds)}", path + (kinds[1],), key=True)
        kind = kinds[0]
        for key in point:
            if key not in _ALLOWED_KEYS[kind]:
                raise self.error(f"unknown key '{key}' in a '{kind}' choice point{did_you_mean(str(key), _ALLOWED_KEYS[kind])}", path + (key,), key=True)
        decision = Decision(name="", kind=kind, locations=[self.document.locate(path)])
        if kind == "choice":
            self._choice_options(point["choice"], path, decision)
        else:
            self._range(point, kind, path, decision)
        label = point.get("label")
        if label is not None and (not isinstance(label, str) or not _LABEL.match(label)):
            raise self.error("'label' must be a name (letters, digits, '_' and '.')", path + ("label",))
        decision.label = label
        per_copy = point.get("per_copy", False)
        if not isinstance(per_copy, bool):
            raise self.error("'per_copy' must be true or false", path + ("per_copy",))
        if per_copy:
            node_path = _node_path(path)
            if node_path is None or path[len(node_path)] in ("id", "in", "repeat"):
                raise self.error("'per_copy' applies to a choice point in the block or args of a node with a repeat", path + ("per_copy",), key=True)
            return _PerCopy(decision, path)
        decision.name = label or self._default_name(path)
        return _Slot(self._register(decision, path))

    def _choice_options(self, options: Any, path: PathT, decision: Decision) -> None:
        if not isinstance(options, list) or not options:
            raise self.error("'choice' needs a non-empty list of options", path + ("choice",))
        if len(options) > MAX_DECISION_VALUES:
            raise self.error(f"'choice' lists {len(options):,} options, more than {bound_text('MAX_DECISION_VALUES')}: raise the bound to allow more", path + ("choice",))
        seen: dict[str, int] = {}
        for i, option in enumerate(options):
            if _contains_choice(option):
                raise self.error("a choice option cannot contain another choice point: give the inner one its own place (e.g. a param)", path + ("choice", i))
            bad = _non_finite(option, path + ("choice", i))
            if bad is not None:
                raise self.error(f"option {short_value(option)} holds {_plain(bad[1])}: NaN and infinity cannot be a decision's value; "
                                 "use a finite number", bad[0])
            key_text = _canonical(option)
            if key_text in seen:
                raise self.error(f"option {short_value(option)} is listed twice", path + ("choice", i))
            seen[key_text] = i
        decision.options = copy.deepcopy(options)

    def _range(self, point: dict[str, Any], kind: str, path: PathT, decision: Decision) -> None:
        """Check an ``int`` or ``float`` range before anything is computed from it, and fill ``decision``."""
        bounds = point[kind]
        number = (int,) if kind == "int" else (int, float)
        if (not isinstance(bounds, list) or len(bounds) != 2
                or any(isinstance(b, bool) or not isinstance(b, number) for b in bounds)):
            what = "integers" if kind == "int" else "numbers"
            raise self.error(f"'{kind}' needs a range [low, high] of two {what}", path + (kind,))
        for i, end in enumerate(bounds):
            if isinstance(end, float) and not math.isfinite(end):
                raise self.error(f"the range of '{kind}' has a {_plain(end)} end: both ends must be finite numbers", path + (kind, i))
            if abs(end) > MAX_RANGE_END:
                raise self.error(f"range end {_plain(end)} is beyond ±2**53, where numbers stop being exact as floats "
                                 "(Optuna stores every value as one): use smaller numbers", path + (kind, i))
        low, high = bounds
        if low > high or (kind == "float" and low == high):
            raise self.error(f"empty {kind} range [{_plain(low)}, {_plain(high)}]: low must be below high", path + (kind,))
        step = point.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, number) or (isinstance(step, float) and not math.isfinite(step)) or step <= 0:
                raise self.error(f"'step' must be a positive {'integer' if kind == 'int' else 'finite number'}", path + ("step",))
            if step > MAX_RANGE_END:
                raise self.error(f"step {_plain(step)} is beyond 2**53, where numbers stop being exact as floats: use a smaller step", path + ("step",))
        log = point.get("log", False)
        if not isinstance(log, bool):
            raise self.error("'log' must be true or false", path + ("log",))
        if log and low <= 0:
            raise self.error(f"a log range needs a positive low end, got {_plain(low)}", path + (kind,))
        if log and step is not None and (kind == "float" or step != 1):
            raise self.error("a log range cannot have a step", path + ("step",))
        if kind == "int":
            step = step or 1
            if (high - low) % step:
                raise self.error(f"step {step} does not divide the range [{low}, {high}]", path + ("step",))
            size = (high - low) // step + 1
        elif step is not None:
            ratio = (high - low) / step
            if not math.isfinite(ratio) or ratio + 1 > MAX_DECISION_VALUES:
                size = int(ratio) + 1 if math.isfinite(ratio) else math.inf
            else:
                # Optuna checks the same divisibility on the decimal texts (and would shift high otherwise).
                quotient, remainder = divmod(decimal.Decimal(str(float(high))) - decimal.Decimal(str(float(low))), decimal.Decimal(str(float(step))))
                if step < max(abs(low), abs(high)) * 1e-12:  # low + k * step would round onto the same floats
                    raise self.error(f"step {_plain(float(step))} is finer than floats resolve at range ends of "
                                     f"{_plain(float(max(abs(low), abs(high))))}: use a larger step", path + ("step",))
                if remainder != 0:
                    raise self.error(f"step {float(step)!r} does not divide the range [{float(low)!r}, {float(high)!r}] "
                                     "into whole steps", path + ("step",))
                size = int(quotient) + 1
        else:
            size = None
        if size is not None and size > MAX_DECISION_VALUES:
            count = _count_text(size)
            raise self.error(f"'{kind}' range [{_plain(low)}, {_plain(high)}]{f' step {_plain(step)}' if step not in (None, 1) else ''} has {count} values, "
                             f"more than {bound_text('MAX_DECISION_VALUES')}: use a larger step or a smaller range, or raise the bound",
                             path + (kind,))
        decision.low, decision.high, decision.log = low, high, log
        decision.step = step
        if kind == "float":
            decision.low, decision.high = float(low), float(high)
            decision.step = float(step) if step is not None else None

    def _register(self, decision: Decision, path: PathT) -> str:
        existing = self.decisions.get(decision.name)
        if existing is None:
            if len(self.decisions) >= MAX_DECISIONS:
                raise self.error(f"more than {bound_text('MAX_DECISIONS')} decisions: share decisions through labels, or raise the bound", path)
            self.decisions[decision.name] = decision
            return decision.name
        if decision.label is None or existing.label != decision.label:
            raise self.error(f"decision name '{decision.name}' is already used at {existing.locations[0]}: give one of them a 'label'", path)
        if not existing.same_domain(decision):
            raise self.error(f"label '{decision.label}' is shared with {existing.locations[0]}, which offers other values ({existing.describe()})", path)
        existing.locations.extend(decision.locations)
        return existing.name

    def _default_name(self, path: PathT) -> str:
        data = self.document.data
        parts: list[str] = []
        rest = list(path)
        if rest[:1] == ["params"] and len(rest) >= 2:
            parts, rest = [str(rest[1])], rest[2:]
        elif rest[:1] == ["define"] and len(rest) >= 3 and rest[2] == "params":
            parts, rest = [f"{rest[1]}.{rest[3]}" if len(rest) > 3 else str(rest[1])], rest[4:]
        elif rest[:1] == ["define"] and len(rest) >= 4 and rest[2] == "nodes":
            parts, rest = [str(rest[1]), _node_label(_get(data, tuple(rest[:4])), rest[3])], rest[4:]
        elif rest[:1] == ["nodes"] and len(rest) >= 2:
            parts, rest = [_node_label(_get(data, tuple(rest[:2])), rest[1])], rest[2:]
        if rest[:1] == ["args"]:
            rest = rest[1:]
        text = ".".join(parts)
        for part in rest:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text or "value"

    # -- per-copy unrolling ----------------------------------------------------
    def _unroll_all(self, template: dict[str, Any]) -> dict[str, Any]:
        if isinstance(template.get("nodes"), list):
            template["nodes"], output = self._unroll_list(template["nodes"], ("nodes",), template.get("output"))
            if output is not None:
                template["output"] = output
        for name, define in (template.get("define") or {}).items() if isinstance(template.get("define"), dict) else ():
            if isinstance(define, dict) and isinstance(define.get("nodes"), list):
                path = ("define", name, "nodes")
                define["nodes"], output = self._unroll_list(define["nodes"], path, define.get("output"))
                if output is not None:
                    define["output"] = output
        leftover = _find(template, lambda v: isinstance(v, _PerCopy))
        if leftover is not None:
            raise self.error("'per_copy' applies to a choice point in the block or args of a node with a repeat", leftover.path + ("per_copy",), key=True)
        return template

    def _unroll_list(self, nodes: list[Any], list_path: PathT, output: Any) -> tuple[list[Any], Any]:
        if not any(isinstance(n, dict) and _find(n, lambda v: isinstance(v, _PerCopy)) is not None for n in nodes):
            return nodes, None
        out: list[Any] = []
        index_map: list[int] = []
        renamed: dict[str, str] = {}
        ids = {n.get("id") for n in nodes if isinstance(n, dict) and isinstance(n.get("id"), str)}
        for i, node in enumerate(nodes):
            path = list_path + (i,)
            per_copy = isinstance(node, dict) and _find(node, lambda v: isinstance(v, _PerCopy)) is not None
            if not per_copy:
                if isinstance(node, dict) and node.get("id") is None:
                    node = dict(node, id=_DefaultId(i))  # keep the id expansion would have given it
                out.append(node)
                index_map.append(i)
                continue
            node_id = node.get("id")
            if not isinstance(node_id, str):
                raise self.error("a node with per-copy choices needs an 'id' (its copies are named <id>_0, <id>_1, ...)", path)
            count = self._fixed_repeat(node, path)
            self._check_unrolling(node, path, count)
            copies = [f"{node_id}_{k}" for k in range(count)]
            for name in copies:
                if name in ids:
                    raise self.error(f"unrolling '{node_id}' makes a node '{name}', but that id is already used in this list", path + ("id",))
            for k, name in enumerate(copies):
                body = _replace(
                    {key: value for key, value in node.items() if key != "repeat"},
                    lambda v, k=k: _Slot(self._per_copy_decision(v, node_id, k)) if isinstance(v, _PerCopy) else v,
                )
                body["id"] = name
                if k > 0:
                    body["in"] = copies[k - 1]
                out.append(body)
                index_map.append(i)
            renamed[node_id] = copies[-1]
        for node in out:  # whatever read the repeated node now reads its last copy
            if isinstance(node, dict) and "in" in node:
                ref = node["in"]
                if isinstance(ref, str):
                    node["in"] = renamed.get(ref, ref)
                elif isinstance(ref, list):
                    node["in"] = [renamed.get(r, r) if isinstance(r, str) else r for r in ref]
        self._index_maps[list_path] = index_map
        new_output = renamed.get(output) if isinstance(output, str) else None
        return out, new_output

    def _fixed_repeat(self, node: dict[str, Any], path: PathT) -> int:
        repeat = node.get("repeat")
        if isinstance(repeat, str) and re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", repeat):
            params = self.document.data.get("params") if isinstance(self.document.data, dict) else None
            repeat = params.get(repeat[1:]) if isinstance(params, dict) else None
        if isinstance(repeat, float) and repeat.is_integer():
            repeat = int(repeat)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise self.error("per-copy choices need a fixed 'repeat' of at least 1 (a literal integer or a $param holding one)", path + ("repeat",) if "repeat" in node else path)
        return repeat

    def _check_unrolling(self, node: dict[str, Any], path: PathT, count: int) -> None:
        """Refuse a repeat whose copies would exceed the decision or size bounds, before making any copy."""
        markers = 0
        stack: list[Any] = [node]
        while stack:
            value = stack.pop()
            if isinstance(value, _PerCopy):
                markers += 1
            elif isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
        where = path + ("repeat",) if "repeat" in node else path
        decisions = len(self.decisions) + count * markers
        if decisions > MAX_DECISIONS:
            raise self.error(f"repeat {count:,} with {markers} per-copy choice point(s) makes {decisions:,} decisions, more than "
                             f"{bound_text('MAX_DECISIONS')}: lower the repeat, drop per_copy, or raise the bound", where)
        self._unrolled += count * _count_values(node)
        if self._unrolled > MAX_UNROLLED_VALUES:
            raise self.error(f"unrolling repeat {count:,} copies the node into more than {bound_text('MAX_UNROLLED_VALUES')} values: "
                             "lower the repeat, or raise the bound", where)

    def _per_copy_decision(self, marker: _PerCopy, node_id: str, k: int) -> str:
        base = marker.decision
        decision = copy.copy(base)
        decision.locations = list(base.locations)
        decision.copy_of = (node_id, k)
        decision.name = f"{base.label or self._default_name(marker.path)}[{k}]"
        return self._register(decision, marker.path)

    # -- checks ------------------------------------------------------------------
    def _check_size(self) -> None:
        """Refuse a space with more than MAX_ASSIGNMENTS assignments (multiplied out, never listed)."""
        total = 1
        for d in self.decisions.values():
            total *= d.size or 1
            if total > MAX_ASSIGNMENTS:
                raise SpecError(f"the space has more than {bound_text('MAX_ASSIGNMENTS')} decision assignments (at decision '{d.name}'): "
                                "share decisions through labels, or raise the bound", d.locations[0])

    def _check_structure(self) -> None:
        """Validate the spec structure once, with the first value of every decision."""
        self.concretize({name: d.first() for name, d in self.decisions.items()})

    # -- candidates --------------------------------------------------------------
    @property
    def size(self) -> int | None:
        """Number of decision assignments (the grid); ``None`` when a decision is continuous."""
        total = 1
        for d in self.decisions.values():
            if d.size is None:
                return None
            total *= d.size
        return total

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def concretize(self, values: Mapping[str, Any]) -> Candidate:
        """The candidate for decision ``values`` (every decision needs one)."""
        missing = [n for n in self.decisions if n not in values]
        if missing:
            raise KeyError(f"no value for decision(s) {', '.join(missing)}")

        def fill(v: Any) -> Any:
            if isinstance(v, _Slot):
                return copy.deepcopy(values[v.name])
            return v

        data = _replace(self.template, fill)
        _fill_default_ids(data)
        doc = _SpaceDocument(data, self.document, self._index_maps)
        spec = spec_from_document(doc)
        return Candidate(values={n: values[n] for n in self.decisions}, spec=spec, hash=candidate_hash(spec))

    def assignments(self) -> Iterator[dict[str, Any]]:
        """Every decision assignment, in grid order (finite spaces only)."""
        names = list(self.decisions)
        domains = [self.decisions[n].values() for n in names]
        for combo in itertools.product(*domains):
            yield dict(zip(names, combo))

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {name: d.sample(rng) for name, d in self.decisions.items()}

    def distributions(self) -> dict[str, Any]:
        return {name: d.distribution() for name, d in self.decisions.items()}

    def encode(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {name: self.decisions[name].encode(v) for name, v in values.items()}

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {name: self.decisions[name].decode(params[name]) for name in self.decisions}

    def distinct_candidates(self, limit: int = ENUMERATE_LIMIT) -> list[Candidate] | None:
        """Every distinct candidate (first assignment per hash), or ``None`` for an infinite or too large space.

        Too large: more than ``limit`` assignments, or more than :data:`MAX_ENUMERATION_WORK`
        assignments × values of the space to concretise.
        """
        size = self.size
        if size is None or size > limit or size * self._template_values > MAX_ENUMERATION_WORK:
            return None
        seen: dict[str, Candidate] = {}
        for values in self.assignments():
            candidate = self.concretize(values)
            seen.setdefault(candidate.hash, candidate)
        return list(seen.values())

    def check(self, candidate: Candidate, constraints: Constraints | None = None, *, registry: Any = None) -> str | None:
        """Why ``candidate`` is rejected before training (shape checker, then constraints), or ``None``.

        Fills ``candidate.params`` and ``candidate.flops`` when constraints need them.
        """
        from archforge.builder import summarize
        from archforge.graph import compile_graph

        constraints = constraints if constraints is not None else self.settings.constraints
        try:
            if constraints.active():
                summary = summarize(candidate.spec, registry=registry)
                candidate.params, candidate.flops = summary.params, summary.flops
            else:
                compile_graph(candidate.spec, registry)
        except SpecError as exc:
            return exc.format()
        if constraints.active():
            return constraints.violation(candidate.params or 0, candidate.flops or 0)
        return None

    def __repr__(self) -> str:
        return f"Space({self.name!r}, {len(self.decisions)} decisions, size={self.size})"


def _is_name_mapping(path: PathT) -> bool:
    """Mappings whose keys are names (params, args): never a choice point themselves."""
    if path in (("params",),):
        return True
    if len(path) == 3 and path[0] == "define" and path[2] == "params":
        return True
    return bool(path) and path[-1] == "args"


def _contains_choice(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in value for k in KINDS) or any(_contains_choice(v) for v in value.values())
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


def _count_values(value: Any) -> int:
    """Scalars, mappings and lists in ``value``, each counted once."""
    if isinstance(value, dict):
        return 1 + sum(_count_values(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_count_values(v) for v in value)
    return 1


def _node_path(path: PathT) -> PathT | None:
    if len(path) >= 3 and path[0] == "nodes" and isinstance(path[1], int):
        return path[:2]
    if len(path) >= 5 and path[0] == "define" and path[2] == "nodes" and isinstance(path[3], int):
        return path[:4]
    return None


def _node_label(node: Any, index: int) -> str:
    node_id = node.get("id") if isinstance(node, dict) else None
    return node_id if isinstance(node_id, str) else f"nodes[{index}]"


def _get(data: Any, path: PathT) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _find(value: Any, predicate) -> Any:
    if predicate(value):
        return value
    if isinstance(value, dict):
        for v in value.values():
            found = _find(v, predicate)
            if found is not None:
                return found
    elif isinstance(value, list):
        for v in value:
            found = _find(v, predicate)
            if found is not None:
                return found
    return None


def _replace(value: Any, fn) -> Any:
    value = fn(value)
    if isinstance(value, dict):
        return {k: _replace(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, fn) for v in value]
    return value


def _fill_default_ids(data: dict[str, Any]) -> None:
    lists = [data.get("nodes")]
    if isinstance(data.get("define"), dict):
        lists += [d.get("nodes") for d in data["define"].values() if isinstance(d, dict)]
    for nodes in lists:
        if not isinstance(nodes, list):
            continue
        for node in nodes:
            if isinstance(node, dict) and isinstance(node.get("id"), _DefaultId):
                block = node.get("block")
                node["id"] = f"{block.lstrip('$')}_{node['id'].index}" if isinstance(block, str) else f"node_{node['id'].index}"


# --------------------------------------------------------------------------- loading


def parse_space(text: str, file: str = "<space>") -> Space:
    """Parse a search space given as YAML text; errors are :class:`SpecError` with file:line:col."""
    return Space(load_located(text, file), text)


def load_space(source: str | os.PathLike[str] | Space) -> Space:
    """Read a search space file (a spec with choice points and an optional ``search:`` section)."""
    if isinstance(source, Space):
        return source
    path = Path(source)
    text = read_spec_text(path, "search space")
    return parse_space(text, file=str(path))
